"""Backends side by side: each method in torch fp32, torch bf16 (CPUs with native bf16),
onnxruntime fp32, OpenVINO fp32 and OpenVINO bf16 (native bf16 only), at 640x480 and 320x240,
in one run on the same generated image, and a markdown table
(docs/deployment.md#backends-backend-key-local-features-export).
SuperPoint also gets the official frontend (``official_superpoint_frontend.py``: fp32 network +
numpy post-processing) with the same weights, interleaved with the others.

    .venv/bin/python bench/bench_backends.py --threads 2 [--methods superpoint,aliked:model=aliked-t16]
        [--runs 20] [--markdown bench/results/backends.md]

Columns: ``whole`` = ``extractor.extract(image)`` (numpy image -> Features, everything a caller
pays); ``network`` = the network part alone on the prepared tensor (SuperPoint: ``run_network``,
i.e. the backend call + descriptor L2 norm; D2-Net: the dense VGG map; ALIKED/DISK: ``dense``,
the exported backbone/U-Net); ``rest`` = whole -
network: image preparation, detection/NMS, sub-pixel refinement, descriptor sampling. Medians
over ``--runs`` after ``--warmup``; configurations are interleaved per run so that a noisy
shared CPU affects them alike. Exports go to ``$LFR_CACHE_DIR`` (default: a temp folder).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_features_ros.evaluation.speed import benchmark_image, measure_alternating  # noqa: E402
from local_features_ros.device import cpu_supports_bf16  # noqa: E402
from local_features_ros.config import split_setting  # noqa: E402
from local_features_ros.registry import build_extractor, get_extractor_class  # noqa: E402


def configs(native_bf16: bool) -> list[tuple[str, str]]:
    out = [("torch", "fp32")]
    if native_bf16:
        out.append(("torch", "bf16"))
    out += [("onnxruntime", "fp32"), ("openvino", "fp32")]
    if native_bf16:
        out.append(("openvino", "bf16"))
    return out


class OfficialRow:
    """The official SuperPoint frontend as a row of the table: ``extract(uint8 gray image)``."""

    def __init__(self, weights: str | None):
        from official_superpoint_frontend import OfficialFrontend

        from local_features_ros.registry import get_extractor_class
        from local_features_ros.weights import load_checkpoint, unwrap_state_dict

        path = weights or str(get_extractor_class("superpoint").default_weights({}))
        self.frontend = OfficialFrontend(unwrap_state_dict(load_checkpoint(path)))

    def extract(self, img: np.ndarray) -> np.ndarray:
        gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        return self.frontend.run(gray.astype(np.float32) / 255.0)[0].T  # (N, 3) points

    def prepare(self, img: np.ndarray):
        """No prepared tensor: the frontend takes the image itself (no network column)."""
        return None, None


def network_call(ex, tensor):
    """The network part alone (what a backend replaces), or None when not separable here."""
    if isinstance(ex, OfficialRow):
        return None
    if hasattr(ex, "run_network"):
        return lambda: ex.run_network(tensor)
    if ex.name in ("aliked", "disk"):  # the exported dense part (+ the cast/layout the caller gets)
        return lambda: ex.dense(tensor)
    if ex.name == "d2net":
        x = ex.normalize(tensor)

        def run():
            with ex.autocast():
                return ex.call_network("dense", x)
        return run
    if ex.name == "delf":
        def run():
            with ex.autocast():
                return ex.call_network("features", tensor)
        return run
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="superpoint,d2net")
    p.add_argument("--sizes", default="640x480,320x240")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default=None, help="weights for every method (default: shipped, "
                   "'random' where a method ships none)")
    p.add_argument("--markdown", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("LFR_CACHE_DIR", tempfile.mkdtemp(prefix="lfr_bench_"))
    native = cpu_supports_bf16()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    for spec in [m.strip() for m in args.methods.split(",") if m.strip()]:
        # "method" or "method:key=value:key=value" (one row label per spec)
        method, *sets = spec.split(":")
        conf = dict(split_setting(v) for v in sets)
        label = spec if sets else method
        cls = get_extractor_class(method)
        weights = args.weights
        if weights is None and cls.default_weights({}) is None:
            weights = "random"
        exs = {}
        for backend, prec in configs(native):
            torch.manual_seed(0)
            exs[(backend, prec)] = build_extractor(method, weights, precision=prec, backend=backend,
                                                   **conf)
        if method == "superpoint" and weights != "random":
            exs[("official frontend", "fp32")] = OfficialRow(weights)
        for w, h in sizes:
            img = benchmark_image(w, h)
            kp = {}
            with torch.inference_mode():
                calls = {}
                for k, ex in exs.items():
                    tensor, _ = ex.prepare(img)
                    calls[k] = network_call(ex, tensor)
                    kp[k] = len(ex.extract(img))
                # one round = every configuration's whole extraction and network call, in order
                fns, slots = [], []
                for k, ex in exs.items():
                    fns.append(lambda ex=ex: ex.extract(img))
                    slots.append((k, "whole"))
                    if calls[k]:
                        fns.append(calls[k])
                        slots.append((k, "net"))
                timed = dict(zip(slots, measure_alternating(fns, args.runs, args.warmup)))
            whole = {k: timed[(k, "whole")].wall_ms for k in exs}
            net = {k: timed[(k, "net")].wall_ms if (k, "net") in timed else [] for k in exs}
            for k in exs:
                wm = float(np.median(whole[k]))
                nm = float(np.median(net[k])) if net[k] else None
                rows.append((label, f"{w}x{h}", k[0], k[1], kp[k], wm,
                             float(np.percentile(whole[k], 90)), nm,
                             None if nm is None else max(0.0, wm - nm)))
                print(f"{label:>10} {w}x{h} {k[0]:>11} {k[1]}: whole {wm:.1f} ms, network "
                      f"{'-' if nm is None else f'{nm:.1f}'} ms, {kp[k]} keypoints", flush=True)
    lines = [f"CPU threads: {args.threads}; native bf16: {native}; runs: {args.runs}", "",
             "| method | size | backend | precision | keypoints | whole median ms | whole p90 ms "
             "| network ms | rest ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = (lambda v: "-" if v is None else f"{v:.1f}")
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.1f} | {r[6]:.1f} | "
                     f"{f(r[7])} | {f(r[8])} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
