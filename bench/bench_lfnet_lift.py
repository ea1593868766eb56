"""Whole-pipeline time and per-stage breakdown for LF-Net (500 kpts) and LIFT (1000 kpts).

    OMP_NUM_THREADS=2 python bench/bench_lfnet_lift.py --runs 5                # 640x480 + 320x240, CPU
    python bench/bench_lfnet_lift.py --device cuda --runs 10                   # GPU
    OMP_NUM_THREADS=1 python bench/bench_lfnet_lift.py --size 160x120 --runs 1 --warmup 0 \\
        --lift-min-log2 2                                                      # smoke

Stages (each timed on its own, inputs prepared by the previous stage, median over runs):
- ``detector``: the dense maps. LF-Net ``detector_forward`` (features, per-scale score convs,
  soft 3-D NMS, soft scale selection); LIFT ``score_pyramid`` (21-level pyramid, detector
  calls, score maps resampled onto the input grid).
- ``post``: post-processing of the maps. LF-Net ``detect`` (hard NMS, top-K, soft-argmax
  refinement); LIFT ``detect`` (3-D NMS, edge test, top-K, interpolation).
- ``crops``: batched ``grid_sample`` patch extraction (LIFT: upright + rotated crops).
- ``orientation``: LIFT orientation network (LF-Net's orientation map is part of the detector).
- ``descriptor``: the patch descriptor network.
- ``extract``: the whole pipeline, ``Extractor.extract`` on the numpy image (everything,
  including preparation and the host sync) - the number to compare against a budget.
Weights are random (fixed seed): network time does not depend on them; the keypoint count
(printed) does. On a shared machine, compare runs of the same process (``--runs`` >= 5).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import cv2
import numpy as np
import torch

from local_features_ros.evaluation.speed import measure
from local_features_ros.registry import build_extractor


def make_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth gray noise plus rectangles (blobs and corners for both detectors)."""
    r = np.random.default_rng(seed)
    img = cv2.resize(r.integers(0, 256, (h // 6 + 1, w // 6 + 1)).astype(np.uint8), (w, h),
                     interpolation=cv2.INTER_LINEAR)
    for _ in range(40):
        x0, y0 = int(r.integers(0, max(1, w - 30))), int(r.integers(0, max(1, h - 30)))
        cv2.rectangle(img, (x0, y0), (x0 + int(r.integers(5, 30)), y0 + int(r.integers(5, 30))),
                      int(r.integers(0, 255)), -1)
    return img


def timed(fn: Callable[[], Any], runs: int, warmup: int, device: torch.device) -> tuple[float, Any]:
    """Median milliseconds of ``fn`` (CUDA synchronised) and its last result."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    t = measure(fn, max(runs, 1), warmup, sync)
    return t.median_ms, t.result


def _build(method: str, args: argparse.Namespace, **conf: Any) -> Any:
    torch.manual_seed(args.seed)  # the same random weights in every run of the script
    return build_extractor(method, weights="random", device=args.device, precision=args.precision,
                           **conf)


@torch.inference_mode()
def bench_lfnet(img: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    ex = _build("lfnet", args, max_keypoints=args.lfnet_k)
    x, _ = ex.prepare(img)
    dev = ex.device
    res: dict[str, Any] = {"method": "lfnet", "max_keypoints": args.lfnet_k}

    def detector() -> dict:
        with ex.autocast():
            return ex.detector_forward(ex.normalize_input(x))

    res["detector_ms"], maps = timed(detector, args.runs, args.warmup, dev)

    def post() -> dict:
        with ex.autocast():
            return ex.detect(maps, args.lfnet_k)

    res["post_ms"], det = timed(post, args.runs, args.warmup, dev)
    v = det["valid"][0]
    kp, sc, ori = det["keypoints"][:, v], det["scales"][:, v], det["orientations"][:, v]
    res["keypoints"] = int(v.sum())

    def crops() -> torch.Tensor:
        with ex.autocast():
            return ex.crop_patches(x, kp, sc, ori)

    res["crops_ms"], patches = timed(crops, args.runs, args.warmup, dev)

    def descriptor() -> torch.Tensor:
        with ex.autocast():
            return ex.describe_patches(patches)

    res["descriptor_ms"], _ = timed(descriptor, args.runs, args.warmup, dev)
    res["extract_ms"], feats = timed(lambda: ex.extract(img), args.runs, args.warmup, dev)
    res["extract_keypoints"] = len(feats)
    return res


@torch.inference_mode()
def bench_lift(img: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    conf: dict[str, Any] = {"max_keypoints": args.lift_k, "desc_variant": args.lift_desc}
    if args.lift_min_log2 is not None:
        conf["min_scale_log2"] = args.lift_min_log2
    ex = _build("lift", args, **conf)
    x, _ = ex.prepare(img)
    dev = ex.device
    res: dict[str, Any] = {"method": "lift", "max_keypoints": args.lift_k,
                           "levels": len(ex.levels(*x.shape[-2:]))}

    def detector() -> Any:
        with ex.autocast():
            return ex.score_pyramid(x)

    res["detector_ms"], pyr = timed(detector, args.runs, args.warmup, dev)

    def post() -> dict:
        with ex.autocast():
            return ex.detect(pyr, args.lift_k)

    res["post_ms"], det = timed(post, args.runs, args.warmup, dev)
    v = det["valid"][0]
    kp, sig = det["keypoints"][:, v], det["scales"][:, v]
    res["keypoints"] = int(v.sum())
    ang = torch.zeros_like(sig)

    def crops() -> tuple[torch.Tensor, torch.Tensor]:
        with ex.autocast():
            return ex.crop(x, kp, sig, None), ex.crop(x, kp, sig, ang)

    res["crops_ms"], (upright, rotated) = timed(crops, args.runs, args.warmup, dev)

    def orientation() -> torch.Tensor:
        with ex.autocast():
            return ex.orientation(upright)[1]

    res["orientation_ms"], _ = timed(orientation, args.runs, args.warmup, dev)

    def descriptor() -> torch.Tensor:
        with ex.autocast():
            return ex.describe_patches(rotated)

    res["descriptor_ms"], _ = timed(descriptor, args.runs, args.warmup, dev)
    res["extract_ms"], feats = timed(lambda: ex.extract(img), args.runs, args.warmup, dev)
    res["extract_keypoints"] = len(feats)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="640x480,320x240",
                    help="WxH of the test image, or several, comma-separated")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "auto"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="torch seed of the random weights")
    ap.add_argument("--methods", default="lfnet,lift")
    ap.add_argument("--lfnet-k", type=int, default=500)
    ap.add_argument("--lift-k", type=int, default=1000)
    ap.add_argument("--lift-desc", default="tflift", choices=["tflift", "original"])
    ap.add_argument("--lift-min-log2", type=float, default=None,
                    help="override min_scale_log2 (2 skips the 2x-upsampled levels; smoke runs)")
    ap.add_argument("--json", default="", help="also write the rows to this file")
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.strip().lower().split("x")) for s in args.size.split(",") if s.strip()]
    rows = []
    for w, h in sizes:
        img = make_image(h, w)
        for m in [s.strip() for s in args.methods.split(",") if s.strip()]:
            row = {"lfnet": bench_lfnet, "lift": bench_lift}[m](img, args)
            row["size"] = f"{w}x{h}"
            rows.append(row)
    print(f"# device={args.device}, precision={args.precision}, "
          f"torch threads={torch.get_num_threads()}, runs={args.runs} (median ms)")
    print(f"{'method':7} {'size':>8} {'kpts':>5} {'detector':>9} {'post':>7} {'crops':>7} "
          f"{'orient.':>8} {'descr.':>8} {'extract':>8}")
    for r in rows:
        ori = f"{r['orientation_ms']:>8.1f}" if "orientation_ms" in r else f"{'-':>8}"
        print(f"{r['method']:7} {r['size']:>8} {r['keypoints']:>5} {r['detector_ms']:>9.1f} "
              f"{r['post_ms']:>7.1f} {r['crops_ms']:>7.1f} {ori} {r['descriptor_ms']:>8.1f} "
              f"{r['extract_ms']:>8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
