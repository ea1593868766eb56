"""ALIKED / DISK vs SuperPoint, ORB, SIFT on the machine that runs it, side by side in one process.

Columns per method and image size (medians of ``--runs`` alternating rounds, ms):
- ``whole``: ``Extractor.extract`` (prepare + network + keypoints + descriptors + top-k);
- ``kornia``: kornia's own module forward on the same image and weights (ALIKED, DISK), and the
  ratio whole / kornia (goal <= 1.15: the wrapper adds nothing costly);
- ``bf16``: whole extractor with bf16 autocast, only where the CPU has native bf16 (else "-":
  emulated bf16 is ~18x slower and never chosen by ``precision: auto``);
- ``nn`` / ``lightglue``: matching this image's features against a warped copy's, the mutual NN
  matcher and LightGlue (released weights: aliked-n16, disk), adaptive depth/width on;
- ``auto``: what ``precision: auto`` (the node's default) resolves to here;
- ``Hz``: 1000 / (whole at the ``auto`` precision + the matcher), what a node could sustain on
  this CPU with mutual NN and with LightGlue.

Usage: ``python bench/bench_aliked_disk.py [--sizes 640x480,320x240] [--runs 7] [--threads 2]``
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from local_features_ros.evaluation.speed import benchmark_image, measure_alternating, parse_size
from local_features_ros.device import cpu_supports_bf16
from local_features_ros.matchers import build_matcher
from local_features_ros.registry import build_extractor

METHODS = (("aliked", {"model": "aliked-t16"}), ("aliked", {"model": "aliked-n16"}),
           ("aliked", {"model": "aliked-n16rot"}), ("aliked", {"model": "aliked-n32"}),
           ("disk", {}), ("superpoint", {}), ("orb", {}), ("sift", {}))


def _label(method: str, conf: dict) -> str:
    return conf.get("model", method)


def _kornia_forward(method: str, conf: dict, max_kp: int):
    """kornia's module with the same weights, as a user of kornia would call it."""
    from local_features_ros import pretrained
    from local_features_ros.weights import load_checkpoint

    if method == "aliked":
        from kornia.feature.aliked import ALIKED as KorniaALIKED

        km = KorniaALIKED(conf["model"], max_num_keypoints=max_kp).eval()
        km.load_state_dict(load_checkpoint(pretrained.aliked_weights(conf["model"])), strict=False)
        return lambda t: km(t)
    if method == "disk":
        from kornia.feature.disk import DISK as KorniaDISK

        km = KorniaDISK().eval()
        km.load_state_dict(load_checkpoint(
            pretrained.released_weights(pretrained.DISK_WEIGHTS))["extractor"])
        return lambda t: km(t, n=max_kp, window_size=5, pad_if_not_divisible=True)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="640x480,320x240")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-keypoints", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    bf16 = cpu_supports_bf16()
    print(f"threads {args.threads}, native bf16: {bf16}, max_keypoints {args.max_keypoints}")
    rows = []
    for w, h in (parse_size(s) for s in args.sizes.split(",")):
        img = benchmark_image(w, h)
        H = np.array([[0.97, 0.05, 6.0], [-0.04, 0.98, 4.0], [1e-5, 0.0, 1.0]])
        warped = cv2.warpPerspective(img, H, (w, h), borderMode=cv2.BORDER_REFLECT)
        t = torch.from_numpy(img if img.ndim == 3 else np.repeat(img[..., None], 3, 2)
                             ).permute(2, 0, 1)[None].float() / 255.0
        for method, conf in METHODS:
            kw = {"max_keypoints": args.max_keypoints, **conf}
            ex = build_extractor(method, device="cpu", precision="fp32", **kw)
            fns = [lambda ex=ex: ex.extract(img)]
            kf = _kornia_forward(method, conf, args.max_keypoints)
            if kf is not None:
                fns.append(lambda kf=kf: torch.inference_mode()(kf)(t))
            exb = (build_extractor(method, device="cpu", precision="bf16", **kw)
                   if bf16 and ex.is_learned else None)
            if exb is not None:
                fns.append(lambda exb=exb: exb.extract(img))
            times = measure_alternating(fns, args.runs, args.warmup)
            whole = times[0].median_ms
            kornia = times[1].median_ms if kf is not None else None
            bf = times[-1].median_ms if exb is not None else None
            auto = build_extractor(method, device="cpu", precision="auto", **kw)
            auto_bf16 = auto.is_learned and auto.autocast_dtype is not None
            run_ms = bf if (auto_bf16 and bf is not None) else whole
            f0, f1 = ex.extract(img), ex.extract(warped)
            nn = build_matcher("nn")
            mt = [lambda: nn.match(f0, f1)]
            lg = None
            if (method == "aliked" and conf["model"] == "aliked-n16") or method == "disk":
                lg = build_matcher("lightglue", features=method, precision="fp32")
                mt.append(lambda: lg.match(f0, f1))
            mtimes = measure_alternating(mt, max(3, args.runs // 2), 1)
            nn_ms = mtimes[0].median_ms
            lg_ms = mtimes[1].median_ms if lg is not None else None
            rows.append((f"{w}x{h}", _label(method, conf), len(f0), whole, kornia, bf,
                         ("bf16" if auto_bf16 else "fp32") if ex.is_learned else "-", nn_ms,
                         lg_ms, 1000.0 / (run_ms + nn_ms),
                         None if lg_ms is None else 1000.0 / (run_ms + lg_ms)))
            print(f"  {w}x{h} {_label(method, conf)}: whole {whole:.1f} ms", flush=True)

    def f(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)

    print("\n| size | method | kpts | whole ms | kornia ms | whole/kornia | bf16 ms | auto | nn ms | "
          "LightGlue ms | Hz (nn) | Hz (LightGlue) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, name, n, whole, kornia, bf, auto_p, nn_ms, lg_ms, hz, hz_lg in rows:
        ratio = None if kornia is None else whole / kornia
        print(f"| {size} | {name} | {n} | {f(whole)} | {f(kornia)} | {f(ratio, '{:.2f}')} | "
              f"{f(bf)} | {auto_p} | {f(nn_ms)} | {f(lg_ms)} | {f(hz)} | {f(hz_lg)} |")


if __name__ == "__main__":
    main()
