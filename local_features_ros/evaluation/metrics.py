"""Evaluation metrics, pure numpy + OpenCV (no torch), each one a re-statement of a published protocol.

Why one module of plain functions: every protocol (HPatches, pose pairs, sequences) and the tests use
the same definitions, so a number in docs/evaluation.md means exactly one thing.

Protocols restated here:
- MMA (D2-Net HPatches notebook): per pair, the fraction of mutual-NN matches whose keypoint in image 0,
  warped by the ground-truth homography, lands within ``t`` px of its match in image 1; averaged over
  pairs (a pair without matches scores 0).
- Homography accuracy (SuperPoint): mean distance between the four image-0 corners warped by the
  estimated and by the true homography; a pair is correct when that mean is <= eps.
- Repeatability / localisation error (SuperPoint): points of each image whose warp lands in the other
  image (common visible region), distances in image 1; a point repeats when its nearest point in the
  other set is within 3 px; ``(count0 + count1) / (n0 + n1)``; the localisation error is the mean of
  those nearest distances that are within the threshold.
- Pose AUC (SuperGlue): error = max(rotation error, translation-direction error) in degrees, failures
  count as infinite error; the recall-vs-error curve is integrated from 0 to each threshold and divided
  by the threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)

MMA_THRESHOLDS = tuple(range(1, 11))
HOMOGRAPHY_THRESHOLDS = (1, 3, 5)
POSE_THRESHOLDS = (5, 10, 20)


# ---------------------------------------------------------------------------------------- homography
def warp_points(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homography to ``(N, 2)`` points (pixels)."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    hom = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ np.asarray(H, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return hom[:, :2] / hom[:, 2:3]


def inside(pts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Mask of points inside an image of ``size`` = (W, H) (pixel centres 0..W-1, 0..H-1)."""
    w, h = size
    return ((pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
            & np.isfinite(pts).all(axis=1))


def match_errors_homography(kpts0: np.ndarray, kpts1: np.ndarray, matches: np.ndarray,
                            H_0to1: np.ndarray) -> np.ndarray:
    """Reprojection error (px, in image 1) of each match ``[i0, i1]`` under the true homography."""
    matches = np.asarray(matches, np.int64).reshape(-1, 2)
    if len(matches) == 0:
        return np.zeros(0)
    p0 = warp_points(H_0to1, np.asarray(kpts0)[matches[:, 0]])
    return np.linalg.norm(p0 - np.asarray(kpts1, np.float64)[matches[:, 1]], axis=1)


def matching_accuracy(errors: np.ndarray, thresholds=MMA_THRESHOLDS) -> dict[str, float]:
    """Fraction of matches with error <= t for each threshold (0 when there are no matches)."""
    errors = np.asarray(errors, np.float64)
    if len(errors) == 0:
        return {str(t): 0.0 for t in thresholds}
    return {str(t): float(np.mean(errors <= t)) for t in thresholds}


def image_corners(size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)


def homography_corner_error(H_est: np.ndarray | None, H_gt: np.ndarray,
                            size0: tuple[int, int]) -> float:
    """Mean distance of image 0's four corners warped by estimate vs truth (inf if no estimate)."""
    if H_est is None or not np.isfinite(H_est).all():
        return float("inf")
    c = image_corners(size0)
    d = np.linalg.norm(warp_points(H_est, c) - warp_points(H_gt, c), axis=1)
    return float(np.mean(d)) if np.isfinite(d).all() else float("inf")


def estimate_homography(pts0: np.ndarray, pts1: np.ndarray, reproj_thresh: float = 3.0
                        ) -> np.ndarray | None:
    """``cv2.findHomography`` RANSAC (SuperPoint's evaluation), ``None`` with < 4 matches."""
    if len(pts0) < 4:
        return None
    H, _ = cv2.findHomography(np.asarray(pts0, np.float64), np.asarray(pts1, np.float64),
                              cv2.RANSAC, reproj_thresh)
    return H


@dataclass
class RepeatabilityResult:
    repeatability: float  # NaN when neither image has a point in the common region
    localization_error: float  # px, NaN when nothing repeats
    num_repeated: int
    num_points: int


def repeatability(kpts0: np.ndarray, kpts1: np.ndarray, H_0to1: np.ndarray,
                  size0: tuple[int, int], size1: tuple[int, int],
                  threshold: float = 3.0) -> RepeatabilityResult:
    """SuperPoint's repeatability in both directions over the common visible region."""
    kpts0 = np.asarray(kpts0, np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, np.float64).reshape(-1, 2)
    w0 = warp_points(H_0to1, kpts0)
    a = w0[inside(w0, size1)]  # image-0 points visible in image 1, in image-1 pixels
    back = warp_points(np.linalg.inv(H_0to1), kpts1)
    b = kpts1[inside(back, size0)]  # image-1 points visible in image 0
    n = len(a) + len(b)
    if n == 0:
        return RepeatabilityResult(float("nan"), float("nan"), 0, 0)
    if len(a) == 0 or len(b) == 0:
        return RepeatabilityResult(0.0, float("nan"), 0, n)
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    min_a, min_b = d.min(axis=1), d.min(axis=0)
    ok_a, ok_b = min_a <= threshold, min_b <= threshold
    count = int(ok_a.sum() + ok_b.sum())
    loc = float((min_a[ok_a].sum() + min_b[ok_b].sum()) / count) if count else float("nan")
    return RepeatabilityResult(count / n, loc, count, n)


# ---------------------------------------------------------------------------------------- pose
def rotation_error_deg(R_est: np.ndarray, R_gt: np.ndarray) -> float:
    """Angle of ``R_est^T R_gt`` in degrees (atan2 form: exact near 0, unlike arccos)."""
    D = np.asarray(R_est, np.float64).T @ np.asarray(R_gt, np.float64)
    c = (np.trace(D) - 1.0) / 2.0
    s = np.linalg.norm([D[2, 1] - D[1, 2], D[0, 2] - D[2, 0], D[1, 0] - D[0, 1]]) / 2.0
    return float(np.degrees(np.arctan2(s, c)))


def translation_angle_deg(t_est: np.ndarray, t_gt: np.ndarray, min_gt_norm: float = 0.0,
                          sign_ambiguous: bool = True) -> float:
    """Angle between translation directions in degrees.

    ``sign_ambiguous`` (SuperGlue's choice): min(e, 180 - e), since an essential matrix fixes t only up
    to sign before the cheirality check. A ground-truth translation shorter than ``min_gt_norm``
    (pure rotation) gives 0.
    """
    t_est, t_gt = np.asarray(t_est, np.float64).ravel(), np.asarray(t_gt, np.float64).ravel()
    ng, ne = np.linalg.norm(t_gt), np.linalg.norm(t_est)
    if ng <= min_gt_norm:
        return 0.0
    if ne == 0:
        return float("inf") if not sign_ambiguous else 90.0
    e = float(np.degrees(np.arccos(np.clip(t_est @ t_gt / (ne * ng), -1.0, 1.0))))
    return min(e, 180.0 - e) if sign_ambiguous else e


def pose_error_deg(R_est: np.ndarray | None, t_est: np.ndarray | None, T_gt: np.ndarray,
                   sign_ambiguous: bool = True) -> tuple[float, float, float]:
    """(rotation error, translation-angle error, max of both); inf when there is no estimate."""
    if R_est is None or t_est is None:
        return float("inf"), float("inf"), float("inf")
    er = rotation_error_deg(R_est, T_gt[:3, :3])
    et = translation_angle_deg(t_est, T_gt[:3, 3], sign_ambiguous=sign_ambiguous)
    return er, et, max(er, et)


def pose_auc(errors, thresholds=POSE_THRESHOLDS) -> dict[str, float]:
    """Area under the recall-vs-error curve up to each threshold, normalised by it (SuperGlue).

    Recall at error e is the fraction of pairs with error <= e; failures (inf) never enter the curve
    but still count in the denominator.
    """
    errors = np.sort(np.asarray(list(errors), np.float64))
    out: dict[str, float] = {}
    n = len(errors)
    if n == 0:
        return {str(t): 0.0 for t in thresholds}
    recall = np.arange(1, n + 1) / n
    e = np.concatenate([[0.0], errors])
    r = np.concatenate([[0.0], recall])
    for t in thresholds:
        k = int(np.searchsorted(e, t, side="right"))  # curve points with error <= t
        xs = np.concatenate([e[:k], [t]])
        ys = np.concatenate([r[:k], [r[k - 1]]])
        out[str(t)] = float(np.trapezoid(ys, xs) / t)
    return out


@dataclass
class PoseEstimate:
    R: np.ndarray
    t: np.ndarray  # unit norm, x1 = R x0 + t
    inliers: np.ndarray  # (M,) bool


def normalize_points(pts: np.ndarray, K: np.ndarray, dist: np.ndarray | None = None) -> np.ndarray:
    """Pixels -> normalised image coordinates (undistorting when ``dist`` is given)."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return pts
    if dist is not None and np.any(np.asarray(dist) != 0):
        return cv2.undistortPoints(pts[:, None], np.asarray(K, np.float64),
                                   np.asarray(dist, np.float64)).reshape(-1, 2)
    K = np.asarray(K, np.float64)
    return (pts - K[[0, 1], [2, 2]]) / K[[0, 1], [0, 1]]


def estimate_relative_pose(pts0: np.ndarray, pts1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                           thresh_px: float = 1.0, confidence: float = 0.99999,
                           dist0: np.ndarray | None = None, dist1: np.ndarray | None = None
                           ) -> PoseEstimate | None:
    """Essential matrix by RANSAC on normalised coordinates, then ``recoverPose`` (SuperGlue).

    The pixel threshold is divided by the mean focal length of both cameras. ``findEssentialMat``
    may return several stacked solutions; the one with most cheirality inliers wins.
    """
    if len(pts0) < 5:
        return None
    n0 = normalize_points(pts0, K0, dist0)
    n1 = normalize_points(pts1, K1, dist1)
    f = np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    E, mask = cv2.findEssentialMat(n0, n1, np.eye(3), method=cv2.RANSAC, prob=confidence,
                                   threshold=thresh_px / f)
    if E is None or mask is None:
        return None
    best: PoseEstimate | None = None
    best_n = -1
    for Ei in np.split(E, len(E) // 3):
        # distanceThresh 1e9: far points count (the positional overload would silently mean 50)
        n, R, t, m = cv2.recoverPose(Ei, n0, n1, cameraMatrix=np.eye(3), distanceThresh=1e9,
                                     mask=mask.copy())[:4]
        if n > best_n:
            best_n = n
            best = PoseEstimate(R, t.ravel() / max(np.linalg.norm(t), 1e-12), m.ravel() > 0)
    return best


# ---------------------------------------------------------------------------------------- trajectories
def relative_pose(T_w_a: np.ndarray, T_w_b: np.ndarray) -> np.ndarray:
    """``T_b_a`` (maps points in frame a to frame b): x_b = R x_a + t."""
    return np.linalg.inv(T_w_b) @ T_w_a


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t).ravel()
    return T


def accumulate_trajectory(T_w_first: np.ndarray, motions: list[np.ndarray]) -> list[np.ndarray]:
    """Chain relative motions ``T_cam(i+1)_cam(i)`` into camera-to-world poses from a start pose."""
    poses = [np.asarray(T_w_first, np.float64)]
    for T_next_prev in motions:
        poses.append(poses[-1] @ np.linalg.inv(T_next_prev))
    return poses


def umeyama_alignment(src: np.ndarray, dst: np.ndarray, with_scale: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares (R, t, s) with dst ~ s R src + t (Umeyama 1991)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_s = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(D) @ S) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return R, t, s


def absolute_trajectory_error(est: list[np.ndarray], gt: list[np.ndarray], align: bool = True
                              ) -> float:
    """RMSE of camera positions (metres of the ground truth), after a rigid (no scale) alignment."""
    pe = np.array([T[:3, 3] for T in est])
    pg = np.array([T[:3, 3] for T in gt])
    if align and len(pe) >= 3:
        R, t, _ = umeyama_alignment(pe, pg, with_scale=False)
        pe = pe @ R.T + t
    return float(np.sqrt(np.mean(np.sum((pe - pg) ** 2, axis=1))))


def relative_pose_errors(est: list[np.ndarray], gt: list[np.ndarray], delta: int = 1
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per-step RPE (Sturm et al.): E = (Q_i^-1 Q_i+d)^-1 (P_i^-1 P_i+d); (trans m, rot deg)."""
    te, re = [], []
    for i in range(len(est) - delta):
        dq = np.linalg.inv(gt[i]) @ gt[i + delta]
        dp = np.linalg.inv(est[i]) @ est[i + delta]
        E = np.linalg.inv(dq) @ dp
        te.append(float(np.linalg.norm(E[:3, 3])))
        re.append(rotation_error_deg(E[:3, :3], np.eye(3)))
    return np.array(te), np.array(re)
