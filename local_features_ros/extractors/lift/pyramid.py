"""LIFT's test-time scale pyramid: levels, their packing into detector canvases, and the
sampling geometry that brings each level's score map back onto the input pixel grid.

Level ``scale`` is the keypoint sigma in input pixels; the detector sees a 48-px window per
keypoint of 12 sigma half width, so a level is the image resized by ``((48 - 1) / 2) / (12 s)``
(docs/lfnet_lift.md#lift gives the scales and the rules for dropping levels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

KP_INPUT_SIZE = 48  # kp_input_size: the detector's patch-mode input side
KP_FILTER_SIZE = 25  # kp_filter_size: the VALID conv loses 12 px on each side
RATIO_SCALE = 12.0  # (kp_input_size / 2) / kp_base_scale: half the 48-px window in sigmas


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
    """Test-time pyramid (docs/lfnet_lift.md#lift): scales ``2^linspace(min, max, (max-min)(intv+1)+1)``,
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
    ``LIFT.score_pyramid`` leaves ``deriv`` empty and ``LIFT.detect`` evaluates them there from
    ``maps`` (``ops.sample_level_derivatives``: the same numbers a dense ``deriv`` would hold).
    A hand-made pyramid may pass a dense ``deriv`` instead.
    """

    score: torch.Tensor  # (B, L, H, W), -inf outside the VALID region
    deriv: torch.Tensor | None  # (B, L, 5, H, W) [Dx, Dy, Dxx, Dyy, Dxy] in level pixels, or None
    sigmas: torch.Tensor  # (L,) keypoint sigma of each level
    level_px: torch.Tensor  # (L, 2) input pixels per level pixel (x, y)
    maps: list[torch.Tensor] | None = None  # per level (B, 1, sh, sw): score map on its own grid
    grid_x: torch.Tensor | None = None  # (L, W) grid_sample x coordinate of each input column
    grid_y: torch.Tensor | None = None  # (L, H) grid_sample y coordinate of each input row


@dataclass
class PyramidLayout:
    """Per input size: the levels, their canvases, each level's VALID rectangle on the input
    grid (or None) and its ``grid_sample`` grid over that rectangle, the per-column/row grid
    coordinates, sigmas and input pixels per level pixel."""

    key: tuple
    levels: list[PyramidLevel]
    canvases: list[Canvas]
    rects: list[tuple[int, int, int, int] | None]
    grids: list[torch.Tensor | None]
    grid_x: torch.Tensor  # (L, W)
    grid_y: torch.Tensor  # (L, H)
    sigmas: torch.Tensor  # (L,)
    level_px: torch.Tensor  # (L, 2)


def pyramid_layout(levels: list[PyramidLevel], h: int, w: int, device: torch.device,
                   dtype: torch.dtype, key: tuple = ()) -> PyramidLayout:
    """Sampling geometry of every level for an ``h x w`` input: input pixel -> level pixel
    (pixel centres aligned) -> score-map pixel (VALID offset 12) -> ``grid_sample`` coordinate
    (``align_corners=True``). ``key`` identifies the layout for the caller's cache."""
    half = KP_FILTER_SIZE // 2
    ys = torch.arange(h, dtype=dtype)  # host tables: the VALID rectangles are Python ints
    xs = torch.arange(w, dtype=dtype)
    rects: list[tuple[int, int, int, int] | None] = []
    grids: list[torch.Tensor | None] = []
    gxs, gys = [], []
    for lv in levels:
        sh, sw = lv.height - (KP_FILTER_SIZE - 1), lv.width - (KP_FILTER_SIZE - 1)
        ly = (ys + 0.5) * (lv.height / h) - 0.5 - half
        lx = (xs + 0.5) * (lv.width / w) - 0.5 - half
        gx = lx * (2.0 / max(sw - 1, 1)) - 1.0
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
    return PyramidLayout(
        key, levels, pack_levels(levels, h * w), rects, grids,
        torch.stack(gxs).to(device) if levels else torch.zeros(0, w, device=device, dtype=dtype),
        torch.stack(gys).to(device) if levels else torch.zeros(0, h, device=device, dtype=dtype),
        torch.tensor([lv.scale for lv in levels], device=device, dtype=dtype),
        torch.tensor([(w / lv.width, h / lv.height) for lv in levels], device=device,
                     dtype=dtype).reshape(-1, 2))


def grid_sample_border(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear ``grid_sample`` (border padding, align_corners=True) of ``(B, C, h, w)`` at one
    normalised ``(H', W', 2)`` grid shared by the batch; fp32 arithmetic under reduced precision
    (as ``patches.sample_image``)."""
    work = torch.float32 if maps.dtype in (torch.float16, torch.bfloat16) else maps.dtype
    g = grid.to(work)[None].expand(maps.shape[0], *grid.shape)
    out = F.grid_sample(maps.to(work), g, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(maps.dtype)
