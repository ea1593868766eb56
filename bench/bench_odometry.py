"""Metric odometry accuracy and rate per method: the table of docs/odometry.md, in one run.

    python bench/bench_odometry.py --kitti ../shared/data/kitti_stereo --threads 1
    python bench/bench_odometry.py --methods xfeat --max-keypoints 1000,1500,2000,3000   # sweep
    python bench/bench_odometry.py --methods orb --rgbd-frames 10 --turn-frames 0 --kitti ""

Sequences, each run through ``local_features_ros.odometry.evaluation.evaluate_odometry`` (the
code path of ``local-features evaluate odometry``):

- ``kitti_stereo``: the KITTI stereo snippet given with ``--kitti`` (51 rectified pairs,
  1226x370, ~60 m), at its own resolution;
- ``synthetic RGB-D``: ``--rgbd-frames`` frames of the rendered room (640x480, exact depth written
  as TUM uint16 / 5000), a walk through the room;
- ``synthetic stereo turn``: ``--turn-frames`` rendered stereo pairs (640x480, 0.12 m baseline)
  on a sustained 98-degree turn.

Per method and sequence: end-point drift (unaligned end error / path length), ATE (SE(3)
aligned RMSE), RPE, keyframes, losses, frames/s on the wall clock and frames per CPU-second of
this process. The odometry runs as ``evaluate odometry`` runs it: the next frames' left images
are extracted on a worker thread while frame N is tracked (its right image extracted and matched
only when it becomes a keyframe), so two threads share the cores and the wall rate is what the
machine's cores give (on a machine shared with other work it includes waiting; it also
includes image decoding, which overlaps the worker); frames per CPU-second counts every
thread, i.e. the rate of one dedicated core. ``--threads 1`` keeps each torch call and OpenCV
on one thread (the parallelism is the pipeline's); ``--serial`` adds rows without the pipeline.
Methods run one after another in this process with the same thread setting; a method whose
weights are missing is reported as skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
from pathlib import Path

import cv2
import torch

from local_features_ros.odometry.config import OdometryConfig
from local_features_ros.odometry.datasets import load_rgbd_folder, load_stereo_folder
from local_features_ros.odometry.evaluation import evaluate_odometry
from local_features_ros.odometry.synthetic import (rgbd_sequence, stereo_sequence,
                                                   write_kitti_stereo, write_tum_rgbd)
from local_features_ros.registry import build_extractor

METHODS = "orb,sift,xfeat,aliked,superpoint"


def _sequences(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, object]]:
    out: list[tuple[str, str, object]] = []
    if args.kitti:
        out.append(("kitti_stereo", "stereo", load_stereo_folder(Path(args.kitti))))
    if args.rgbd_frames:
        seq = rgbd_sequence(args.rgbd_frames, width=640, height=480, seed=5, noise_std=2.0)
        root = write_tum_rgbd(seq, tmp / "rgbd")
        c = seq.camera
        from local_features_ros.image_folders import Intrinsics

        out.append(("synthetic RGB-D", "rgbd",
                    load_rgbd_folder(root, Intrinsics(c.fx, c.fy, c.cx, c.cy))))
    if args.turn_frames:
        seq = stereo_sequence(args.turn_frames, baseline=0.12, width=640, height=480, seed=6,
                              kind="turn", turn_deg=98.0, noise_std=2.0)
        out.append(("synthetic stereo turn", "stereo",
                    load_stereo_folder(write_kitti_stereo(seq, tmp / "turn"))))
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else \
        format(v, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kitti", default="../shared/data/kitti_stereo",
                   help="KITTI-layout stereo folder ('' = skip)")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--max-keypoints", default="2000",
                   help="one value, or a comma list to sweep (rows per value)")
    p.add_argument("--rgbd-frames", type=int, default=40)
    p.add_argument("--turn-frames", type=int, default=40)
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads and cv2.setNumThreads")
    p.add_argument("--serial", action="store_true",
                   help="also run each method without the pipeline (one thread: measure and "
                        "track each frame in turn) and print both rows")
    p.add_argument("--json", default=None, help="write every row here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    ks = [int(k) for k in args.max_keypoints.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sequences = _sequences(args, Path(tmp))
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            for k in ks:
                try:
                    extractor = build_extractor(method, device="cpu", precision="fp32",
                                                max_keypoints=k)
                except (FileNotFoundError, ValueError, RuntimeError) as exc:
                    print(f"{method}: skipped ({exc})", file=sys.stderr)
                    continue
                for (name, sensor, seq), pipelined in itertools.product(
                        sequences, (True, False) if args.serial else (True,)):
                    ev = evaluate_odometry(sensor, extractor, seq, OdometryConfig(),
                                           pipelined=pipelined)
                    s, m = ev.run.summary(), ev.metrics
                    row = {"method": method if pipelined else f"{method} (serial)",
                           "max_keypoints": k, "sequence": name,
                           "frames": s["frames"], "path_m": m.path_length_m,
                           "end_drift_percent": m.end_drift_percent, "ate_m": m.ate_rmse_m,
                           "rpe_m": m.rpe_trans_rmse_m, "rpe_deg": m.rpe_rot_rmse_deg,
                           "keyframes": s["keyframes"], "losses": s["losses"],
                           "fps_wall": s["frames_per_second"],
                           "fps_cpu": s["frames_per_cpu_second"],
                           "median_stage_ms": s["median_stage_ms"],
                           "median_bundle_ms_per_keyframe": s["median_bundle_ms_per_keyframe"]}
                    rows.append(row)
                    print(f"{row['method']:>10} k={k:<5} {name:<22} drift "
                          f"{_fmt(m.end_drift_percent, '.2f')} % ATE {m.ate_rmse_m:.3f} m  "
                          f"{s['frames_per_second']:.1f} fps wall, "
                          f"{s['frames_per_cpu_second']:.1f} per CPU-s", file=sys.stderr,
                          flush=True)
    print(f"\ntorch threads {torch.get_num_threads()}, OpenCV threads {cv2.getNumThreads()}, "
          f"max_keypoints {args.max_keypoints}\n")
    print("| method | k | sequence | path m | end drift % | ATE m | RPE m / deg | keyframes | "
          "losses | frames/s wall | frames/s per CPU-s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['max_keypoints']} | {r['sequence']} | {r['path_m']:.1f} | "
              f"{_fmt(r['end_drift_percent'], '.2f')} | {r['ate_m']:.3f} | "
              f"{r['rpe_m']:.3f} / {r['rpe_deg']:.3f} | {r['keyframes']}/{r['frames']} | "
              f"{r['losses']} | {r['fps_wall']:.1f} | {r['fps_cpu']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
