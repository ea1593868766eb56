"""Speed table: SuperPoint (network, post-processing, whole extractor in fp32/bf16), the faithful
official frontend, ORB and SIFT, at 640x480 and 320x240. Medians over ``--runs``.

    OMP_NUM_THREADS=2 python bench/bench_superpoint.py --runs 20 [--weights superpoint_v1.pth]

"cpu ms" is the process CPU time (all threads): on a shared machine, wall >> cpu / threads
means the run waited for the CPU, not that the code is slow.

Without ``--weights`` a random official-layout state dict with a peaky detector head is used
(timings of the network do not depend on the weights; post-processing depends on the number of
candidates, so real weights give the most representative post-processing numbers).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_superpoint_frontend import OfficialFrontend, random_official_state_dict  # noqa: E402

from local_features_ros.device import cpu_supports_bf16  # noqa: E402
from local_features_ros.evaluation.speed import measure  # noqa: E402
from local_features_ros.registry import build_extractor  # noqa: E402

logger = logging.getLogger(__name__)


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Gray uint8 test image with blobs and edges (a stand-in when no --image is given)."""
    r = np.random.default_rng(seed)
    img = cv2.GaussianBlur(r.integers(0, 255, (h // 8, w // 8)).astype(np.uint8), (3, 3), 0)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
    for _ in range(40):
        x0, y0 = int(r.integers(0, w - 40)), int(r.integers(0, h - 40))
        cv2.rectangle(img, (x0, y0), (x0 + int(r.integers(10, 40)), y0 + int(r.integers(10, 40))),
                      int(r.integers(0, 255)), -1)
    return cv2.GaussianBlur(img, (3, 3), 0)


def median_ms(fn: Callable[[], object], runs: int, warmup: int) -> tuple[float, float, object]:
    """Median wall ms and median process CPU ms (all threads; tells contention from work)."""
    t = measure(fn, runs, warmup)
    return t.median_ms, t.cpu_median_ms, t.result


def count(out: object) -> str:
    if hasattr(out, "__len__") and not isinstance(out, tuple):
        return str(len(out))  # Features
    if isinstance(out, tuple) and isinstance(out[0], np.ndarray):
        return str(out[0].shape[1])  # official pts (3, N)
    return "-"


def bench_size(w: int, h: int, img_full: np.ndarray | None, weights: str, sd: dict,
               runs: int, warmup: int) -> list[tuple[str, str, float, float, str]]:
    if img_full is not None:
        img = cv2.resize(img_full, (w, h), interpolation=cv2.INTER_AREA)
    else:
        img = textured(h, w)
    size = f"{w}x{h}"
    rows: list[tuple[str, str, float, float, str]] = []

    def add(name: str, fn: Callable[[], object]) -> None:
        ms, cpu, out = median_ms(fn, runs, warmup)
        rows.append((name, size, ms, cpu, count(out)))
        logger.info("%s %s: %.1f ms", name, size, ms)

    sp32 = build_extractor("superpoint", weights=weights, precision="fp32")
    spbf = build_extractor("superpoint", weights=weights, precision="bf16")
    sp_off = build_extractor("superpoint", weights=weights, precision="fp32", nms="official")
    with torch.inference_mode():
        tensor, _ = sp32.prepare(img)
        semi, desc = sp32.run_network(tensor)
        add("superpoint network fp32 (channels_last)", lambda: sp32.run_network(tensor))
        add("superpoint network bf16 autocast", lambda: spbf.run_network(tensor))
        add("superpoint post-processing (nms=fast)", lambda: sp32.postprocess(semi, desc))
        add("superpoint post-processing (nms=official)", lambda: sp_off.postprocess(semi, desc))
    add("superpoint extractor fp32 (nms=fast)", lambda: sp32.extract(img))
    add("superpoint extractor fp32 (nms=official)", lambda: sp_off.extract(img))
    add("superpoint extractor bf16 (nms=fast)", lambda: spbf.extract(img))
    official = OfficialFrontend(sd)
    f32 = img.astype(np.float32) / 255.0
    add("official frontend (fp32 net + numpy post)", lambda: official.run(f32))
    orb = build_extractor("orb")
    sift = build_extractor("sift")
    add("orb (1000)", lambda: orb.extract(img))
    add("sift", lambda: sift.extract(img))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="timed runs per item (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--sizes", default="640x480,320x240", help="comma-separated WxH")
    ap.add_argument("--weights", default=None, help="official-layout or project checkpoint (default/'random': random)")
    ap.add_argument("--image", default=None, help="image to resize to each size (default: synthetic)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.weights and args.weights != "random":
        from local_features_ros.weights import load_checkpoint, unwrap_state_dict

        sd = unwrap_state_dict(load_checkpoint(args.weights))  # official or project layout
        weights = args.weights
    else:
        import tempfile

        sd = random_official_state_dict()
        weights = str(Path(tempfile.mkdtemp()) / "superpoint_random.pth")
        torch.save(sd, weights)
    img_full = None
    if args.image:
        img_full = cv2.imread(args.image, cv2.IMREAD_GRAYSCALE)
        if img_full is None:
            print(f"cannot read {args.image}", file=sys.stderr)
            return 1
    rows = []
    for s in args.sizes.split(","):
        w, h = (int(v) for v in s.lower().split("x"))
        rows += bench_size(w, h, img_full, weights, sd, args.runs, args.warmup)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu bf16 {cpu_supports_bf16()}, "
          f"runs {args.runs} (median), weights {args.weights or 'random'}")
    print(f"| {'item':45s} | {'size':8s} | {'median ms':>9s} | {'cpu ms':>8s} | {'kpts':>5s} |")
    print(f"|{'-' * 47}|{'-' * 10}|{'-' * 11}|{'-' * 10}|{'-' * 7}|")
    for name, size, ms, cpu, n in rows:
        print(f"| {name:45s} | {size:8s} | {ms:9.1f} | {cpu:8.1f} | {n:>5s} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
