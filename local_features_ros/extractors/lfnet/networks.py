"""LF-Net's two networks: the ``ConvOnlyResNet`` detector and the ``SimpleDesc`` patch descriptor.

Module and parameter names follow the state-dict keys of ``tf_convert.tf_name_table``; the
architecture constants are in docs/lfnet_lift.md#lf-net. At inference (no autograd) eval-mode
BatchNorm is folded into the preceding conv/linear with torch's fusion utilities: one pass over
the layer's output less per BN, the same numbers up to float rounding
(test/extractors/test_lfnet.py::test_inference_rewrites_equal_reference_ops). Training keeps the BN modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

#: TF ``tf.layers.batch_normalization(momentum=0.9)`` -> torch momentum 1 - 0.9.
BN_MOMENTUM = 0.1
#: BN epsilon of the detector (docs/lfnet_lift.md#lf-net); the descriptor is assumed to match.
BN_EPS = 1e-5


def leaky_relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Leaky ReLU, alpha 0.2; ``inplace`` for fresh BN outputs (their backward does not need
    them), which saves a full-resolution buffer per call."""
    return F.leaky_relu(x, 0.2, inplace=inplace)


def fused_bn(layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm2d | nn.BatchNorm1d
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(layer(x))`` as one layer, for eval-mode BN (running statistics)."""
    assert bn.running_mean is not None and bn.running_var is not None
    fuse = fuse_linear_bn_weights if isinstance(layer, nn.Linear) else fuse_conv_bn_weights
    return fuse(layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)


class PreActBlock(nn.Module):
    """pre-bn -> act -> conv1 -> mid-bn -> act -> conv2, + identity (no projection)."""

    def __init__(self, ch: int, ksize: int):
        super().__init__()
        self.pre_bn = nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv1 = nn.Conv2d(ch, ch, ksize, padding=ksize // 2)
        self.mid_bn = nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(ch, ch, ksize, padding=ksize // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = leaky_relu(self.pre_bn(x), inplace=True)
        if self.training or torch.is_grad_enabled():
            y = self.mid_bn(self.conv1(a))
        else:  # eval BN folded into conv1: one full-resolution pass less (equal up to rounding)
            y = F.conv2d(a, *fused_bn(self.conv1, self.mid_bn), padding=self.conv1.padding)
        out = self.conv2(leaky_relu(y, inplace=True))
        return out.add_(x) if not torch.is_grad_enabled() else x + out


class LFNetDetector(nn.Module):
    """``ConvOnlyResNet``: init conv, residual blocks, fin-bn, per-scale score convs, ori conv."""

    def __init__(self, channels: int = 16, num_blocks: int = 3, ksize: int = 5, num_scales: int = 5):
        super().__init__()
        self.init_conv = nn.Conv2d(1, channels, ksize, padding=ksize // 2)
        self.blocks = nn.ModuleList([PreActBlock(channels, ksize) for _ in range(num_blocks)])
        self.fin_bn = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.score_convs = nn.ModuleList(
            [nn.Conv2d(channels, 1, ksize, padding=ksize // 2) for _ in range(num_scales)])
        self.ori_conv = nn.Conv2d(channels, 2, ksize, padding=ksize // 2)
        nn.init.zeros_(self.ori_conv.weight)  # starts as "upright" (cos, sin) = (1, 0)
        with torch.no_grad():
            self.ori_conv.bias.copy_(torch.tensor([1.0, 0.0]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> the 16-channel feature map F the score and ori convs read."""
        x = self.init_conv(x)
        for blk in self.blocks:
            x = blk(x)
        return leaky_relu(self.fin_bn(x), inplace=True)


def descriptor_side(patch_size: int) -> int:
    """Side of the last conv map of ``SimpleDesc``: three stride-2 'SAME' convs (ceil halving)."""
    side = patch_size
    for _ in range(3):
        side = -(-side // 2)
    return side


class LFNetDescriptor(nn.Module):
    """``SimpleDesc``: 3 x [conv3x3 s2 (TF SAME) -> BN -> ReLU] 64/128/256, fc 512 -> BN -> ReLU -> fc."""

    def __init__(self, patch_size: int = 32, out_dim: int = 256):
        super().__init__()
        chans = [1, 64, 128, 256]
        self.convs = nn.ModuleList([nn.Conv2d(chans[i], chans[i + 1], 3, stride=2) for i in range(3)])
        self.bns = nn.ModuleList(
            [nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM) for c in chans[1:]])
        side = descriptor_side(patch_size)
        self.flat_shape = (256, side, side)
        self.fc1 = nn.Linear(256 * side * side, 512)
        self.fc_bn1 = nn.BatchNorm1d(512, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.fc2 = nn.Linear(512, out_dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N, 1, P, P)`` -> ``(N, D)`` L2-normalised."""
        x = patches
        fold = not (self.training or torch.is_grad_enabled())  # eval BN folded into the layer
        for conv, bn in zip(self.convs, self.bns):
            x = tf_same_pad(x, 3, 2)
            if fold:
                x = F.conv2d(x, *fused_bn(conv, bn), stride=conv.stride).relu_()
            else:
                x = F.relu(bn(conv(x)))
        if fold:
            x = F.linear(x.flatten(1), *fused_bn(self.fc1, self.fc_bn1)).relu_()
        else:
            x = F.relu(self.fc_bn1(self.fc1(x.flatten(1))))
        return F.normalize(self.fc2(x), dim=-1)


def tf_same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TF 'SAME' padding (extra pixel at bottom/right), so converted weights see the same input."""
    h, w = x.shape[-2:]
    ph = max((-(-h // s) - 1) * s + k - h, 0)
    pw = max((-(-w // s) - 1) * s + k - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
