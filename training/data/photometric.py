"""Photometric augmentation (docs/method_facts/training_superpoint.md#photometric-augmentation)
on float images in 0..255.

Why numpy/OpenCV and per-sample RNG: augmentation runs inside data-loader workers, and drawing
from the sample's own ``np.random.Generator`` keeps every run reproducible (resume bit-for-bit).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import cv2
import numpy as np

DEFAULT_PHOTOMETRIC: dict[str, Any] = {
    "enable": True,
    "random_order": True,
    "primitives": ["random_brightness", "random_contrast", "additive_speckle_noise",
                   "additive_gaussian_noise", "additive_shade", "motion_blur"],
    "params": {
        "random_brightness": {"max_abs_change": 75},
        "random_contrast": {"strength_range": [0.3, 1.8]},
        "additive_gaussian_noise": {"stddev_range": [0, 15]},
        "additive_speckle_noise": {"prob_range": [0, 0.0035]},
        "additive_shade": {"transparency_range": [-0.5, 0.8], "kernel_size_range": [50, 100]},
        "motion_blur": {"max_kernel_size": 7},
    },
}


def random_brightness(img: np.ndarray, rng: np.random.Generator, max_abs_change: float = 50
                      ) -> np.ndarray:
    return np.clip(img + rng.uniform(-max_abs_change, max_abs_change), 0, 255)


def random_contrast(img: np.ndarray, rng: np.random.Generator,
                    strength_range: tuple[float, float] = (0.5, 1.5)) -> np.ndarray:
    f = rng.uniform(*strength_range)
    m = img.mean()
    return np.clip((img - m) * f + m, 0, 255)


def additive_gaussian_noise(img: np.ndarray, rng: np.random.Generator,
                            stddev_range: tuple[float, float] = (5, 95)) -> np.ndarray:
    s = rng.uniform(*stddev_range)
    return np.clip(img + rng.normal(0.0, s, img.shape), 0, 255)


def additive_speckle_noise(img: np.ndarray, rng: np.random.Generator,
                           prob_range: tuple[float, float] = (0.0, 0.005)) -> np.ndarray:
    p = rng.uniform(*prob_range)
    u = rng.uniform(0, 1, img.shape)
    out = img.copy()
    out[u <= p] = 0.0
    out[u >= 1.0 - p] = 255.0
    return out


def additive_shade(img: np.ndarray, rng: np.random.Generator, nb_ellipses: int = 20,
                   transparency_range: tuple[float, float] = (-0.5, 0.8),
                   kernel_size_range: tuple[int, int] = (250, 350)) -> np.ndarray:
    """Darken/brighten soft elliptical regions (shadows, vignetting)."""
    h, w = img.shape[:2]
    min_dim = min(h, w) / 4
    mask = np.zeros((h, w), np.uint8)
    for _ in range(nb_ellipses):
        ax = int(max(rng.uniform() * min_dim, min_dim / 5))
        ay = int(max(rng.uniform() * min_dim, min_dim / 5))
        max_rad = max(ax, ay)
        x = int(rng.integers(max_rad, max(w - max_rad, max_rad + 1)))
        y = int(rng.integers(max_rad, max(h - max_rad, max_rad + 1)))
        angle = float(rng.uniform(0, 90))
        cv2.ellipse(mask, (x, y), (ax, ay), angle, 0, 360, 255, -1)
    t = rng.uniform(*transparency_range)
    k = int(rng.integers(kernel_size_range[0], max(kernel_size_range[1], kernel_size_range[0] + 1)))
    if k % 2 == 0:
        k += 1
    blurred = cv2.GaussianBlur(mask.astype(np.float32), (k, k), 0)
    return np.clip(img * (1.0 - t * blurred / 255.0), 0, 255)


def motion_blur(img: np.ndarray, rng: np.random.Generator, max_kernel_size: int = 10
                ) -> np.ndarray:
    mode = ("h", "v", "diag_down", "diag_up")[int(rng.integers(0, 4))]
    k = int((rng.integers(0, (max_kernel_size + 1) // 2)) * 2 + 1)  # odd in [1, max]
    if k <= 1:
        return img
    center = k // 2
    kernel = np.zeros((k, k), np.float32)
    if mode == "h":
        kernel[center, :] = 1.0
    elif mode == "v":
        kernel[:, center] = 1.0
    elif mode == "diag_down":
        kernel = np.eye(k, dtype=np.float32)
    else:
        kernel = np.flip(np.eye(k, dtype=np.float32), 0).copy()
    var = k * k / 16.0
    g = np.arange(k, dtype=np.float32) - center
    gauss = np.exp(-(g[None] ** 2 + g[:, None] ** 2) / (2.0 * var))
    kernel *= gauss
    kernel /= kernel.sum()
    return cv2.filter2D(img.astype(np.float32), -1, kernel)


OPS: dict[str, Callable[..., np.ndarray]] = {
    "random_brightness": random_brightness,
    "random_contrast": random_contrast,
    "additive_gaussian_noise": additive_gaussian_noise,
    "additive_speckle_noise": additive_speckle_noise,
    "additive_shade": additive_shade,
    "motion_blur": motion_blur,
}


def photometric_augmentation(img: np.ndarray, rng: np.random.Generator,
                             conf: Mapping[str, Any] | None = None) -> np.ndarray:
    """Apply the configured ops (random order if asked) to a float image in 0..255."""
    c = {**DEFAULT_PHOTOMETRIC, **(conf or {})}
    out = np.asarray(img, np.float32)
    if not c.get("enable", True):
        return out
    names = list(c["primitives"])
    for n in names:
        if n not in OPS:
            raise ValueError(f"unknown photometric op '{n}' (known: {sorted(OPS)})")
    order = rng.permutation(len(names)) if c.get("random_order", True) else range(len(names))
    params = c.get("params", {})
    for i in order:
        n = names[int(i)]
        out = OPS[n](out, rng, **params.get(n, {})).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.float32)
