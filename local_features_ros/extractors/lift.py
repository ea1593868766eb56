"""LIFT (Yi, Trulls, Lepetit, Fua, ECCV 2016), re-implemented from methods.md §4.

Pipeline (tf-lift ``tester.py`` semantics, batched): TILDE-style detector (25x25 conv + GHH) run
fully convolutionally on a scale pyramid -> score maps resampled onto the input grid (the 12-px
VALID border is -inf) -> 3-D NMS over space and scale + edge test + quadratic interpolation ->
top-K -> orientation net on upright 64x64 crops -> descriptor net on rotated 64x64 crops.

Geometry (methods.md §4.1): the 128-px patch spans 24 sigma (half width 12 sigma); the
descriptor/orientation input is its central 64 px, i.e. a 64x64 crop of half width 6 sigma
(pixel-area grid, ``patches.extract_patches(corners=False)``). Level ``scale`` = keypoint sigma.

Speed (CPU, 21 levels at 640x480; same outputs up to float rounding, see test_lift.py): levels
are packed side by side into a few canvases per detector call (:func:`pack_levels`), each level
is resampled only inside its VALID rectangle with cached grids, the 3-D NMS is separable, and
the derivatives for the edge test / Newton step are evaluated at the NMS survivors only
(:func:`sample_level_derivatives`) instead of resampling five derivative maps per level.

Deviations and assumptions are listed in docs/lfnet_lift.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..types import Features
from .base import ConfigError, Extractor, NetworkDecl
from .lfnet import convert_arrays
from .patches import crop_patches_fast
from .nms import dense_window_max

logger = logging.getLogger(__name__)

KP_INPUT_SIZE = 48  # kp_input_size
KP_FILTER_SIZE = 25  # kp_filter_size
RATIO_SCALE = 12.0  # (kp_input_size / 2) / kp_base_scale
DESC_INPUT_SIZE = 64
DESC_HALF_WIDTH_SIGMA = 6.0  # central 64 of the 128-px patch (half width 12 sigma)

#: mean/std on the 0..255 scale: (kp/ori, desc) per ``mean_std_type`` (tf-lift networks/lift.py).
MEAN_STD: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "hardcoded": ((128.0, 128.0), (128.0, 128.0)),
    "old": ((116.4368, 88.0831), (110.7539, 61.5369)),
}


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


def ghh_maps(x: torch.Tensor, ns: int = 4, nm: int = 4, inplace: bool = False) -> torch.Tensor:
    """:func:`ghh` over the channels of a ``(B, C, H, W)`` map (the detector: 16 -> 1 channel)
    as element-wise maxima of channel planes and a left-to-right signed sum.

    Same numbers as ``ghh(x)`` (max is exact and ``ghh``'s sum adds the maxima in this order),
    in ``nm - 1 + ns - 1`` whole-plane ops instead of a 6-D reshape copy and reductions over
    size-4 dimensions, which cost more than the 25x25 conv's own output pass on CPU.
    ``inplace``: ``x`` is scratch (the conv output) and takes the running maxima, which saves
    allocating (and page-faulting) three quarter-size buffers; ignored when autograd or an
    export trace needs the functional form.
    """
    b, c, h, w = x.shape
    if c % (ns * nm):
        raise ValueError(f"GHH needs a multiple of {ns * nm} channels, got {c}")
    inplace = inplace and not (torch.is_grad_enabled() and x.requires_grad) \
        and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export() and x.is_contiguous()
    v = x.reshape(b, c // nm, nm, h, w)
    m = v[:, :, 0]
    for k in range(1, nm):
        m = torch.maximum(m, v[:, :, k], out=m) if inplace else torch.maximum(m, v[:, :, k])
    m = m.reshape(b, c // (ns * nm), ns, h, w)
    acc = m[:, :, 0] - m[:, :, 1] if ns > 1 else m[:, :, 0]
    for j in range(2, ns):
        if inplace:
            acc = acc.add_(m[:, :, j]) if j % 2 == 0 else acc.sub_(m[:, :, j])
        else:
            acc = acc + m[:, :, j] if j % 2 == 0 else acc - m[:, :, j]
    return acc


@dataclass(frozen=True)
class PyramidLevel:
    """One test scale: keypoint sigma, image resize factor and resized size (h, w)."""

    scale: float
    factor: float
    height: int
    width: int


def pyramid_levels(height: int, width: int, min_log2: float = 1.0, max_log2: float = 4.0,
                   intervals: int = 4, double_scale: bool = True, max_double_side: int = 1600,
                   min_side: int = 26) -> list[PyramidLevel]:
    """Test-time pyramid (methods.md §4.3): scales ``2^linspace(min, max, (max-min)(intv+1)+1)``,
    min lowered by 1 when ``min(H, W) <= 1600`` ("double scale"), factor ``((48-1)/2)/(12 s)``,
    resized size ``round(side * factor)``; levels with resized min side ``<= 26`` are dropped."""
    lo = float(min_log2)
    if double_scale and min(height, width) <= max_double_side:
        lo -= 1.0
    n = int(round((max_log2 - lo) * (intervals + 1))) + 1
    levels = []
    for s in np.power(2.0, np.linspace(lo, max_log2, n)):
        f = ((KP_INPUT_SIZE - 1) / 2.0) / (RATIO_SCALE * float(s))
        h, w = int(round(height * f)), int(round(width * f))
        if min(h, w) <= min_side:
            continue
        levels.append(PyramidLevel(float(s), f, h, w))
    return levels


#: one canvas: (height, width, [(level index, top, left), ...])
Canvas = tuple[int, int, list[tuple[int, int, int]]]


def pack_levels(levels: list[PyramidLevel], area: int) -> list[Canvas]:
    """Group pyramid levels into canvases that one detector call covers.

    Why: the VALID 25x25 conv reads only a level's own pixels for its VALID outputs, so levels
    placed side by side (no gap needed) give the same score maps as separate calls, in fewer,
    larger calls (every call is a conv, a GHH and their thread fork/joins). Levels larger than
    ``area / 4`` pair up left to right (same order, ~6% unused canvas for the geometric
    pyramid); the small tail goes on shelves of one canvas as wide as its two widest levels.
    """
    small = [k for k, lv in enumerate(levels) if 4 * lv.height * lv.width <= area]
    big = [k for k in range(len(levels)) if k not in small]
    canvases: list[Canvas] = []
    for j in range(0, len(big), 2):
        items, left = [], 0
        for k in big[j:j + 2]:
            items.append((k, 0, left))
            left += levels[k].width
        canvases.append((max(levels[k].height for k in big[j:j + 2]), left, items))
    if small:
        width = sum(sorted((levels[k].width for k in small), reverse=True)[:2])
        items, top, left, shelf = [], 0, 0, 0
        for k in small:
            if left + levels[k].width > width:
                top, left, shelf = top + shelf, 0, 0
            items.append((k, top, left))
            left += levels[k].width
            shelf = max(shelf, levels[k].height)
        canvases.append((top + shelf, width, items))
    return canvases


@dataclass
class ScorePyramid:
    """Detector output on the input pixel grid, one slice per pyramid level.

    Why both a dense stack and the level maps: the 3-D NMS needs every level on the input grid,
    but the derivatives (edge test, Newton step) are only needed at the few NMS survivors, so
    ``score_pyramid`` leaves ``deriv`` empty and ``detect`` evaluates them there from ``maps``
    (bilinear samples of the level's central differences, the same numbers a dense ``deriv``
    would hold). A hand-made pyramid may pass a dense ``deriv`` instead.
    """

    score: torch.Tensor  # (B, L, H, W), -inf outside the VALID region
    deriv: torch.Tensor | None  # (B, L, 5, H, W) [Dx, Dy, Dxx, Dyy, Dxy] in level pixels, or None
    sigmas: torch.Tensor  # (L,) keypoint sigma of each level
    level_px: torch.Tensor  # (L, 2) input pixels per level pixel (x, y)
    maps: list[torch.Tensor] | None = None  # per level (B, 1, sh, sw): score map on its own grid
    grid_x: torch.Tensor | None = None  # (L, W) grid_sample x coordinate of each input column
    grid_y: torch.Tensor | None = None  # (L, H) grid_sample y coordinate of each input row


@dataclass
class _PyramidLayout:
    """Per input size: the levels, each level's VALID rectangle on the input grid (or None) and
    its ``grid_sample`` grid over that rectangle, the per-column/row grid coordinates, sigmas
    and input pixels per level pixel."""

    key: tuple
    levels: list[PyramidLevel]
    canvases: list[Canvas]
    rects: list[tuple[int, int, int, int] | None]
    grids: list[torch.Tensor | None]
    grid_x: torch.Tensor  # (L, W)
    grid_y: torch.Tensor  # (L, H)
    sigmas: torch.Tensor  # (L,)
    level_px: torch.Tensor  # (L, 2)


# ---------------------------------------------------------------------------------- networks
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
        self.bns = nn.ModuleList([nn.BatchNorm2d(c, eps=1e-3) if use_bn else nn.Identity()
                                  for c in chans[1:]])
        self.flat_shape = (50, 5, 5) if variant == "tflift" else (50, 11, 11)
        self.fc4 = nn.Linear(int(np.prod(self.flat_shape)), 100 * ns * nm)
        self.bn4 = nn.BatchNorm1d(100 * ns * nm, eps=1e-3) if use_bn else nn.Identity()
        self.fc5 = nn.Linear(100, 2 * ns * nm)
        self.bn5 = nn.BatchNorm1d(2 * ns * nm, eps=1e-3) if use_bn else nn.Identity()

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


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` (floor mode); at inference as three element-wise maxima of the
    four strided phases: the same numbers (max is exact), ~1.7x faster on CPU for the
    channels-last maps with few channels the orientation net produces."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.max_pool2d(x, 2)  # its gradient routing, for training
    h, w = (x.shape[-2] // 2) * 2, (x.shape[-1] // 2) * 2
    top = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
    return torch.maximum(top, torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]))


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


def l2_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """``sqrt(k^2 avg_pool(x^2))`` = sqrt of the sum of squares in each k x k block."""
    return torch.sqrt((F.avg_pool2d(x * x, k) * float(k * k)).clamp_min(1e-12))


def gaussian_kernel(ksize: int, sigma: float) -> torch.Tensor:
    r = torch.arange(ksize, dtype=torch.float32) - (ksize - 1) / 2.0
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


class SubtractiveNorm(nn.Module):
    """Torch7 ``SpatialSubtractiveNormalization`` semantics (assumed): subtract the Gaussian-
    weighted local mean over all channels; borders renormalised by the kernel mass inside.

    The kernel is a buffer so a converted original model can carry its stored kernel.
    """

    def __init__(self, ksize: int = 5, sigma: float = 1.25):
        super().__init__()
        self.register_buffer("kernel", gaussian_kernel(ksize, sigma))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (self.kernel / self.kernel.sum()).to(x)[None, None]
        pad = (k.shape[-2] // 2, k.shape[-1] // 2)
        mean_c = x.mean(dim=1, keepdim=True)
        local = F.conv2d(mean_c, k, padding=pad)
        coef = F.conv2d(torch.ones_like(mean_c[:1]), k, padding=pad)
        return x - local / coef


class LIFTDescriptor(nn.Module):
    """conv 7x7/32, 6x6/64, 5x5/128 VALID; ``tflift``: ReLU + avg-pool 2/3/4 (BN optional);
    ``original``: tanh + L2-pool 2/3/4 + subtractive norm after layers 1 and 2. -> 128-D."""

    def __init__(self, variant: str = "tflift", use_bn: bool = False, subnorm_ksize: int = 5,
                 subnorm_sigma: float = 1.25):
        super().__init__()
        self.variant = variant
        chans, ks, self.pools = [1, 32, 64, 128], [7, 6, 5], [2, 3, 4]
        self.convs = nn.ModuleList([nn.Conv2d(chans[i], chans[i + 1], ks[i]) for i in range(3)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(c, eps=1e-3) if use_bn and variant == "tflift"
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


# ---------------------------------------------------------------------------------- detection
def scale_space_max(stack: torch.Tensor, radius: int, scale_radius: int) -> torch.Tensor:
    """Max of the ``(2q+1) x (2r+1)^2`` (scale x space) neighbourhood of every entry of a
    ``(B, L, H, W)`` stack; outside counts as -inf (``max_pool3d`` semantics, NaN propagates).

    Why separable: a box max is exact in any order, and a per-level 2-D window max
    (``nms.dense_window_max``) plus a max over neighbouring levels is a few passes instead of
    ``max_pool3d``'s 147 reads per entry.
    """
    m = dense_window_max(stack, radius)
    out = m.clone() if scale_radius > 0 else m
    for d in range(1, min(scale_radius, stack.shape[1] - 1) + 1):
        torch.maximum(out[:, d:], m[:, :-d], out=out[:, d:])
        torch.maximum(out[:, :-d], m[:, d:], out=out[:, :-d])
    return out


def nms_3d(stack: torch.Tensor, radius: int, scale_radius: int) -> torch.Tensor:
    """``(B, L, H, W)`` -> bool: value equals the max of its (2q+1) x (2r+1)^2 neighbourhood
    (scale x space) and is finite."""
    return (stack >= scale_space_max(stack, radius, scale_radius)) & torch.isfinite(stack)


def derivative_maps(score: torch.Tensor) -> torch.Tensor:
    """``(B, 1, h, w)`` -> ``(B, 5, h, w)`` [Dx, Dy, Dxx, Dyy, Dxy] by central differences
    (replicate border), in the level's own pixel units."""
    p = F.pad(score, (1, 1, 1, 1), mode="replicate")
    c = p[..., 1:-1, 1:-1]
    dx = 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2])
    dy = 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1])
    dxx = p[..., 1:-1, 2:] - 2 * c + p[..., 1:-1, :-2]
    dyy = p[..., 2:, 1:-1] - 2 * c + p[..., :-2, 1:-1]
    dxy = 0.25 * (p[..., 2:, 2:] - p[..., 2:, :-2] - p[..., :-2, 2:] + p[..., :-2, :-2])
    return torch.cat([dx, dy, dxx, dyy, dxy], dim=1)


def edge_ok(hess: torch.Tensor, edge_th: float) -> torch.Tensor:
    """SIFT-style principal-curvature test on ``(..., 3)`` [Dxx, Dyy, Dxy]:
    ``det > 0`` and ``tr^2 / det < (r + 1)^2 / r``; ``edge_th <= 0`` disables it."""
    if edge_th <= 0:
        return torch.ones(hess.shape[:-1], dtype=torch.bool, device=hess.device)
    tr = hess[..., 0] + hess[..., 1]
    det = hess[..., 0] * hess[..., 1] - hess[..., 2] ** 2
    return (det > 0) & (tr * tr * edge_th < (edge_th + 1) ** 2 * det)


def newton_offset(d: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
    """``-H^-1 g`` from ``(..., 5)`` [Dx, Dy, Dxx, Dyy, Dxy]; 0 where H is not negative definite,
    clamped to +-``limit`` (level pixels)."""
    dx, dy, dxx, dyy, dxy = d.unbind(-1)
    det = dxx * dyy - dxy * dxy
    ok = (det > 0) & (dxx < 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    ox = -(dyy * dx - dxy * dy) / safe
    oy = -(-dxy * dx + dxx * dy) / safe
    off = torch.stack([ox, oy], dim=-1).clamp(-limit, limit)
    return torch.where(ok[..., None], off, torch.zeros_like(off))


def _parabola_offset(fm: torch.Tensor, f0: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Vertex offset in [-0.5, 0.5] of the parabola through (-1, fm), (0, f0), (1, fp)."""
    den = fm - 2 * f0 + fp
    ok = torch.isfinite(fm) & torch.isfinite(fp) & (den < 0)
    off = 0.5 * (fm - fp) / torch.where(ok, den, torch.ones_like(den))
    return torch.where(ok, off.clamp(-0.5, 0.5), torch.zeros_like(off))


def patch_soft_argmax(score: torch.Tensor, strength: float = 10.0, score_strength: float = 10.0,
                      req_boundary: int = 17, cur_boundary: int = KP_FILTER_SIZE // 2
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch-mode keypoint (methods.md §4.2, differentiable): crop the ``(N, 1, 24, 24)`` score maps of
    48-px patches by ``17 - 12 = 5`` px per side (14x14), soft-argmax with ``softmax(10 (S - max S))``,
    map to [-1, 1] patch coordinates ``x_n = (x + 17) / ((14 + 34 - 1) / 2) - 1`` (48-px patch pixel
    ``i`` <-> ``-1 + 2i/47``), and score ``log(mean(exp(10 (S - max S)))) / 10 + max S``.

    Returns ``xy_n (N, 2)`` and ``score (N,)``.
    """
    c = req_boundary - cur_boundary
    s = score[..., c:score.shape[-2] - c, c:score.shape[-1] - c] if c > 0 else score
    n, _, h, w = s.shape
    flat = s.reshape(n, -1)
    m = flat.amax(dim=1, keepdim=True)
    p = torch.softmax(strength * (flat - m), dim=1).view(n, h, w)
    x = (p.sum(dim=1) * torch.arange(w, device=s.device, dtype=s.dtype)).sum(dim=1)
    y = (p.sum(dim=2) * torch.arange(h, device=s.device, dtype=s.dtype)).sum(dim=1)
    xn = (x + req_boundary) / ((w + 2 * req_boundary - 1) / 2.0) - 1.0
    yn = (y + req_boundary) / ((h + 2 * req_boundary - 1) / 2.0) - 1.0
    sc = torch.log(torch.exp(score_strength * (flat - m)).mean(dim=1)) / score_strength + m[:, 0]
    return torch.stack([xn, yn], dim=-1), sc


def _grid_sample_border(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear ``grid_sample`` (border padding, align_corners=True) of ``(B, C, h, w)`` at one
    normalised ``(H', W', 2)`` grid shared by the batch; fp32 arithmetic under reduced precision
    (as ``patches.sample_image``)."""
    work = torch.float32 if maps.dtype in (torch.float16, torch.bfloat16) else maps.dtype
    g = grid.to(work)[None].expand(maps.shape[0], *grid.shape)
    out = F.grid_sample(maps.to(work), g, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(maps.dtype)


def sample_level_derivatives(maps: list[torch.Tensor], gx: torch.Tensor, gy: torch.Tensor,
                             bi: torch.Tensor, li: torch.Tensor) -> torch.Tensor:
    """``derivative_maps`` of level ``li`` sampled like ``grid_sample`` (bilinear, border padding,
    align_corners=True) at normalised coordinates ``(gx, gy)`` of image ``bi`` -> ``(N, 5)``;
    ``maps[l]`` is level ``l``'s ``(B, 1, sh, sw)`` score map (any strides).

    Why: the edge test and the Newton step need the derivatives at a few thousand NMS survivors,
    not at all 21 x H x W pixels. Each sample reads its 4x4 score neighbourhood (replicate
    border), takes the central differences at its 4 bilinear nodes with the same formulas as
    ``derivative_maps`` and blends them with ``grid_sample``'s weights, in its order (on CPU
    the result is bit-identical to sampling dense derivative maps; elsewhere equal to rounding).
    """
    dev, dt = maps[0].device, maps[0].dtype
    n = int(bi.numel())
    if n == 0:
        return maps[0].new_zeros(0, 5)
    hs = torch.tensor([int(m.shape[-2]) for m in maps], device=dev)
    ws = torch.tensor([int(m.shape[-1]) for m in maps], device=dev)
    hl, wl = hs[li], ws[li]
    work = torch.float32 if dt in (torch.float16, torch.bfloat16) else dt
    fx, fy = gx.to(work), gy.to(work)
    wmax, hmax = (wl - 1).to(work), (hl - 1).to(work)
    px = torch.minimum(((fx + 1) * (wmax / 2)).clamp_min(0), wmax)  # unnormalise + border clip
    py = torch.minimum(((fy + 1) * (hmax / 2)).clamp_min(0), hmax)
    x0f, y0f = torch.floor(px), torch.floor(py)
    we = px - x0f  # distance to the west node
    ee = 1 - we
    dn = py - y0f  # distance to the north node
    ds = 1 - dn
    weights = (ds * ee, ds * we, dn * ee, dn * we)  # nw, ne, sw, se
    r = torch.arange(-1, 3, device=dev)
    cols = torch.minimum((x0f.long()[:, None] + r).clamp_min(0), (wl - 1)[:, None])
    rows = torch.minimum((y0f.long()[:, None] + r).clamp_min(0), (hl - 1)[:, None])
    # 4x4 neighbourhoods, level by level (maps may be views into a packed canvas; the
    # per-level gathers are small, so they run inline instead of as parallel kernels)
    p = maps[0].new_empty(n, 4, 4)
    for lev in torch.unique(li).tolist():
        j = torch.nonzero(li == lev).flatten()
        p[j] = maps[lev][bi[j][:, None, None], 0, rows[j][:, :, None], cols[j][:, None, :]]
    c = p[:, 1:3, 1:3]
    east, west, south, north = p[:, 1:3, 2:4], p[:, 1:3, 0:2], p[:, 2:4, 1:3], p[:, 0:2, 1:3]
    nodes = torch.stack([
        0.5 * (east - west),
        0.5 * (south - north),
        east - 2 * c + west,
        south - 2 * c + north,
        0.25 * (p[:, 2:4, 2:4] - p[:, 2:4, 0:2] - p[:, 0:2, 2:4] + p[:, 0:2, 0:2]),
    ], dim=1).to(work)  # (N, 5, 2, 2): [node row, node col]
    nw, ne, sw, se = (wt[:, None] for wt in weights)
    # nw + ne + sw + se terms as chained multiply-adds: the CPU grid_sample kernel's own rounding
    out = torch.addcmul(nodes[..., 0, 0] * nw, nodes[..., 0, 1], ne)
    out = torch.addcmul(torch.addcmul(out, nodes[..., 1, 0], sw), nodes[..., 1, 1], se)
    return out.to(dt)


# ---------------------------------------------------------------------------------- extractor
class LIFT(Extractor):
    """LIFT: pyramid detector, orientation and descriptor networks; gray input in [0, 1]."""

    name: ClassVar[str] = "lift"
    summary: ClassVar[str] = ("LIFT (Yi et al. 2016): learned detector, orientation and 128-D "
                              "patch descriptor.")
    weights_note: ClassVar[str] = ("local weights converted from the official release or a "
                                   "project checkpoint (required)")
    licence: ClassVar[str] = "LIFT is patented (academic use)."
    input_channels: ClassVar[int] = 1
    default_conf: ClassVar[dict[str, Any]] = {
        "max_keypoints": 1000,  # test_num_keypoint
        "nms_radius": 3,  # "nearby": round(round(0.5 (48-1) 64/128) * 0.25 * 1.0) = 3 px (min 1)
        "remove_borders": 0,  # the -inf 12-px VALID border already excludes edges
        "detection_threshold": -1.0e9,  # off (LIFT scores are signed)
        "min_scale_log2": 1.0,
        "max_scale_log2": 4.0,
        "scale_intervals": 4,
        "double_scale": True,  # min_log2 -= 1 when min(H, W) <= 1600
        "min_level_side": 26,  # levels with resized min side <= 26 px are dropped
        "nms_scale_radius": 1,  # levels on each side in the 3-D NMS [assumed; see docs]
        "edge_th": 10.0,
        "interpolate": True,
        "ori_variant": "tflift",  # or "theano" (FC-4 before pooling, atan2(out0, out1))
        "desc_variant": "tflift",  # or "original" (tanh + L2 pool + subtractive norm)
        "use_batch_norm": False,  # released tf-lift models: --use_batch_norm=False
        "mean_std_type": "hardcoded",  # hardcoded | old | dataset | patch
        "kp_mean": 128.0, "kp_std": 128.0,  # used by mean_std_type=dataset (0..255 scale)
        "desc_mean": 128.0, "desc_std": 128.0,
        "subnorm_ksize": 5,  # original variant: Gaussian kernel [assumed; stored in model file]
        "subnorm_sigma": 1.25,
        "desc_l2norm": True,  # the original had no final L2 normalisation
        "kp_com_strength": 10.0,  # patch-mode soft-argmax strength (training)
        "kp_scoremap_softmax_strength": 10.0,  # patch-mode soft-max score strength
        "crop_batch": 0,  # >0: run ori/desc nets in chunks of this many crops (memory bound)
    }

    #: exportable parts (``backend``): the detector on one pyramid level (dynamic size), the
    #: orientation and descriptor nets on normalised 64x64 patches (dynamic count). The pyramid
    #: loop, 3-D NMS, interpolation and cropping stay in torch.
    networks: ClassVar[dict[str, NetworkDecl]] = {
        "detector": NetworkDecl(
            call="det", inputs=(("image", (1, 1, 64, 64), {0: "batch", 2: "height", 3: "width"}),),
            outputs=(("score", {0: "batch", 2: "score_height", 3: "score_width"}),)),
        "orientation": NetworkDecl(
            call="ori", inputs=(("patches", (2, 1, 64, 64), {0: "patches"}),),
            outputs=(("orientation", {0: "patches"}),)),
        "descriptor": NetworkDecl(
            call="desc", inputs=(("patches", (2, 1, 64, 64), {0: "patches"}),),
            outputs=(("descriptors", {0: "patches"}),)),
    }

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **conf: Any):
        super().__init__(device=device, precision=precision, **conf)
        c = self.conf
        self.det = LIFTDetector()
        self.ori = LIFTOrientation(c["ori_variant"], bool(c["use_batch_norm"]))
        self.desc = LIFTDescriptor(c["desc_variant"], bool(c["use_batch_norm"]),
                                   int(c["subnorm_ksize"]), float(c["subnorm_sigma"]))
        self._layout_cache: _PyramidLayout | None = None

    def validate_conf(self, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if conf["ori_variant"] not in ("tflift", "theano"):
            raise ConfigError("ori_variant must be 'tflift' or 'theano'")
        if conf["desc_variant"] not in ("tflift", "original"):
            raise ConfigError("desc_variant must be 'tflift' or 'original'")
        if conf["mean_std_type"] not in ("hardcoded", "old", "dataset", "patch"):
            raise ConfigError("mean_std_type must be hardcoded, old, dataset or patch")
        if float(conf["max_scale_log2"]) < float(conf["min_scale_log2"]):
            raise ConfigError("max_scale_log2 must be >= min_scale_log2")
        if int(conf["scale_intervals"]) < 1 or int(conf["nms_scale_radius"]) < 0:
            raise ConfigError("scale_intervals must be >= 1 and nms_scale_radius >= 0")
        if float(conf["kp_std"]) <= 0 or float(conf["desc_std"]) <= 0:
            raise ConfigError("kp_std and desc_std must be > 0")

    @property
    def descriptor_dim(self) -> int:
        return 128

    # ------------------------------------------------------------------ normalisation
    def _mean_std(self, module: str) -> tuple[float, float]:
        t = self.conf["mean_std_type"]
        if t in MEAN_STD:
            return MEAN_STD[t][0 if module == "kp" else 1]
        key = "kp" if module == "kp" else "desc"
        return float(self.conf[f"{key}_mean"]), float(self.conf[f"{key}_std"])

    def normalize(self, x: torch.Tensor, module: str) -> torch.Tensor:
        """[0, 1] image or ``(..., P, P)`` patches -> network input for ``module`` (kp/ori: "kp")."""
        if self.conf["mean_std_type"] == "patch":
            mean = x.mean(dim=(-2, -1), keepdim=True)
            std = x.std(dim=(-2, -1), keepdim=True).clamp_min(1e-5)
            return (x - mean) / std
        mean, std = self._mean_std(module)
        return (x * 255.0).sub_(mean).div_(std)  # (x * 255 - mean) / std, one buffer

    # ------------------------------------------------------------------ detection
    def levels(self, height: int, width: int) -> list[PyramidLevel]:
        c = self.conf
        return pyramid_levels(height, width, float(c["min_scale_log2"]), float(c["max_scale_log2"]),
                              int(c["scale_intervals"]), bool(c["double_scale"]),
                              min_side=int(c["min_level_side"]))

    def _layout(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> _PyramidLayout:
        """Sampling geometry of every level for an ``h x w`` input, cached for the last size
        (a camera stream repeats it): rebuilding the 21 grids costs as much as sampling them."""
        levels = self.levels(h, w)
        key = (h, w, str(device), dtype, tuple(levels))
        if self._layout_cache is not None and self._layout_cache.key == key:
            return self._layout_cache
        half = KP_FILTER_SIZE // 2
        ys = torch.arange(h, dtype=dtype)  # host tables: the VALID rectangles are Python ints
        xs = torch.arange(w, dtype=dtype)
        rects, grids, gxs, gys = [], [], [], []
        for lv in levels:
            sh, sw = lv.height - (KP_FILTER_SIZE - 1), lv.width - (KP_FILTER_SIZE - 1)
            # input px -> level px (pixel centres aligned) -> score-map px (VALID offset 12)
            ly = (ys + 0.5) * (lv.height / h) - 0.5 - half
            lx = (xs + 0.5) * (lv.width / w) - 0.5 - half
            gx = lx * (2.0 / max(sw - 1, 1)) - 1.0  # grid_sample (align_corners=True) coordinates
            gy = ly * (2.0 / max(sh - 1, 1)) - 1.0
            cols = torch.nonzero((lx >= 0) & (lx <= sw - 1)).flatten()
            rows = torch.nonzero((ly >= 0) & (ly <= sh - 1)).flatten()
            if cols.numel() and rows.numel():
                xa, xb = int(cols[0]), int(cols[-1]) + 1  # lx is increasing: one interval
                ya, yb = int(rows[0]), int(rows[-1]) + 1
                grid = torch.stack([gx[xa:xb].expand(yb - ya, xb - xa),
                                    gy[ya:yb, None].expand(yb - ya, xb - xa)], dim=-1)
                rects.append((ya, yb, xa, xb))
                grids.append(grid.to(device))
            else:
                rects.append(None)
                grids.append(None)
            gxs.append(gx)
            gys.append(gy)
        self._layout_cache = _PyramidLayout(
            key, levels, pack_levels(levels, h * w), rects, grids,
            torch.stack(gxs).to(device) if levels else torch.zeros(0, w, device=device, dtype=dtype),
            torch.stack(gys).to(device) if levels else torch.zeros(0, h, device=device, dtype=dtype),
            torch.tensor([lv.scale for lv in levels], device=device, dtype=dtype),
            torch.tensor([(w / lv.width, h / lv.height) for lv in levels], device=device,
                         dtype=dtype).reshape(-1, 2))
        return self._layout_cache

    def score_pyramid(self, image: torch.Tensor) -> ScorePyramid:
        """``(B, 1, H, W)`` [0, 1] -> every level's score map resampled onto the input pixel grid;
        -inf where the VALID 25x25 conv has no output (the 12-px border).

        Levels share detector calls (:func:`pack_levels`: same score maps). Each level is sampled
        only inside its VALID rectangle (the rest of the preallocated stack stays -inf), with the
        same ``grid_sample`` call and coordinates as a full-grid sampling would use; the
        derivative maps are not resampled here (see :class:`ScorePyramid`)."""
        b, _, h, w = image.shape
        lay = self._layout(h, w, image.device, image.dtype)
        if not lay.levels:
            return ScorePyramid(image.new_zeros(b, 0, h, w), image.new_zeros(b, 0, 5, h, w),
                                image.new_zeros(0), image.new_zeros(0, 2))
        x = self.normalize(image, "kp")
        stack: torch.Tensor | None = None
        maps: list[torch.Tensor | None] = [None] * len(lay.levels)
        crop = KP_FILTER_SIZE - 1
        for ch, cw, items in lay.canvases:
            resized = []
            for i, _, _ in items:
                lv = lay.levels[i]
                resized.append(F.interpolate(x, size=(lv.height, lv.width), mode="bilinear",
                                             align_corners=False, antialias=lv.height * lv.width < h * w))
            if len(items) == 1:
                canvas = resized[0]
            else:
                canvas = x.new_zeros(b, 1, ch, cw)
                for (i, top, left), xl in zip(items, resized):
                    canvas[:, :, top:top + xl.shape[-2], left:left + xl.shape[-1]] = xl
            out = self.call_network("detector", canvas)[0]  # (B, 1, ch - 24, cw - 24)
            for i, top, left in items:
                lv = lay.levels[i]
                maps[i] = out[:, :, top:top + lv.height - crop, left:left + lv.width - crop]
            if stack is None:
                stack = torch.full((b, len(lay.levels), h, w), float("-inf"), device=image.device,
                                   dtype=out.dtype)
        assert stack is not None and all(m is not None for m in maps)
        level_maps = [m for m in maps if m is not None]
        for i, (s, rect, grid) in enumerate(zip(level_maps, lay.rects, lay.grids)):
            if rect is not None and grid is not None:
                ya, yb, xa, xb = rect
                stack[:, i, ya:yb, xa:xb] = _grid_sample_border(s, grid)[:, 0]
        return ScorePyramid(stack, None, lay.sigmas, lay.level_px, maps=level_maps,
                            grid_x=lay.grid_x, grid_y=lay.grid_y)

    def candidate_derivatives(self, pyr: ScorePyramid, bi: torch.Tensor, li: torch.Tensor,
                              yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        """[Dx, Dy, Dxx, Dyy, Dxy] ``(N, 5)`` at input pixels ``(bi, li, yi, xi)``: from the dense
        ``deriv`` when the pyramid has one, else evaluated there from the level maps."""
        if pyr.deriv is not None:
            return pyr.deriv[bi, li, :, yi, xi]
        if pyr.maps is None or pyr.grid_x is None or pyr.grid_y is None:
            raise ValueError("ScorePyramid needs either deriv or maps + grid_x + grid_y")
        return sample_level_derivatives(pyr.maps, pyr.grid_x[li, xi], pyr.grid_y[li, yi], bi, li)

    def detect(self, pyr: ScorePyramid, top_k: int) -> dict[str, torch.Tensor]:
        """3-D NMS + edge test + threshold, top-K, then interpolation: one Newton step on the
        level's own score map for x, y (SIFT-style, in level pixels) and a parabola over
        neighbouring levels for log2 sigma. Fixed-size ``(B, K)`` outputs + ``valid``.

        The NMS is dense; everything after it runs on the NMS survivors only (one host sync for
        their count), which is what makes the 21-level pyramid cheap."""
        c = self.conf
        stack = pyr.score
        b, nl, h, w = stack.shape
        if nl == 0:
            z = stack.new_zeros(b, 0)
            return {"keypoints": stack.new_zeros(b, 0, 2), "scores": z, "scales": z,
                    "valid": z.bool(), "level": z.long()}
        k = min(int(top_k), nl * h * w)
        keep = nms_3d(stack, max(int(c["nms_radius"]), 1), int(c["nms_scale_radius"]))
        bi, li, yi, xi = torch.nonzero(keep.to(stack.device)).unbind(1)  # flat-index order
        val = stack[bi, li, yi, xi]
        ok = val > float(c["detection_threshold"])
        rb = int(c["remove_borders"])
        if rb > 0:
            ok &= (yi >= rb) & (yi < h - rb) & (xi >= rb) & (xi < w - rb)
        bi, li, yi, xi, val = bi[ok], li[ok], yi[ok], xi[ok], val[ok]
        d = self.candidate_derivatives(pyr, bi, li, yi, xi)  # (N, 5)
        ok = edge_ok(d[:, 2:], float(c["edge_th"]))
        bi, li, yi, xi, val, d = bi[ok], li[ok], yi[ok], xi[ok], val[ok], d[ok]
        # top-K per image: by score, descending; equal scores keep the flat-index order
        order = torch.sort(val, descending=True, stable=True).indices
        order = order[torch.sort(bi[order], stable=True).indices]
        bo = bi[order]
        counts = torch.bincount(bo, minlength=b)
        rank = torch.arange(bo.numel(), device=bo.device) - (torch.cumsum(counts, 0) - counts)[bo]
        take = rank < k
        order, bo, rank = order[take], bo[take], rank[take]
        top = stack.new_full((b, k), float("-inf"))
        top[bo, rank] = val[order]
        valid = torch.zeros(b, k, dtype=torch.bool, device=stack.device)
        valid[bo, rank] = True
        lev, y, x = (torch.zeros(b, k, dtype=torch.long, device=stack.device) for _ in range(3))
        lev[bo, rank], y[bo, rank], x[bo, rank] = li[order], yi[order], xi[order]
        xy = torch.stack([x, y], dim=-1).to(stack.dtype)
        log_s = torch.log2(pyr.sigmas)[lev]
        if c["interpolate"]:
            dk = d.new_zeros(b, k, 5)
            dk[bo, rank] = d[order]
            xy = xy + newton_offset(dk) * pyr.level_px[lev]
            if nl > 1:
                flat = stack.reshape(b, -1)
                inf = torch.full_like(top, float("-inf"))

                def at(dl: int) -> torch.Tensor:
                    ll = lev + dl
                    okl = (ll >= 0) & (ll < nl)
                    j = (ll.clamp(0, nl - 1) * h + y) * w + x
                    return torch.where(okl, torch.gather(flat, 1, j), inf)

                f0 = torch.where(valid, top, torch.zeros_like(top))
                step = torch.log2(pyr.sigmas[1:] / pyr.sigmas[:-1]).mean()
                log_s = log_s + _parabola_offset(at(-1), f0, at(1)) * step
        return {"keypoints": xy, "scores": top, "scales": torch.pow(2.0, log_s), "valid": valid,
                "level": lev}

    def kp_patch_forward(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training-time patch mode: ``(N, 1, S, S)`` patches in [0, 1] (S = 128: 24 sigma wide)
        -> resized to 48x48 -> detector -> ``score_map (N, 1, 24, 24)``, soft-argmax location
        ``xy (N, 2)`` in [-1, 1] patch coordinates and the soft-max patch ``score (N,)``."""
        x = patches
        if tuple(x.shape[-2:]) != (KP_INPUT_SIZE, KP_INPUT_SIZE):
            x = F.interpolate(x, size=(KP_INPUT_SIZE, KP_INPUT_SIZE), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > KP_INPUT_SIZE)
        s = self.det(self.normalize(x, "kp"))
        xy, score = patch_soft_argmax(s, float(self.conf["kp_com_strength"]),
                                      float(self.conf["kp_scoremap_softmax_strength"]))
        return {"score_map": s, "xy": xy, "score": score}

    # ------------------------------------------------------------------ ori / desc
    def crop(self, image: torch.Tensor, kpts: torch.Tensor, sigmas: torch.Tensor,
             oris: torch.Tensor | None) -> torch.Tensor:
        """64x64 crops of half width 6 sigma (central 64 of the 128-px, 24-sigma patch) -> (B,K,1,64,64)."""
        return crop_patches_fast(image, kpts, sigmas * DESC_HALF_WIDTH_SIGMA, oris, DESC_INPUT_SIZE,
                                 corners=False)

    def _run_chunked(self, net: str, patches: torch.Tensor) -> torch.Tensor:
        """Network part ``net`` (``networks``) on ``crop_batch`` patches at a time."""
        n = int(self.conf["crop_batch"])
        if n <= 0 or patches.shape[0] <= n:
            return self.call_network(net, patches)[0]
        return torch.cat([self.call_network(net, p)[0] for p in patches.split(n)], dim=0)

    def orientation(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Upright crops ``(B, K, 1, 64, 64)`` in [0, 1] -> unit (cos, sin) ``(B, K, 2)``, angle ``(B, K)``."""
        b, k = patches.shape[:2]
        if k == 0:
            return patches.new_zeros(b, 0, 2), patches.new_zeros(b, 0)
        out = self._run_chunked("orientation", self.normalize(patches.flatten(0, 1), "kp"))
        vec, ang = orientation_from_output(out, self.conf["ori_variant"])
        return vec.view(b, k, 2), ang.view(b, k)

    def describe_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Rotated crops ``(B, K, 1, 64, 64)`` in [0, 1] -> ``(B, K, 128)``."""
        b, k = patches.shape[:2]
        if k == 0:
            return patches.new_zeros(b, 0, 128)
        d = self._run_chunked("descriptor", self.normalize(patches.flatten(0, 1), "desc"))
        if self.conf["desc_l2norm"]:
            d = F.normalize(d, dim=-1)
        return d.view(b, k, -1)

    def describe(self, image: torch.Tensor, kpts: torch.Tensor, sigmas: torch.Tensor,
                 oris: torch.Tensor | None) -> torch.Tensor:
        return self.describe_patches(self.crop(image, kpts, sigmas, oris))

    # ------------------------------------------------------------------ inference
    def _extract(self, image: torch.Tensor) -> Features:
        h, w = image.shape[-2:]
        with self.autocast():
            pyr = self.score_pyramid(image)
            k = int(self.conf["max_keypoints"])
            det = self.detect(pyr, k if k > 0 else pyr.score[0].numel())
            # One sync: drop invalid slots before the (expensive) patch networks.
            v = det["valid"][0]
            kpts, sig = det["keypoints"][:, v], det["scales"][:, v]
            _, ang = self.orientation(self.crop(image, kpts, sig, None))
            desc = self.describe(image, kpts, sig, ang)
        return Features(
            keypoints=kpts[0].float(),
            scores=det["scores"][0][v].float(),
            descriptors=desc[0].float(),
            scales=sig[0].float(),
            orientations=ang[0].float(),
            image_size=(int(w), int(h)),
        )

    # ------------------------------------------------------------------ weights
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """TF variable names (``network/lift/...``) convert on load."""
        if any("lift/kp/" in k or "lift/ori/" in k or "lift/desc/" in k for k in state):
            arrays = {k: v.detach().cpu().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}
            return convert_tf_state(arrays, self.conf)
        return state


# ---------------------------------------------------------------------------------- TF names
def tf_name_table(conf: Mapping[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """(tf-lift variable name, our key, kind) for the BN-free release models (see lfnet's table
    for the kinds). ``subnorm`` kernels of the original descriptor are not TF variables; they
    keep their configured Gaussian (or come from a Theano file, see docs)."""
    c = {**LIFT.full_default_conf(), **(conf or {})}
    if c["use_batch_norm"]:
        raise ValueError("TF name mapping covers use_batch_norm=False (the released models) only")
    rows: list[tuple[str, str, str]] = []

    def layer(tf: str, ours: str, kind: str) -> None:
        rows.append((f"network/lift/{tf}/weights", f"{ours}.weight", kind))
        rows.append((f"network/lift/{tf}/biases", f"{ours}.bias", "vec"))

    layer("kp/conv-ghh-1", "det.conv", "conv")
    for i in range(3):
        layer(f"ori/conv-act-pool-{i + 1}", f"ori.convs.{i}", "conv")
    layer("ori/fc-ghh-drop-4", "ori.fc4", "fc_nhwc" if c["ori_variant"] == "tflift" else "fc")
    layer("ori/fc-ghh-5", "ori.fc5", "fc")
    layer("desc/conv-act-pool-norm-1", "desc.convs.0", "conv")
    layer("desc/conv-act-pool-norm-2", "desc.convs.1", "conv")
    layer("desc/conv-act-pool-3", "desc.convs.2", "conv")
    return rows


def convert_tf_state(arrays: Mapping[str, np.ndarray], conf: Mapping[str, Any] | None = None
                     ) -> dict[str, torch.Tensor]:
    """tf-lift variables (name -> numpy) -> our state dict (strict load)."""
    c = {**LIFT.full_default_conf(), **(conf or {})}
    out = convert_arrays(arrays, tf_name_table(c), flat_chw=(50, 5, 5))
    if c["desc_variant"] == "original":
        k = gaussian_kernel(int(c["subnorm_ksize"]), float(c["subnorm_sigma"]))
        for i in range(2):
            out[f"desc.subnorms.{i}.kernel"] = k.clone()
    return out

