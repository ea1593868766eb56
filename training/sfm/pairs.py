"""Image pairs with known geometry: sampling by overlap, consistent crops, depth-warped matches.

Why crops carry a bbox: the official D2-Net loader crops both images (and depths) around a
co-visible point and keeps the crop's top-left offset, so the warp can go back to full-image
pixels, apply K / pose and come back into the other crop (docs/method_facts/sfm.md#depth-warp).
We keep that exact
contract: every sample holds ``image``, ``depth``, ``K``, ``pose`` (world -> camera) and ``bbox``
(top, left) for both views, and :func:`warp_depth` is the official ``warp`` with the
project pixel convention (pixel centres at integers, so no +0.5 / -0.5 shifts).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .scene_index import SceneError, SceneIndex

logger = logging.getLogger(__name__)

#: Official ``warp`` keeps a point only if |z projected - depth2| < this (absolute, scene units).
DEPTH_TOL = 0.05


def valid_pairs(index: SceneIndex, min_overlap: float = 0.5, max_overlap: float = 1.0,
                max_scale_ratio: float = math.inf, require_depth: bool = True) -> np.ndarray:
    """``(M, 2)`` image index pairs with ``min <= overlap[i, j] <= max`` and scale ratio bounded."""
    ov, sc = index.overlap_matrix, index.scale_ratio_matrix
    ok = (ov >= min_overlap) & (ov <= max_overlap) & (sc <= max_scale_ratio)
    np.fill_diagonal(ok, False)
    if require_depth:
        has = np.array([index.has_depth(i) for i in range(len(index))])
        ok &= has[:, None] & has[None, :]
    return np.argwhere(ok)


def sample_pairs(index: SceneIndex, n: int, rng: np.random.Generator, min_overlap: float = 0.5,
                 max_overlap: float = 1.0, max_scale_ratio: float = math.inf,
                 require_depth: bool = True) -> np.ndarray:
    """``n`` pairs drawn uniformly *with replacement* among the valid ones (official
    ``build_dataset``). Raises :class:`SceneError` if the scene has none."""
    cand = valid_pairs(index, min_overlap, max_overlap, max_scale_ratio, require_depth)
    if len(cand) == 0:
        raise SceneError(
            f"scene {index.root} has no pair with overlap in [{min_overlap}, {max_overlap}] and "
            f"scale ratio <= {max_scale_ratio}" + (" and depth for both images" if require_depth else "")
            + f" ({len(index)} images, max off-diagonal overlap "
            f"{np.max(index.overlap_matrix) if len(index) > 1 else -1:.2f})")
    return cand[rng.integers(0, len(cand), size=n)]


# ------------------------------------------------------------------------------------- warping
def _bilinear_depth(depth: torch.Tensor, i: torch.Tensor, j: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ``interpolate_depth``: bilinear depth at (i, j); valid only if all 4 corners are
    inside and > 0."""
    h, w = depth.shape
    i0, j0 = torch.floor(i).long(), torch.floor(j).long()
    i1, j1 = i0 + 1, j0 + 1
    inside = (i0 >= 0) & (j0 >= 0) & (i1 < h) & (j1 < w)
    i0c, i1c = i0.clamp(0, h - 1), i1.clamp(0, h - 1)
    j0c, j1c = j0.clamp(0, w - 1), j1.clamp(0, w - 1)
    d00, d01, d10, d11 = depth[i0c, j0c], depth[i0c, j1c], depth[i1c, j0c], depth[i1c, j1c]
    valid = inside & (d00 > 0) & (d01 > 0) & (d10 > 0) & (d11 > 0)
    di, dj = i - i0.to(i.dtype), j - j0.to(j.dtype)
    z = ((1 - di) * (1 - dj) * d00 + (1 - di) * dj * d01 + di * (1 - dj) * d10 + di * dj * d11)
    return z, valid


def warp_depth(pos1: torch.Tensor, depth1: torch.Tensor, K1: torch.Tensor, pose1: torch.Tensor,
               bbox1: torch.Tensor, depth2: torch.Tensor, K2: torch.Tensor, pose2: torch.Tensor,
               bbox2: torch.Tensor, depth_tol: float = DEPTH_TOL, relative_tol: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official ``warp`` (docs/method_facts/sfm.md#depth-warp) on ``pos1 (2, N)`` = (i, j) crop
    pixels.

    Back-projects with the bilinear depth of image 1 (all 4 corners > 0), maps with
    ``pose2 @ inv(pose1)``, projects with K2 and keeps the point if image 2's bilinear depth there
    agrees: ``|z - depth2| < depth_tol`` (absolute, or ``* depth2`` with ``relative_tol``).
    Returns ``(pos1_kept (2, M), pos2 (2, M), ids (M,))``.
    """
    i, j = pos1[0].to(depth1.dtype), pos1[1].to(depth1.dtype)
    z1, ok = _bilinear_depth(depth1, i, j)
    u = j + bbox1[1]
    v = i + bbox1[0]
    Kinv1 = torch.linalg.inv(K1.to(depth1.dtype))
    X1 = Kinv1 @ torch.stack([u, v, torch.ones_like(u)]) * z1[None]
    T = pose2.to(depth1.dtype) @ torch.linalg.inv(pose1.to(depth1.dtype))
    X2 = T[:3, :3] @ X1 + T[:3, 3:4]
    z2 = X2[2]
    ok &= z2 > 1e-9
    p2 = K2.to(depth1.dtype) @ (X2 / torch.where(ok, z2, torch.ones_like(z2))[None])
    j2 = p2[0] - bbox2[1]
    i2 = p2[1] - bbox2[0]
    d2, ok2 = _bilinear_depth(depth2, i2, j2)
    tol = depth_tol * d2 if relative_tol else depth_tol
    ok &= ok2 & ((z2 - d2).abs() < tol)
    ids = torch.nonzero(ok).view(-1)
    return pos1[:, ids], torch.stack([i2[ids], j2[ids]]), ids


def warp_pixels_np(xy: np.ndarray, depth1: np.ndarray, K1: np.ndarray, pose1: np.ndarray,
                   depth2: np.ndarray, K2: np.ndarray, pose2: np.ndarray,
                   depth_tol: float = DEPTH_TOL, relative_tol: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """numpy convenience around :func:`warp_depth` on full images: ``xy (N, 2)`` [x, y] ->
    ``(xy2 (N, 2) NaN where invalid, valid (N,))``."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    t = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    zero = torch.zeros(2, dtype=torch.float64)
    pos = torch.from_numpy(np.ascontiguousarray(xy[:, ::-1].T))
    _, pos2, ids = warp_depth(pos, t(depth1), t(K1), t(pose1), zero, t(depth2), t(K2), t(pose2),
                              zero, depth_tol, relative_tol)
    out = np.full_like(xy, np.nan)
    out[ids.numpy()] = pos2.numpy()[::-1].T
    valid = np.zeros(len(xy), bool)
    valid[ids.numpy()] = True
    return out, valid


# ------------------------------------------------------------------------------------ cropping
def crop_window(centre_ij: tuple[float, float], shape: tuple[int, int], size: tuple[int, int]
                ) -> tuple[int, int]:
    """Top-left (i, j) of a ``size`` window centred on ``centre_ij``, shifted to stay inside the
    image (official behaviour). Images smaller than the crop get offset 0 (and are padded)."""
    out = []
    for c, full, s in zip(centre_ij, shape, size):
        top = int(round(c - s / 2))
        out.append(max(0, min(top, full - s)))
    return out[0], out[1]


def crop_pad(a: np.ndarray, top: int, left: int, size: tuple[int, int]) -> np.ndarray:
    """Crop ``size`` at (top, left); zero-pad at the bottom/right if the image is smaller
    (depth 0 = unknown, so padding never creates correspondences)."""
    h, w = size
    c = a[top:top + h, left:left + w]
    if c.shape[0] < h or c.shape[1] < w:
        pad = [(0, h - c.shape[0]), (0, w - c.shape[1])] + [(0, 0)] * (a.ndim - 2)
        c = np.pad(c, pad)
    return np.ascontiguousarray(c)


def rotate_scale_view(image: np.ndarray, depth: np.ndarray, K: np.ndarray, pose: np.ndarray,
                      angle_rad: float, scale: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """LF-Net's euclidean augmentation done *as a camera change* so depth warping stays exact.

    Rotating the image by ``angle`` about the principal point is a camera roll about its optical
    axis (pose ``Rz @ pose``); scaling about the principal point is a focal-length change
    (``K' = diag(s, s, 1) K`` around c). Exact when fx == fy (square pixels); depth values are
    unchanged (z is invariant to a roll), resampled with nearest neighbour.
    """
    c = np.array([K[0, 2], K[1, 2]])
    ca, sa = math.cos(angle_rad), math.sin(angle_rad)
    A = scale * np.array([[ca, -sa], [sa, ca]])
    M = np.concatenate([A, (c - A @ c)[:, None]], 1)
    h, w = depth.shape
    img2 = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    dep2 = cv2.warpAffine(depth, M, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    K2 = K.copy()
    K2[0, 0] *= scale
    K2[1, 1] *= scale
    K2[0, 1] *= scale
    Rz = np.eye(4)
    Rz[:2, :2] = [[ca, -sa], [sa, ca]]
    return img2, dep2, K2, Rz @ pose


class GeometricPairs(Dataset):
    """Pairs from one or more scene indexes, re-drawn every epoch (official: new random list per
    epoch), cropped around a co-visible point. Deterministic by ``(seed, epoch, item)``.

    conf keys: ``pairs_per_scene`` (100), ``min_overlap`` (0.5), ``max_overlap`` (1.0),
    ``max_scale_ratio`` (inf), ``crop_size`` ([256, 256] h, w), ``depth_tol`` (0.05),
    ``relative_depth_tol`` (False), ``centre_trials`` (50), ``euclidean_aug`` (None or
    ``{max_degree, max_scale}``: LF-Net rotation/scale of the second view), ``flip_pair`` (False).
    """

    def __init__(self, scenes: Sequence[SceneIndex], conf: Mapping[str, Any], seed: int = 0,
                 resample: bool = True):
        if not scenes:
            raise SceneError("no scenes given")
        self.scenes = list(scenes)
        self.conf = dict(conf)
        self.seed = int(seed)
        self.resample = resample
        self.crop = tuple(int(v) for v in self.conf.get("crop_size", [256, 256]))
        self.epoch = 0
        self.pairs: list[tuple[int, int, int]] = []
        self._draw()

    def _draw(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch if self.resample else 0])
        n = int(self.conf.get("pairs_per_scene", 100))
        pairs = []
        for s, idx in enumerate(self.scenes):
            for i, j in sample_pairs(idx, n, rng, float(self.conf.get("min_overlap", 0.5)),
                                     float(self.conf.get("max_overlap", 1.0)),
                                     float(self.conf.get("max_scale_ratio", math.inf))):
                pairs.append((s, int(i), int(j)))
        self.pairs = pairs

    def set_epoch(self, epoch: int) -> None:
        if self.resample and int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._draw()

    def __len__(self) -> int:
        return len(self.pairs)

    def _centre(self, d1: np.ndarray, K1: np.ndarray, P1: np.ndarray, d2: np.ndarray,
                K2: np.ndarray, P2: np.ndarray, rng: np.random.Generator
                ) -> tuple[tuple[float, float], tuple[float, float]]:
        """A random image-1 pixel with depth that is visible in image 2 (official: a random
        common 3D point) -> its (i, j) in both images."""
        ys, xs = np.nonzero(d1 > 0)
        if len(ys) == 0:
            raise SceneError("image has an empty depth map")
        trials = int(self.conf.get("centre_trials", 50))
        pick = rng.integers(0, len(ys), size=trials)
        xy = np.stack([xs[pick], ys[pick]], 1).astype(np.float64)
        xy2, ok = warp_pixels_np(xy, d1, K1, P1, d2, K2, P2, float(self.conf.get("depth_tol", DEPTH_TOL)),
                                 bool(self.conf.get("relative_depth_tol", False)))
        if not ok.any():  # no co-visible pixel found: centre both crops on the images
            return (d1.shape[0] / 2, d1.shape[1] / 2), (d2.shape[0] / 2, d2.shape[1] / 2)
        k = int(np.flatnonzero(ok)[0])
        return (xy[k, 1], xy[k, 0]), (xy2[k, 1], xy2[k, 0])

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        s, i, j = self.pairs[item]
        idx = self.scenes[s]
        rng = np.random.default_rng([self.seed, self.epoch, item, 1])
        if self.conf.get("flip_pair", False) and rng.random() < 0.5:
            i, j = j, i
        views = []
        for k in (i, j):
            img, dep = idx.load_image(k), idx.load_depth(k)
            if img.shape[:2] != dep.shape:
                raise SceneError(f"{idx.image_paths[k]}: image {img.shape[:2]} and depth "
                                 f"{dep.shape} sizes differ")
            views.append([img, dep, idx.intrinsics[k].astype(np.float64),
                          idx.poses[k].astype(np.float64)])
        aug = self.conf.get("euclidean_aug")
        angle, scale = 0.0, 1.0
        if aug:
            angle = math.radians(float(rng.uniform(-1, 1) * float(aug.get("max_degree", 180.0))))
            scale = float(math.exp(rng.uniform(-1, 1) * math.log(float(aug.get("max_scale", 1.414)))))
            views[1] = list(rotate_scale_view(*views[1], angle, scale))
        c1, c2 = self._centre(views[0][1], views[0][2], views[0][3], views[1][1], views[1][2],
                              views[1][3], rng)
        out: dict[str, torch.Tensor] = {}
        for n, (img, dep, K, P), c in ((0, views[0], c1), (1, views[1], c2)):
            top, left = crop_window(c, dep.shape, self.crop)
            out[f"image{n}"] = torch.from_numpy(crop_pad(img, top, left, self.crop)).permute(2, 0, 1).float() / 255.0
            out[f"depth{n}"] = torch.from_numpy(crop_pad(dep, top, left, self.crop).astype(np.float32))
            out[f"K{n}"] = torch.from_numpy(K.astype(np.float32))
            out[f"pose{n}"] = torch.from_numpy(P.astype(np.float32))
            out[f"bbox{n}"] = torch.tensor([top, left], dtype=torch.float32)
        out["aug_angle"] = torch.tensor(angle, dtype=torch.float32)
        out["aug_scale"] = torch.tensor(scale, dtype=torch.float32)
        return out
