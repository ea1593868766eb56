"""LF-Net's scale-space machinery: resizing, soft and hard NMS, scale selection, refinement.

Every function is batched, runs on the input's device and is differentiable where training
needs it (docs/lfnet_lift.md#lf-net gives the constants). With autograd on, the reference ops
run; without it, faster re-statements of the same computation (equal up to float rounding,
each compared with its reference in test/extractors/test_lfnet.py::test_inference_rewrites_equal_reference_ops
and ::test_fast_inference_matches_reference_ops): the separable window max / sum inside
:func:`soft_nms_3d`, the OpenCV dilation inside :func:`hard_nms`, :func:`few_channel_conv`,
:func:`unit_vectors` and :func:`instance_norm` (the last also in training).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nms import dense_window_max
from ..patches import crop_patches_fast


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], mode: str = "half_pixel") -> torch.Tensor:
    """Bilinear resize of ``(B, C, H, W)`` to ``size = (h, w)``.

    ``half_pixel``: pixel centres aligned (``F.interpolate(align_corners=False)``), geometrically
    centred. ``tf_legacy``: TF1 ``resize_images`` without half-pixel centres, ``src = dst * in/out``
    (what the official model was trained with; shifts content by up to half an input pixel).
    """
    h, w = int(size[0]), int(size[1])
    if (h, w) == tuple(x.shape[-2:]):
        return x
    if mode == "half_pixel":
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    if mode != "tf_legacy":
        raise ValueError(f"unknown resize mode '{mode}'")
    hin, win = x.shape[-2:]
    ys = torch.arange(h, device=x.device, dtype=x.dtype) * (hin / h)
    xs = torch.arange(w, device=x.device, dtype=x.dtype) * (win / w)
    gy = ys / max(hin - 1, 1) * 2 - 1
    gx = xs / max(win - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
    grid = grid[None].expand(x.shape[0], h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def scale_factors(num_scales: int, min_scale: float, max_scale: float) -> list[float]:
    """``exp(linspace(log max, log min, n))``: [1.414, 1.189, 1.0, 0.841, 0.707] by default."""
    if num_scales == 1:
        return [1.0]
    return [float(v) for v in np.exp(np.linspace(math.log(max_scale), math.log(min_scale), num_scales))]


def soft_nms_3d(logits: torch.Tensor, ksize: int, strength: float) -> torch.Tensor:
    """Soft 3-D NMS over all scales x ``ksize``^2 (docs/lfnet_lift.md#lf-net).

    ``m`` is the max over the window centred at each location (all scales); the numerator is
    ``exp(strength (l - m))`` at that location and the denominator the sum of the same quantity
    over the window (zero padding), + 1e-6. Input/output ``(B, S, H, W)``.
    """
    pad = ksize // 2
    top = logits.amax(dim=1, keepdim=True)
    if torch.is_grad_enabled() and logits.requires_grad:  # training: the reference ops
        m = F.max_pool2d(top, ksize, stride=1, padding=pad)
        e = torch.exp(strength * (logits - m))
        box = F.avg_pool2d(e.sum(dim=1, keepdim=True), ksize, stride=1, padding=pad,
                           count_include_pad=True) * float(ksize * ksize)
        return e / (box + 1e-6)
    # inference: the same window max exactly and the same window sum as two 1-D passes
    # (2k instead of k^2 reads per pixel; equal up to float rounding), in place
    m = dense_window_max(top, pad)
    e = (logits - m).mul_(strength).exp_()
    rows = F.avg_pool2d(e.sum(dim=1, keepdim=True), (1, ksize), stride=1, padding=(0, pad),
                        count_include_pad=True)
    box = F.avg_pool2d(rows, (ksize, 1), stride=1, padding=(pad, 0), count_include_pad=True)
    return e.div_(box.mul_(float(ksize * ksize)).add_(1e-6))


def soft_scale_selection(probs: torch.Tensor, scales: torch.Tensor, score_strength: float,
                         scale_strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``score = sum_k p_k softmax_k(a p)``, ``scale = sum_k s_k softmax_k(b p)`` -> two ``(B, 1, H, W)``."""
    w_score = torch.softmax(score_strength * probs, dim=1)
    score = (probs * w_score).sum(dim=1, keepdim=True)
    w_scale = w_score if scale_strength == score_strength else torch.softmax(scale_strength * probs, dim=1)
    scale = (scales.view(1, -1, 1, 1).to(probs) * w_scale).sum(dim=1, keepdim=True)
    return score, scale


def border_mask(h: int, w: int, pad: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """``(1, 1, H, W)`` 1 inside, 0 within ``pad`` px of the border."""
    m = torch.zeros(1, 1, h, w, device=device, dtype=dtype)
    if h > 2 * pad and w > 2 * pad:
        m[..., pad:h - pad, pad:w - pad] = 1
    return m


def hard_nms(score: torch.Tensor, ksize: int, threshold: float) -> torch.Tensor:
    """Keep pixels strictly greater than every other pixel of their ``ksize`` window and > threshold.

    ``(B, 1, H, W)`` -> bool ``(B, 1, H, W)``.
    """
    r = ksize // 2
    if r == 0:
        return score > threshold
    s = score.detach().contiguous().numpy() if (
        score.device.type == "cpu" and score.dtype == torch.float32 and not score.requires_grad) else None
    if s is not None and not np.isnan(s).any():
        # one OpenCV dilation with a ring kernel (the window without its centre) per map: the
        # same strict maximum without a (k*k, H*W) unfold buffer (OpenCV's max skips NaN, so
        # maps with NaN take the unfold path below)
        ring = np.ones((ksize, ksize), np.uint8)
        ring[r, r] = 0
        neigh = np.stack([[cv2.dilate(m, ring) for m in img] for img in s])
        return (score > torch.from_numpy(neigh)) & (score > threshold)
    b, _, h, w = score.shape
    padded = F.pad(score, (r, r, r, r), value=float("-inf"))
    cols = F.unfold(padded, ksize)  # (B, k*k, H*W)
    cols[:, (ksize * ksize) // 2] = float("-inf")  # exclude the centre itself
    neigh = cols.amax(dim=1).view(b, 1, h, w)
    return (score > neigh) & (score > threshold)


def gather_maps(maps: torch.Tensor, flat_idx: torch.Tensor) -> torch.Tensor:
    """Values of ``maps (B, C, H, W)`` at flat indices ``(B, K)`` -> ``(B, K, C)``."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)
    return torch.gather(flat, 2, flat_idx[:, None, :].expand(b, c, flat_idx.shape[1])).transpose(1, 2)


def soft_argmax_refine(score: torch.Tensor, kpts: torch.Tensor, scales: torch.Tensor,
                       window: int = 9, strength: float = 1.0) -> torch.Tensor:
    """Sub-pixel refinement (docs/lfnet_lift.md#lf-net): crop a ``window``^2 grid of the score
    map spanning ``scale * window/2`` px around each keypoint (TF ``transformer_crop`` grid,
    linspace(-1, 1)), softmax(strength * values), soft-argmax on the [-1, 1] grid;
    ``kpt += dxdy * scale * window/2``.

    ``score (B, 1, H, W)``, ``kpts (B, K, 2)``, ``scales (B, K)`` -> ``(B, K, 2)``.
    """
    half = scales * (window / 2.0)
    win = crop_patches_fast(score, kpts, half, None, window, corners=True)[:, :, 0]  # (B, K, w, w)
    b, k = win.shape[:2]
    prob = torch.softmax(strength * win.reshape(b, k, -1), dim=-1).view(b, k, window, window)
    g = torch.linspace(-1.0, 1.0, window, device=score.device, dtype=prob.dtype)
    dx = (prob.sum(dim=2) * g).sum(dim=-1)
    dy = (prob.sum(dim=3) * g).sum(dim=-1)
    return kpts + torch.stack([dx, dy], dim=-1) * half[..., None]


# ------------------------------------------------------ inference re-statements (tested above)
def few_channel_conv(x: torch.Tensor, convs: list[nn.Conv2d]) -> list[torch.Tensor]:
    """Stride-1 'same' convs with few output channels (the 16 -> 1 score convs, 16 -> 2 ori conv)
    on one input, as one depthwise conv (every input channel times each kernel slice) and a sum
    over the input channels.

    Why: oneDNN vectorises a direct conv over output channels, so a 1-output conv runs at ~1/16
    of its speed; the depthwise form keeps the 16 input channels in the vector lanes (~3x faster
    on CPU). Same sum, different order: equal up to float rounding. With autograd on, the convs
    themselves run (training keeps the reference ops).
    """
    if torch.is_grad_enabled():
        return [cv(x) for cv in convs]
    c = x.shape[1]
    ws = [cv.weight for cv in convs]
    outs = [int(wt.shape[0]) for wt in ws]
    wt = torch.cat(ws, dim=0)  # (O, C, k, k)
    o = wt.shape[0]
    wd = wt.transpose(0, 1).reshape(c * o, 1, *wt.shape[-2:])  # channel c -> outputs (c, 0..O-1)
    if x.is_contiguous(memory_format=torch.channels_last):
        wd = wd.contiguous(memory_format=torch.channels_last)
    d = F.conv2d(x, wd, None, stride=1, padding=convs[0].padding, groups=c)
    y = d.unflatten(1, (c, o)).sum(dim=1)
    bias = torch.cat([cv.bias for cv in convs]) if convs[0].bias is not None else None
    if bias is not None:
        y = y + bias.view(1, o, 1, 1).to(y.dtype)
    return list(y.split(outs, dim=1))


def unit_vectors(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(v, dim=1, eps)`` for a 2-channel ``(B, 2, H, W)`` map, element-wise.

    Why: ``normalize``'s norm is a reduction over a 2-long (possibly strided) channel axis,
    ~20x slower on CPU than ``sqrt(c^2 + s^2)`` written out (equal up to float rounding)."""
    if v.shape[1] != 2:
        return F.normalize(v, dim=1, eps=eps)
    c, s = v[:, 0:1], v[:, 1:2]
    return v / torch.sqrt(c * c + s * s).clamp_min(eps)


def instance_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per image and channel: zero mean, unit variance over H, W (biased variance, as
    ``tf.nn.moments``): ``F.instance_norm``'s numbers, written out
    (test/extractors/test_lfnet.py::test_instance_norm_equals_the_library_call).

    Why not ``F.instance_norm``: on CPU it computes each (image, channel) statistic on one thread,
    so on LF-Net's single-channel maps (the photo, the per-scale logits) it takes twice as long
    with 2 threads as these two reductions, which split a plane across threads. It also refuses
    1x1 maps (a tiny image at a coarse scale), which this normalises to zeros."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = x.var(dim=(-2, -1), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)
