"""Random homographies (docs/method_facts/training_superpoint.md#homography-sampler),
point/image warping and valid masks.

Why one module: Synthetic Shapes augmentation, Homographic Adaptation and the joint-training pairs
all draw from the same sampler with different bounds, and every consumer needs the same
conventions for points and masks.

Conventions: points are ``(N, 2)`` ``[x, y]`` pixels; ``sample_homography`` returns ``H`` that maps
*source* image points to *warped* image points, so ``cv2.warpPerspective(src, H, (W, H))`` is the
warped image. (The reference implementation returns the inverse, warped -> source, because TF's
``transform`` wants that; ``HomographySample.H_warped_to_src`` keeps it for reference.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import cv2
import numpy as np
import torch

#: The reference sampler's options and defaults
#: (docs/method_facts/training_superpoint.md#homography-sampler).
DEFAULT_HOMOGRAPHY: dict[str, Any] = {
    "translation": True,
    "rotation": True,
    "scaling": True,
    "perspective": True,
    "scaling_amplitude": 0.1,
    "perspective_amplitude_x": 0.1,
    "perspective_amplitude_y": 0.1,
    "patch_ratio": 0.5,
    "max_angle": math.pi,
    "allow_artifacts": False,
    "translation_overflow": 0.0,
    "n_scales": 5,
    "n_angles": 25,
}


@dataclass
class HomographySample:
    """A sampled homography plus the corner sets it was solved from (normalised [0, 1] units)."""

    H: np.ndarray  # 3x3 float64, source px -> warped px
    corners_warped: np.ndarray = field(repr=False)  # pts1: the patch corners, in the warped image
    corners_source: np.ndarray = field(repr=False)  # pts2: where they read from in the source
    angle: float = 0.0  # rotation picked (radians)

    @property
    def H_warped_to_src(self) -> np.ndarray:
        return np.linalg.inv(self.H)


def _truncnorm(rng: np.random.Generator, mean: float, std: float, size: int | None = None) -> Any:
    """Normal truncated at 2 std (TF's ``truncated_normal``): redraw samples outside."""
    n = 1 if size is None else size
    out = rng.normal(0.0, 1.0, n)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.normal(0.0, 1.0, int(bad.sum()))
        bad = np.abs(out) > 2.0
    out = mean + std * out
    return float(out[0]) if size is None else out


def _inside(pts: np.ndarray) -> np.ndarray:
    """Per candidate (first axis): all corners within the unit square."""
    return np.all((pts >= 0.0) & (pts <= 1.0), axis=(-2, -1))


def homography_from_corners(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The homography ``dst ~ H src`` of four point pairs (h33 = 1), solved in float64.

    Why not a library call: ``cv2.getPerspectiveTransform`` takes float32 points, and that rounding
    leaves a projective part of ~4e-9 in homographies that must be pure rotations; kornia's
    ``get_perspective_transform`` gives the same result as this solve (tested) but is not on the
    bare torch image the GPU training recipe runs on."""
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(np.asarray(src, np.float64).reshape(4, 2),
                                             np.asarray(dst, np.float64).reshape(4, 2))):
        a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u]
        a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v]
        b[2 * i:2 * i + 2] = (u, v)
    return np.append(np.linalg.solve(a, b), 1.0).reshape(3, 3)


def sample_homography(shape: tuple[int, int], rng: np.random.Generator,
                      **params: Any) -> HomographySample:
    """Draw one homography for an image of ``shape = (H, W)`` with the reference procedure.

    Why corners: the bounds (patch ratio, perspective, scaling, translation, rotation) are stated on
    the patch corners, so the sampler perturbs the corners and solves for the homography.
    """
    p = {**DEFAULT_HOMOGRAPHY, **params}
    unknown = set(params) - set(DEFAULT_HOMOGRAPHY)
    if unknown:
        raise ValueError(f"unknown homography option(s): {sorted(unknown)}")
    ratio = float(p["patch_ratio"])
    margin = (1.0 - ratio) / 2.0
    pts1 = margin + np.array([[0, 0], [0, ratio], [ratio, ratio], [ratio, 0]], np.float64)
    pts2 = pts1.copy()
    artifacts = bool(p["allow_artifacts"])

    if p["perspective"]:
        amp_x, amp_y = float(p["perspective_amplitude_x"]), float(p["perspective_amplitude_y"])
        if not artifacts:
            amp_x, amp_y = min(amp_x, margin), min(amp_y, margin)
        dy = _truncnorm(rng, 0.0, amp_y / 2)
        dl = _truncnorm(rng, 0.0, amp_x / 2)
        dr = _truncnorm(rng, 0.0, amp_x / 2)
        pts2 = pts2 + np.array([[dl, dy], [dl, -dy], [dr, dy], [dr, -dy]])

    if p["scaling"]:
        n = int(p["n_scales"])
        scales = np.concatenate([[1.0], _truncnorm(rng, 1.0, float(p["scaling_amplitude"]) / 2, n)])
        center = pts2.mean(axis=0, keepdims=True)
        cand = (pts2 - center)[None] * scales[:, None, None] + center
        valid = np.arange(1, n + 1) if artifacts else np.flatnonzero(_inside(cand))
        pts2 = cand[int(rng.choice(valid))] if len(valid) else pts2

    if p["translation"]:
        t_min, t_max = pts2.min(axis=0), (1.0 - pts2).min(axis=0)
        if artifacts:
            t_min = t_min + float(p["translation_overflow"])
            t_max = t_max + float(p["translation_overflow"])
        # lo + (hi - lo) * u, as the reference does: with artifacts a corner may already be
        # outside the unit square, making lo > hi (then it moves back towards the inside)
        u = rng.uniform(0.0, 1.0, 2)
        pts2 = pts2 + (-t_min + (t_max + t_min) * u)

    angle = 0.0
    if p["rotation"]:
        n = int(p["n_angles"])
        max_angle = float(p["max_angle"])
        angles = np.concatenate([[0.0], np.linspace(-max_angle, max_angle, n)])
        center = pts2.mean(axis=0, keepdims=True)
        c, s = np.cos(angles), np.sin(angles)
        rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (n+1, 2, 2)
        cand = np.einsum("kij,nj->kni", rot, pts2 - center) + center
        valid = np.arange(1, n + 1) if artifacts else np.flatnonzero(_inside(cand))
        if len(valid):
            k = int(rng.choice(valid))
            pts2, angle = cand[k], float(angles[k])

    h, w = shape
    scale = np.array([w, h], np.float64)
    # warped-image patch corners (pts1) read source-image points (pts2)
    H_w2s = homography_from_corners(pts1 * scale, pts2 * scale)
    H = np.linalg.inv(H_w2s)
    return HomographySample(H=H / H[2, 2], corners_warped=pts1, corners_source=pts2, angle=angle)


def warp_points(points: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Apply ``H`` to ``(N, 2)`` [x, y] points (``cv2.perspectiveTransform`` in float64), as
    float32. A point whose homogeneous ``w`` is within 1.2e-7 of 0 (on the line ``H`` sends to
    infinity) comes back as (0, 0), not inf; the sampler's homographies keep ``w`` near 1 on
    image points."""
    pts = np.asarray(points, np.float64).reshape(-1, 1, 2)
    if len(pts) == 0:
        return np.zeros((0, 2), np.float32)
    return cv2.perspectiveTransform(pts, np.asarray(H, np.float64)).reshape(-1, 2).astype(np.float32)


def warp_image(image: np.ndarray, H: np.ndarray, size_wh: tuple[int, int] | None = None,
               interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    h, w = image.shape[:2]
    size = size_wh or (w, h)
    return cv2.warpPerspective(image, np.asarray(H, np.float64), size, flags=interpolation,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def erosion_kernel(radius: int) -> np.ndarray | None:
    if radius <= 0:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius, 2 * radius))


def compute_valid_mask(shape: tuple[int, int], H: np.ndarray | None = None,
                       erode_radius: int = 0, source_shape: tuple[int, int] | None = None
                       ) -> np.ndarray:
    """1 where a warped pixel reads a source pixel (nearest), eroded by ``erode_radius``.

    Why erode: bilinear warping blends in the black border near the edge of the valid region; the
    detector must not be trained to fire (or not fire) on that artificial edge.
    """
    h, w = shape
    sh, sw = source_shape or shape
    ones = np.ones((sh, sw), np.uint8)
    mask = ones if H is None else warp_image(ones, H, (w, h), cv2.INTER_NEAREST)
    k = erosion_kernel(int(erode_radius))
    if k is not None:
        mask = cv2.erode(mask, k, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    return mask.astype(np.float32)


def filter_points(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Keep points inside the image (pixel centres within [0, W-1] x [0, H-1] after rounding)."""
    h, w = shape
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    r = np.round(pts)
    keep = (r[:, 0] >= 0) & (r[:, 0] <= w - 1) & (r[:, 1] >= 0) & (r[:, 1] <= h - 1)
    return pts[keep]


def points_to_map(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Binary keypoint map (H, W): 1 at each rounded in-image point."""
    h, w = shape
    out = np.zeros((h, w), np.float32)
    pts = filter_points(points, shape)
    if len(pts):
        r = np.round(pts).astype(np.int64)
        out[r[:, 1], r[:, 0]] = 1.0
    return out


def homography_conf(conf: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keep only sampler keys of a config section (configs also hold e.g. valid_border_margin)."""
    return {k: v for k, v in (conf or {}).items() if k in DEFAULT_HOMOGRAPHY}
