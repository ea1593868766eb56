"""The local map: recent keyframes and the landmarks (3D points) they observe.

Why a local map and not frame-to-frame: a landmark seen by many keyframes is tracked against its
one (bundle-adjusted) position instead of being re-triangulated from each new stereo pair, so
depth noise stops adding up from frame to frame. Only a sliding set of keyframes is kept
(``retain``); a landmark that no kept keyframe observes is forgotten, which bounds memory and
time on arbitrarily long sequences (visual odometry, not SLAM: nothing is ever re-visited).

Book-keeping: each keyframe stores, per keypoint, the id of the landmark it observes (-1 none);
each landmark stores the keyframes observing it and the keypoint index there, and carries the
descriptor of its most recent observation (appearance changes slowly along a trajectory).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .camera import transform_points
from .types import FrameMeasurement

__all__ = ["Keyframe", "Landmark", "LocalMap"]


@dataclass
class Keyframe:
    id: int
    frame_index: int
    stamp: float
    T_world_cam: np.ndarray  # (4, 4)
    measurement: FrameMeasurement
    landmark_ids: np.ndarray  # (N,) int64, -1 = no landmark
    tracked: int  # map points this frame tracked when it was made a keyframe


@dataclass
class Landmark:
    id: int
    position: np.ndarray  # (3,) world
    descriptor: torch.Tensor  # (D,)
    observations: dict[int, int] = field(default_factory=dict)  # keyframe id -> keypoint index
    visible: int = 0  # frames where it projected into the image (tracking)
    found: int = 0  # frames where it was a PnP inlier


class LocalMap:
    """Keyframes in insertion order and their landmarks."""

    def __init__(self, retain: int, first_landmark_id: int = 0) -> None:
        """``first_landmark_id``: where landmark ids start, so that a map replacing another
        never reuses an id (a consumer matches frames by landmark id)."""
        if retain < 1:
            raise ValueError("retain must be >= 1 keyframe")
        self.retain = int(retain)
        self.keyframes: dict[int, Keyframe] = {}
        self.landmarks: dict[int, Landmark] = {}
        self._next_kf = 0
        self._next_lm = int(first_landmark_id)

    @property
    def next_landmark_id(self) -> int:
        return self._next_lm

    def __len__(self) -> int:
        return len(self.keyframes)

    @property
    def last_keyframe(self) -> Keyframe | None:
        return next(reversed(self.keyframes.values())) if self.keyframes else None

    def window(self, n: int) -> list[Keyframe]:
        """The newest ``n`` keyframes, oldest first."""
        return list(self.keyframes.values())[-n:]

    # ------------------------------------------------------------------ growth
    def add_keyframe(self, meas: FrameMeasurement, T_world_cam: np.ndarray, frame_index: int,
                     associations: np.ndarray, tracked: int, max_depth: float = 0.0
                     ) -> Keyframe:
        """Insert a keyframe: ``associations`` ``(K, 2)`` [keypoint, landmark id] become
        observations; every other keypoint with a measured 3D point (nearer than ``max_depth``
        m when > 0) becomes a new landmark. Old keyframes beyond ``retain`` are dropped."""
        n = len(meas)
        ids = np.full(n, -1, np.int64)
        kf = Keyframe(self._next_kf, int(frame_index), meas.stamp, np.array(T_world_cam, float),
                      meas, ids, int(tracked))
        self._next_kf += 1
        self.keyframes[kf.id] = kf
        desc = meas.features.descriptors
        assoc = np.asarray(associations, np.int64).reshape(-1, 2)
        # One gather per keyframe; each landmark then holds a row of it (descriptors are only
        # ever replaced, never written in place).
        assoc_rows = desc[torch.from_numpy(assoc[:, 0])].unbind(0) if len(assoc) else ()
        for (i, lm_id), row in zip(assoc, assoc_rows):
            lm = self.landmarks.get(int(lm_id))
            if lm is None or ids[i] >= 0:
                continue
            lm.observations[kf.id] = int(i)
            lm.descriptor = row
            ids[i] = lm.id
        new = np.flatnonzero((ids < 0) & meas.has_depth)
        if max_depth > 0 and len(new):
            new = new[meas.points_cam[new, 2] <= max_depth]
        if len(new):
            world = transform_points(kf.T_world_cam, meas.points_cam[new])
            rows = desc[torch.from_numpy(new)].unbind(0)
            first = self._next_lm
            for k, (i, p, row) in enumerate(zip(new.tolist(), world, rows)):
                lm_id = first + k
                self.landmarks[lm_id] = Landmark(lm_id, p, row, {kf.id: i})
            ids[new] = np.arange(first, first + len(new))
            self._next_lm += len(new)
        while len(self.keyframes) > self.retain:
            self.remove_keyframe(next(iter(self.keyframes)))
        return kf

    # ------------------------------------------------------------------ pruning
    def remove_keyframe(self, kf_id: int) -> None:
        kf = self.keyframes.pop(kf_id)
        for lm_id in kf.landmark_ids[kf.landmark_ids >= 0]:
            lm = self.landmarks.get(int(lm_id))
            if lm is None:
                continue
            lm.observations.pop(kf_id, None)
            if not lm.observations:
                del self.landmarks[lm.id]

    def remove_observation(self, kf_id: int, lm_id: int) -> None:
        """Drop one observation (an outlier of bundle adjustment); a landmark left without
        observations is deleted."""
        lm = self.landmarks.get(lm_id)
        kf = self.keyframes.get(kf_id)
        if lm is None or kf is None:
            return
        i = lm.observations.pop(kf_id, None)
        if i is not None:
            kf.landmark_ids[i] = -1
        if not lm.observations:
            self.remove_landmark(lm_id)

    def remove_landmark(self, lm_id: int) -> None:
        lm = self.landmarks.pop(lm_id, None)
        if lm is None:
            return
        for kf_id, i in lm.observations.items():
            kf = self.keyframes.get(kf_id)
            if kf is not None and kf.landmark_ids[i] == lm_id:
                kf.landmark_ids[i] = -1

    def cull(self, min_found_ratio: float = 0.25, min_visible: int = 4) -> int:
        """Remove landmarks that were in view at least ``min_visible`` times but tracked in
        fewer than ``min_found_ratio`` of them (bad depth or an unstable descriptor); returns
        how many."""
        bad = [lm.id for lm in self.landmarks.values()
               if lm.visible >= min_visible and lm.found < min_found_ratio * lm.visible]
        for lm_id in bad:
            self.remove_landmark(lm_id)
        return len(bad)

    # ------------------------------------------------------------------ queries
    def local_landmarks(self) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Ids ``(M,)``, world positions ``(M, 3)`` and descriptors ``(M, D)`` of every
        landmark (all are observed by a kept keyframe)."""
        if not self.landmarks:
            return np.zeros(0, np.int64), np.zeros((0, 3)), torch.zeros(0, 0)
        lms = list(self.landmarks.values())
        ids = np.fromiter((lm.id for lm in lms), np.int64, len(lms))
        pos = np.stack([lm.position for lm in lms])
        desc = torch.stack([lm.descriptor for lm in lms])
        return ids, pos, desc
