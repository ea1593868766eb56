"""Safe, local-only checkpoint I/O.

Why: users bring official files (``superpoint_v1.pth``, ``d2_tf.pth``) and our own training writes
checkpoints; both must load without unpickling arbitrary objects and without any download.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .atomic import atomic_path
from .config import to_builtin

logger = logging.getLogger(__name__)

#: Weights shipped inside the package (trained by this project's own pipeline).
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent / "data" / "weights"

FORMAT_NAME = "local_features_ros"
FORMAT_VERSION = 1


class WeightsError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the network."""


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint (``.pth``/``.pt`` via ``weights_only=True``, or ``.safetensors``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"weights file not found: {p} (weights are never downloaded; pass a local path)"
        )
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(p), device="cpu"))
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, wrong format
        raise WeightsError(f"cannot read checkpoint {p}: {exc}") from exc
    if not isinstance(obj, Mapping):
        raise WeightsError(f"checkpoint {p} holds a {type(obj).__name__}, expected a dict")
    return dict(obj)


def is_project_checkpoint(ckpt: Mapping[str, Any]) -> bool:
    return ckpt.get("format") == FORMAT_NAME and "state_dict" in ckpt


def unwrap_state_dict(ckpt: Mapping[str, Any], wrapper_keys: tuple[str, ...] = ()) -> dict:
    """Return the tensor dict inside a project checkpoint, an official wrapper, or a plain dict."""
    if is_project_checkpoint(ckpt):
        return dict(ckpt["state_dict"])
    for k in wrapper_keys:
        if k in ckpt and isinstance(ckpt[k], Mapping):
            return dict(ckpt[k])
    return dict(ckpt)


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict check naming the offending key (missing, unexpected or wrong shape)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise WeightsError(f"{source}: missing key '{missing[0]}' ({len(missing)} missing in total)")
    if unexpected:
        raise WeightsError(
            f"{source}: unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected in total)"
        )
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"{source}: key '{k}' is not a tensor")
        if tuple(v.shape) != tuple(own[k].shape):
            raise WeightsError(
                f"{source}: key '{k}' has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
            )


def save_checkpoint(path: str | os.PathLike, method: str, state_dict: Mapping[str, torch.Tensor],
                    config: Mapping[str, Any] | None = None, **extra: Any) -> Path:
    """Write a project checkpoint atomically (temp file + rename): a kill never leaves half a file."""
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "method": method,
        "config": to_builtin(config or {}),  # builtin types: read with weights_only=True
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        **extra,
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    p = Path(path)
    with atomic_path(p) as tmp:
        torch.save(obj, tmp)
    return p
