"""Run an extractor's network parts outside torch: ONNX export + onnxruntime / OpenVINO / TensorRT.

Why: on a robot CPU the network is most of the time (SuperPoint 640x480: ~90 % of ``extract``),
and OpenVINO/onnxruntime run the same graph faster than eager torch (bf16 on CPUs with native
bf16). Only the network part moves: each method declares its parts (``Extractor.networks``, one
``NetworkDecl`` each) and calls them through ``Extractor.call_network``; detection, NMS and
descriptor sampling stay in torch, so a backend changes only the network's rounding.

One interface (``NetworkRunner``, in ``interface.py`` with ``BackendUnavailable``):
``runner(*tensors) -> tuple of fp32 tensors`` on the extractor's device.
``create_runners(extractor)`` (called by ``registry.build_extractor`` when the config key
``backend`` is not ``torch``; it hands them to ``Extractor.attach_network_runners``) exports every
declared part to the cache directory on first use (``onnx_export.export_network``) and opens it in
the chosen backend. The LightGlue matcher's network has its own export (``lightglue_export.py``)
and opens it with ``create_runner``.

Precision: ``precision`` maps to what the backend supports (``resolve_precision``): onnxruntime
runs fp32 (its CPU provider has no bf16/fp16 convolution kernels); OpenVINO fp32 or bf16 (bf16 only
on CPUs with native bf16; ``auto`` picks it there, fp16 on a CPU means bf16 as in torch);
TensorRT fp32 or fp16 (``auto``/``fp16``/``bf16``), through onnxruntime's TensorRT provider or,
where this onnxruntime has none, the ``tensorrt`` package.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from ..device import cpu_supports_bf16
from .interface import BackendUnavailable, NetworkRunner, ShapeProfile

logger = logging.getLogger(__name__)

__all__ = ["BackendUnavailable", "NetworkRunner", "ShapeProfile", "create_runner",
           "create_runners", "resolve_precision"]


def resolve_precision(backend: str, precision: str, device: torch.device) -> str:
    """Extractor ``precision`` (fp32 | fp16 | bf16 | auto) -> what ``backend`` will run."""
    if backend == "onnxruntime":
        if precision in ("fp16", "bf16"):
            logger.warning("backend onnxruntime runs fp32 (precision '%s' is not supported by its "
                           "CPU/CUDA providers); use backend openvino (bf16) or tensorrt (fp16)",
                           precision)
        return "fp32"
    if backend == "openvino":
        if precision == "fp32":
            return "fp32"
        native = cpu_supports_bf16()
        if precision == "auto":
            return "bf16" if native else "fp32"
        if not native:
            logger.warning("backend openvino: this CPU has no native bf16 (AVX512-BF16/AMX); "
                           "precision '%s' runs fp32", precision)
            return "fp32"
        return "bf16"  # fp16 on a CPU means bf16, as for torch autocast
    if backend == "tensorrt":
        return "fp32" if precision == "fp32" else "fp16"
    raise ValueError(f"unknown backend '{backend}'")


def create_runner(backend: str, onnx_path: str, device: torch.device, precision: str,
                  output_names: tuple[str, ...], threads: int = 0,
                  shape_profile: ShapeProfile | None = None) -> NetworkRunner:
    """Open one exported ONNX file in ``backend`` (``precision`` already resolved).

    ``tensorrt`` runs in onnxruntime's TensorRT provider when that onnxruntime has it, else in
    the ``tensorrt`` package (``tensorrt_backend.py``), whichever is installed.
    ``shape_profile``: one TensorRT profile for a graph whose sizes change every call (LightGlue's
    keypoint counts), so that one engine serves them all; ignored by the other backends."""
    if backend == "tensorrt":
        from .onnxruntime_backend import ort_has_tensorrt

        if not ort_has_tensorrt() and _have_module("tensorrt"):
            from .tensorrt_backend import TensorRTRunner

            return TensorRTRunner(onnx_path, device, precision, output_names, shape_profile)
    if backend in ("onnxruntime", "tensorrt"):
        from .onnxruntime_backend import OnnxRuntimeRunner

        return OnnxRuntimeRunner(onnx_path, device, precision, output_names, threads,
                                 tensorrt=backend == "tensorrt", shape_profile=shape_profile)
    if backend == "openvino":
        from .openvino_backend import OpenVINORunner

        return OpenVINORunner(onnx_path, device, precision, output_names, threads)
    raise ValueError(f"unknown backend '{backend}'")


def _have_module(name: str) -> bool:
    """Installed, without importing it (``tensorrt`` loads CUDA libraries on import)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class _PerShapeRunner:
    """For parts whose export bakes the input size in (``NetworkDecl.dynamic = False``): one
    export + session per input shape, made on first use (a camera has one size; a pyramid a few)."""

    def __init__(self, make: Callable[[tuple[tuple[int, ...], ...]], NetworkRunner],
                 backend: str, precision: str, max_shapes: int = 32):
        self._make = make
        self._runners: dict[tuple[tuple[int, ...], ...], NetworkRunner] = {}
        self.backend, self.precision, self.max_shapes = backend, precision, max_shapes

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = tuple(tuple(int(d) for d in t.shape) for t in inputs)
        runner = self._runners.get(key)
        if runner is None:
            if len(self._runners) >= self.max_shapes:  # drop the oldest session
                self._runners.pop(next(iter(self._runners)))
            runner = self._runners[key] = self._make(key)
        return runner(*inputs)


def create_runners(extractor: Any) -> dict[str, NetworkRunner]:
    """Export (cached) and open every network part of ``extractor`` in its configured backend."""
    from .onnx_export import export_network

    backend = str(extractor.conf["backend"])
    device = extractor.device
    precision = resolve_precision(backend, extractor.precision, device)
    threads = torch.get_num_threads()
    runners: dict[str, NetworkRunner] = {}
    for name, decl in extractor.networks.items():
        outs = tuple(o[0] for o in decl.outputs)
        if decl.dynamic:
            path = export_network(extractor, name)
            runners[name] = create_runner(backend, str(path), device, precision, outs, threads)
        else:
            def make(shapes: tuple[tuple[int, ...], ...], name: str = name,
                     outs: tuple[str, ...] = outs) -> NetworkRunner:
                path = export_network(extractor, name, shapes=shapes)
                return create_runner(backend, str(path), device, precision, outs, threads)

            runners[name] = _PerShapeRunner(make, backend, precision)
    logger.info("method '%s': network parts %s run in %s (%s)", extractor.name,
                ", ".join(runners), backend, precision)
    return runners
