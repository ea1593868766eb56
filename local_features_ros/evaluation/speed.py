"""Extractor timing: what ``local-features bench`` measures, per method and image size.

Why split the stages: "SuperPoint is slow" means different fixes depending on whether the network,
the NMS/descriptor sampling, or the image preparation dominates.

Stages (medians and p90 over ``runs`` after ``warmup`` untimed runs, milliseconds):
- ``preprocess``: ``extractor.prepare(image)`` (gray/RGB conversion, resize, tensor, device copy).
- ``network``: the bare ``extractor.forward(tensor)`` under the extractor's autocast, only for
  extractors that define their own ``forward`` (learned methods); ``None`` otherwise. With a
  ``backend`` other than torch: ``run_network(tensor)`` (the backend call) where the method has
  one (SuperPoint), else ``None``.
- ``extract_core``: ``extractor._extract(tensor)``: network + detection + descriptor sampling.
- ``postprocess``: ``extract_core - network`` medians (detection, NMS, descriptor sampling).
- ``whole``: ``extractor.extract(image)``: everything a caller pays, numpy image to ``Features``.
Memory: ``peak_rss_delta_mb`` = growth of the process's RSS high-water mark (``ru_maxrss``) over this
measurement (0 when an earlier, larger run already set it); on CUDA ``cuda_peak_mb`` =
``torch.cuda.max_memory_allocated`` after a reset. Node end-to-end latency (decode, publish, DDS)
is measured separately by ``bench/bench_node.py``.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def benchmark_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Deterministic textured RGB uint8 image (blobs, edges, corners at several scales)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for cell in (64, 16, 4):
        small = rng.random((max(2, height // cell), max(2, width // cell), 3)).astype(np.float32)
        img += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) / 3.0
    out = np.clip(img * 255, 0, 255).astype(np.uint8)
    for _ in range(max(8, width * height // 4000)):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        s = int(rng.integers(3, max(4, min(width, height) // 10)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            cv2.rectangle(out, (x, y), (x + s, y + s), color, -1)
        else:
            cv2.circle(out, (x, y), s // 2, color, -1)
    return out


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ValueError(f"size must look like 640x480, got '{text}'") from exc
    if w < 8 or h < 8:
        raise ValueError(f"size too small: {text}")
    return w, h


@dataclass
class StageTiming:
    median_ms: float
    p90_ms: float
    runs: int


@dataclass
class Timings:
    """Per-run wall and process-CPU milliseconds of one timed function, and its last result."""

    wall_ms: list[float]
    cpu_ms: list[float]
    result: Any = None

    @property
    def median_ms(self) -> float:
        return float(np.median(self.wall_ms))

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.wall_ms, 90))

    @property
    def cpu_median_ms(self) -> float:
        """Median process CPU time (all threads): tells contention from work."""
        return float(np.median(self.cpu_ms))


def measure_alternating(fns: Sequence[Callable[[], Any]], runs: int, warmup: int,
                        sync: Callable[[], None] | None = None) -> list[Timings]:
    """THE timing loop (``local-features bench`` and ``bench/*.py``): ``warmup`` untimed rounds,
    then ``runs`` timed rounds; a round calls each of ``fns`` once, in order, so load from other
    processes hits all of them alike. ``sync`` (e.g. ``torch.cuda.synchronize``) runs after
    the warm-up and after every timed call, inside the timed span."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync()
    out = [Timings([], []) for _ in fns]
    for _ in range(runs):
        for fn, t in zip(fns, out):
            c0 = time.process_time()
            t0 = time.perf_counter()  # the wall span holds only fn and sync
            t.result = fn()
            sync()
            t1 = time.perf_counter()
            t.wall_ms.append((t1 - t0) * 1e3)
            t.cpu_ms.append((time.process_time() - c0) * 1e3)
    return out


def measure(fn: Callable[[], Any], runs: int, warmup: int,
            sync: Callable[[], None] | None = None) -> Timings:
    """``measure_alternating`` of one function."""
    return measure_alternating([fn], runs, warmup, sync)[0]


def time_call(fn: Callable[[], Any], runs: int, warmup: int, sync: Callable[[], None]
              ) -> StageTiming:
    t = measure(fn, runs, warmup, sync)
    return StageTiming(t.median_ms, t.p90_ms, runs)


def has_own_forward(extractor: Any) -> bool:
    """True when the extractor defines a network ``forward`` (not ``nn.Module``'s placeholder)."""
    import torch

    fwd = getattr(type(extractor), "forward", None)
    return fwd is not None and fwd is not torch.nn.Module.forward


def benchmark_extractor(extractor: Any, image: np.ndarray, runs: int = 20, warmup: int = 3
                        ) -> dict[str, Any]:
    """Time the stages described in the module docstring on one image."""
    import torch

    dev = getattr(extractor, "device", torch.device("cpu"))
    dev = torch.device(dev) if not isinstance(dev, torch.device) else dev
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict[str, Any] = {}
    whole = time_call(lambda: extractor.extract(image), runs, warmup, sync)
    out["whole"] = asdict(whole)
    out["keypoints"] = len(extractor.extract(image))
    if hasattr(extractor, "prepare") and hasattr(extractor, "_extract"):
        tensor, _ = extractor.prepare(image)
        out["preprocess"] = asdict(time_call(lambda: extractor.prepare(image), runs, warmup, sync))
        with torch.inference_mode():
            core = time_call(lambda: extractor._extract(tensor), runs, warmup, sync)
            out["extract_core"] = asdict(core)
            backend = getattr(extractor, "backend", "torch")
            if backend != "torch" and hasattr(extractor, "run_network"):
                # exported network in onnxruntime / OpenVINO / TensorRT (``backend`` key)
                network = time_call(lambda: extractor.run_network(tensor), runs, warmup, sync)
                out["network"] = asdict(network)
                out["postprocess_ms"] = max(0.0, core.median_ms - network.median_ms)
            elif backend != "torch":
                out["network"] = None  # the torch forward is not what runs
            elif has_own_forward(extractor):
                def net() -> Any:
                    x = tensor
                    if dev.type == "cpu" or getattr(extractor, "use_reduced_precision", False):
                        x = x.contiguous(memory_format=torch.channels_last)
                    with extractor.autocast():
                        return extractor(x)
                try:
                    network = time_call(net, runs, warmup, sync)
                    out["network"] = asdict(network)
                    out["postprocess_ms"] = max(0.0, core.median_ms - network.median_ms)
                except Exception as exc:  # a forward that needs more than the tensor
                    logger.warning("network-only timing unavailable: %s", exc)
                    out["network"] = None
            else:
                out["network"] = None
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak_rss_delta_mb"] = (rss1 - rss0) / 1024.0  # ru_maxrss is KiB on Linux
    out["cuda_peak_mb"] = (torch.cuda.max_memory_allocated(dev) / 2 ** 20) if cuda else None
    out["threads"] = {"torch": torch.get_num_threads(),
                      "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                      "opencv": _cv2_threads()}
    return out


def _cv2_threads() -> int:
    import cv2

    return int(cv2.getNumThreads())


def markdown_table(records: list[dict[str, Any]]) -> str:
    """The markdown table of docs/benchmarks.md: one row per (method, size)."""
    def ms(stage: dict | None) -> str:
        return f"{stage['median_ms']:.1f}" if stage else "-"

    lines = ["| method | size | device | precision | keypoints | whole median ms | whole p90 ms | "
             "preprocess ms | network ms | post-process ms | peak RSS delta MB | CUDA peak MB | "
             "threads |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        m = r["timing"]
        post = m.get("postprocess_ms")
        post_s = "-" if post is None else f"{post:.1f}"
        cuda_s = "-" if m["cuda_peak_mb"] is None else f"{m['cuda_peak_mb']:.0f}"
        lines.append(
            f"| {r['method']} | {r['size']} | {r['device']} | {r['precision']} | {m['keypoints']} | "
            f"{m['whole']['median_ms']:.1f} | {m['whole']['p90_ms']:.1f} | "
            f"{ms(m.get('preprocess'))} | {ms(m.get('network'))} | "
            f"{post_s} | {m['peak_rss_delta_mb']:.0f} | {cuda_s} | "
            f"{m['threads']['torch']} |")
    return "\n".join(lines) + "\n"
