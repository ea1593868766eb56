"""RGB-D: keypoint depths from a depth image aligned to the colour image.

Why reject so much: a depth camera reports 0 (or NaN) where it measured nothing, and at object
edges its pixels mix the two surfaces; a keypoint sits on such an edge more often than not (it
is a corner), so a depth is accepted only when the pixel is valid, inside the configured range,
and its neighbourhood (3x3, wider for keypoints of coarse scales) agrees within ``max_step``
(relative); the depth at a sub-pixel
keypoint is then interpolated in inverse depth, which is exact on planes. It becomes a 3D
point and a virtual right-image column (``camera.RectifiedCamera``), so bundle adjustment treats
it like a stereo measurement whose disparity noise is that of a ``virtual_baseline`` rig.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..types import Features
from .camera import RectifiedCamera
from .config import DepthConfig
from .types import FrameMeasurement

__all__ = ["depth_in_metres", "sample_depth", "rgbd_measurement"]

_NO_DEPTH = 1.0e9  # stands for "no depth" in the window minimum
_MAX_RADIUS = 4


def depth_in_metres(depth: np.ndarray, depth_factor: float) -> np.ndarray:
    """A depth image as float metres: integer images (TUM: uint16 / 5000, ROS 16UC1: mm, factor
    1000) are divided by ``depth_factor``; float images are taken as metres already."""
    d = np.asarray(depth)
    if d.ndim == 3:
        d = d[..., 0]
    if np.issubdtype(d.dtype, np.integer):
        return d.astype(np.float32) / float(depth_factor)
    return d.astype(np.float32, copy=False)


def _spread(depth: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Max and min of the valid (> 0) depths in each pixel's (2 radius + 1)^2 window."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    hi = cv2.dilate(depth, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0.0)
    lo = cv2.erode(np.where(depth > 0, depth, np.float32(_NO_DEPTH)), kernel,
                   borderType=cv2.BORDER_CONSTANT, borderValue=_NO_DEPTH)
    return hi, lo


def sample_depth(depth: np.ndarray, pixels: np.ndarray, cfg: DepthConfig,
                 radius: np.ndarray | None = None) -> np.ndarray:
    """Depth (m) at each pixel ``(N, 2)`` of ``depth`` (metres), NaN where rejected.

    ``radius`` ``(N,)`` (default 1): half-size of the window that must agree within
    ``cfg.max_step``; a keypoint found at a coarse scale is uncertain by about its scale in
    pixels, so its depth must hold over that neighbourhood (1 to 4 px)."""
    h, w = depth.shape
    px = np.asarray(pixels, np.float64).reshape(-1, 2)
    out = np.full(len(px), np.nan)
    if len(px) == 0:
        return out
    x = np.rint(px[:, 0]).astype(np.int64)
    y = np.rint(px[:, 1]).astype(np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    d = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    d[d < 0] = 0.0
    xi, yi = x[inside], y[inside]
    centre = d[yi, xi].astype(np.float64)
    valid = (centre >= cfg.min_depth) & (centre <= cfg.max_depth)
    radii = np.ones(len(px), np.int64) if radius is None else \
        np.clip(np.rint(np.asarray(radius, np.float64)), 1, _MAX_RADIUS).astype(np.int64)
    radii = radii[inside]
    spread = np.zeros(len(xi))
    for r in np.unique(radii):
        hi, lo = _spread(d, int(r))
        sel = radii == r
        spread[sel] = hi[yi[sel], xi[sel]] - lo[yi[sel], xi[sel]]
    valid &= spread <= cfg.max_step * centre
    padded = np.pad(d.astype(np.float64), 1, mode="constant")
    # Sub-pixel keypoints: inverse depth interpolated bilinearly over the 2x2 pixels around
    # the point (exact on a plane; all four lie in the 3x3 window just checked).
    fx, fy = px[inside, 0], px[inside, 1]
    x0 = np.clip(np.floor(fx).astype(np.int64), 0, w - 2) + 1
    y0 = np.clip(np.floor(fy).astype(np.int64), 0, h - 2) + 1
    ax = np.clip(fx - (x0 - 1), 0.0, 1.0)
    ay = np.clip(fy - (y0 - 1), 0.0, 1.0)
    q = np.stack([padded[y0, x0], padded[y0, x0 + 1], padded[y0 + 1, x0],
                  padded[y0 + 1, x0 + 1]], 1)
    wts = np.stack([(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay], 1)
    full = np.all(q > 0, axis=1)
    with np.errstate(divide="ignore"):
        interp = 1.0 / np.sum(wts / np.where(q > 0, q, 1.0), axis=1)
    vals = np.where(valid, np.where(full, interp, centre), np.nan)
    out[np.flatnonzero(inside)] = vals
    return out


def rgbd_measurement(features: Features, depth_m: np.ndarray, camera: RectifiedCamera,
                     cfg: DepthConfig, stamp: float, K_raw: np.ndarray | None = None,
                     distortion: np.ndarray | None = None) -> FrameMeasurement:
    """Keypoints with 3D points from ``depth_m`` (aligned to the colour image, metres).

    With ``distortion`` the keypoints are undistorted (``K_raw`` the colour camera's K) for the
    geometry, while depth is read at the raw pixel, where the depth image is aligned."""
    raw = features.keypoints.detach().cpu().numpy().astype(np.float64).reshape(-1, 2)
    scales = features.scales.detach().cpu().numpy().astype(np.float64)
    z = sample_depth(depth_m, raw, cfg, radius=scales)
    kp = raw
    if distortion is not None and np.any(np.asarray(distortion) != 0) and len(raw):
        K = camera.K if K_raw is None else np.asarray(K_raw, float)
        kp = cv2.undistortPoints(raw[:, None], K, np.asarray(distortion, float),
                                 P=camera.K).reshape(-1, 2)
    has = np.isfinite(z)
    points = np.full((len(kp), 3), np.nan)
    u_right = np.full(len(kp), np.nan)
    points[has] = camera.back_project(kp[has], z[has])
    u_right[has] = camera.right_u(kp[has, 0], z[has])
    sigma = np.maximum(scales, 1.0)
    return FrameMeasurement(features=features, keypoints=kp, u_right=u_right, points_cam=points,
                            sigma=sigma, stamp=float(stamp))
