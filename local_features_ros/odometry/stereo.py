"""Rectified stereo: left/right keypoint matching, sub-pixel disparity, triangulation.

Why matching on rows with the method's own descriptors: in a rectified pair a point's match lies
on the same image row at a positive disparity, so the search is one-dimensional and the
descriptor only has to decide between a few candidates (``association.mutual_nn_pairs``). A
learned matcher (LightGlue) is used as the method's matcher and then held to the same row and
disparity rules.

Why sub-pixel refinement: depth is ``fx b / d``; on KITTI (fx b = 380 px m) a 0.5 px disparity
error at 20 m is a 2.6 % depth error, and keypoints of some methods are integer pixels. The
disparity is refined by zero-mean normalised cross-correlation (robust to the two cameras' gain
difference) of a patch around the left keypoint against the right image along the row, with a
parabola through the best score and its two neighbours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from ..matchers.base import Matcher
from ..types import Features
from .association import mutual_nn_pairs, row_band_pairs
from .camera import RectifiedCamera
from .config import StereoConfig
from .types import FrameMeasurement

logger = logging.getLogger(__name__)

__all__ = ["StereoMatches", "match_stereo", "refine_disparity", "left_measurement",
           "stereo_measurement", "to_gray_float"]


@dataclass
class StereoMatches:
    """Left indices, right indices and refined disparities (px) of the accepted pairs."""

    left: np.ndarray  # (M,) int64
    right: np.ndarray  # (M,) int64
    disparity: np.ndarray  # (M,) float64

    def __len__(self) -> int:
        return int(self.left.shape[0])


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) RGB, uint8/uint16/float -> (H, W) float32 gray in the image's own
    units (normalised cross-correlation does not care about scale)."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3].astype(np.float32), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(img, dtype=np.float32)


def _max_disparity(cfg: StereoConfig, width: int) -> float:
    return cfg.max_disparity if cfg.max_disparity > 0 else 0.5 * width


def match_stereo(left: Features, right: Features, cfg: StereoConfig, width: int,
                 matcher: Matcher | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Left/right index pairs ``(M, 2)`` obeying the row and disparity rules of ``cfg``, and
    their descriptor distances.

    ``matcher`` None (or the ``nn`` matcher): mutual nearest neighbour among the candidates of
    the row band, with ``cfg.ratio``; any other matcher: its matches, held to the same rules."""
    kl = left.keypoints.detach().cpu().numpy().astype(np.float64).reshape(-1, 2)
    kr = right.keypoints.detach().cpu().numpy().astype(np.float64).reshape(-1, 2)
    if len(kl) == 0 or len(kr) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    max_d = _max_disparity(cfg, width)
    if matcher is None or matcher.name == "nn":
        pairs = row_band_pairs(kl, kr, cfg.max_row_diff, cfg.min_disparity, max_d)
        return mutual_nn_pairs(left.descriptors, right.descriptors, pairs, cfg.ratio)
    res = matcher.match(left, right)
    m = res.matches
    d = kl[m[:, 0], 0] - kr[m[:, 1], 0]
    keep = ((np.abs(kl[m[:, 0], 1] - kr[m[:, 1], 1]) <= cfg.max_row_diff)
            & (d >= cfg.min_disparity) & (d <= max_d))
    return m[keep], res.distances[keep]


def _patch_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(-radius, radius + 1, dtype=np.float32)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    return dx.ravel(), dy.ravel()


def refine_disparity(left_gray: np.ndarray, right_gray: np.ndarray, left_pts: np.ndarray,
                     right_x: np.ndarray, cfg: StereoConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel disparities ``(M,)`` and a validity mask for left points ``(M, 2)`` whose
    match in the right image is near column ``right_x`` on the same row (module docstring)."""
    m = len(left_pts)
    if m == 0:
        return np.zeros(0), np.zeros(0, bool)
    r, s = int(cfg.patch_radius), int(cfg.search_radius)
    dx, dy = _patch_offsets(r)
    p = dx.size
    xl = left_pts[:, 0].astype(np.float32)
    yl = left_pts[:, 1].astype(np.float32)
    # Centre the search on the integer column nearest the right keypoint plus the left
    # keypoint's fractional part, so integer-pixel detectors sample the right image on its grid.
    x0 = np.rint(np.asarray(right_x, np.float64) - left_pts[:, 0]) + left_pts[:, 0]
    mapx_l = xl[:, None] + dx[None, :]
    mapy_l = yl[:, None] + dy[None, :]
    lp = cv2.remap(left_gray, mapx_l, mapy_l, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    offs = np.arange(-s, s + 1, dtype=np.float32)
    mapx_r = (x0.astype(np.float32)[:, None, None] + offs[None, :, None] + dx[None, None, :])
    mapy_r = np.broadcast_to(mapy_l[:, None, :], mapx_r.shape)
    rp = cv2.remap(right_gray, np.ascontiguousarray(mapx_r.reshape(-1, p)),
                   np.ascontiguousarray(mapy_r.reshape(-1, p)), cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_REFLECT).reshape(m, len(offs), p)
    a = lp - lp.mean(axis=1, keepdims=True)
    b = rp - rp.mean(axis=2, keepdims=True)
    na = np.sqrt((a * a).sum(axis=1))
    nb = np.sqrt((b * b).sum(axis=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        zncc = np.einsum("mp,mop->mo", a, b) / (na[:, None] * nb)
    zncc = np.where(np.isfinite(zncc), zncc, -1.0)
    k = np.argmax(zncc, axis=1)
    best = zncc[np.arange(m), k]
    valid = (best >= cfg.min_zncc) & (k > 0) & (k < len(offs) - 1) & (na > 1e-3)
    kk = np.clip(k, 1, len(offs) - 2)
    s_m = zncc[np.arange(m), kk - 1]
    s_0 = zncc[np.arange(m), kk]
    s_p = zncc[np.arange(m), kk + 1]
    den = s_m - 2.0 * s_0 + s_p
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(den < 0, 0.5 * (s_m - s_p) / den, 0.0)
    frac = np.clip(frac, -0.5, 0.5)
    xr = x0 + offs[kk] + frac
    return left_pts[:, 0] - xr, valid


def left_measurement(left: Features, stamp: float) -> FrameMeasurement:
    """The left image's keypoints without depths (NaN), for a right image matched later."""
    kl = left.keypoints.detach().cpu().numpy().astype(np.float64).reshape(-1, 2)
    n = len(kl)
    sigma = np.maximum(left.scales.detach().cpu().numpy().astype(np.float64), 1.0)
    return FrameMeasurement(features=left, keypoints=kl, u_right=np.full(n, np.nan),
                            points_cam=np.full((n, 3), np.nan), sigma=sigma, stamp=float(stamp))


def stereo_measurement(left: Features, right: Features, left_gray: np.ndarray,
                       right_gray: np.ndarray, camera: RectifiedCamera, cfg: StereoConfig,
                       stamp: float, matcher: Matcher | None = None
                       ) -> tuple[FrameMeasurement, StereoMatches]:
    """Match, refine and triangulate: the left keypoints with 3D points where a right match
    passed every check (``FrameMeasurement``), and the accepted pairs."""
    kl = left.keypoints.detach().cpu().numpy().astype(np.float64).reshape(-1, 2)
    kr = right.keypoints.detach().cpu().numpy().astype(np.float64).reshape(-1, 2)
    pairs, _ = match_stereo(left, right, cfg, camera.width, matcher)
    disparity = kl[pairs[:, 0], 0] - kr[pairs[:, 1], 0]
    valid = np.ones(len(pairs), bool)
    if cfg.subpixel and len(pairs):
        disparity, valid = refine_disparity(left_gray, right_gray, kl[pairs[:, 0]],
                                            kr[pairs[:, 1], 0], cfg)
    max_d = _max_disparity(cfg, camera.width)
    valid &= (disparity >= cfg.min_disparity) & (disparity <= max_d)
    pairs, disparity = pairs[valid], disparity[valid]
    n = len(kl)
    u_right = np.full(n, np.nan)
    points = np.full((n, 3), np.nan)
    if len(pairs):
        il = pairs[:, 0]
        depth = camera.bf / disparity
        u_right[il] = kl[il, 0] - disparity
        points[il] = camera.back_project(kl[il], depth)
    sigma = np.maximum(left.scales.detach().cpu().numpy().astype(np.float64), 1.0)
    meas = FrameMeasurement(features=left, keypoints=kl, u_right=u_right, points_cam=points,
                            sigma=sigma, stamp=float(stamp))
    return meas, StereoMatches(pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64),
                               np.asarray(disparity, np.float64))
