"""onnxruntime runner (CPU, CUDA, or TensorRT through onnxruntime's TensorRT provider).

``backend: onnxruntime``: the CPU execution provider on a CPU device, the CUDA provider on a CUDA
device (``onnxruntime-gpu``). ``backend: tensorrt``: the TensorRT provider (fp16 unless precision
is fp32, engines cached next to the ONNX files; ``shape_profile``: one explicit min/opt/max
profile), CUDA provider as fallback for unsupported nodes.
Tensors go through host numpy (one copy each way); outputs come back fp32 on the input's device.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .interface import BackendUnavailable

logger = logging.getLogger(__name__)


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable("backend onnxruntime needs the 'onnxruntime' package (CPU) or "
                                 "'onnxruntime-gpu' (CUDA/TensorRT): pip install -r "
                                 f"requirements-deploy.txt ({exc})") from exc
    return ort


def ort_has_tensorrt() -> bool:
    """True when the installed onnxruntime offers the TensorRT execution provider."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "TensorrtExecutionProvider" in ort.get_available_providers()


def _profile_options(profile: dict[str, Any] | None) -> dict[str, str]:
    """``{input: (min, opt, max)}`` -> the TensorRT provider's ``trt_profile_*_shapes``
    strings (``name:1x1024x2,...``)."""
    if not profile:
        return {}
    keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    return {key: ",".join(f"{name}:" + "x".join(str(int(d)) for d in shapes[i])
                          for name, shapes in profile.items())
            for i, key in enumerate(keys)}


class OnnxRuntimeRunner:
    """``runner(*tensors) -> tuple of fp32 tensors`` for one ONNX file."""

    def __init__(self, onnx_path: str, device: torch.device, precision: str,
                 output_names: tuple[str, ...], threads: int = 0, tensorrt: bool = False,
                 shape_profile: dict[str, Any] | None = None):
        ort = _import_ort()
        available = ort.get_available_providers()
        self.device = device
        self.backend = "tensorrt" if tensorrt else "onnxruntime"
        self.precision = precision
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only
        # No busy-waiting after a run: the torch post-processing that follows on the same cores
        # otherwise competes with idle-spinning ORT threads (ALIKED-n16 320x240, 2 threads: the
        # torch part after the ORT network 84 -> 56 ms; the network itself unchanged)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if tensorrt:
            if "TensorrtExecutionProvider" not in available or not torch.cuda.is_available():
                raise BackendUnavailable(
                    "backend tensorrt needs a CUDA GPU and onnxruntime-gpu with TensorRT "
                    "(TensorrtExecutionProvider; install onnxruntime-gpu and NVIDIA TensorRT) "
                    "or the tensorrt package; "
                    f"this onnxruntime offers: {', '.join(available)}; "
                    f"CUDA available: {torch.cuda.is_available()}")
            cache = str(Path(onnx_path).parent / "trt_engines")
            trt = {"device_id": device.index or 0, "trt_fp16_enable": precision == "fp16",
                   "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                   **_profile_options(shape_profile)}
            providers: list = [("TensorrtExecutionProvider", trt),
                               ("CUDAExecutionProvider", {"device_id": device.index or 0})]
        elif device.type == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailable(
                    f"backend onnxruntime on device '{device}' needs onnxruntime-gpu "
                    f"(CUDAExecutionProvider); this onnxruntime offers: {', '.join(available)}")
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0})]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = list(output_names)

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {n: np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())
                for n, t in zip(self.input_names, inputs)}
        outs = self.session.run(self.output_names, feed)
        return tuple(torch.from_numpy(np.asarray(o, dtype=np.float32)).to(self.device)
                     for o in outs)
