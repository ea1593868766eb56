"""OpenVINO runner (CPU): the ONNX file read as it is, compiled with dynamic shapes.

Precision is explicit: ``INFERENCE_PRECISION_HINT`` f32 or bf16 (OpenVINO's own default on CPUs
with native bf16 is bf16, so fp32 must be asked for). ``PERFORMANCE_HINT: LATENCY`` (one frame at
a time, the node's model) and ``INFERENCE_NUM_THREADS`` = torch's thread count, so the backends
are compared on the same cores. One infer request per runner (the extractor is called from one
thread; the node holds a lock around it).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .interface import BackendUnavailable

logger = logging.getLogger(__name__)


def _import_ov():
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailable("backend openvino needs the 'openvino' package: pip install -r "
                                 f"requirements-deploy.txt ({exc})") from exc
    return ov


class OpenVINORunner:
    """``runner(*tensors) -> tuple of fp32 tensors`` for one ONNX file."""

    def __init__(self, onnx_path: str, device: torch.device, precision: str,
                 output_names: tuple[str, ...], threads: int = 0):
        ov = _import_ov()
        if device.type != "cpu":
            raise BackendUnavailable(f"backend openvino runs on the CPU (device: cpu), not on "
                                     f"'{device}'; on a CUDA device use backend tensorrt or "
                                     "onnxruntime")
        self.device = device
        self.backend = "openvino"
        self.precision = precision
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "PERFORMANCE_HINT": "LATENCY"}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        names = {o.get_any_name(): i for i, o in enumerate(self.compiled.outputs)}
        self._out_index = [names.get(n, i) for i, n in enumerate(output_names)]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        arrays = [np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy()) for t in inputs]
        self.request.infer(arrays)
        # copy: the request's output buffers are reused by the next call
        return tuple(torch.from_numpy(np.array(self.request.get_output_tensor(i).data,
                                               dtype=np.float32, copy=True))
                     for i in self._out_index)
