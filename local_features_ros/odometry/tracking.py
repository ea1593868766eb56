"""Frame-to-map tracking: which keypoints see which map points, and the camera pose they give.

Why guided by a prediction: the constant-velocity pose puts each map point within a few pixels
of where it will be found, so a map point is compared only with keypoints in a small window
around its projection (``association.window_pairs``); when that finds too few matches, or PnP
fails on them (a jolt, a turn right after a new map when there is no velocity yet), the window
widens, and finally every map point is compared with every keypoint (also how a lost camera is
relocalised). The pose is PnP RANSAC + refinement (``pnp.solve_pnp``) on the matched points.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .association import mutual_nn_dense, mutual_nn_pairs, window_pairs
from .camera import RectifiedCamera, invert_pose, transform_points
from .config import TrackingConfig
from .local_map import LocalMap
from .pnp import solve_pnp
from .types import FrameMeasurement

logger = logging.getLogger(__name__)

__all__ = ["TrackResult", "track_frame"]

#: A gate whose PnP keeps at least this fraction of its matches is trusted without trying the
#: wider ones (correct tracking keeps 40-80 %; a window filled by a wrong prior, ~10 %).
_CONFIDENT_INLIER_RATIO = 0.3


@dataclass
class TrackResult:
    """``associations`` ``(K, 2)`` [keypoint index, landmark id] of the PnP inliers."""

    T_world_cam: np.ndarray
    associations: np.ndarray
    num_matches: int
    search: str  # window | wide | global: the gate that produced the matches

    @property
    def num_inliers(self) -> int:
        return int(len(self.associations))


def track_frame(meas: FrameMeasurement, local_map: LocalMap, camera: RectifiedCamera,
                predicted: np.ndarray | None, cfg: TrackingConfig, narrow: bool = True
                ) -> TrackResult | None:
    """Match ``meas`` to the map and solve its pose; None when tracking failed (too few
    matches or PnP inliers). ``predicted`` None = no prior (global search only); ``narrow``
    False means the prior is only a guess (no velocity known yet, or the camera was lost): the
    small window is skipped and every wider gate is tried, keeping the pose with the most
    inliers (rare frames, so the extra search costs little)."""
    ids, world, desc = local_map.local_landmarks()
    if len(ids) < cfg.min_inliers or len(meas) < cfg.min_inliers:
        return None
    kp = meas.keypoints
    frame_desc = meas.features.descriptors
    gates: list[tuple[str, float]] = [("global", np.inf)]
    uv: np.ndarray | None = None
    if predicted is not None:
        uv, front = camera.project(transform_points(invert_pose(predicted), world))
        uv[~(front & camera.inside(uv))] = np.nan
        gates = ([("window", cfg.search_radius)] if narrow else []) \
            + [("wide", cfg.wide_radius)] + gates
    best: tuple[object, np.ndarray, str] | None = None
    for search, radius in gates:
        # The next gate is tried when this one found too few matches, or PnP failed or kept
        # few of them (a wrong prior fills a small window with wrong matches).
        if np.isfinite(radius):
            matches, _ = mutual_nn_pairs(desc, frame_desc, window_pairs(uv, kp, radius),
                                         cfg.ratio)
            if len(matches) < cfg.min_matches:
                continue
        else:
            matches, _ = mutual_nn_dense(desc, frame_desc, cfg.ratio)
            if len(matches) < cfg.min_inliers:
                break
        res = solve_pnp(world[matches[:, 0]], kp[matches[:, 1]], camera.K, predicted,
                        cfg.ransac_threshold, cfg.ransac_iterations, cfg.confidence,
                        cfg.min_inliers)
        if res is None:
            logger.debug("PnP failed on %d matches (%s search)", len(matches), search)
            continue
        if best is None or res.num_inliers > best[0].num_inliers:
            best = (res, matches, search)
        if narrow and res.num_inliers >= _CONFIDENT_INLIER_RATIO * len(matches):
            break
    if best is None:
        return None
    res, matches, search = best
    inl = matches[res.inliers]
    # Visibility statistics for map culling, with the solved pose.
    uv, front = camera.project(transform_points(invert_pose(res.T_world_cam), world))
    in_view = front & camera.inside(uv)
    for j in np.flatnonzero(in_view):
        local_map.landmarks[int(ids[j])].visible += 1
    for j in inl[:, 0]:
        local_map.landmarks[int(ids[j])].found += 1
    associations = np.stack([inl[:, 1], ids[inl[:, 0]]], 1).astype(np.int64)
    return TrackResult(res.T_world_cam, associations, int(len(matches)), search)
