"""Descriptor association under a geometric gate: mutual nearest neighbour among allowed pairs.

Why one routine for stereo and for map tracking: both know *where* a match may lie (the same
image row at a positive disparity; a small window around a projected map point) before they look
at descriptors. Gating first turns a global nearest-neighbour search, which confuses repeated
structure, into a choice among a handful of candidates, and Lowe's ratio is then taken among
those candidates only. The gate is a list of candidate pairs, so only their distances are
computed (a few tens of thousands instead of every map point against every keypoint).
Distances are L2 as everywhere else in the package (ORB bits give sqrt(Hamming)).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..matching import distance_matrix

__all__ = ["mutual_nn_pairs", "mutual_nn_dense", "row_band_pairs", "window_pairs"]

_EMPTY = (np.zeros((0, 2), np.int64), np.zeros(0, np.float32))


def _packed_bits(desc: torch.Tensor) -> np.ndarray | None:
    """Descriptors made of 0/1 values (ORB's unpacked bits) as packed bytes, else None."""
    if desc.shape[1] % 8:
        return None
    for rows in (desc[:4], desc):  # the first rows settle it for float descriptors, cheaply
        if not bool(torch.all((rows == 0) | (rows == 1))):
            return None
    return np.packbits(desc.cpu().numpy().astype(np.uint8), axis=1)


def _pair_distances(desc0: torch.Tensor, desc1: torch.Tensor, pairs: np.ndarray) -> np.ndarray:
    """L2 distance of each candidate pair; bit descriptors through XOR + popcount (the same
    number: L2 between 0/1 vectors is sqrt(Hamming)), ~50x faster than gathering floats."""
    d0 = torch.as_tensor(desc0).float()
    d1 = torch.as_tensor(desc1).float()
    b0, b1 = _packed_bits(d0), _packed_bits(d1)
    if b0 is not None and b1 is not None:
        ham = np.bitwise_count(b0[pairs[:, 0]] ^ b1[pairs[:, 1]]).sum(axis=1, dtype=np.int64)
        return np.sqrt(ham).astype(np.float32)
    i0 = torch.from_numpy(pairs[:, 0])
    i1 = torch.from_numpy(pairs[:, 1])
    out = np.empty(len(pairs), np.float32)
    step = 65536  # bounded memory for large candidate sets
    for s in range(0, len(pairs), step):
        a, b = d0[i0[s:s + step]], d1[i1[s:s + step]]
        out[s:s + step] = torch.linalg.vector_norm(a - b, dim=1).numpy()
    return out


def _group_starts(rows: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in ``rows`` (non-decreasing)."""
    first = np.ones(len(rows), bool)
    first[1:] = rows[1:] != rows[:-1]
    return np.flatnonzero(first)


def _first_minimum(d: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group (runs beginning at ``starts``): the position of its smallest value (the first
    one on ties) and that value."""
    counts = np.diff(np.append(starts, len(d)))
    low = np.minimum.reduceat(d, starts)
    at_low = np.flatnonzero(d == np.repeat(low, counts))
    group = np.searchsorted(starts, at_low, side="right") - 1
    first = np.ones(len(at_low), bool)
    first[1:] = group[1:] != group[:-1]
    return at_low[first], low


def mutual_nn_pairs(desc0: torch.Tensor, desc1: torch.Tensor, pairs: np.ndarray,
                    ratio: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Matches ``(M, 2)`` [i0, i1] among candidate ``pairs`` and their L2 distances ``(M,)``.

    A candidate matches when each side is the other's nearest candidate and (``ratio < 1``) its
    distance is at most ``ratio`` times that of ``i0``'s second-nearest candidate (a keypoint
    with a single candidate passes). Ties go to the candidate listed first. Linear in the
    number of candidates: group minima instead of sorting them (the gates list candidates
    grouped by ``i0`` already)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return _EMPTY
    d = _pair_distances(desc0, desc1, pairs)
    rows = pairs[:, 0]
    if np.any(rows[1:] < rows[:-1]):
        order = np.argsort(rows, kind="stable")
        pairs, d = pairs[order], d[order]
        rows = pairs[:, 0]
    starts = _group_starts(rows)
    best_of_row, best_d = _first_minimum(d, starts)
    ok = np.ones(len(starts), bool)
    if ratio < 1.0:
        rest = d.copy()
        rest[best_of_row] = np.inf
        second = np.minimum.reduceat(rest, starts)
        ok &= best_d <= ratio * second
    # nearest candidate of each i1 (first listed on ties), only for the row winners' columns
    cols = pairs[:, 1]
    col_low = np.full(int(cols.max()) + 1, np.inf, np.float32)
    np.minimum.at(col_low, cols, d)
    tie_first = np.full(len(col_low), len(d), np.int64)
    at_low = np.flatnonzero(d == col_low[cols])
    np.minimum.at(tie_first, cols[at_low], at_low)
    ok &= tie_first[cols[best_of_row]] == best_of_row
    keep = best_of_row[ok]
    return pairs[keep].copy(), d[keep]


def mutual_nn_dense(desc0: torch.Tensor, desc1: torch.Tensor, ratio: float = 1.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours over every pair (no gate): the relocalisation search."""
    n0, n1 = len(desc0), len(desc1)
    if n0 == 0 or n1 == 0:
        return _EMPTY
    dm = distance_matrix(torch.as_tensor(desc0), torch.as_tensor(desc1)).cpu().numpy()
    best = np.argmin(dm, axis=1)
    best_d = dm[np.arange(n0), best]
    ok = np.argmin(dm, axis=0)[best] == np.arange(n0)
    if ratio < 1.0 and n1 > 1:
        ok &= best_d <= ratio * np.partition(dm, 1, axis=1)[:, 1]
    idx = np.flatnonzero(ok)
    return np.stack([idx, best[idx]], 1).astype(np.int64), best_d[idx].astype(np.float32)


def row_band_pairs(left: np.ndarray, right: np.ndarray, max_row_diff: float,
                   min_disparity: float, max_disparity: float) -> np.ndarray:
    """Candidate pairs [left, right] of a rectified stereo pair: rows within ``max_row_diff``
    and ``min_disparity <= x_left - x_right <= max_disparity``."""
    left = np.asarray(left, np.float64).reshape(-1, 2)
    right = np.asarray(right, np.float64).reshape(-1, 2)
    if len(left) == 0 or len(right) == 0:
        return np.zeros((0, 2), np.int64)
    order = np.argsort(right[:, 1], kind="stable")
    ry = right[order, 1]
    lo = np.searchsorted(ry, left[:, 1] - max_row_diff, side="left")
    hi = np.searchsorted(ry, left[:, 1] + max_row_diff, side="right")
    counts = hi - lo
    il = np.repeat(np.arange(len(left)), counts)
    # positions lo[i] .. hi[i]-1 of every left keypoint, flattened
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ir = order[np.repeat(lo, counts) + offsets]
    d = left[il, 0] - right[ir, 0]
    keep = (d >= min_disparity) & (d <= max_disparity)
    return np.stack([il[keep], ir[keep]], 1).astype(np.int64)


def window_pairs(predicted: np.ndarray, keypoints: np.ndarray, radius: float) -> np.ndarray:
    """Candidate pairs [prediction, keypoint]: keypoints within ``radius`` px of a predicted
    position (rows with a NaN prediction get none)."""
    p = np.asarray(predicted, np.float64).reshape(-1, 2)
    k = np.asarray(keypoints, np.float64).reshape(-1, 2)
    finite = np.flatnonzero(np.isfinite(p).all(axis=1))
    if len(finite) == 0 or len(k) == 0:
        return np.zeros((0, 2), np.int64)
    found = cKDTree(k).query_ball_point(p[finite], r=float(radius))
    counts = np.fromiter((len(f) for f in found), np.int64, len(found))
    if counts.sum() == 0:
        return np.zeros((0, 2), np.int64)
    cols = np.concatenate([np.asarray(f, np.int64) for f in found if len(f)])
    return np.stack([np.repeat(finite, counts), cols], 1).astype(np.int64)
