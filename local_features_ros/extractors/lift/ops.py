"""LIFT's detection operators: scale-space NMS, edge test, sub-pixel / sub-level refinement,
the patch-mode soft-argmax and the descriptor crop geometry (docs/lfnet_lift.md#lift).

The second half holds the faster re-statements, each equal to the straightforward operator it
replaces and compared with it in test/extractors/test_lift.py: ``ghh_maps`` and ``max_pool_2x2``
(::test_ghh_maps_and_pool_rewrites_are_exact, bit-identical), ``l2_pool``
(::test_l2_pool_equals_the_library_call, ``F.lp_pool2d``), ``scale_space_max``
(::test_scale_space_max_equals_max_pool3d_including_nan, bit-identical) and
``sample_level_derivatives`` (::test_survivor_derivatives_equal_sampled_dense_derivative_maps;
the whole detector: ::test_fast_detection_matches_per_level_dense_reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nms import dense_window_max
from .pyramid import KP_FILTER_SIZE

#: Descriptor / orientation input: the central 64 px of the 128-px training patch, which spans
#: 24 sigma (half width 12 sigma), i.e. a 64x64 crop of half width 6 sigma.
DESC_INPUT_SIZE = 64
DESC_HALF_WIDTH_SIGMA = 6.0


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


def parabola_offset(fm: torch.Tensor, f0: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Vertex offset in [-0.5, 0.5] of the parabola through (-1, fm), (0, f0), (1, fp)."""
    den = fm - 2 * f0 + fp
    ok = torch.isfinite(fm) & torch.isfinite(fp) & (den < 0)
    off = 0.5 * (fm - fp) / torch.where(ok, den, torch.ones_like(den))
    return torch.where(ok, off.clamp(-0.5, 0.5), torch.zeros_like(off))


def patch_soft_argmax(score: torch.Tensor, strength: float = 10.0, score_strength: float = 10.0,
                      req_boundary: int = 17, cur_boundary: int = KP_FILTER_SIZE // 2
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch-mode keypoint (docs/lfnet_lift.md#lift, differentiable): crop the ``(N, 1, 24, 24)``
    score maps of 48-px patches by ``17 - 12 = 5`` px per side (14x14), soft-argmax with
    ``softmax(10 (S - max S))``, map to [-1, 1] patch coordinates ``x_n = (x + 17) / ((14 + 34 - 1) / 2) - 1``
    (48-px patch pixel ``i`` <-> ``-1 + 2i/47``), and score ``log(mean(exp(10 (S - max S)))) / 10 + max S``.

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


# ------------------------------------------------------ faster re-statements (tested above)
def ghh_maps(x: torch.Tensor, ns: int = 4, nm: int = 4, inplace: bool = False) -> torch.Tensor:
    """``networks.ghh`` over the channels of a ``(B, C, H, W)`` map (the detector: 16 -> 1
    channel) as element-wise maxima of channel planes and a left-to-right signed sum.

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


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` (floor mode); at inference as three element-wise maxima of the
    four strided phases: the same numbers (max is exact), ~1.7x faster on CPU for the
    channels-last maps with few channels the orientation net produces."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.max_pool2d(x, 2)  # its gradient routing, for training
    h, w = (x.shape[-2] // 2) * 2, (x.shape[-1] // 2) * 2
    top = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
    return torch.maximum(top, torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]))


def l2_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """L2 pooling of the ``original`` descriptor: the square root of the *sum* (not the mean) of
    squares in each k x k block, i.e. ``F.lp_pool2d(x, 2, k)``.

    Why written out: ``lp_pool2d`` squares with ``pow`` and runs six element-wise ops on the
    pooled map where this runs three; it took ~1.3x as long on CPU for the first layer's maps
    (500 patches, 32 x 58 x 58). The clamp (1e-12 under the root) only changes an all-zero
    block: 1e-6 instead of 0."""
    return torch.sqrt((F.avg_pool2d(x * x, k) * float(k * k)).clamp_min(1e-12))


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
