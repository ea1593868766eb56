"""Speed and peak-memory table for D2-Net (single / multi-scale) and DELF, next to SuperPoint and ORB.

    OMP_NUM_THREADS=2 python bench/bench_d2net_delf.py --runs 5            # timings, 640x480
    OMP_NUM_THREADS=2 python bench/bench_d2net_delf.py --memory             # peak RSS table
    OMP_NUM_THREADS=1 python bench/bench_d2net_delf.py --runs 1 --warmup 0 --size 160x120  # smoke

"network" is the bare forward pass on tensors prepared in advance (for pyramids: the sum over the
levels, each resized beforehand); "extractor" is ``Extractor.extract`` on the numpy image (resize,
normalisation, pyramid, detection, descriptors, top-k). Weights are random in the official layout:
the network time does not depend on them; post-processing depends a little on the detection count.
Peak memory is measured in a fresh subprocess per configuration (``ru_maxrss`` minus the resident
size after building the model), because torch allocations are invisible to ``tracemalloc``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from local_features_ros.evaluation.speed import measure, measure_alternating
from local_features_ros.registry import build_extractor


def textured_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour noise plus rectangles: plenty of detections for every method."""
    r = np.random.default_rng(seed)
    img = cv2.resize(r.integers(0, 256, (h // 6 + 1, w // 6 + 1, 3)).astype(np.uint8), (w, h),
                     interpolation=cv2.INTER_LINEAR)
    for _ in range(30):
        x0, y0 = int(r.integers(0, max(1, w - 30))), int(r.integers(0, max(1, h - 30)))
        cv2.rectangle(img, (x0, y0), (x0 + int(r.integers(5, 30)), y0 + int(r.integers(5, 30))),
                      tuple(int(v) for v in r.integers(0, 255, 3)), -1)
    return img


def median_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    return measure(fn, runs, warmup).median_ms


def paired_ms(fa: Callable[[], object], fb: Callable[[], object], runs: int, warmup: int
              ) -> tuple[float, float]:
    """Medians of two functions run alternately, so load from other processes hits both alike."""
    ta, tb = measure_alternating([fa, fb], runs, warmup)
    return ta.median_ms, tb.median_ms


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def configs() -> list[tuple[str, str, dict]]:
    out = [("d2net single", "d2net", {}), ("d2net multi", "d2net", {"multiscale": True}),
           ("delf 7 scales", "delf", {})]
    if _has("local_features_ros.extractors.superpoint"):
        out.append(("superpoint", "superpoint", {}))
    if _has("local_features_ros.extractors.classical"):
        out.append(("orb", "orb", {}))
    return out


def network_fn(label: str, ex, img: np.ndarray) -> Callable[[], object] | None:
    """Bare network forward(s) on pre-built tensors; None for methods without a network."""
    if not ex.is_learned:
        return None
    tensor, _ = ex.prepare(img)
    h, w = tensor.shape[-2:]
    if ex.name == "d2net":
        scales = [float(s) for s in ex.conf["scales"]] if ex.conf["multiscale"] else [1.0]
        x = ex.normalize(tensor)
        levels = [F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=True)
                  for s in scales]
        return lambda: [ex.dense_features(lv).shape for lv in levels]  # outputs freed per level
    if ex.name == "delf":
        levels = [F.interpolate(tensor, size=(lh, lw), mode="bilinear", align_corners=False)
                  for _, lh, lw in ex.pyramid_levels(h, w)]
        return lambda: [ex.forward(lv)[1].shape for lv in levels]
    if hasattr(ex, "forward"):
        return lambda: ex.forward(tensor)
    return None


def run_timings(size: tuple[int, int], runs: int, warmup: int, only: str = "") -> list[dict]:
    w, h = size
    img = textured_rgb(h, w)
    rows = []
    for label, method, conf in configs():
        if only and only not in label:
            continue
        ex = build_extractor(method, weights="random", **conf)
        net = network_fn(label, ex, img)
        with torch.inference_mode():
            if net is not None:
                t_net, t_all = paired_ms(net, lambda: ex.extract(img), runs, warmup)
            else:
                t_net, t_all = float("nan"), median_ms(lambda: ex.extract(img), runs, warmup)
            n = len(ex.extract(img))
        rows.append({"method": label, "size": f"{w}x{h}", "network_ms": round(t_net, 1),
                     "extractor_ms": round(t_all, 1),
                     "ratio": round(t_all / t_net, 3) if net is not None else None, "features": n})
    return rows


def rss_child(method: str, conf: dict, size: tuple[int, int]) -> None:
    """One extraction in this (fresh) process; prints JSON with the peak RSS increase in MiB."""
    ex = build_extractor(method, weights="random", **conf)
    with open("/proc/self/statm") as f:
        base_mb = int(f.read().split()[1]) * resource.getpagesize() / 2**20
    w, h = size
    img = textured_rgb(h, w)
    t = time.perf_counter()
    n = len(ex.extract(img))
    dt = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"method": method, "conf": conf, "size": f"{w}x{h}", "features": n,
                      "seconds": round(dt, 2), "rss_after_build_mib": round(base_mb),
                      "peak_rss_mib": round(peak_mb), "peak_increase_mib": round(peak_mb - base_mb)}))


def run_memory(sizes: list[tuple[int, int]], extra: list[tuple[str, dict]]) -> list[dict]:
    rows = []
    for size in sizes:
        for method, conf in [("d2net", {}), ("d2net", {"multiscale": True}), *extra]:
            cmd = [sys.executable, __file__, "--rss-child", method, "--conf", json.dumps(conf),
                   "--size", f"{size[0]}x{size[1]}"]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


def parse_size(s: str) -> tuple[int, int]:
    w, h = s.lower().split("x")
    return int(w), int(h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--only", default="", help="run the methods whose label contains this")
    ap.add_argument("--memory", action="store_true", help="peak RSS table (640x480, 1280x960)")
    ap.add_argument("--memory-sizes", default="640x480,1280x960")
    ap.add_argument("--memory-extra", default="", help="JSON list of [method, conf] to add")
    ap.add_argument("--rss-child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--conf", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, json.loads(args.conf), parse_size(args.size))
        return
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if args.memory:
        sizes = [parse_size(s) for s in args.memory_sizes.split(",")]
        extra = [tuple(x) for x in json.loads(args.memory_extra)] if args.memory_extra else []
        for r in run_memory(sizes, extra):
            print(json.dumps(r))
        return
    for r in run_timings(parse_size(args.size), args.runs, args.warmup, args.only):
        print(json.dumps(r))


if __name__ == "__main__":
    main()
