"""Run an odometry front-end over a whole sequence and keep what evaluation needs.

Why separate from the metrics: the CLI, the benchmark and the tests all feed frames the same
way (in order, each measured then tracked, as a node would) and time the same thing: wall time
per frame (``run_frames`` says what it includes).
"""

from __future__ import annotations

import collections
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .types import OdometryResult, TrackingState

logger = logging.getLogger(__name__)

__all__ = ["SequenceRun", "run_frames"]


@dataclass
class SequenceRun:
    """Per-frame results and poses of one run; ``seconds`` = wall time inside ``process``,
    ``cpu_seconds`` = CPU time of this process meanwhile (all its threads): on a shared machine
    the wall time includes waiting for other processes, the CPU time does not."""

    results: list[OdometryResult] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def poses(self) -> list[np.ndarray]:
        return [r.T_world_cam for r in self.results]

    @property
    def frames_per_second(self) -> float:
        total = float(np.sum(self.seconds))
        return len(self.seconds) / total if total > 0 else float("nan")

    @property
    def frames_per_cpu_second(self) -> float:
        total = float(np.sum(self.cpu_seconds))
        return len(self.cpu_seconds) / total if total > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        """Counts and timings for the JSON report."""
        states = [r.state for r in self.results]
        ms = {k: float(np.median([r.timings_ms.get(k, 0.0) for r in self.results]))
              for k in ("extract", "depth", "track", "map", "bundle")}
        kf_ba = [r.ba_ms for r in self.results if r.is_keyframe and r.ba_ms > 0]
        return {
            "frames": len(self.results),
            "keyframes": int(sum(r.is_keyframe for r in self.results)),
            "losses": int(self.results[-1].losses) if self.results else 0,
            "lost_frames": int(sum(s is TrackingState.LOST for s in states)),
            "relocalised": int(sum(s is TrackingState.RELOCALISED for s in states)),
            "reinitialised": int(sum(s is TrackingState.REINITIALISED for s in states)),
            "frames_per_second": self.frames_per_second,
            "frames_per_cpu_second": self.frames_per_cpu_second,
            "median_frame_ms": 1000.0 * float(np.median(self.seconds)) if self.seconds else None,
            "median_stage_ms": ms,
            "median_bundle_ms_per_keyframe": float(np.median(kf_ba)) if kf_ba else None,
            "median_inliers": float(np.median([r.num_inliers for r in self.results])),
            "median_depth_points": float(np.median([r.num_depth for r in self.results
                                                    if r.num_depth >= 0] or [0])),
            "median_map_points": float(np.median([r.num_map_points for r in self.results])),
        }


def run_frames(odometry: Any, frames: Iterable[tuple[np.ndarray, np.ndarray, float]],
               log_every: int = 0, pipelined: bool = True, ahead: int = 2) -> SequenceRun:
    """Feed ``(image, second image or depth, stamp)`` tuples to the odometry, in order.

    ``pipelined`` (and a front-end with ``measure`` / ``update``): the next frames are measured
    (features, stereo or depth) on a worker thread, at most ``ahead`` frames in advance, while
    this thread updates the map with the oldest one; results come in input order. On two cores
    the rate is that of the slower half instead of the sum; ``ahead`` 2 lets the measuring
    half keep going through a keyframe (right image, bundle adjustment: several frames' worth
    of update work) and the update half catch up on the frames after it. Per-frame seconds are
    then the wall time this thread spent
    on the frame (reading the next frame from ``frames``, submitting its measurement, waiting
    for this one, updating): their sum is the run's wall time. Image decoding is included here
    (the worker measures meanwhile, so it cannot be taken out), unlike in the serial run; CPU
    seconds count every thread."""
    if not pipelined or not hasattr(odometry, "measure"):
        return _run_serial(odometry, frames, log_every)
    run = SequenceRun()
    wall = cpu = 0.0  # this thread's time since the last result

    def step(t0: float, c0: float, res: OdometryResult | None) -> None:
        nonlocal wall, cpu
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        if res is not None:
            run.seconds.append(wall)
            run.cpu_seconds.append(cpu)
            run.results.append(res)
            _log(res, len(run.results) - 1, wall, log_every)
            wall = cpu = 0.0

    if ahead < 1:
        raise ValueError(f"ahead must be >= 1 frame, got {ahead}")
    with ThreadPoolExecutor(1, thread_name_prefix="odometry-measure") as pool:
        pending: collections.deque[Future] = collections.deque()
        source = iter(frames)
        while True:
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                a, b, stamp = next(source)  # decodes the next frame
            except StopIteration:
                break
            pending.append(pool.submit(odometry.measure, a, b, stamp))
            done = (odometry.update(pending.popleft().result()) if len(pending) > ahead
                    else None)
            step(t0, c0, done)
        while pending:
            step(t0, c0, odometry.update(pending.popleft().result()))
            t0, c0 = time.perf_counter(), time.process_time()
    return run


def _log(res: OdometryResult, i: int, seconds: float, log_every: int) -> None:
    if log_every and i % log_every == 0:
        logger.info("frame %d: %s, %d inliers, %d keyframes, %d map points, %.0f ms", i,
                    res.state.value, res.num_inliers, res.num_keyframes,
                    res.num_map_points, 1000.0 * seconds)


def _run_serial(odometry: Any, frames: Iterable[tuple[np.ndarray, np.ndarray, float]],
                log_every: int) -> SequenceRun:
    run = SequenceRun()
    for i, (a, b, stamp) in enumerate(frames):
        t0, c0 = time.perf_counter(), time.process_time()
        res = odometry.process(a, b, stamp)
        run.seconds.append(time.perf_counter() - t0)
        run.cpu_seconds.append(time.process_time() - c0)
        run.results.append(res)
        _log(res, i, run.seconds[-1], log_every)
    return run
