"""Every NMS equals a literal loop of its own definition, on random, tied and plateau maps.

SuperPoint's default ``nms: exact`` must be the greedy ``nms_fast`` result (visit by descending
score, keep if no kept point within the L-inf radius); LF-Net's hard NMS keeps strict window
maxima; LIFT's 3-D NMS keeps scale-space window maxima. The loops here restate each definition
point by point, independently of the vectorised code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from local_features_ros.extractors.lfnet.ops import hard_nms
from local_features_ros.extractors.lift.ops import nms_3d
from local_features_ros.extractors.nms import greedy_nms, reference_greedy_nms


def _greedy_loop(s: np.ndarray, radius: int, thr: float) -> np.ndarray:
    """Greedy NMS with ties in row-major order (a stable sort on the flattened map)."""
    h, w = s.shape
    flat = s.reshape(-1)
    keep = np.zeros((h, w), bool)
    kept: list[tuple[int, int]] = []
    for idx in sorted(range(h * w), key=lambda i: (-flat[i], i)):
        if flat[idx] < thr:
            break
        y, x = divmod(idx, w)
        if all(max(abs(y - ky), abs(x - kx)) > radius for ky, kx in kept):
            kept.append((y, x))
            keep[y, x] = True
    return keep


def _maps(seed: int) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    h, w = 31, 47
    rand = r.random((h, w)).astype(np.float32)
    tied = np.round(r.random((h, w)) * 4).astype(np.float32) / 4  # 5 levels: many exact ties
    plateau = np.zeros((h, w), np.float32)
    for _ in range(6):  # flat rectangles of equal score, some overlapping
        y0, x0 = r.integers(0, h - 8), r.integers(0, w - 8)
        plateau[y0:y0 + r.integers(3, 9), x0:x0 + r.integers(3, 12)] = r.choice([0.3, 0.6, 0.9])
    ramp = np.tile(1.0 - np.arange(w, dtype=np.float32) / 100, (h, 1))  # a long suppression chain
    return {"random": rand, "tied": tied, "plateau": plateau, "ramp": ramp}


@pytest.mark.parametrize("backend", ["torch", "opencv"])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_nms_equals_the_greedy_loop(seed, backend):
    for name, s in _maps(seed).items():
        for radius in (1, 2, 4):
            expected = _greedy_loop(s, radius, 0.1)
            t = torch.from_numpy(s)
            got = greedy_nms(t, radius, 0.1, backend=backend).numpy()
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} r={radius}")
            np.testing.assert_array_equal(reference_greedy_nms(t, radius, 0.1).numpy(), expected,
                                          err_msg=f"reference {name} r={radius}")


def test_superpoint_nms_modes_exact_and_official_agree():
    from local_features_ros.registry import build_extractor

    heat = torch.from_numpy(_maps(3)["tied"]) * 0.5
    exact = build_extractor("superpoint", weights="random", nms="exact", remove_borders=0)
    official = build_extractor("superpoint", weights="random", nms="official", remove_borders=0)
    k1, s1 = exact.detect(heat)
    k2, s2 = official.detect(heat)
    assert len(k1) > 10 and torch.equal(k1, k2) and torch.equal(s1, s2)


def test_lfnet_hard_nms_keeps_strict_window_maxima():
    for name, s in _maps(4).items():
        for ksize in (3, 5):
            r = ksize // 2
            h, w = s.shape
            expected = np.zeros_like(s, bool)
            for y in range(h):
                for x in range(w):
                    win = s[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].copy()
                    win[min(y, r), min(x, r)] = -np.inf  # the centre itself
                    expected[y, x] = s[y, x] > 0.1 and s[y, x] > win.max()
            got = hard_nms(torch.from_numpy(s)[None, None], ksize, 0.1)[0, 0].numpy()
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} k={ksize}")


def test_lift_nms_3d_keeps_scale_space_maxima():
    r = np.random.default_rng(5)
    stack = np.round(r.random((4, 13, 17)) * 3).astype(np.float32)  # ties included
    stack[1, 2:5, 2:5] = np.inf * 0 - np.inf  # -inf (a level border) never kept
    for radius, q in ((1, 1), (2, 0)):
        expected = np.zeros_like(stack, bool)
        L, h, w = stack.shape
        for lv in range(L):
            for y in range(h):
                for x in range(w):
                    nb = stack[max(0, lv - q):lv + q + 1, max(0, y - radius):y + radius + 1,
                               max(0, x - radius):x + radius + 1]
                    expected[lv, y, x] = np.isfinite(stack[lv, y, x]) and stack[lv, y, x] >= nb.max()
        got = nms_3d(torch.from_numpy(stack)[None], radius, q)[0].numpy()
        np.testing.assert_array_equal(got, expected)
