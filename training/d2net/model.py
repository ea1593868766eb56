"""The D2-Net *training* network: same parameters as the runtime model, stride 8.

Why not a second VGG: the official training model (``lib/model.py``) is torchvision's
``vgg16().features[:22]`` -- a normal max-pool instead of the stride-1 avg-pool and no dilation
-- with the same parameter indices, so the same tensors serve both. Here the runtime
:class:`local_features_ros.extractors.d2net.D2Net` *owns* the parameters and this module runs
them with the training layer list; the exported checkpoint is the runtime state dict unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from local_features_ros.extractors.d2net import D2Net

logger = logging.getLogger(__name__)

#: conv indices whose dilation-2 runtime conv runs with dilation 1 in training (conv4_x).
DILATED = (17, 19, 21)
POOL3 = 16
CONV4_3 = 21


class D2NetTrainModel(nn.Module):
    """``forward(images [0, 1] RGB (B, 3, H, W))`` -> raw (pre-ReLU) conv4_3 features at stride 8.

    ``trainable``: ``"conv4_3"`` (official ``finetune_feature_extraction``: only the last conv's
    weight and bias), ``"conv4"`` (conv4_1..3) or ``"all"``.
    """

    def __init__(self, init_weights: str | None = None, trainable: str = "conv4_3",
                 preprocessing: str = "caffe", **extractor_conf: Any):
        super().__init__()
        self.net = D2Net(preprocessing=preprocessing, **extractor_conf)
        if init_weights:
            self.net.load_weights(init_weights)
            logger.info("D2-Net initialised from %s", init_weights)
        else:
            logger.warning("D2-Net training from random weights (official: d2_ots.pth)")
        first = {"conv4_3": CONV4_3, "conv4": 17, "all": 0}.get(trainable)
        if first is None:
            raise ValueError(f"model.trainable must be conv4_3, conv4 or all, got '{trainable}'")
        for idx, layer in enumerate(self.net.dense_feature_extraction.model):
            for p in layer.parameters():
                p.requires_grad_(idx >= first)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.net.normalize(images)
        for idx, layer in enumerate(self.net.dense_feature_extraction.model):
            if idx == POOL3:
                x = F.max_pool2d(x, 2, 2)
            elif idx in DILATED:
                x = F.conv2d(x, layer.weight, layer.bias, stride=1, padding=1, dilation=1)
            else:
                x = layer(x)
        return x

    def runtime_state_dict(self) -> dict[str, torch.Tensor]:
        """Keys exactly as the runtime extractor names them (``dense_feature_extraction.model.N``)."""
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
