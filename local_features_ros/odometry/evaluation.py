"""One odometry run over a dataset folder, scored against its ground truth: what
``local-features evaluate odometry`` and ``bench/bench_odometry.py`` both do.

Why shared: the numbers in ``docs/odometry.md`` must come from exactly the code path a user
runs, including folder loading, per-frame timing and the metric definitions.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import OdometryConfig
from .datasets import RGBDSequence, StereoSequence, write_kitti_trajectory
from .metrics import TrajectoryMetrics, trajectory_metrics
from .runner import SequenceRun, run_frames
from .visual_odometry import RGBDOdometry, StereoOdometry

logger = logging.getLogger(__name__)

__all__ = ["OdometryEvaluation", "make_odometry", "evaluate_odometry", "format_summary"]


@dataclass
class OdometryEvaluation:
    sensor: str  # stereo | rgbd
    run: SequenceRun
    metrics: TrajectoryMetrics | None  # None without ground truth

    def report(self) -> dict[str, Any]:
        """JSON-ready summary (metrics, counts, timings, per-frame states)."""
        return {
            "sensor": self.sensor,
            "metrics": self.metrics.as_dict() if self.metrics is not None else None,
            "run": self.run.summary(),
            "per_frame": [{"frame": r.frame_index, "stamp": r.stamp, "state": r.state.value,
                           "keyframe": r.is_keyframe, "inliers": r.num_inliers,
                           "depth_points": r.num_depth, "map_points": r.num_map_points,
                           "ms": {k: round(v, 2) for k, v in r.timings_ms.items()}}
                          for r in self.run.results],
            "cpu": platform.processor() or platform.machine(),
        }


def make_odometry(sensor: str, extractor: Any, sequence: StereoSequence | RGBDSequence,
                  config: OdometryConfig, matcher: Any = None, depth_factor: float = 5000.0
                  ) -> StereoOdometry | RGBDOdometry:
    """The front-end for ``sensor`` with the sequence's camera."""
    if sensor == "stereo":
        return StereoOdometry(extractor, sequence.camera, config, matcher=matcher)
    if sensor == "rgbd":
        assert isinstance(sequence, RGBDSequence)
        return RGBDOdometry(extractor, sequence.camera, config, depth_factor=depth_factor,
                            distortion=sequence.distortion)
    raise ValueError(f"unknown sensor '{sensor}' (stereo | rgbd)")


def evaluate_odometry(sensor: str, extractor: Any, sequence: StereoSequence | RGBDSequence,
                      config: OdometryConfig, matcher: Any = None, depth_factor: float = 5000.0,
                      max_frames: int = 0, trajectory: Path | None = None,
                      log_every: int = 0, pipelined: bool = True) -> OdometryEvaluation:
    """Run every frame (the first ``max_frames`` when > 0), write the KITTI-format
    ``trajectory`` file if asked, and score against the ground truth when there is one.
    ``pipelined``: measure the next frames while the current one is tracked (two threads,
    ``runner.run_frames``); the poses are the same either way."""
    odometry = make_odometry(sensor, extractor, sequence, config, matcher, depth_factor)
    n = len(sequence) if max_frames <= 0 else min(max_frames, len(sequence))
    frames = (f for _, f in zip(range(n), sequence.frames()))
    try:
        run = run_frames(odometry, frames, log_every=log_every, pipelined=pipelined)
    finally:
        odometry.close()
    if trajectory is not None:
        write_kitti_trajectory(Path(trajectory), run.poses)
    metrics = None
    gt = sequence.ground_truth
    if gt is not None and sum(T is not None for T in gt[:n]) >= 2:
        metrics = trajectory_metrics(run.poses, list(gt[:n]))
    return OdometryEvaluation(sensor, run, metrics)


def format_summary(method: str, ev: OdometryEvaluation) -> str:
    """One line for the terminal."""
    s = ev.run.summary()
    line = (f"{method} ({ev.sensor}): {s['frames']} frames, {s['frames_per_second']:.1f} "
            f"frames/s, {s['keyframes']} keyframes, losses {s['losses']}")
    m = ev.metrics
    if m is not None:
        kitti = (f"t_rel {m.kitti_t_rel_percent:.2f} % r_rel {m.kitti_r_rel_deg_per_100m:.3f} "
                 "deg/100m" if m.kitti_t_rel_percent is not None else "t_rel/r_rel n/a")
        line += (f"  ATE {m.ate_rmse_m:.3f} m  end drift "
                 f"{_pct(m.end_drift_percent)} of {m.path_length_m:.1f} m  RPE "
                 f"{m.rpe_trans_rmse_m:.3f} m {m.rpe_rot_rmse_deg:.3f} deg  {kitti}")
    return line


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.2f} %"
