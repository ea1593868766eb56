"""Trajectory accuracy against ground truth: ATE, end-point drift, RPE and KITTI's t_rel/r_rel.

What each number means (``docs/odometry.md`` has the user-facing version):

- ``ate_rmse_m``: RMSE of camera positions after the rigid (SE(3), no scale) Umeyama alignment
  of the estimate onto the ground truth - how well the *shape* of the trajectory is recovered.
- ``ate_rmse_unaligned_m``: the same without alignment (both start at the identity).
- ``end_drift_percent``: unaligned distance between the last estimated and true positions,
  divided by the length of the true path - what a user sees after driving a route.
- ``rpe_trans_rmse_m`` / ``rpe_rot_rmse_deg``: RMSE of the frame-to-frame relative pose
  error (Sturm et al. 2012), delta one frame.
- ``kitti_t_rel_percent`` / ``kitti_r_rel_deg_per_100m``: the KITTI odometry benchmark's
  average over all sub-sequences of 100, 200, ..., 800 m (start frames every 10 frames) of the
  relative translation error divided by the length, and of the rotation error per 100 m; None
  (reported as n/a) when the path is shorter than 100 m.

ATE and RPE use the package's own definitions (``evaluation.metrics``: Umeyama alignment without
scale, Sturm et al.'s relative error), the KITTI segment metric is written here from the
benchmark's definition. ``test/odometry/test_odometry.py`` checks every number against evo (``evo.core``,
GPL-3.0: a test-time cross-check, never imported by the package) and against values computed by
hand on trajectories built to have them. Only frames with a ground-truth pose take
part; estimate and ground truth are both re-expressed relative to the first such frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from ..evaluation.metrics import absolute_trajectory_error, relative_pose_errors
from .camera import invert_pose

__all__ = ["TrajectoryMetrics", "trajectory_metrics", "kitti_segment_errors", "path_length",
           "KITTI_LENGTHS"]

#: Sub-sequence lengths (m) of the KITTI odometry benchmark.
KITTI_LENGTHS = (100, 200, 300, 400, 500, 600, 700, 800)


@dataclass
class TrajectoryMetrics:
    frames: int
    path_length_m: float
    ate_rmse_m: float
    ate_rmse_unaligned_m: float
    end_error_m: float
    end_drift_percent: float | None
    rpe_trans_rmse_m: float
    rpe_rot_rmse_deg: float
    kitti_t_rel_percent: float | None
    kitti_r_rel_deg_per_100m: float | None
    kitti_note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def path_length(poses: Sequence[np.ndarray]) -> float:
    p = np.array([np.asarray(T)[:3, 3] for T in poses])
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) if len(p) > 1 else 0.0


def _angle_deg(R: np.ndarray) -> float:
    c = (np.trace(R[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def kitti_segment_errors(est: Sequence[np.ndarray], gt: Sequence[np.ndarray],
                         lengths: Sequence[float] = KITTI_LENGTHS, step: int = 10
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per sub-sequence: translation error / length and rotation error (deg) / length (m),
    for every start frame ``0, step, 2 step, ...`` and every length the path still covers."""
    pos = np.array([np.asarray(T)[:3, 3] for T in gt])
    dist = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pos, axis=0), axis=1))])
    t_err, r_err = [], []
    for first in range(0, len(gt), step):
        for length in lengths:
            last = int(np.searchsorted(dist, dist[first] + length, side="left"))
            if last >= len(gt):
                continue
            d_gt = invert_pose(np.asarray(gt[first])) @ np.asarray(gt[last])
            d_est = invert_pose(np.asarray(est[first])) @ np.asarray(est[last])
            err = invert_pose(d_est) @ d_gt
            t_err.append(float(np.linalg.norm(err[:3, 3])) / length)
            r_err.append(_angle_deg(err) / length)
    return np.asarray(t_err), np.asarray(r_err)


def trajectory_metrics(estimated: Sequence[np.ndarray],
                       ground_truth: Sequence[np.ndarray | None]) -> TrajectoryMetrics:
    """Compare per-frame ``T_world_cam`` estimates with ground truth (None = no ground truth
    for that frame); at least two frames must have ground truth."""
    if len(estimated) != len(ground_truth):
        raise ValueError(f"{len(estimated)} estimated poses for {len(ground_truth)} "
                         "ground-truth entries")
    keep = [i for i, T in enumerate(ground_truth) if T is not None]
    if len(keep) < 2:
        raise ValueError("at least two frames need a ground-truth pose")
    e0 = invert_pose(np.asarray(estimated[keep[0]], float))
    g0 = invert_pose(np.asarray(ground_truth[keep[0]], float))
    est = [e0 @ np.asarray(estimated[i], float) for i in keep]
    gt = [g0 @ np.asarray(ground_truth[i], float) for i in keep]
    rpe_t, rpe_r = relative_pose_errors(est, gt, delta=1)
    length = path_length(gt)
    end = float(np.linalg.norm(est[-1][:3, 3] - gt[-1][:3, 3]))
    t_rel = r_rel = None
    if length >= KITTI_LENGTHS[0]:
        te, re = kitti_segment_errors(est, gt)
        if len(te):
            t_rel, r_rel = 100.0 * float(te.mean()), 100.0 * float(re.mean())
    note = "" if t_rel is not None else (
        f"n/a: the path is {length:.0f} m, KITTI's shortest sub-sequence is "
        f"{KITTI_LENGTHS[0]} m")
    return TrajectoryMetrics(
        frames=len(keep), path_length_m=length,
        ate_rmse_m=absolute_trajectory_error(est, gt, align=True),
        ate_rmse_unaligned_m=absolute_trajectory_error(est, gt, align=False), end_error_m=end,
        end_drift_percent=100.0 * end / length if length > 0 else None,
        rpe_trans_rmse_m=float(np.sqrt(np.mean(rpe_t ** 2))),
        rpe_rot_rmse_deg=float(np.sqrt(np.mean(rpe_r ** 2))),
        kitti_t_rel_percent=t_rel, kitti_r_rel_deg_per_100m=r_rel, kitti_note=note)
