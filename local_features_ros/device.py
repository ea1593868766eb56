"""Where a network runs and in which precision: device names, CPU bf16 detection, autocast.

Why a module of its own: extractors, matchers, the export backends and training apply the same
rules (``device: auto``, ``precision: auto``, fp16 on a CPU meaning bf16), and they import one
another; a leaf that imports only torch and ``conventions`` lets all of them share one statement
of the rules without any of them importing another just for it.

The policy: ``precision: auto`` is fp16 on CUDA, bf16 on a CPU with native bf16 dot products
(AVX512-BF16 / AMX) and fp32 on other CPUs, where emulated bf16 is slower than fp32; an explicit
``fp16`` on a CPU runs as bf16, because CPU fp16 autocast is slow and loses accuracy.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from .conventions import PRECISIONS, ConfigError

__all__ = ["autocast_context", "check_precision", "cpu_supports_bf16", "precision_dtype",
           "resolve_device"]


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 dot products (AVX512-BF16 / AMX), where autocast pays.
    Read once per process: every frame asks (``precision: auto``)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def resolve_device(device: str) -> torch.device:
    """``auto`` -> first CUDA device when present, else CPU; explicit names are validated."""
    if device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):  # torch lists 20 device types; ours are these
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{device}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available")
    return dev


def check_precision(precision: str) -> str:
    """``precision`` itself when it is one of ``PRECISIONS``, else a ``ConfigError`` naming them."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    return precision


def precision_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None = plain fp32): ``auto`` is fp16 on
    CUDA, bf16 on CPUs with native bf16, else fp32; the other names are their dtype."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def autocast_context(dtype: torch.dtype | None, device: torch.device
                     ) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (no-op for None); fp16 on a CPU runs as bf16."""
    if dtype is None:
        return contextlib.nullcontext()
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16  # fp16 autocast on CPU is slow and lossy; bf16 is the CPU path
    return torch.autocast(device_type=device.type, dtype=dtype)
