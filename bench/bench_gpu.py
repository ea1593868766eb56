"""GPU readiness: every method and LightGlue in torch fp32, fp16 autocast, torch.compile, TensorRT fp16.

    .venv/bin/python bench/bench_gpu.py --out bench/results/gpu.md            # on a CUDA machine
    .venv/bin/python bench/bench_gpu.py --allow-cpu --sizes 64x48 --runs 1 \\
        --methods superpoint --keypoints 32 --compile-backend eager --out out/bench/gpu_smoke.md   # smoke test

Why one script: "is it ready for a GPU" is one question per (method, size, runtime); answering it
cell by cell in one process, with every failure written into its cell ("failed: ..." or
"n/a: <reason>") instead of aborting the run, gives the whole picture from one command.

Rows: superpoint, aliked-t16 / -n16 / -n16rot / -n32, disk, d2net, delf, lfnet, lift, xfeat (random
weights where the package ships none: speed does not depend on them; the row says "random"), at
each ``--sizes`` (default 640x480 and 320x240), ``--max-keypoints`` 1024; then the matchers at each
``--keypoints`` (default 512, 1024, 2048) on features of the generated image and a rotated copy at
each size: ``lightglue`` = LightGlue (ALIKED weights) on ALIKED-n16 features, ``lighterglue`` =
LighterGlue (XFeat's LightGlue, same code, its released weights) on XFeat features. ``full depth``
rows run adaptive depth/width off (the graph that compile and TensorRT run too), ``adaptive`` rows
the default early stopping / pruning (torch only: that control flow is data-dependent, neither
exported nor compiled).

Columns (median ms over ``--runs`` after ``--warmup``, CUDA-synchronised after every call, the
``evaluation/speed.py`` timing loop):
- ``torch fp32``: ``extract(image)`` (numpy image -> Features) / ``match(f0, f1)``.
- ``torch fp16``: the same with ``precision=fp16`` (autocast; on a CPU that means bf16).
- ``torch.compile``: the fp16 extractor with its network compiled (the declared network parts,
  ``COMPILE_TARGETS`` where the torch path calls something else; detection and descriptor
  sampling stay eager: compiling them hits dynamo's numpy guards) / LightGlue's ``_forward``;
  ``torch.compile(dynamic=False, backend=--compile-backend)``; compile time is spent in the
  warm-up (at least one call).
- ``TensorRT fp16``: ``backend=tensorrt, precision=fp16`` (the exported network in TensorRT via
  onnxruntime's TensorRT provider or the ``tensorrt`` package, post-processing in torch);
  methods without an exportable network (aliked, disk) are "n/a".

Exit status: 2 with one line on stderr when there is no CUDA device and ``--allow-cpu`` is not
given (``--allow-cpu`` runs the same code on the CPU, for tests); 0 otherwise, also when cells
failed (their text says why). Never meant for CI timing assertions.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

#: Every extractor row (ALIKED variants are ``aliked-<model>``), in table order.
METHODS = ("superpoint", "aliked-t16", "aliked-n16", "aliked-n16rot", "aliked-n32", "disk",
           "d2net", "delf", "lfnet", "lift", "xfeat", "lightglue", "lighterglue")
#: Matcher rows -> the extractor whose features (and released LightGlue file) they use.
MATCHER_ROWS = {"lightglue": "aliked", "lighterglue": "xfeat"}
MODES = ("fp32", "fp16", "compile", "tensorrt")
COLUMNS = {"fp32": "torch fp32", "fp16": "torch fp16", "compile": "torch.compile",
           "tensorrt": "TensorRT fp16"}
#: What torch.compile wraps where the declared network parts (``Extractor.networks``) are not
#: what the torch path calls: ALIKED/DISK declare none (their dense network is ``dense``);
#: LF-Net's torch path calls ``detector_forward`` (its export wraps it as ``detector_maps``).
COMPILE_TARGETS = {"aliked": ("dense",), "disk": ("dense",), "lfnet": ("detector_forward", "desc")}
NO_CUDA = ("bench_gpu: no CUDA device (torch.cuda.is_available() is False); run it on a GPU "
           "machine, or pass --allow-cpu to run the same code on the CPU (for testing)")


@dataclass
class Row:
    """One table row: what was run and each mode's cell text."""

    method: str
    size: str
    keypoints: str = "-"
    cells: dict[str, str] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, metavar="FILE", help="markdown table written here")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma list from: " + ", ".join(METHODS) + " ('aliked' = every variant)")
    p.add_argument("--sizes", default="640x480,320x240", help="image sizes WxH, comma list")
    p.add_argument("--keypoints", default="512,1024,2048", help="LightGlue keypoints per image")
    p.add_argument("--modes", default=",".join(MODES), help="columns: " + ", ".join(MODES))
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--max-keypoints", type=int, default=1024, help="extractor budget")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (inductor; 'eager' only checks that dynamo traces)")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run on the CPU when there is no CUDA device (tests; CPU timings)")
    return p.parse_args(argv)


def expand_methods(text: str) -> list[str]:
    """``aliked`` -> its four variants; unknown names are an error (one line)."""
    out: list[str] = []
    for name in (m.strip() for m in text.split(",")):
        if not name:
            continue
        names = [m for m in METHODS if m.startswith("aliked-")] if name == "aliked" else [name]
        for n in names:
            if n not in METHODS:
                raise SystemExit(f"bench_gpu: unknown method '{n}' (known: {', '.join(METHODS)})")
            if n not in out:
                out.append(n)
    return out


def short_error(exc: BaseException, limit: int = 110) -> str:
    """One line for a table cell: no pipes or newlines, bounded length."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tensorrt_unavailable(device: Any) -> str | None:
    """Why TensorRT cells cannot run here (None when they can): a CUDA device and either
    onnxruntime's TensorRT provider or the ``tensorrt`` package."""
    if device.type != "cuda":
        return "no CUDA device"
    if importlib.util.find_spec("onnx") is None:
        return "the onnx package is not installed (export)"
    from local_features_ros.backends.onnxruntime_backend import ort_has_tensorrt

    if ort_has_tensorrt() or importlib.util.find_spec("tensorrt") is not None:
        return None
    return "neither onnxruntime's TensorrtExecutionProvider nor the tensorrt package is installed"


class Bench:
    """Builds each cell's extractor / matcher, times it, and turns failures into cell text."""

    def __init__(self, args: argparse.Namespace, device: Any):
        import torch

        self.torch = torch
        self.args = args
        self.device = device
        self.cuda = device.type == "cuda"
        self.trt_reason = tensorrt_unavailable(device)

    # ------------------------------------------------------------------ timing
    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def time_ms(self, fn: Callable[[], Any], warmup: int | None = None) -> tuple[float, Any]:
        """Median wall ms of ``fn`` (speed.measure: sync after warm-up and after every call)."""
        from local_features_ros.evaluation.speed import measure

        t = measure(fn, max(1, self.args.runs), self.args.warmup if warmup is None else warmup,
                    self.sync)
        return t.median_ms, t.result

    def cell(self, fn: Callable[[], tuple[float, Any]]) -> tuple[str, Any]:
        """``fn`` -> ('12.3', result); an exception -> ('failed: ...', None); ``n/a`` passes."""
        try:
            ms, result = fn()
        except NotApplicable as exc:
            return f"n/a: {exc}", None
        except Exception as exc:  # a cell's failure is a result, not the end of the run
            return f"failed: {short_error(exc)}", None
        finally:
            if self.cuda:
                self.torch.cuda.empty_cache()
        return f"{ms:.2f}", result

    def compile(self, fn: Callable[..., Any], reset: bool = True) -> Callable[..., Any]:
        """``torch.compile``, by default with a fresh dynamo cache (instances of one class share
        code objects: without the reset, the recompile limit would silently fall back to
        eager)."""
        if reset:
            self.torch._dynamo.reset()
        return self.torch.compile(fn, dynamic=False, backend=self.args.compile_backend)

    # ------------------------------------------------------------------ extractors
    def build(self, method: str, precision: str, **conf: Any) -> Any:
        from local_features_ros.registry import build_extractor

        name, model = (("aliked", method[len("aliked-"):]) if method.startswith("aliked-")
                       else (method, None))
        if model:
            conf["model"] = "aliked-" + model
        self.torch.manual_seed(0)
        return build_extractor(name, weights_for(name), device=str(self.device),
                               precision=precision, max_keypoints=self.args.max_keypoints, **conf)

    def extractor_row(self, method: str, image: np.ndarray, size: str, modes: list[str]) -> Row:
        torch = self.torch
        row = Row(method + (" (random)" if weights_for(method.split("-")[0]) else ""), size)

        def run(ex: Any) -> Callable[[], Any]:
            def call() -> Any:
                with torch.inference_mode():
                    return ex.extract(image)
            return call

        def eager(precision: str) -> tuple[float, Any]:
            return self.time_ms(run(self.build(method, precision)))

        def compiled() -> tuple[float, Any]:
            ex = self.build(method, "fp16")
            self.torch._dynamo.reset()
            for name in compile_targets(ex):
                # a submodule is replaced by its compiled wrapper; a method is shadowed by an
                # instance attribute (``self(x)`` / ``self.dense(x)`` then reach the compiled one)
                setattr(ex, name, self.compile(getattr(ex, name), reset=False))
            return self.time_ms(run(ex), warmup=max(1, self.args.warmup))

        def tensorrt() -> tuple[float, Any]:
            if self.trt_reason:
                raise NotApplicable(self.trt_reason)
            from local_features_ros.registry import get_extractor_class

            if not get_extractor_class(method.split("-")[0]).networks:
                raise NotApplicable("no exportable network (torch only)")
            return self.time_ms(run(self.build(method, "fp16", backend="tensorrt")))

        jobs = {"fp32": lambda: eager("fp32"), "fp16": lambda: eager("fp16"),
                "compile": compiled, "tensorrt": tensorrt}
        for mode in modes:
            text, feats = self.cell(jobs[mode])
            row.cells[mode] = text
            if feats is not None and row.keypoints == "-":
                row.keypoints = str(len(feats))
        return row

    # ------------------------------------------------------------------ LightGlue
    def lightglue_features(self, image: np.ndarray, k: int, features: str = "aliked"
                           ) -> tuple[Any, Any]:
        """``features`` (ALIKED-n16, XFeat) of ``image`` and of a copy rotated by 15 degrees, top
        ``k`` with the detection threshold off (so that both reach ``k`` where they can)."""
        import cv2

        h, w = image.shape[:2]
        rot = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), 15.0, 0.95)
        other = cv2.warpAffine(image, rot, (w, h), borderMode=cv2.BORDER_REFLECT)
        from local_features_ros.registry import build_extractor

        ex = build_extractor(features, device=str(self.device), max_keypoints=k,
                             detection_threshold=0.0)
        with self.torch.inference_mode():
            return ex.extract(image), ex.extract(other)

    def lightglue_rows(self, image: np.ndarray, size: str, modes: list[str],
                       row: str = "lightglue") -> list[Row]:
        """``row`` (``MATCHER_ROWS``): LightGlue on ALIKED features or LighterGlue on XFeat's,
        both the ``lightglue`` matcher with the features' released file."""
        from local_features_ros.matchers import build_matcher

        features = MATCHER_ROWS[row]
        rows = []
        for k in parse_ints(self.args.keypoints):
            try:
                f0, f1 = self.lightglue_features(image, k, features)
            except Exception as exc:
                rows.append(Row(f"{row} ({features}, {k} kpts)", size, "-",
                                {m: f"failed: features: {short_error(exc)}" for m in modes}))
                continue
            kp = f"{len(f0)}/{len(f1)}"
            full = dict(depth_confidence=-1, width_confidence=-1)

            def eager(precision: str, **conf: Any) -> tuple[float, Any]:
                m = build_matcher("lightglue", device=str(self.device), precision=precision,
                                  features=features, **conf)
                return self.time_ms(lambda: m.match(f0, f1))

            def compiled() -> tuple[float, Any]:
                m = build_matcher("lightglue", device=str(self.device), precision="fp16",
                                  features=features, **full)
                m.model._forward = self.compile(m.model._forward)
                return self.time_ms(lambda: m.match(f0, f1), warmup=max(1, self.args.warmup))

            def tensorrt() -> tuple[float, Any]:
                if self.trt_reason:
                    raise NotApplicable(self.trt_reason)
                return eager("fp16", backend="tensorrt", **full)

            def adaptive_only() -> tuple[float, Any]:
                raise NotApplicable("adaptive depth/width is data-dependent (torch only)")

            table = {
                f"{row} ({features}, {k} kpts, full depth)": {
                    "fp32": lambda: eager("fp32", **full), "fp16": lambda: eager("fp16", **full),
                    "compile": compiled, "tensorrt": tensorrt},
                f"{row} ({features}, {k} kpts, adaptive)": {
                    "fp32": lambda: eager("fp32"), "fp16": lambda: eager("fp16"),
                    "compile": adaptive_only, "tensorrt": adaptive_only},
            }
            for label, jobs in table.items():
                rows.append(Row(label, size, kp, {m: self.cell(jobs[m])[0] for m in modes}))
        return rows


class NotApplicable(Exception):
    """A cell that cannot run here for a known reason (its text is ``n/a: <reason>``)."""


def compile_targets(ex: Any) -> tuple[str, ...]:
    """Attribute names of ``ex`` to compile: ``COMPILE_TARGETS`` or the declared parts' calls."""
    return COMPILE_TARGETS.get(ex.name) or tuple(d.call for d in ex.networks.values())


def weights_for(method: str) -> str | None:
    """None = the method's own weights; 'random' where the package ships none."""
    from local_features_ros.registry import get_extractor_class

    try:
        return None if get_extractor_class(method).default_weights({}) is not None else "random"
    except FileNotFoundError:
        return "random"


def parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def header(bench: Bench, args: argparse.Namespace) -> list[str]:
    """Where and how the numbers were taken (device, versions, providers, settings)."""
    torch = bench.torch
    if bench.cuda:
        name = torch.cuda.get_device_name(bench.device)
        dev = f"{name}, CUDA {torch.version.cuda}"
    else:
        dev = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores; "\
              "--allow-cpu: not GPU numbers)"
    try:
        import onnxruntime as ort

        providers = ", ".join(ort.get_available_providers())
    except ImportError:
        providers = "onnxruntime not installed"
    trt = bench.trt_reason or "available"
    return [f"# bench_gpu ({datetime.datetime.now():%Y-%m-%d %H:%M})", "",
            f"Device: {dev}; torch {torch.__version__}; onnxruntime providers: {providers}; "
            f"TensorRT: {trt}.",
            f"Median ms over {args.runs} runs after {args.warmup} warm-up "
            f"(CUDA-synchronised); extractors: extract(image) with max_keypoints "
            f"{args.max_keypoints}; LightGlue: match(f0, f1); torch.compile backend "
            f"{args.compile_backend}.", ""]


def markdown(rows: list[Row], modes: list[str]) -> list[str]:
    lines = ["| method | size | keypoints | " + " | ".join(COLUMNS[m] + " ms" for m in modes)
             + " |", "|---|---|---|" + "---|" * len(modes)]
    for r in rows:
        lines.append(f"| {r.method} | {r.size} | {r.keypoints} | "
                     + " | ".join(r.cells.get(m, "-") for m in modes) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(NO_CUDA, file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    methods = expand_methods(args.methods)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f"bench_gpu: unknown mode '{bad[0]}' (known: {', '.join(MODES)})", file=sys.stderr)
        return 2
    from local_features_ros.evaluation.speed import benchmark_image, parse_size

    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    os.environ.setdefault("LFR_CACHE_DIR", tempfile.mkdtemp(prefix="lfr_bench_gpu_"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    bench = Bench(args, device)
    rows: list[Row] = []
    t0 = time.perf_counter()
    for w, h in sizes:
        image = benchmark_image(w, h)
        for method in methods:
            if method in MATCHER_ROWS:
                continue
            rows.append(bench.extractor_row(method, image, f"{w}x{h}", modes))
            print(" | ".join([rows[-1].method, rows[-1].size]
                             + [rows[-1].cells[m] for m in modes]), flush=True)
        for matcher_row in (m for m in methods if m in MATCHER_ROWS):
            for r in bench.lightglue_rows(image, f"{w}x{h}", modes, matcher_row):
                rows.append(r)
                print(" | ".join([r.method, r.size] + [r.cells[m] for m in modes]), flush=True)
    text = "\n".join(header(bench, args) + markdown(rows, modes)
                     + ["", f"Total bench time: {time.perf_counter() - t0:.0f} s."]) + "\n"
    print(text)
    out = Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
