"""One detector-training sample (image, keypoint map, valid mask) with MagicPoint's augmentation
(docs/method_facts/training_superpoint.md#stage-1-magicpoint-on-synthetic-shapes).

Why shared: MagicPoint on Synthetic Shapes and its retraining on Homographic-Adaptation labels
build the same sample (photometric ops, then a homography that moves the points and defines the
valid mask); only where the image and the random generator come from differs.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from .homographies import compute_valid_mask, filter_points, homography_conf, points_to_map, \
    sample_homography, warp_image, warp_points
from .photometric import photometric_augmentation


def detector_sample(img: np.ndarray, pts: np.ndarray, rng: np.random.Generator | None,
                    augmentation: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``img`` (H, W) 0..255, ``pts`` (N, 2) (row, col); ``rng`` None = no augmentation.

    Returns ``image`` (1, H, W) float32 in [0, 1], ``keypoint_map`` (H, W), ``valid_mask`` (H, W).
    """
    img = img.astype(np.float32)
    shape = img.shape[:2]
    mask = np.ones(shape, np.float32)
    if rng is not None:
        if augmentation.get("photometric", {}).get("enable", True):
            img = photometric_augmentation(img, rng, augmentation.get("photometric", {}))
        hconf = augmentation.get("homographic", {})
        if hconf.get("enable", True):
            hs = sample_homography(shape, rng, **homography_conf(hconf.get("params", {})))
            img = warp_image(img, hs.H)
            pts = filter_points(warp_points(pts, hs.H), shape)
            mask = compute_valid_mask(shape, hs.H, int(hconf.get("valid_border_margin", 0)))
    return {
        "image": torch.from_numpy(np.ascontiguousarray(img / 255.0, np.float32))[None],
        "keypoint_map": torch.from_numpy(points_to_map(pts, shape)),
        "valid_mask": torch.from_numpy(mask),
    }
