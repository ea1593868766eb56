"""LIFT's three networks: the TILDE-style detector, the orientation net and the descriptor.

Module and parameter names follow the state-dict keys of ``tf_convert.tf_name_table``; layer
sizes, variants and the assumed Gaussian of the original descriptor are in
docs/lfnet_lift.md#lift. The detector's GHH and the orientation net's pooling run as the exact
re-statements of ``ops`` (``ghh_maps``, ``max_pool_2x2``) at inference.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import get_gaussian_kernel2d
from torch import nn

from .ops import ghh_maps, l2_pool, max_pool_2x2
from .pyramid import KP_FILTER_SIZE

#: BatchNorm epsilon of the tf-lift layers (TF's default; the released models use no BN).
BN_EPS = 1e-3


def ghh(x: torch.Tensor, ns: int = 4, nm: int = 4, dim: int = 1) -> torch.Tensor:
    """Generalised Hinging Hyperplanes: consecutive blocks of ``nm`` channels -> max, then
    consecutive blocks of ``ns`` maxima -> signed sum with signs (+1, -1, +1, -1, ...).

    One output unit per ``ns * nm`` inputs along ``dim``.
    """
    c = x.shape[dim]
    if c % (ns * nm):
        raise ValueError(f"GHH needs a multiple of {ns * nm} channels, got {c}")
    shape = list(x.shape)
    shape[dim:dim + 1] = [c // (ns * nm), ns, nm]
    m = x.reshape(shape).amax(dim=dim + 2)  # (..., units, ns, ...)
    sign_shape = [1] * m.ndim
    sign_shape[dim + 1] = ns
    signs = torch.tensor([1.0 if j % 2 == 0 else -1.0 for j in range(ns)], device=x.device,
                         dtype=x.dtype).view(sign_shape)
    return (m * signs).sum(dim=dim + 1)


class LIFTDetector(nn.Module):
    """``kp/conv-ghh-1``: one 25x25 conv 1 -> ns*nm, VALID, bias -> GHH -> 1 channel."""

    def __init__(self, ns: int = 4, nm: int = 4):
        super().__init__()
        self.ns, self.nm = ns, nm
        self.conv = nn.Conv2d(1, ns * nm, KP_FILTER_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight
        if w.device.type == "cpu" and w.shape[1] == 1:
            # plain (not channels-last) kernel: oneDNN then writes a planar 16-channel map, ~1.3x
            # faster for this 1-input-channel conv, and GHH reads whole contiguous planes
            w = w.reshape(-1).view(w.shape)
        return ghh_maps(F.conv2d(x, w, self.conv.bias), self.ns, self.nm, inplace=True)


class LIFTOrientation(nn.Module):
    """3 x [conv VALID -> (BN) -> ReLU -> max-pool 2], FC -> (BN) -> GHH -> 100, FC -> (BN) -> GHH -> 2.

    ``variant='tflift'``: FC-4 takes the pooled conv-3 output (50x5x5). ``'theano'``: FC-4 takes
    conv-3's activation *before* pooling (50x11x11), as the original ``cvpr16.py``.
    """

    def __init__(self, variant: str = "tflift", use_bn: bool = False, ns: int = 4, nm: int = 4):
        super().__init__()
        self.variant, self.ns, self.nm = variant, ns, nm
        chans = [1, 10, 20, 50]
        ks = [5, 5, 3]
        self.convs = nn.ModuleList([nn.Conv2d(chans[i], chans[i + 1], ks[i]) for i in range(3)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(c, eps=BN_EPS) if use_bn else nn.Identity()
                                  for c in chans[1:]])
        self.flat_shape = (50, 5, 5) if variant == "tflift" else (50, 11, 11)
        self.fc4 = nn.Linear(int(np.prod(self.flat_shape)), 100 * ns * nm)
        self.bn4 = nn.BatchNorm1d(100 * ns * nm, eps=BN_EPS) if use_bn else nn.Identity()
        self.fc5 = nn.Linear(100, 2 * ns * nm)
        self.bn5 = nn.BatchNorm1d(2 * ns * nm, eps=BN_EPS) if use_bn else nn.Identity()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 64, 64)`` -> raw 2-vector ``(N, 2)`` (before the max/eps/L2 normalisation)."""
        x = patches
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            y = bn(conv(x))
            if i == last and self.variant != "tflift":
                x = F.relu(y)  # Theano: FC-4 takes conv-3's activation before pooling
            else:
                # relu(max_pool(y)) == max_pool(relu(y)) (relu is monotone): 4x fewer elements
                x = F.relu(max_pool_2x2(y))
        x = ghh(self.bn4(self.fc4(x.flatten(1))), self.ns, self.nm)
        return ghh(self.bn5(self.fc5(x)), self.ns, self.nm)


def orientation_from_output(out: torch.Tensor, variant: str = "tflift") -> tuple[torch.Tensor, torch.Tensor]:
    """Divide by max |.|, add sign-preserving 1e-3, L2-normalise -> (unit vec, angle).

    tf-lift: index 0 = cos, angle = atan2(out[1], out[0]); Theano: angle = atan2(out[0], out[1]).
    """
    m = out.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
    v = out / m
    v = v + torch.where(v >= 0, torch.full_like(v, 1e-3), torch.full_like(v, -1e-3))
    v = F.normalize(v, dim=-1)
    ang = torch.atan2(v[..., 1], v[..., 0]) if variant == "tflift" else torch.atan2(v[..., 0], v[..., 1])
    return v, ang


def subnorm_kernel(ksize: int, sigma: float) -> torch.Tensor:
    """The ``(ksize, ksize)`` normalised Gaussian of the subtractive normalisation (kornia's).

    Odd sizes only: the layer pads ``ksize // 2`` for a same-size output, which an even kernel
    would grow by one pixel (kornia centres even kernels between the middle taps)."""
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"subtractive-normalisation kernel size must be odd, got {ksize}")
    return get_gaussian_kernel2d((ksize, ksize), (sigma, sigma), dtype=torch.float32)[0]


class SubtractiveNorm(nn.Module):
    """Torch7 ``SpatialSubtractiveNormalization`` semantics (assumed): subtract the Gaussian-
    weighted local mean over all channels; borders renormalised by the kernel mass inside.

    The kernel is a buffer so a converted original model can carry its stored kernel.
    """

    def __init__(self, ksize: int = 5, sigma: float = 1.25):
        super().__init__()
        self.register_buffer("kernel", subnorm_kernel(ksize, sigma))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (self.kernel / self.kernel.sum()).to(x)[None, None]
        pad = (k.shape[-2] // 2, k.shape[-1] // 2)
        mean_c = x.mean(dim=1, keepdim=True)
        local = F.conv2d(mean_c, k, padding=pad)
        coef = F.conv2d(torch.ones_like(mean_c[:1]), k, padding=pad)
        return x - local / coef


class LIFTDescriptor(nn.Module):
    """conv 7x7/32, 6x6/64, 5x5/128 VALID; ``tflift``: ReLU + avg-pool 2/3/4 (BN optional);
    ``original``: tanh + L2-pool 2/3/4 (``ops.l2_pool``) + subtractive norm after layers 1 and 2.
    -> 128-D."""

    def __init__(self, variant: str = "tflift", use_bn: bool = False, subnorm_ksize: int = 5,
                 subnorm_sigma: float = 1.25):
        super().__init__()
        self.variant = variant
        chans, ks, self.pools = [1, 32, 64, 128], [7, 6, 5], [2, 3, 4]
        self.convs = nn.ModuleList([nn.Conv2d(chans[i], chans[i + 1], ks[i]) for i in range(3)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(c, eps=BN_EPS) if use_bn and variant == "tflift"
                                  else nn.Identity() for c in chans[1:]])
        if variant == "original":
            self.subnorms = nn.ModuleList([SubtractiveNorm(subnorm_ksize, subnorm_sigma) for _ in range(2)])

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = patches
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            if self.variant == "tflift":
                # in place: the conv/BN output is a fresh tensor whose backward does not need it,
                # and a second full-size buffer costs more (allocation) than the ReLU itself
                x = F.avg_pool2d(F.relu(bn(conv(x)), inplace=True), self.pools[i])
            else:
                x = l2_pool(torch.tanh(conv(x)), self.pools[i])
                if i < 2:
                    x = self.subnorms[i](x)
        return x.flatten(1)
