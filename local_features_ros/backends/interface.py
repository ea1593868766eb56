"""What the backends and their users share: the error for a missing backend and the runner type.

Why a module of its own: the package ``__init__`` opens runners from the backend modules, and those
modules raise ``BackendUnavailable``; defining it here, below both, keeps the package free of
import cycles (``__init__`` re-exports these names for users).
"""

from __future__ import annotations

from typing import Protocol

import torch

__all__ = ["BackendUnavailable", "NetworkRunner", "ShapeProfile"]


class BackendUnavailable(RuntimeError):
    """The requested backend's package (or provider / device) is missing; the message says what
    to install."""


class NetworkRunner(Protocol):
    """What a backend gives the extractor for one network part."""

    backend: str
    precision: str  # what the backend actually runs: fp32 | bf16 | fp16

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


#: A TensorRT shape profile: input name -> (min, opt, max) shapes.
ShapeProfile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
