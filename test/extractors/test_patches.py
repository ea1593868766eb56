"""Patch crops (extractors/patches.py) against OpenCV warps and exact rotations."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from local_features_ros.extractors.patches import affine_matrix, extract_patches


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    img = cv2.GaussianBlur(r.random((h, w)).astype(np.float32), (0, 0), 1.5)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def crop(img: np.ndarray, cx: float, cy: float, hw: float, ori: float, p: int,
         corners: bool) -> np.ndarray:
    t = torch.from_numpy(img)[None, None]
    out = extract_patches(t, torch.tensor([[[cx, cy]]], dtype=torch.float32),
                          torch.tensor([[hw]], dtype=torch.float32),
                          torch.tensor([[ori]], dtype=torch.float32), p, corners)
    assert out.shape == (1, 1, 1, p, p)
    return out[0, 0, 0].numpy()


@pytest.mark.parametrize("corners", [True, False])
def test_crops_equal_cv2_reference_warp(corners: bool) -> None:
    img = smooth_image(72, 90, 0)
    r = np.random.default_rng(1)
    p = 16
    for _ in range(6):
        cx, cy = r.uniform(25, 65), r.uniform(25, 47)
        hw, ori = r.uniform(4.0, 12.0), r.uniform(-math.pi, math.pi)
        ours = crop(img, cx, cy, hw, ori, p, corners)
        m = affine_matrix((cx, cy), hw, ori, p, corners)
        ref = cv2.warpAffine(img, m, (p, p), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
        # OpenCV quantises sample positions to 1/32 px: a small, gradient-bounded difference.
        assert np.abs(ours - ref).max() < 0.01
        assert np.abs(ours - ref).mean() < 0.002


def test_affine_matrix_states_the_convention() -> None:
    # corners=True: patch pixel (0, 0) sits at centre + half_width * R(theta) (-1, -1).
    m = affine_matrix((10.0, 20.0), 4.0, math.pi / 2, 9, corners=True)
    np.testing.assert_allclose(m @ [0, 0, 1], [10.0 + 4.0, 20.0 - 4.0], atol=1e-9)
    np.testing.assert_allclose(m @ [4, 4, 1], [10.0, 20.0], atol=1e-9)
    # corners=False: pixel u sits at centre + half_width * ((2u+1)/P - 1).
    m = affine_matrix((10.0, 20.0), 4.0, 0.0, 8, corners=False)
    np.testing.assert_allclose(m @ [0, 7, 1], [10.0 - 3.5, 20.0 + 3.5], atol=1e-9)


def test_pixel_area_grid_is_a_pure_translation() -> None:
    img = smooth_image(40, 50, 2)
    p = 10
    ours = crop(img, 20.5, 15.5, p / 2.0, 0.0, p, corners=False)
    np.testing.assert_allclose(ours, img[11:21, 16:26], atol=1e-6)


@pytest.mark.parametrize("corners", [True, False])
def test_rotation_by_90_degrees_is_exact_rot90(corners: bool) -> None:
    img = smooth_image(60, 60, 3)
    p = 15 if corners else 16
    a0 = crop(img, 30.0, 27.0, 9.0, 0.0, p, corners)
    a90 = crop(img, 30.0, 27.0, 9.0, math.pi / 2, p, corners)
    # Sample of patch pixel (u, v) at theta=90 is p = c + hw (-g(v), g(u)), i.e. the theta=0
    # sample of pixel (P-1-v, u): a90[v, u] = a0[u, P-1-v] = np.rot90(a0)[v, u].
    np.testing.assert_allclose(a90, np.rot90(a0, 1), atol=1e-5)
    a180 = crop(img, 30.0, 27.0, 9.0, math.pi, p, corners)
    np.testing.assert_allclose(a180, np.rot90(a0, 2), atol=1e-5)


def test_batched_matches_single_and_empty() -> None:
    imgs = torch.from_numpy(np.stack([smooth_image(40, 44, 4), smooth_image(40, 44, 5)]))[:, None]
    c = torch.tensor([[[10.0, 12.0], [20.5, 30.2]], [[15.0, 15.0], [30.0, 20.0]]])
    hw = torch.tensor([[3.0, 5.0], [4.0, 6.0]])
    o = torch.tensor([[0.1, -1.0], [2.0, 0.5]])
    out = extract_patches(imgs, c, hw, o, 8)
    assert out.shape == (2, 2, 1, 8, 8)
    for b in range(2):
        for n in range(2):
            single = crop(imgs[b, 0].numpy(), float(c[b, n, 0]), float(c[b, n, 1]),
                          float(hw[b, n]), float(o[b, n]), 8, True)
            np.testing.assert_allclose(out[b, n, 0].numpy(), single, atol=1e-6)
    empty = extract_patches(imgs, c[:, :0], hw[:, :0], o[:, :0], 8)
    assert empty.shape == (2, 0, 1, 8, 8)


def test_gradients_flow_to_position_scale_orientation() -> None:
    img = torch.from_numpy(smooth_image(48, 48, 6).astype(np.float64))[None, None]
    c = torch.tensor([[[23.3, 21.7]]], dtype=torch.float64, requires_grad=True)
    hw = torch.tensor([[6.2]], dtype=torch.float64, requires_grad=True)
    o = torch.tensor([[0.4]], dtype=torch.float64, requires_grad=True)
    w = torch.from_numpy(np.random.default_rng(7).standard_normal((1, 1, 1, 12, 12)))

    def f(c_: torch.Tensor, hw_: torch.Tensor, o_: torch.Tensor) -> torch.Tensor:
        return (extract_patches(img, c_, hw_, o_, 12) * w).sum()

    gc, ghw, go = torch.autograd.grad(f(c, hw, o), (c, hw, o))
    for g in (gc, ghw, go):
        assert torch.isfinite(g).all() and g.abs().max() > 1e-6
    # Central differences agree with the analytic gradient (piecewise-bilinear, small step).
    eps = 1e-5
    with torch.no_grad():
        d = torch.tensor([[[eps, 0.0]]], dtype=torch.float64)
        num_x = (f(c + d, hw, o) - f(c - d, hw, o)) / (2 * eps)
        num_hw = (f(c, hw + eps, o) - f(c, hw - eps, o)) / (2 * eps)
        num_o = (f(c, hw, o + eps) - f(c, hw, o - eps)) / (2 * eps)
    assert float(num_x) == pytest.approx(float(gc[0, 0, 0]), rel=2e-3, abs=1e-6)
    assert float(num_hw) == pytest.approx(float(ghw[0, 0]), rel=2e-3, abs=1e-6)
    assert float(num_o) == pytest.approx(float(go[0, 0]), rel=2e-3, abs=1e-6)
