"""Non-maximum suppression on dense score maps (shared by the detectors).

Why three NMS flavours (SuperPoint's ``nms`` key: ``exact`` default, ``fast``, ``official``):

- ``greedy_nms`` gives *exactly* the result of the greedy grid NMS of the official SuperPoint
  frontend (``nms_fast``: visit points by descending score, keep a point if no already-kept point
  lies within the L-infinity radius, suppress its ``(2r+1)^2`` window). It is computed with
  tensor ops instead of a per-point loop: in each round every alive point that is the maximum of
  its window among alive points is kept (all higher-ranked neighbours are already decided as
  suppressed, so the greedy visit would keep it too), and the windows of the new keeps are
  suppressed. Each round decides at least the best alive point, so this converges to the greedy
  answer; a rare long chain of overlapping windows is finished with the sequential visit.
  Ties are broken by a stable sort (row-major order first), the official code uses an unstable
  numpy sort, so only exactly equal scores inside one window can differ.
- ``maxpool_nms`` is the batched, fixed-cost (no host synchronisation) approximation: the same
  rounds but capped (default: one pass plus two re-max rounds), ranking by the raw score.
  Where it differs from greedy: (a) points still undecided after the capped rounds are dropped,
  so its kept set is a *subset* of the greedy one (chains of >3 overlapping windows of
  decreasing score, e.g. plateaus or ridges); (b) exactly equal scores within one window are all
  kept (greedy keeps the first). On peaked heatmaps (trained detectors) both agree almost always.

- ``reference_greedy_nms`` is the literal sequential loop (the reference the other two are
  tested against, and SuperPoint's ``nms: official``): one Python-level visit per candidate.

All treat only points with ``score >= threshold`` as candidates, as the official frontend does.
Suppression below the threshold cannot change the kept set above it: a kept point only ever
suppresses alive neighbours that score lower than itself.

Backends: the same algorithms run as torch element-wise ops (any device; used on GPU) or, for
CPU tensors, on numpy with OpenCV's ``dilate`` as the window max (``backend="auto"``). Both give
identical masks (tested); the CPU one is a few times faster because a dilation is one optimised
call instead of ~10 small torch kernels, each an OpenMP fork/join on a busy 2-core machine.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

#: Re-max rounds of the fast path (SuperGlue-style NMS uses 2 as well).
DEFAULT_FAST_ROUNDS = 2
#: Vectorised rounds of ``greedy_nms`` before the sequential tail takes over.
DEFAULT_GREEDY_ROUNDS = 32


def window_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over the ``(2r+1)x(2r+1)`` window of each pixel of a ``(..., H, W)`` map.

    A square window is separable. Along W a running max of length ``k`` takes ``~log2(k) + 1``
    element-wise maxima by doubling (max of length 2n = max of two shifted length-n maxima);
    along H one ``amax`` over an ``unfold`` view reads contiguous rows. Together this is several
    times faster on CPU than ``max_pool2d`` on one channel and stays plain element-wise/reduction
    kernels on GPU. Outside the image counts as the dtype's lowest value (-inf for floats).
    Works for float, integer and uint8 maps (uint8 masks are much cheaper than floats on CPU).
    """
    if radius <= 0:
        return x
    low = float("-inf") if x.is_floating_point() else torch.iinfo(x.dtype).min
    m = _running_max(_pad(x, radius, low), radius, -1)
    return m.unfold(-2, 2 * radius + 1, 1).amax(-1)


def dense_window_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """``window_max`` of a ``(..., H, W)`` float map; on CPU float32 without grad or NaN as one
    OpenCV dilation per 2-D map (one optimised call instead of several torch kernels, each an
    OpenMP fork/join). OpenCV's max skips NaN where torch propagates it, so maps with NaN take
    the torch path; both give ``max_pool2d``'s numbers (outside = -inf)."""
    if radius <= 0:
        return x
    if _use_opencv(x, "auto"):
        a = x.detach().contiguous().numpy()
        if not np.isnan(a).any():
            flat = a.reshape(-1, *a.shape[-2:])
            out = np.empty_like(flat)
            kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
            for i in range(flat.shape[0]):
                cv2.dilate(flat[i], kernel, dst=out[i])
            return torch.from_numpy(out.reshape(a.shape))
    return window_max(x, radius)


def _pad(x: torch.Tensor, r: int, low: float | int) -> torch.Tensor:
    """Constant pad of the last two dims (one copy; ``F.pad`` fills everything, then copies)."""
    h, w = x.shape[-2:]
    out = x.new_empty(x.shape[:-2] + (h + 2 * r, w + 2 * r))
    out[..., r:h + r, r:w + r] = x
    out[..., :r, :] = low
    out[..., h + r:, :] = low
    out[..., r:h + r, :r] = low
    out[..., r:h + r, w + r:] = low
    return out


def _running_max(m: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """``m`` padded by ``radius`` on both sides of ``dim`` -> running max of length 2r+1, unpadded."""
    k = 2 * radius + 1
    n = m.shape[dim] - 2 * radius
    span = 1
    while span * 2 <= k:
        length = m.shape[dim]
        m = torch.maximum(m.narrow(dim, 0, length - span), m.narrow(dim, span, length - span))
        span *= 2
    if span == k:
        return m.narrow(dim, 0, n)
    return torch.maximum(m.narrow(dim, 0, n), m.narrow(dim, k - span, n))


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Boolean mask grown by the square window (done in uint8, the cheapest dtype)."""
    return window_max(mask.view(torch.uint8), radius).view(torch.bool)


def _use_opencv(x: torch.Tensor, backend: str) -> bool:
    if backend not in ("auto", "torch", "opencv"):
        raise ValueError(f"backend must be auto, torch or opencv, got '{backend}'")
    if backend == "torch":
        return False
    ok = x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad
    if backend == "opencv" and not ok:
        raise ValueError("the opencv backend needs a float32 CPU tensor without grad")
    return ok


def _cv_window_max(x: np.ndarray, radius: int) -> np.ndarray:
    """``window_max`` for a 2-D float32/uint8 numpy map (OpenCV ignores the outside for dilate)."""
    if radius <= 0:
        return x
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(x, kernel)


def _cv_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return _cv_window_max(mask.view(np.uint8), radius).view(bool)


def _maxpool_nms_np(s: np.ndarray, radius: int, threshold: float, rounds: int) -> np.ndarray:
    """numpy/OpenCV twin of the torch fast path below (same steps, same result)."""
    cand = s >= threshold
    keep = (s == _cv_window_max(s, radius)) & cand
    for _ in range(rounds):
        free = ~_cv_dilate(keep, radius)
        alive = free & cand
        if not alive.any():
            break
        masked = s * free
        keep |= (masked == _cv_window_max(masked, radius)) & alive
    return keep


def maxpool_nms(scores: torch.Tensor, radius: int, threshold: float,
                rounds: int = DEFAULT_FAST_ROUNDS, backend: str = "auto") -> torch.Tensor:
    """Fast batched NMS: boolean keep mask, same shape as ``scores`` (``(H, W)`` or ``(B, H, W)``).

    ``scores`` must be non-negative (probabilities). No sentinel values are needed: any window
    holding a candidate has its maximum at a candidate, and suppressed pixels are zeroed, so
    they lose against every alive candidate (``threshold > 0``). Only same-dtype element-wise
    ops are used (mixed-dtype ``where``/``masked_fill`` are an order of magnitude slower on CPU).
    """
    if _use_opencv(scores, backend):
        h, w = scores.shape[-2:]
        maps = scores.detach().reshape(-1, h, w).numpy()
        out = np.stack([_maxpool_nms_np(np.ascontiguousarray(m), radius, threshold, rounds)
                        for m in maps])
        return torch.from_numpy(out.reshape(scores.shape))
    cand = scores >= threshold
    keep = (scores == window_max(scores, radius)) & cand
    for _ in range(rounds):
        free = ~dilate(keep, radius)
        alive = free & cand
        if scores.device.type == "cpu" and not bool(alive.any()):
            break  # cheap on CPU; on GPU the fixed rounds avoid a host sync
        masked = scores * free.to(scores.dtype)
        keep |= (masked == window_max(masked, radius)) & alive
    return keep


def greedy_nms(scores: torch.Tensor, radius: int, threshold: float,
               max_rounds: int = DEFAULT_GREEDY_ROUNDS, backend: str = "auto") -> torch.Tensor:
    """Exact greedy grid NMS (official SuperPoint ``nms_fast``) on one ``(H, W)`` map -> keep mask."""
    if scores.ndim != 2:
        raise ValueError(f"greedy_nms expects an (H, W) map, got {tuple(scores.shape)}")
    h, w = scores.shape
    if _use_opencv(scores, backend) and h * w < 2**24:  # float32 priorities stay exact
        s = np.ascontiguousarray(scores.detach().numpy())
        return torch.from_numpy(_greedy_nms_np(s, radius, threshold, max_rounds))
    flat = scores.reshape(-1)
    cand = torch.nonzero(flat >= threshold).squeeze(1)  # row-major order
    n = int(cand.numel())
    keep = torch.zeros(h * w, dtype=torch.bool, device=scores.device)
    if n == 0:
        return keep.reshape(h, w)
    # Priority = position in the descending (stable) score order: n for the best, 1 for the worst,
    # 0 for "not alive" — unique integers, so window maxima are unambiguous.
    order = torch.sort(flat[cand], descending=True, stable=True).indices
    prio = torch.zeros(h * w, dtype=torch.int32, device=scores.device)
    prio[cand[order]] = torch.arange(n, 0, -1, dtype=torch.int32, device=scores.device)
    alive = prio.reshape(h, w)
    keep = keep.reshape(h, w)
    for _ in range(max_rounds):
        new = (alive == window_max(alive, radius)) & (alive > 0)
        keep |= new
        alive = alive * (~dilate(new, radius)).to(alive.dtype)
        if not bool((alive > 0).any()):
            return keep
    return _greedy_tail(alive, keep, radius)


def reference_greedy_nms(scores: torch.Tensor, radius: int, threshold: float) -> torch.Tensor:
    """The greedy grid NMS as a plain loop: visit candidates by descending score (stable: row-major
    first among equal scores), keep one if no kept point lies within the L-infinity ``radius``."""
    if scores.ndim != 2:
        raise ValueError(f"reference_greedy_nms expects an (H, W) map, got {tuple(scores.shape)}")
    s = scores.detach().float().cpu().numpy()
    cand = s >= threshold
    keep = np.zeros(s.shape, bool)
    ys, xs = np.nonzero(cand)
    order = np.argsort(-s[ys, xs], kind="stable")
    free = cand.copy()
    for i in order:
        y, x = ys[i], xs[i]
        if free[y, x]:
            keep[y, x] = True
            free[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1] = False
    return torch.from_numpy(keep).to(scores.device)


def _greedy_nms_np(s: np.ndarray, radius: int, threshold: float, max_rounds: int) -> np.ndarray:
    """numpy/OpenCV twin of the torch greedy rounds (float32 priorities, exact below 2^24)."""
    h, w = s.shape
    flat = s.reshape(-1)
    cand = np.flatnonzero(flat >= threshold)
    keep = np.zeros((h, w), bool)
    n = cand.size
    if n == 0:
        return keep
    order = np.argsort(-flat[cand], kind="stable")
    prio = np.zeros(h * w, np.float32)
    prio[cand[order]] = np.arange(n, 0, -1, dtype=np.float32)
    alive = prio.reshape(h, w)
    for _ in range(max_rounds):
        new = (alive == _cv_window_max(alive, radius)) & (alive > 0)
        keep |= new
        alive = alive * ~_cv_dilate(new, radius)
        if not (alive > 0).any():
            return keep
    return _greedy_tail_np(alive, keep, radius)


def _greedy_tail(alive: torch.Tensor, keep: torch.Tensor, radius: int) -> torch.Tensor:
    """Sequential greedy visit of the points still undecided (only for long suppression chains)."""
    k = _greedy_tail_np(alive.detach().cpu().numpy(), keep.detach().cpu().numpy(), radius)
    return torch.from_numpy(k).to(keep.device)


def _greedy_tail_np(a: np.ndarray, keep: np.ndarray, radius: int) -> np.ndarray:
    k = keep.copy()
    ys, xs = np.nonzero(a > 0)
    order = np.argsort(-a[ys, xs], kind="stable")
    free = a > 0
    h, w = a.shape
    for i in order:
        y, x = ys[i], xs[i]
        if free[y, x]:
            k[y, x] = True
            y0, x0 = max(0, y - radius), max(0, x - radius)
            free[y0:y + radius + 1, x0:x + radius + 1] = False
    return k
