"""What the odometry stages hand each other, and what a caller gets per frame.

Why explicit dataclasses: a stereo pair and an RGB-D frame become the same
``FrameMeasurement`` (keypoints with an optional 3D point and right-image column each), so
tracking, the map and bundle adjustment never ask which sensor produced a frame. A ROS node
publishes ``OdometryResult`` field by field (pose, covariance, state, counts, timings).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..types import Features

__all__ = ["FrameMeasurement", "TrackingState", "OdometryResult"]


@dataclass
class FrameMeasurement:
    """One frame's keypoints with what the sensor says about their depth.

    ``keypoints`` are in the rectified (undistorted) left/colour image, the pixels the geometry
    uses. Rows without a depth have NaN in ``u_right`` and ``points_cam``.

    ``depth_pending``: the depths are measured on first need (``resolve_depth``; ``has_depth``
    and ``num_depth`` call it). Tracking a frame against the map needs only its keypoints and
    descriptors; the frame's own 3D points matter only when it starts a map, becomes a keyframe
    or cannot be tracked - so a stereo front-end extracts and matches the right image only
    then (on KITTI two frames in three skip it)."""

    features: Features  # left / colour image, float32 on the CPU
    keypoints: np.ndarray  # (N, 2) float64 pixels
    u_right: np.ndarray  # (N,) float64 right-image column (real or virtual), NaN = none
    points_cam: np.ndarray  # (N, 3) float64 camera-frame points, NaN rows = none
    sigma: np.ndarray  # (N,) float64 keypoint position std in px (1 x the keypoint's scale)
    stamp: float
    #: Returns ``(u_right, points_cam)`` when the depths are first needed; None = measured.
    depth_pending: Callable[[], tuple[np.ndarray, np.ndarray]] | None = field(default=None,
                                                                             repr=False)

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def depth_known(self) -> bool:
        """Whether the depths were measured (``resolve_depth`` ran or was not needed)."""
        return self.depth_pending is None

    def resolve_depth(self) -> None:
        """Measure the depths now if they were left for later (idempotent)."""
        if self.depth_pending is not None:
            pending, self.depth_pending = self.depth_pending, None
            self.u_right, self.points_cam = pending()

    @property
    def has_depth(self) -> np.ndarray:
        """(N,) bool: the keypoint has a measured 3D point."""
        self.resolve_depth()
        return np.isfinite(self.u_right)

    @property
    def num_depth(self) -> int:
        return int(self.has_depth.sum())


class TrackingState(str, enum.Enum):
    """Per-frame outcome. ``initialised``: the first frame of a map (the very first, or after a
    loss when relocalisation failed: ``reinitialised``); ``tracking``: pose from the map;
    ``relocalised``: tracked again after a loss, against the same map; ``lost``: no pose from
    the images (the last good pose is reported)."""

    INITIALISED = "initialised"
    TRACKING = "tracking"
    RELOCALISED = "relocalised"
    REINITIALISED = "reinitialised"
    LOST = "lost"

    @property
    def ok(self) -> bool:
        return self is not TrackingState.LOST


@dataclass
class OdometryResult:
    """The odometry's answer for one frame.

    ``T_world_cam``: 4x4 camera-to-world pose of the left/colour camera, world = the first
    camera. ``covariance``: 6x6 marginal covariance of the newest keyframe pose after bundle
    adjustment, in gtsam's Pose3 tangent order [rotation (rad), translation (m)] in the camera
    frame; None on frames without a bundle adjustment. Counts: ``num_features`` keypoints,
    ``num_depth`` of them with a measured 3D point (-1: not measured, the frame did not need
    its own depths - ``FrameMeasurement.depth_pending``), ``num_matches`` map-point matches,
    ``num_inliers`` PnP inliers, ``num_keyframes`` / ``num_map_points`` in the local map,
    ``losses`` tracking losses so far. ``timings_ms``: per stage (extract, depth, track, map,
    bundle)."""

    frame_index: int
    stamp: float
    T_world_cam: np.ndarray
    state: TrackingState
    is_keyframe: bool
    covariance: np.ndarray | None = None
    num_features: int = 0
    num_depth: int = 0
    num_matches: int = 0
    num_inliers: int = 0
    num_keyframes: int = 0
    num_map_points: int = 0
    losses: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ba_ms(self) -> float:
        return float(self.timings_ms.get("bundle", 0.0))
