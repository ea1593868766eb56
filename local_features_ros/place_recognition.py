"""Keyframe database for place recognition / loop-closure candidates (any local feature method).

Why local-feature voting (DELF-style) rather than a global descriptor: every method in the
registry gives local descriptors, so loop candidates come for free from whatever the node already
extracts, and the RANSAC inlier count on the winning keyframe is a *geometric* confidence.

Pipeline of ``query``: (1) kNN of every query descriptor against all stored descriptors (brute
force, ``torch.cdist`` in chunks bounded to ~``chunk_bytes``), (2) each query descriptor gives one
vote to each keyframe owning one of its ``knn`` neighbours within ``max_distance``, (3) the
``num_verify`` keyframes with most votes are verified: mutual-nearest-neighbour matches between
query and keyframe, then OpenCV RANSAC (fundamental by default; homography or affine), (4) ranked by
inliers (then votes). Core module: no rclpy; the node uses ``PlaceRecognizer`` (keyframe ids,
keyframe stamps, keyframe cadence, load/save of the database file) on top of the database.

Bounded memory: at most ``max_keyframes`` keyframes and ``max_descriptors`` descriptors in total;
a keyframe keeps at most ``max_per_keyframe`` features (best by score); when a bound is hit the
*oldest* keyframes are evicted first (FIFO), which suits a robot that revisits places it saw long
ago only when they are still in the window: size the bounds for the loop lengths you expect.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union

import cv2
import numpy as np
import torch

from .geometry import VerifyConfig, verify_matches
from .matching import MatcherConfig, match_descriptors
from .types import Features

logger = logging.getLogger(__name__)

KeyframeId = Union[int, str]
VERIFY_MODELS = ("fundamental", "homography", "affine")
FILE_VERSION = 1


@dataclass
class Candidate:
    """One ranked loop candidate. ``score`` = inliers when verified, else votes."""

    keyframe_id: KeyframeId
    votes: int
    inliers: int
    score: float
    #: (M, 2) int64 inlier matches [query index, keyframe index] (empty when not verified)
    matches: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    meta: dict = field(default_factory=dict)


@dataclass
class _Keyframe:
    keypoints: np.ndarray  # (N, 2) float32
    descriptors: torch.Tensor  # (N, D) float32, CPU
    image_size: tuple[int, int]
    meta: dict


@dataclass
class DatabaseConfig:
    max_keyframes: int = 2000
    max_descriptors: int = 1_000_000
    max_per_keyframe: int = 1000
    knn: int = 5  # neighbours per query descriptor that vote
    max_distance: float = 0.0  # L2 distance cut for votes and matches; 0 = none
    num_verify: int = 10  # candidates (by votes) that get RANSAC
    verify_model: str = "fundamental"  # fundamental | homography | affine
    ransac_threshold: float = 3.0  # pixels
    ransac_confidence: float = 0.999
    min_inliers: int = 15  # below this a candidate is returned but marked by inliers only
    chunk_bytes: int = 64 * 1024 * 1024  # distance-matrix budget per chunk

    def validate(self) -> None:
        for k in ("max_keyframes", "max_descriptors", "max_per_keyframe", "knn", "num_verify"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1")
        if self.verify_model not in VERIFY_MODELS:
            raise ValueError(f"verify_model must be one of {VERIFY_MODELS}")
        if self.max_distance < 0 or self.ransac_threshold <= 0:
            raise ValueError("max_distance must be >= 0 and ransac_threshold > 0")


class KeyframeDatabase:
    """Keyframes (local features) with kNN voting + RANSAC verification. Not thread-safe: call
    it from one thread (the node's worker) or guard it with a lock."""

    def __init__(self, max_keyframes: int = 2000, max_descriptors: int = 1_000_000, **kw: Any):
        self.config = DatabaseConfig(max_keyframes=int(max_keyframes),
                                     max_descriptors=int(max_descriptors), **kw)
        self.config.validate()
        self._frames: OrderedDict[KeyframeId, _Keyframe] = OrderedDict()
        self._num_desc = 0
        self._dim: int | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor, list[KeyframeId]] | None = None

    # ------------------------------------------------------------------ contents
    def __len__(self) -> int:
        return len(self._frames)

    def __contains__(self, keyframe_id: KeyframeId) -> bool:
        return keyframe_id in self._frames

    @property
    def num_descriptors(self) -> int:
        return self._num_desc

    @property
    def keyframe_ids(self) -> list[KeyframeId]:
        return list(self._frames)

    @property
    def descriptor_dim(self) -> int | None:
        """Dimension of the stored descriptors (None while no keyframe has a feature)."""
        return self._dim

    def meta(self, keyframe_id: KeyframeId) -> dict:
        """A copy of the ``meta`` stored with a keyframe (``KeyError`` when it is not stored)."""
        return dict(self._frames[keyframe_id].meta)

    def set_max_keyframes(self, max_keyframes: int) -> None:
        """Change the keyframe bound; keyframes over it are evicted now, oldest first."""
        max_keyframes = int(max_keyframes)
        if max_keyframes < 1:
            raise ValueError("max_keyframes must be >= 1")
        self.config.max_keyframes = max_keyframes
        while len(self._frames) > max_keyframes:
            self.remove(next(iter(self._frames)))

    def add(self, keyframe_id: KeyframeId, features: Features, meta: dict | None = None) -> None:
        """Store a keyframe (replaces one with the same id). ``meta`` must be JSON-serialisable
        (it is saved with the database): e.g. stamp, pose."""
        if not isinstance(keyframe_id, (int, str)) or isinstance(keyframe_id, bool):
            raise TypeError("keyframe_id must be an int or a str")
        meta = dict(meta or {})
        json.dumps(meta)  # fail now, not at save time
        f = features.float().to("cpu")
        if self._dim is not None and len(f) and f.descriptor_dim != self._dim:
            raise ValueError(f"descriptor dim {f.descriptor_dim} != database dim {self._dim}")
        cap = self.config.max_per_keyframe
        if len(f) > cap:
            f = f.select(torch.topk(f.scores, cap).indices)
        if keyframe_id in self._frames:
            self._remove(keyframe_id)
        self._frames[keyframe_id] = _Keyframe(f.keypoints.numpy().astype(np.float32),
                                              f.descriptors.contiguous(), tuple(f.image_size), meta)
        if len(f):
            self._dim = f.descriptor_dim
        self._num_desc += len(f)
        self._cache = None
        self._evict()

    def remove(self, keyframe_id: KeyframeId) -> None:
        self._remove(keyframe_id)
        self._cache = None

    def _remove(self, keyframe_id: KeyframeId) -> None:
        kf = self._frames.pop(keyframe_id)
        self._num_desc -= int(kf.descriptors.shape[0])

    def _evict(self) -> None:
        c = self.config
        while len(self._frames) > 1 and (len(self._frames) > c.max_keyframes
                                         or self._num_desc > c.max_descriptors):
            oldest = next(iter(self._frames))
            logger.debug("place recognition: evicting keyframe %r", oldest)
            self._remove(oldest)

    def _stacked(self) -> tuple[torch.Tensor, torch.Tensor, list[KeyframeId]]:
        """All descriptors ``(N, D)`` and their owner slot ``(N,)``, rebuilt after changes."""
        if self._cache is None:
            ids = list(self._frames)
            descs = [self._frames[k].descriptors for k in ids]
            owner = [torch.full((d.shape[0],), i, dtype=torch.long) for i, d in enumerate(descs)]
            dim = self._dim or 1
            self._cache = (torch.cat(descs) if descs else torch.zeros(0, dim),
                           torch.cat(owner) if owner else torch.zeros(0, dtype=torch.long), ids)
        return self._cache

    # ------------------------------------------------------------------ query
    def votes(self, features: Features, allowed: set[KeyframeId] | None = None
              ) -> dict[KeyframeId, int]:
        """kNN voting: each query descriptor votes once for every keyframe among its ``knn``
        nearest stored descriptors (restricted to ``allowed`` keyframes when given)."""
        db, owner, ids = self._stacked()
        q = features.float().descriptors.to("cpu")
        if db.shape[0] == 0 or q.shape[0] == 0:
            return {}
        if allowed is not None:
            keep_slot = torch.tensor([k in allowed for k in ids], dtype=torch.bool)
            mask = keep_slot[owner]
            db, owner = db[mask], owner[mask]
            if db.shape[0] == 0:
                return {}
        k = min(self.config.knn, db.shape[0])
        rows = max(1, self.config.chunk_bytes // (4 * db.shape[0]))
        counts = torch.zeros(len(ids), dtype=torch.long)
        for s in range(0, q.shape[0], rows):
            d = torch.cdist(q[s:s + rows], db)
            dist, nn_idx = torch.topk(d, k, dim=1, largest=False)
            slots = owner[nn_idx]  # (r, k)
            if self.config.max_distance > 0:
                slots = torch.where(dist <= self.config.max_distance, slots, -1)
            # one vote per (query descriptor, keyframe): unique (row, slot) pairs
            rows_idx = torch.arange(slots.shape[0])[:, None].expand_as(slots)
            valid = slots >= 0
            pairs = torch.unique(rows_idx[valid] * len(ids) + slots[valid])
            counts += torch.bincount(pairs % len(ids), minlength=len(ids))
        return {ids[i]: int(c) for i, c in enumerate(counts.tolist()) if c > 0}

    def query(self, features: Features, top_k: int = 5, verify: bool = True,
              exclude: Iterable[KeyframeId] = (), exclude_recent: int = 0) -> list[Candidate]:
        """Ranked loop candidates for ``features``.

        ``exclude``: ids never returned (e.g. the current keyframe); ``exclude_recent``: skip the
        N most recently added keyframes (temporal neighbours are not loops).
        """
        banned = set(exclude)
        if exclude_recent > 0:
            banned |= set(list(self._frames)[-int(exclude_recent):])
        allowed = {k for k in self._frames if k not in banned}
        votes = self.votes(features, allowed)
        ranked = sorted(votes.items(), key=lambda kv: -kv[1])
        if not verify:
            return [Candidate(k, v, 0, float(v), meta=dict(self._frames[k].meta))
                    for k, v in ranked[:top_k]]
        out = []
        for kf_id, v in ranked[: max(self.config.num_verify, top_k)]:
            matches = self.verify(features, kf_id)
            out.append(Candidate(kf_id, v, int(matches.shape[0]), float(matches.shape[0]), matches,
                                 dict(self._frames[kf_id].meta)))
        out.sort(key=lambda c: (-c.inliers, -c.votes))
        return out[:top_k]

    def verify(self, features: Features, keyframe_id: KeyframeId) -> np.ndarray:
        """Mutual-NN matches to a keyframe, RANSAC-verified: inlier ``(M, 2)`` [query, keyframe].

        The same matcher and verification as the frame-to-frame front-end
        (``matching.match_descriptors``, ``geometry.verify_matches``), with MAGSAC."""
        kf = self._frames[keyframe_id]
        f = features.float().to("cpu")
        c = self.config
        result = match_descriptors(f.descriptors, kf.descriptors,
                                   MatcherConfig(mutual=True, max_distance=c.max_distance))
        result = verify_matches(f.keypoints.numpy(), kf.keypoints, result, VerifyConfig(
            model=c.verify_model, method="magsac", threshold_px=c.ransac_threshold,
            confidence=c.ransac_confidence, max_iters=10000, min_inliers=0))
        return result.matches[result.inliers] if result.model is not None else \
            np.zeros((0, 2), np.int64)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` (no pickles): arrays plus a JSON header; atomic (temp + rename)."""
        p = Path(path)
        ids = list(self._frames)
        frames = [self._frames[k] for k in ids]
        counts = np.array([f.keypoints.shape[0] for f in frames], np.int64)
        dim = self._dim or 1
        header = {
            "version": FILE_VERSION,
            "config": asdict(self.config),
            "ids": ids,
            "image_sizes": [list(f.image_size) for f in frames],
            "metas": [f.meta for f in frames],
            "dim": dim,
        }
        kp = np.concatenate([f.keypoints for f in frames]) if frames else np.zeros((0, 2), np.float32)
        de = (torch.cat([f.descriptors for f in frames]).numpy() if frames
              else np.zeros((0, dim), np.float32))
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp.npz")
        np.savez(tmp, header=np.array(json.dumps(header)), counts=counts,
                 keypoints=kp.astype(np.float32), descriptors=de.astype(np.float32))
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KeyframeDatabase":
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            if header.get("version") != FILE_VERSION:
                raise ValueError(f"{path}: unsupported keyframe database version {header.get('version')}")
            counts, kp, de = z["counts"], z["keypoints"], z["descriptors"]
        db = cls(**header["config"])
        starts = np.concatenate([[0], np.cumsum(counts)])
        for i, kf_id in enumerate(header["ids"]):
            a, b = int(starts[i]), int(starts[i + 1])
            db._frames[kf_id] = _Keyframe(kp[a:b].copy(), torch.from_numpy(de[a:b].copy()),
                                          tuple(header["image_sizes"][i]), header["metas"][i])
            db._num_desc += b - a
        db._dim = int(header["dim"]) if db._num_desc else None
        return db


class PlaceRecognizer:
    """Keyframe database of one feature stream (the node's ``place_recognition.*``).

    Adds what a stream needs on top of ``KeyframeDatabase``: integer keyframe ids from a running
    counter (continued after a loaded file), every keyframe's image stamp ``(sec, nanosec)`` kept
    in ``stamps`` (and in the saved ``meta``), the keyframe cadence (``due``), the candidate
    filter by inliers, and the database file (``open`` / ``save``). Not thread-safe: one thread.

    Errors of ``open`` are ``ConfigError`` whose text starts with the setting's name
    (``max_keyframes ...``, ``database ...``) so a caller can prefix its own parameter names.
    """

    #: keyframe ids must fit the uint32 ``keyframe_id`` of ``~/loop_candidates``
    MAX_ID = 2**32 - 1

    def __init__(self, db: KeyframeDatabase, path: str = "") -> None:
        self.db = db
        self.path = path
        #: keyframe id -> (sec, nanosec) of its image stamp; ids of evicted keyframes are pruned
        #: (ids grow, eviction is FIFO).
        self.stamps: dict[int, tuple[int, int]] = {}
        self.next_id = 0
        self.since_keyframe: int | None = None  # processed frames since the last keyframe
        self.saved = False
        self.loaded = False  # True when ``open`` read an existing file
        for kf_id in db.keyframe_ids:
            meta = db.meta(kf_id)
            self.stamps[kf_id] = (int(meta.get("stamp_sec", 0)), int(meta.get("stamp_nanosec", 0)))
            self.next_id = max(self.next_id, kf_id + 1)

    @classmethod
    def open(cls, path: str | os.PathLike | None, max_keyframes: int,
             descriptor_dim: int | None = None, method: str = "") -> "PlaceRecognizer":
        """A new database, or the one in ``path`` when that file exists (integer keyframe ids
        in ``[0, 2^32 - 1)``, ``descriptor_dim``-D descriptors; trimmed to ``max_keyframes``,
        oldest first). ``path`` is where ``save`` writes; empty = in memory only."""
        from .extractors.base import ConfigError

        max_keyframes = int(max_keyframes)
        if max_keyframes < 1:
            raise ConfigError(f"max_keyframes must be >= 1, got {max_keyframes}")
        path = str(Path(path).expanduser()) if path else ""
        if not (path and Path(path).is_file()):
            return cls(KeyframeDatabase(max_keyframes=max_keyframes), path)
        try:
            db = KeyframeDatabase.load(path)
        except Exception as exc:  # corrupt/foreign file: a configuration error
            raise ConfigError(f"database '{path}' cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from exc
        bad = [k for k in db.keyframe_ids if isinstance(k, bool) or not isinstance(k, int)
               or not 0 <= k < cls.MAX_ID]
        if bad:
            raise ConfigError(f"database '{path}': keyframe ids must be integers in "
                              f"[0, 2^32 - 1), got {bad[:5]}")
        dim = db.descriptor_dim
        if dim is not None and descriptor_dim is not None and int(dim) != int(descriptor_dim):
            raise ConfigError(f"database '{path}' holds {dim}-D descriptors but method "
                              f"'{method}' gives {descriptor_dim}-D")
        db.set_max_keyframes(max_keyframes)
        recognizer = cls(db, path)
        recognizer.loaded = True
        return recognizer

    def __len__(self) -> int:
        return len(self.db)

    def due(self, every: int) -> bool:
        """Count one processed frame; True when it is a keyframe (the first one always is)."""
        due = self.since_keyframe is None or self.since_keyframe + 1 >= every
        self.since_keyframe = 0 if due else self.since_keyframe + 1
        return due

    def query(self, features: Features, top_k: int, exclude_recent: int, min_inliers: int
              ) -> list[Candidate]:
        """Verified candidates with at least ``min_inliers`` inliers, best first."""
        cands = self.db.query(features, top_k=int(top_k), exclude_recent=int(exclude_recent))
        return [c for c in cands if c.inliers >= int(min_inliers)]

    def add(self, features: Features, stamp: tuple[int, int]) -> int:
        """Store ``features`` as the next keyframe (image stamp ``(sec, nanosec)``); its id."""
        kf_id = self.next_id
        self.next_id += 1
        st = (int(stamp[0]), int(stamp[1]))
        self.db.add(kf_id, features, {"stamp_sec": st[0], "stamp_nanosec": st[1]})
        self.stamps[kf_id] = st
        while self.stamps:
            oldest = next(iter(self.stamps))
            if oldest in self.db:
                break
            del self.stamps[oldest]
        return kf_id

    def save(self) -> bool:
        """Write the database to ``path`` once; False when there is nothing to do (no path,
        already saved). Raises what the write raises."""
        if not self.path or self.saved:
            return False
        self.db.save(self.path)
        self.saved = True
        return True
