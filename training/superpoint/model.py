"""Training wrapper around the runtime SuperPoint network.

Why a wrapper and not a training-only copy: the weights we train must load straight into
``build_extractor("superpoint", weights=...)``, so we train the runtime module itself (official,
BN-free layout) and only add what training needs: a detector-only path for MagicPoint and
freezing of the descriptor head while it is not trained.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import nn

from local_features_ros.extractors.superpoint import SuperPoint
from local_features_ros.weights import save_checkpoint

logger = logging.getLogger(__name__)

DESCRIPTOR_HEAD = ("convDa", "convDb")


class SuperPointModel(nn.Module):
    """``net`` is the runtime ``SuperPoint``; ``detector_only=True`` is MagicPoint (same backbone
    and detector head; the descriptor head stays at its initial weights and gets no gradient)."""

    def __init__(self, detector_only: bool = False):
        super().__init__()
        self.net = SuperPoint(device="cpu")
        self.detector_only = bool(detector_only)
        for name in DESCRIPTOR_HEAD:
            for p in getattr(self.net, name).parameters():
                p.requires_grad_(not self.detector_only)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Shared VGG feature map ``(B, 128, H/8, W/8)``: the runtime network's own backbone."""
        return self.net.encode(image)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 1, H, W)`` in [0, 1] -> ``logits`` (B, 65, H/8, W/8) and, unless detector-only,
        the raw coarse ``descriptors`` (B, 256, H/8, W/8)."""
        if self.detector_only:
            return {"logits": self.net.detector_head(self.net.encode(image))}
        semi, desc = self.net(image)
        return {"logits": semi, "descriptors": desc}

    def runtime_state_dict(self) -> dict[str, torch.Tensor]:
        """Keys exactly as the runtime extractor (and ``superpoint_v1.pth``) name them."""
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def load_runtime_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.net.load_state_dict(dict(state), strict=True)


def load_initial_weights(model: SuperPointModel, path: str | None) -> None:
    """Start from a previous stage's export (project checkpoint or official layout)."""
    if not path:
        return
    from local_features_ros.weights import load_checkpoint, unwrap_state_dict

    state = unwrap_state_dict(load_checkpoint(path))
    if all(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items()}
    model.load_runtime_state_dict(state)
    logger.info("initialised from %s", path)


def export_runtime_checkpoint(model: SuperPointModel, path: str, config: Mapping[str, Any],
                              **extra: Any) -> str:
    """Project-format checkpoint that ``build_extractor('superpoint', weights=path)`` loads."""
    return str(save_checkpoint(path, "superpoint", model.runtime_state_dict(), dict(config), **extra))
