"""Loop closure of a feature stream: every few processed frames, query the keyframe database
for earlier places, then store the frame as a keyframe.

Why here (no rclpy): which frames become keyframes, what a query returns and when the frame is
stored are per-frame core work that ``FeaturePipeline`` runs beside matching and motion; a ROS
node only turns the outcome into ``~/loop_candidates`` and ``/diagnostics``. The database and its
file are ``place_recognition.PlaceRecognizer``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from .config import Config, KeyInfo
from .conventions import ConfigError
from .place_recognition import Candidate, PlaceRecognizer
from .types import Features

__all__ = ["LoopSettings", "LoopResult", "LoopClosure"]


class LoopSettings(Config):
    """The place-recognition settings, declared once: the core reads them here and the
    ``feature_extractor`` node's ``place_recognition.*`` parameters are generated from them
    (``ros/params.py``), so both start from the same defaults.

    ``enable``, ``max_keyframes`` and ``database`` are read when the database is opened; the
    others apply to each step: a keyframe every ``keyframe_every`` processed frames; each
    keyframe queries the database for at most ``top_k`` candidates, the ``exclude_recent``
    newest keyframes left out, and keeps those verified with at least ``min_inliers`` inliers
    (60: fundamental-matrix RANSAC finds 25-55 inliers on views that do not overlap)."""

    owner: ClassVar[str] = "place recognition"
    runtime_keys: ClassVar[frozenset[str]] = frozenset(
        {"keyframe_every", "exclude_recent", "min_inliers", "top_k"})
    key_info: ClassVar[Mapping[str, KeyInfo]] = {
        "enable": KeyInfo("keep a keyframe database of this node's features and publish "
                          "RANSAC-verified loop candidates on ~/loop_candidates"),
        "keyframe_every": KeyInfo("every N-th processed frame queries the database (then "
                                  "becomes a keyframe)", int_range=(1, 1_000_000)),
        "exclude_recent": KeyInfo("the N most recent keyframes are never candidates (temporal "
                                  "neighbours are not loops)", int_range=(0, 1_000_000)),
        "min_inliers": KeyInfo("publish a candidate only with at least this many RANSAC "
                               "inliers (fundamental-matrix RANSAC finds 25-55 on views that "
                               "do not overlap)", int_range=(0, 100_000)),
        "top_k": KeyInfo("at most this many candidates per query", int_range=(1, 1000)),
        "max_keyframes": KeyInfo("database size; the oldest keyframes are evicted first",
                                 int_range=(1, 10_000_000)),
        "database": KeyInfo("keyframe database file (.npz): loaded at start when it exists, "
                            "saved at shutdown; empty = in memory only"),
    }

    enable: bool = False
    keyframe_every: int = 10
    exclude_recent: int = 5
    min_inliers: int = 60
    top_k: int = 3
    max_keyframes: int = 2000
    database: str = ""

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        """Every count within its declared ``int_range`` (the node's parameter ranges)."""
        super().validate(conf)
        for key, info in cls.key_info.items():
            if info.int_range is not None:
                low, high = info.int_range
                if not low <= conf[key] <= high:
                    raise ConfigError(f"{cls.owner}: '{key}' must be in [{low}, {high}], got "
                                      f"{conf[key]}")


@dataclass
class LoopResult:
    """What a keyframe's step found: the verified candidates (best first), the image stamp
    ``(sec, nanosec)`` of each candidate's keyframe, the query time and the database size
    after the frame was stored."""

    candidates: list[Candidate]
    stamps: dict[Any, tuple[int, int]] = field(default_factory=dict)
    query_ms: float = 0.0
    keyframes: int = 0


class LoopClosure:
    """One stream's loop closure around ``recognizer``. Not thread-safe: one thread steps it."""

    def __init__(self, recognizer: PlaceRecognizer) -> None:
        self.recognizer = recognizer

    @classmethod
    def open(cls, path: str | os.PathLike | None, max_keyframes: int,
             descriptor_dim: int | None = None, method: str = "") -> "LoopClosure":
        """The database in ``path`` when that file exists, else a new one (``PlaceRecognizer.open``:
        its ``ConfigError`` names the setting)."""
        return cls(PlaceRecognizer.open(path, max_keyframes, descriptor_dim, method))

    def __len__(self) -> int:
        return len(self.recognizer)

    def step(self, feats: Features, stamp: tuple[int, int], settings: LoopSettings
             ) -> LoopResult | None:
        """One processed frame (``stamp``: its image's ``(sec, nanosec)``). None when it is not a
        keyframe; else query, then store it. A failing query raises and stores nothing."""
        rec = self.recognizer
        if not rec.due(int(settings.keyframe_every)):
            return None
        t0 = time.perf_counter()
        good = rec.query(feats, settings.top_k, settings.exclude_recent, settings.min_inliers)
        query_ms = (time.perf_counter() - t0) * 1e3
        # Taken before ``add``, which may evict the oldest keyframe (and its stamp).
        stamps = {c.keyframe_id: rec.stamps[c.keyframe_id] for c in good}
        rec.add(feats, stamp)
        return LoopResult(good, stamps, query_ms, len(rec))

    def save(self) -> bool:
        """Write the database to its file once (``PlaceRecognizer.save``)."""
        return self.recognizer.save()
