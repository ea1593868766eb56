"""TensorRT runner through the ``tensorrt`` Python package (when onnxruntime has no TensorRT provider).

Why: ``backend: tensorrt`` prefers onnxruntime's TensorRT execution provider
(``onnxruntime_backend.py``); many GPU machines have NVIDIA's ``tensorrt`` wheel but a CPU or
CUDA-only onnxruntime, so this runner builds the engine from the same ONNX file itself.

Engines: built with the ONNX parser (fp16 flag unless precision is fp32), one optimisation profile
each, serialised to ``<onnx dir>/trt_engines/`` (key: ONNX bytes, profile, precision, TensorRT
version) so a restart reuses them. Profiles: an explicit ``shape_profile`` (LightGlue: 1..4096
keypoints) gives one engine; otherwise every dynamic dimension is bucketed to the next power of
two, ``(bucket/2, bucket]``, with the call's shape as ``opt``, so a new patch count or image size
inside a bucket reuses its engine instead of building one per frame.

I/O: torch CUDA tensors bound by address (``execute_async_v3`` on torch's current stream); inputs
cast to the engine's dtypes, outputs returned as fp32 (as every runner). TensorRT >= 8.6 API
(name-based tensors). Without a GPU this module is never reached (tests run the error path only).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path
from .interface import BackendUnavailable

logger = logging.getLogger(__name__)

#: Engines kept per runner (oldest dropped): one per shape bucket in use.
MAX_ENGINES = 16


def _import_trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable("backend tensorrt needs onnxruntime-gpu with the TensorRT "
                                 f"provider or the 'tensorrt' package ({exc})") from exc
    return trt


def _bucket(n: int) -> tuple[int, int]:
    """(min, max) of the power-of-two bucket holding ``n``: ``(max/2, max]``."""
    hi = 1 << max(0, int(n) - 1).bit_length()
    return (hi // 2 + 1 if hi > 1 else 1), hi


class TensorRTRunner:
    """``runner(*tensors) -> tuple of fp32 tensors`` for one ONNX file, on a CUDA device."""

    def __init__(self, onnx_path: str, device: torch.device, precision: str,
                 output_names: tuple[str, ...],
                 shape_profile: dict[str, tuple[tuple[int, ...], ...]] | None = None):
        if device.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailable(f"backend tensorrt needs a CUDA device, got '{device}' "
                                     f"(CUDA available: {torch.cuda.is_available()})")
        self.trt = _import_trt()
        self.device = device
        self.backend = "tensorrt"
        self.precision = precision
        self.output_names = list(output_names)
        self.onnx_path = Path(onnx_path)
        self._onnx = self.onnx_path.read_bytes()
        self._log = self.trt.Logger(self.trt.Logger.ERROR)
        self._runtime = self.trt.Runtime(self._log)
        self._profile = shape_profile
        self._engines: dict[Any, tuple[Any, Any]] = {}
        self.input_names: list[str] = []
        self._dynamic: dict[str, list[bool]] = {}
        self._inspect()

    # ------------------------------------------------------------------ building
    def _parse(self) -> tuple[Any, Any, Any]:
        trt = self.trt
        builder = trt.Builder(self._log)
        flags = 0
        if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT < 10
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._log)
        if not parser.parse(self._onnx):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse {self.onnx_path.name}: {errors}")
        return builder, network, parser

    def _inspect(self) -> None:
        """Input names (ONNX order) and which of their dimensions are dynamic (-1)."""
        _, network, _ = self._parse()
        for i in range(network.num_inputs):
            t = network.get_input(i)
            self.input_names.append(t.name)
            self._dynamic[t.name] = [int(d) < 0 for d in t.shape]

    def _ranges(self, shapes: tuple[tuple[int, ...], ...]
                ) -> dict[str, tuple[tuple[int, ...], ...]]:
        """The profile for a call with ``shapes``: the explicit one, or power-of-two buckets."""
        if self._profile:
            return self._profile
        out = {}
        for name, shape in zip(self.input_names, shapes):
            lo, hi = [], []
            for d, dyn in zip(shape, self._dynamic[name]):
                a, b = _bucket(d) if dyn else (d, d)
                lo.append(a)
                hi.append(b)
            out[name] = (tuple(lo), tuple(shape), tuple(hi))
        return out

    def _key(self, ranges: dict[str, tuple[tuple[int, ...], ...]]) -> Any:
        if self._profile:
            return "profile"
        return tuple((n, r[0], r[2]) for n, r in ranges.items())  # opt does not split engines

    def _engine_file(self, ranges: dict[str, tuple[tuple[int, ...], ...]]) -> Path:
        h = hashlib.sha256(self._onnx)
        h.update(repr(sorted(ranges.items())).encode())
        h.update(f"{self.precision}/{self.trt.__version__}".encode())
        return (self.onnx_path.parent / "trt_engines"
                / f"{self.onnx_path.stem}-{h.hexdigest()[:16]}.engine")

    def _build(self, ranges: dict[str, tuple[tuple[int, ...], ...]]) -> Any:
        path = self._engine_file(ranges)
        if path.is_file():
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is not None:
                return engine
        trt = self.trt
        builder, network, _parser = self._parse()
        config = builder.create_builder_config()
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in ranges.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        logger.info("building a TensorRT engine for %s (%s, %s)", self.onnx_path.name,
                    self.precision, ranges)
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise RuntimeError(f"TensorRT could not build an engine for {self.onnx_path.name} "
                               f"({self.precision}, shapes {ranges})")
        data = bytes(blob)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(data)
        return self._runtime.deserialize_cuda_engine(data)

    def _context(self, shapes: tuple[tuple[int, ...], ...]) -> tuple[Any, Any]:
        ranges = self._ranges(shapes)
        key = self._key(ranges)
        entry = self._engines.get(key)
        if entry is None:
            if len(self._engines) >= MAX_ENGINES:
                self._engines.pop(next(iter(self._engines)))
            engine = self._build(ranges)
            entry = self._engines[key] = (engine, engine.create_execution_context())
        return entry

    # ------------------------------------------------------------------ running
    def _torch_dtype(self, dtype: Any) -> torch.dtype:
        trt = self.trt
        table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                 trt.DataType.INT32: torch.int32, trt.DataType.INT8: torch.int8,
                 trt.DataType.BOOL: torch.bool}
        if hasattr(trt.DataType, "INT64"):
            table[trt.DataType.INT64] = torch.int64
        return table[dtype]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shapes = tuple(tuple(int(d) for d in t.shape) for t in inputs)
        engine, ctx = self._context(shapes)
        keep: list[torch.Tensor] = []  # alive until the stream has run them
        for name, t in zip(self.input_names, inputs):
            x = t.detach().to(self.device, self._torch_dtype(engine.get_tensor_dtype(name)))
            x = x.contiguous()
            keep.append(x)
            ctx.set_input_shape(name, tuple(x.shape))
            ctx.set_tensor_address(name, x.data_ptr())
        outs = []
        for name in self.output_names:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            o = torch.empty(shape, dtype=self._torch_dtype(engine.get_tensor_dtype(name)),
                            device=self.device)
            ctx.set_tensor_address(name, o.data_ptr())
            outs.append(o)
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.onnx_path.name} failed "
                               f"(shapes {shapes})")
        return tuple(o.float() for o in outs)
