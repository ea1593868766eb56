"""Camera pose from 3D map points and their 2D keypoints: PnP RANSAC, then refinement.

Why OpenCV's ``solvePnPRansac`` (AP3P minimal solver) and then ``solvePnPRefineLM``: RANSAC
finds the pose when the motion prior is wrong (a bump, a dropped frame, relocalisation), and
Levenberg-Marquardt on all inliers removes most of the noise of a 4-point hypothesis. Inliers
are re-selected with the refined pose and the pose refined once more, so points rejected by a
poor hypothesis come back. When the refined *prior* already explains 40 % of the
correspondences (a wrong prior explains ~10 % of a gated search), RANSAC is skipped: with 40-60 %
inliers it needs most of its iteration budget (tens of ms on a few hundred points, on KITTI one
frame in five) to reach the same answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from .camera import invert_pose

logger = logging.getLogger(__name__)

__all__ = ["PnPResult", "solve_pnp", "reprojection_errors"]

_LM = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 30, 1e-8)
#: The adaptive final inlier threshold never goes below this (px).
_MIN_TIGHT_PX = 1.0


@dataclass
class PnPResult:
    T_world_cam: np.ndarray  # (4, 4)
    inliers: np.ndarray  # (M,) bool over the input correspondences

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def _to_rt(T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    T_cw = invert_pose(T_world_cam)
    rvec, _ = cv2.Rodrigues(T_cw[:3, :3])
    return rvec.reshape(3, 1), T_cw[:3, 3].reshape(3, 1).copy()


def _from_rt(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    T_cw = np.eye(4)
    T_cw[:3, :3] = cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))[0]
    T_cw[:3, 3] = np.asarray(tvec, np.float64).reshape(3)
    return invert_pose(T_cw)


def reprojection_errors(points_world: np.ndarray, pixels: np.ndarray, K: np.ndarray,
                        T_world_cam: np.ndarray) -> np.ndarray:
    """Pixel distance between each keypoint and its projected point (inf behind the camera)."""
    T_cw = invert_pose(T_world_cam)
    pc = points_world @ T_cw[:3, :3].T + T_cw[:3, 3]
    front = pc[:, 2] > 1e-6
    z = np.where(front, pc[:, 2], 1.0)
    u = K[0, 0] * pc[:, 0] / z + K[0, 2]
    v = K[1, 1] * pc[:, 1] / z + K[1, 2]
    err = np.hypot(u - pixels[:, 0], v - pixels[:, 1])
    return np.where(front, err, np.inf)


def solve_pnp(points_world: np.ndarray, pixels: np.ndarray, K: np.ndarray,
              guess: np.ndarray | None, threshold: float, iterations: int, confidence: float,
              min_inliers: int, prior_inlier_ratio: float = 0.4) -> PnPResult | None:
    """``T_world_cam`` from ``(M, 3)`` world points and ``(M, 2)`` undistorted pixels, or None
    when fewer than ``min_inliers`` agree within ``threshold`` px.

    With a ``guess`` (the motion prior) that, once refined, has at least ``prior_inlier_ratio``
    of the correspondences as inliers, RANSAC is skipped; otherwise RANSAC runs and the better
    of its answer and the refined prior is kept."""
    obj = np.ascontiguousarray(points_world, np.float64).reshape(-1, 3)
    img = np.ascontiguousarray(pixels, np.float64).reshape(-1, 2)
    if len(obj) < max(min_inliers, 4):
        return None
    res: PnPResult | None = None
    if guess is not None:
        # A good prior explains most matches: refine from it and skip the hypotheses.
        res = _refine(obj, img, K, np.asarray(guess, np.float64), threshold)
        if res is not None and res.num_inliers >= max(min_inliers, prior_inlier_ratio * len(obj)):
            return res
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            obj, img, K, None, iterationsCount=int(iterations),
            reprojectionError=float(threshold), confidence=float(confidence),
            flags=cv2.SOLVEPNP_AP3P)
    except cv2.error as exc:  # degenerate sample sets
        logger.debug("solvePnPRansac failed: %s", exc)
        ok, inl = False, None
    candidates: list[np.ndarray] = []
    if ok and inl is not None and len(inl) >= 4:
        candidates.append(_from_rt(rvec, tvec))
    best = res
    for T in candidates:  # RANSAC's answer, compared with the refined prior
        cand = _refine(obj, img, K, T, threshold)
        if cand is not None and (best is None or cand.num_inliers > best.num_inliers):
            best = cand
    if best is None or best.num_inliers < min_inliers:
        return None
    return best


def _refine(obj: np.ndarray, img: np.ndarray, K: np.ndarray, T: np.ndarray,
            threshold: float) -> PnPResult | None:
    """Inlier selection + Levenberg-Marquardt from pose ``T``: twice at ``threshold``, then
    once more on the correspondences within 2.5 robust standard deviations (1.4826 x the
    median inlier error), so methods with precise keypoints are not held to a loose
    threshold. The returned inliers are those within ``threshold`` of the final pose."""
    inl = reprojection_errors(obj, img, K, T) < threshold
    for round_ in range(3):
        if round_ == 2:
            err = reprojection_errors(obj, img, K, T)
            sigma = 1.4826 * float(np.median(err[inl]))
            tight = err < min(threshold, max(2.5 * sigma, _MIN_TIGHT_PX))
            if tight.sum() >= max(6, inl.sum() // 2):
                inl = tight
        if inl.sum() < 4:
            return None
        rvec, tvec = _to_rt(T)
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], K, None, rvec, tvec, _LM)
        T_new = _from_rt(rvec, tvec)
        if not np.isfinite(T_new).all():
            return None
        T = T_new
        inl = reprojection_errors(obj, img, K, T) < threshold
    return PnPResult(T, inl)
