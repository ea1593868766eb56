"""Geometric verification of matches (homography / fundamental / essential) and relative motion.

Why OpenCV: its RANSAC family is fast, battle-tested and already a dependency. The estimator is
``VerifyConfig.method``: ``"ransac"`` (default, ``cv2.RANSAC``), ``"magsac"`` (``cv2.USAC_MAGSAC``,
MAGSAC++) or ``"accurate"`` (``cv2.USAC_ACCURATE``, GC-RANSAC). The default is measured, not
assumed: on 9 rendered pairs (0.5 px noise, 30 % outliers, 1 px threshold, pose refinement on)
median rotation / translation-direction errors were RANSAC 0.09 / 1.0 deg, GC-RANSAC
0.11 / 1.4 deg, MAGSAC++ 0.11 / 2.1 deg (MAGSAC++ without refinement: 0.59 / 8.5 deg).
``threshold_px`` is the inlier threshold in pixels for every model; for the essential matrix the
points are normalised with each camera's K and the threshold is divided by the mean focal
length, so two different cameras work too.

Relative motion: the essential matrix + cheirality on normalised coordinates (the decision of
``cv2.recoverPose``, re-implemented vectorised because recoverPose is slow here; the tests check
they agree), then a robust Sampson refinement, gives ``x1 = R x0 + t`` with unit ``t``
(monocular scale is unknown).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, ClassVar, Mapping

import cv2
import numpy as np

from .config import Config, ConfigError, KeyInfo
from .types import MatchResult, RelativeMotion

logger = logging.getLogger(__name__)

__all__ = [
    "VerifyConfig",
    "verify_matches",
    "relative_motion",
    "rotation_error_deg",
    "translation_angle_error_deg",
    "normalize_points",
]

MODELS = ("auto", "homography", "fundamental", "essential", "affine", "none")
_METHODS = {"magsac": cv2.USAC_MAGSAC, "ransac": cv2.RANSAC, "accurate": cv2.USAC_ACCURATE}
#: Minimal sample size of each model (fewer matches: nothing to verify).
_MIN_SAMPLE = {"homography": 4, "fundamental": 8, "essential": 5, "affine": 3}


class VerifyConfig(Config):
    """``model`` auto = essential when K is known, else fundamental. A model with fewer than
    ``min_inliers`` inliers is rejected (no inliers, ``model`` None)."""

    model: str = "auto"
    threshold_px: float = 1.0
    confidence: float = 0.999
    max_iters: int = 10000
    min_inliers: int = 8
    method: str = "ransac"

    owner: ClassVar[str] = "verify"
    runtime_keys: ClassVar[frozenset[str]] = frozenset(
        {"model", "threshold_px", "confidence", "max_iters", "min_inliers", "method"})
    key_info: ClassVar[Mapping[str, KeyInfo]] = {
        "model": KeyInfo("geometric verification model; auto = essential when camera_info is "
                         "known (needed for ~/relative_motion), else fundamental",
                         choices=MODELS),
        "threshold_px": KeyInfo("RANSAC inlier threshold (pixels)", float_range=(0.01, 100.0)),
        "confidence": KeyInfo("RANSAC confidence", float_range=(0.5, 0.999999)),
        "max_iters": KeyInfo("RANSAC iterations limit", int_range=(1, 1_000_000)),
        "min_inliers": KeyInfo("fewer inliers = no relative motion", int_range=(0, 100_000)),
        "method": KeyInfo("robust estimator", choices=tuple(sorted(_METHODS))),
    }

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        super().validate(conf)
        if conf["model"] not in MODELS:
            raise ConfigError(f"verify model must be one of {MODELS}, got '{conf['model']}'")
        if conf["method"] not in _METHODS:
            raise ConfigError(f"verify method must be one of {tuple(_METHODS)}, got "
                              f"'{conf['method']}'")
        if not float(conf["threshold_px"]) > 0:
            raise ConfigError(f"verify threshold_px must be > 0, got {conf['threshold_px']}")
        if not 0.0 < float(conf["confidence"]) < 1.0:
            raise ConfigError(f"verify confidence must be in (0, 1), got {conf['confidence']}")
        if int(conf["max_iters"]) < 1:
            raise ConfigError(f"verify max_iters must be >= 1, got {conf['max_iters']}")
        if int(conf["min_inliers"]) < 0:
            raise ConfigError(f"verify min_inliers must be >= 0, got {conf['min_inliers']}")


def _as_points(kpts) -> np.ndarray:
    if hasattr(kpts, "detach"):  # torch tensor
        kpts = kpts.detach().float().cpu().numpy()
    return np.asarray(kpts, np.float64).reshape(-1, 2)


def normalize_points(pts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels -> normalised image coordinates ``K^-1 [x, y, 1]`` (no distortion)."""
    K = np.asarray(K, np.float64)
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    return np.stack([(p[:, 0] - K[0, 2] - K[0, 1] * (p[:, 1] - K[1, 2]) / K[1, 1]) / K[0, 0],
                     (p[:, 1] - K[1, 2]) / K[1, 1]], axis=1)


def _mean_focal(K0: np.ndarray, K1: np.ndarray) -> float:
    return float(np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]]))


def _resolve_model(cfg: VerifyConfig, K0, K1) -> str:
    if cfg.model == "auto":
        return "essential" if K0 is not None else "fundamental"
    if cfg.model == "essential" and K0 is None:
        raise ValueError("verify model 'essential' needs the camera intrinsics K")
    return cfg.model


def _rejected(result: MatchResult, model_type: str) -> MatchResult:
    return dataclasses.replace(result, inliers=np.zeros(len(result), bool), model=None,
                               model_type=model_type)


def verify_matches(kpts0: np.ndarray, kpts1: np.ndarray, result: MatchResult, cfg: VerifyConfig,
                   K0: np.ndarray | None = None, K1: np.ndarray | None = None) -> MatchResult:
    """Robustly fit ``cfg.model`` to the matches; returns a new ``MatchResult`` with ``inliers``,
    ``model`` (3x3 H / F / E / affine, E in normalised coordinates) and ``model_type`` filled.

    ``kpts0``/``kpts1`` are the *full* keypoint arrays (pixels) that ``result.matches`` indexes.
    ``K1`` defaults to ``K0`` (one camera). When there are too few matches for the model or it
    has fewer than ``cfg.min_inliers`` inliers, every match is marked outlier and ``model`` is
    None. ``model="none"`` keeps every match an inlier.
    """
    if K0 is not None and K1 is None:
        K1 = K0
    model_type = _resolve_model(cfg, K0, K1)
    if model_type == "none":
        return dataclasses.replace(result, inliers=np.ones(len(result), bool), model=None,
                                   model_type="none")
    n = len(result)
    if n < max(_MIN_SAMPLE[model_type], int(cfg.min_inliers)):
        return _rejected(result, model_type)
    p0 = _as_points(kpts0)[result.matches[:, 0]]
    p1 = _as_points(kpts1)[result.matches[:, 1]]
    method = _METHODS[cfg.method]
    thr, conf, iters = float(cfg.threshold_px), float(cfg.confidence), int(cfg.max_iters)
    try:
        if model_type == "homography":
            model, mask = cv2.findHomography(p0, p1, method, thr, maxIters=iters, confidence=conf)
        elif model_type == "fundamental":
            model, mask = cv2.findFundamentalMat(p0, p1, method, thr, conf, iters)
        elif model_type == "affine":  # OpenCV's affine fit takes RANSAC/LMEDS only
            model, mask = cv2.estimateAffine2D(p0, p1, method=cv2.RANSAC,
                                               ransacReprojThreshold=thr, maxIters=iters,
                                               confidence=conf)
            model = None if model is None else np.vstack([model, [0.0, 0.0, 1.0]])
        else:
            K0a, K1a = np.asarray(K0, np.float64), np.asarray(K1, np.float64)
            n0, n1 = normalize_points(p0, K0a), normalize_points(p1, K1a)
            model, mask = cv2.findEssentialMat(n0, n1, np.eye(3), method, conf,
                                               thr / _mean_focal(K0a, K1a), iters)
    except cv2.error as exc:  # degenerate input (e.g. all points identical)
        logger.debug("%s estimation failed: %s", model_type, exc)
        return _rejected(result, model_type)
    if model is None or mask is None or model.size < 9:
        return _rejected(result, model_type)
    model = np.asarray(model, np.float64)[:3, :3]  # E/F solvers may stack several solutions
    inliers = mask.reshape(-1).astype(bool)
    if inliers.sum() < int(cfg.min_inliers):
        return _rejected(result, model_type)
    return dataclasses.replace(result, inliers=inliers, model=model, model_type=model_type)


def relative_motion(kpts0: np.ndarray, kpts1: np.ndarray, result: MatchResult, K0: np.ndarray,
                    K1: np.ndarray | None = None, cfg: VerifyConfig | None = None,
                    refine: bool = True) -> RelativeMotion | None:
    """Rotation and unit translation (``x1 = R x0 + t``) from the essential matrix.

    Uses ``result``'s essential matrix and inliers when it was verified with one, else estimates
    E first (with ``cfg``, default ``VerifyConfig(model="essential")``). The cheirality check
    (as ``cv2.recoverPose``) picks the one of four decompositions that puts the points in front
    of both cameras; ``num_inliers`` counts the inliers that pass it. None when fewer than
    ``cfg.min_inliers`` (and at least 5) remain.

    ``refine``: the RANSAC model comes from a minimal sample and its inlier set can hold a few
    outliers that happen to lie near the epipolar lines; with the weakly constrained translation
    direction of small baselines, those few pull t by degrees. So R and t are refined by least
    squares on the Sampson error (5 DoF, Cauchy loss at ``cfg.threshold_px``), re-selecting the
    inliers among *all* matches with the refined model, up to 3 rounds. On the synthetic scene
    (0.5 px noise, 30 % outliers) this brought the median translation error from ~1.5 deg to
    the level of an oracle fit on the true inliers.
    """
    if K0 is None:
        raise ValueError("relative_motion needs the camera intrinsics K0")
    K0 = np.asarray(K0, np.float64)
    K1 = K0 if K1 is None else np.asarray(K1, np.float64)
    cfg = cfg or VerifyConfig(model="essential")
    min_inl = max(5, int(cfg.min_inliers))
    if result.model_type != "essential" or result.model is None:
        result = verify_matches(kpts0, kpts1, result, dataclasses.replace(cfg, model="essential"),
                                K0, K1)
        if result.model is None:
            return None
    if result.num_inliers < min_inl:
        return None
    p0_all = normalize_points(_as_points(kpts0)[result.matches[:, 0]], K0)
    p1_all = normalize_points(_as_points(kpts1)[result.matches[:, 1]], K1)
    sel = result.inliers.copy()
    pose = _recover(result.model, p0_all[sel], p1_all[sel])
    if pose is None:
        return None
    R, t, n_good = pose
    if refine:
        # Refinement may only improve on the RANSAC pose: when it collapses (e.g. small
        # baselines where most points lie beyond the cheirality depth limit), keep the RANSAC one.
        thr = float(cfg.threshold_px) / _mean_focal(K0, K1)
        Rr, tr, sel_r = R, t, sel
        for _ in range(3):
            Rr, tr = _refine_pose(Rr, tr, p0_all[sel_r], p1_all[sel_r], thr)
            new_sel = np.abs(sampson_residuals(_skew(tr) @ Rr, p0_all, p1_all)) < thr
            if new_sel.sum() < min_inl or np.array_equal(new_sel, sel_r):
                break
            sel_r = new_sel
        refined = _recover(_skew(tr) @ Rr, p0_all[sel_r], p1_all[sel_r])
        if refined is not None and refined[2] >= max(min_inl, n_good // 2):
            R, t, n_good = refined
    if n_good < min_inl:
        return None
    return RelativeMotion(R=R, t=t, num_inliers=n_good)


def _recover(E: np.ndarray, p0: np.ndarray, p1: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Cheirality: which of E's four (R, t) decompositions puts the points in front of both
    cameras. Returns (R, unit t, number of points in front of both, closer than 50 baselines).

    Same decision as ``cv2.recoverPose`` (cross-checked in the tests), but the depths come from
    a closed-form two-ray least squares, vectorised: recoverPose took ~0.3 s for 1000 points
    with this OpenCV build, this takes ~1 ms.
    """
    if len(p0) < 5:
        return None
    try:
        R1, R2, t = cv2.decomposeEssentialMat(np.ascontiguousarray(E, np.float64))
    except cv2.error as exc:
        logger.debug("decomposeEssentialMat failed: %s", exc)
        return None
    t = np.asarray(t, np.float64).reshape(3)
    norm = np.linalg.norm(t)
    if not norm > 0:
        return None
    t = t / norm
    x0 = np.concatenate([p0, np.ones((len(p0), 1))], 1)
    x1 = np.concatenate([p1, np.ones((len(p1), 1))], 1)
    best: tuple[np.ndarray, np.ndarray, int] | None = None
    for R in (R1, R2):
        a = x0 @ R.T  # R x0, per point
        for tt in (t, -t):
            z0, z1 = _two_ray_depths(a, x1, tt)
            good = int(np.sum((z0 > 0) & (z1 > 0) & (z0 < _MAX_DEPTH) & (z1 < _MAX_DEPTH)))
            if best is None or good > best[2]:
                best = (np.asarray(R, np.float64), tt.copy(), good)
    return best


#: Points farther than this many baselines count as "at infinity" (cv2.recoverPose's default).
_MAX_DEPTH = 50.0


def _two_ray_depths(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares depths of ``z1 b = z0 a + t`` (a = R x0, b = x1), one 2x2 solve per point."""
    aa = np.einsum("ij,ij->i", a, a)
    bb = np.einsum("ij,ij->i", b, b)
    ab = np.einsum("ij,ij->i", a, b)
    at, bt = a @ t, b @ t
    det = ab * ab - aa * bb  # normal equations of [a, -b] [z0, z1]^T = -t
    with np.errstate(divide="ignore", invalid="ignore"):
        z0 = (bb * at - ab * bt) / det
        z1 = (ab * at - aa * bt) / det
    bad = np.abs(det) < 1e-15  # parallel rays: depth undetermined
    z0[bad] = np.inf
    z1[bad] = np.inf
    return z0, z1


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def sampson_residuals(E: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Signed Sampson distances (first-order geometric error) of normalised point pairs."""
    x0 = np.concatenate([p0, np.ones((len(p0), 1))], 1)
    x1 = np.concatenate([p1, np.ones((len(p1), 1))], 1)
    Ex0 = x0 @ E.T
    Etx1 = x1 @ E
    num = np.einsum("ij,ij->i", x1, Ex0)
    den = Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2 + Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2
    return num / np.sqrt(np.maximum(den, 1e-30))


def _tangent_basis(t0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to ``t0`` and to each other: the 2 DoF of a unit translation."""
    b1 = np.cross(t0, [1.0, 0.0, 0.0] if abs(t0[0]) < 0.9 else [0.0, 1.0, 0.0])
    b1 /= np.linalg.norm(b1)
    return b1, np.cross(t0, b1)


def _pose_from_params(x: np.ndarray, R0: np.ndarray, t0: np.ndarray, b1: np.ndarray,
                      b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, unit t) of the 5 refinement parameters: ``R = R0 Exp(x[:3])``, ``t`` = ``t0`` moved
    by ``x[3] b1 + x[4] b2`` and renormalised."""
    R = R0 @ cv2.Rodrigues(np.asarray(x[:3], np.float64).reshape(3, 1))[0]
    t = t0 + x[3] * b1 + x[4] * b2
    return R, t / np.linalg.norm(t)


def _pair_products(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """(N, 9) row-major ``x1 x0'`` per point pair: ``x1' E x0`` = this times ``E`` flattened."""
    return (x1[:, :, None] * x0[:, None, :]).reshape(len(x0), 9)


def _pose_residuals_jacobian(x: np.ndarray, R0: np.ndarray, t0: np.ndarray, b1: np.ndarray,
                             b2: np.ndarray, x0: np.ndarray, x1: np.ndarray,
                             pairs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sampson residuals of homogeneous normalised points ``x0``/``x1`` (N, 3) under the pose of
    parameters ``x`` and their exact (N, 5) Jacobian (``pairs``: ``_pair_products(x0, x1)``,
    which a caller evaluating many poses computes once).

    Why analytic: a finite-difference Jacobian costs five extra residual evaluations per
    iteration, which made the pose refinement the most expensive step of a frame. With
    ``E = [t]x R``, ``r = n / sqrt(d)`` (``n = x1' E x0``, ``d`` the squared first two entries of
    ``E x0`` and ``E' x1``), so ``dr = dn / sqrt(d) - n dd / (2 d^1.5)``, with ``dn`` and ``dd``
    linear in ``dE``; ``dE`` is ``[t]x R0 dExp`` for the rotation (OpenCV's Rodrigues Jacobian)
    and ``[dt]x R`` for the translation (``dt`` = the tangent direction projected off ``t``,
    divided by the length before normalising). Both linear maps are one matrix product over
    all points and parameters."""
    n = len(x0)
    if pairs is None:
        pairs = _pair_products(x0, x1)
    rot, drot = cv2.Rodrigues(np.asarray(x[:3], np.float64).reshape(3, 1))
    R = R0 @ rot
    u = t0 + x[3] * b1 + x[4] * b2
    nu = float(np.linalg.norm(u))
    t = u / nu
    tx = _skew(t)
    E = tx @ R
    dE = np.empty((5, 3, 3))
    dE[:3] = tx @ R0 @ drot.reshape(3, 3, 3)  # drot[k] = d vec(rot) / d x_k (row-major)
    for k, b in ((3, b1), (4, b2)):
        dE[k] = _skew((b - t * (t @ b)) / nu) @ R
    Ex0 = x0 @ E.T
    Etx1 = x1 @ E
    num = pairs @ E.reshape(9)
    den = np.maximum(Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2 + Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2, 1e-30)
    inv = 1.0 / np.sqrt(den)
    r = num * inv
    # dd = 2 sum_c (E x0)_c (dE x0)_c + (E' x1)_c (dE' x1)_c over c = 0, 1: products of the
    # point terms (N, 12) with the matching entries of each dE (12, 5).
    point_terms = np.concatenate([(Ex0[:, :2, None] * x0[:, None, :]).reshape(n, 6),
                                  (Etx1[:, :2, None] * x1[:, None, :]).reshape(n, 6)], 1)
    entries = np.concatenate([dE[:, :2, :].reshape(5, 6),
                              dE[:, :, :2].transpose(0, 2, 1).reshape(5, 6)], 1).T
    dnum = pairs @ dE.reshape(5, 9).T
    dden = 2.0 * (point_terms @ entries)
    J = dnum * inv[:, None] - (0.5 * num * inv ** 3)[:, None] * dden
    return r, J


#: Iteration limit of ``_refine_pose`` (it converges in ~5-30 on real frame pairs).
_REFINE_MAX_ITERS = 50


def _refine_pose(R0: np.ndarray, t0: np.ndarray, p0: np.ndarray, p1: np.ndarray,
                 scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the robust Sampson error ``sum log(1 + (r / scale)^2)`` (Cauchy) over (R, unit
    t) from ``(R0, t0)``; falls back to the input when no step improves it.

    Why a dedicated Levenberg-Marquardt instead of a generic solver: the problem has 5
    parameters, so each iteration is one residual/Jacobian evaluation and a 5x5 solve. A
    general trust-region solver spends several times that per iteration in its own bookkeeping
    (SVDs, loss rescaling), which made this refinement the largest cost of a node's frame
    (~2x less time per call on real matches, same minima up to ~1e-4 deg).
    The gradient is exact (``rho' = 1 / (1 + z)``, ``z = (r / scale)^2``); the normal matrix
    weighs each point by the loss's curvature ``rho' + 2 z rho''`` (floored at ~0, so matches
    far out on the loss do not pull), as robust trust-region solvers do. A step is taken only
    when it lowers the robust cost, so the iteration descends to the minimum a generic solver
    reaches from the same start (tested against one). Stops when the cost changes by under
    1e-8 of itself or the step by under ~1e-7 rad.
    """
    if len(p0) < 5:
        return R0, t0
    b1, b2 = _tangent_basis(t0)  # t stays unit length: 2 DoF on the sphere at t0
    x0 = np.concatenate([p0, np.ones((len(p0), 1))], 1)
    x1 = np.concatenate([p1, np.ones((len(p1), 1))], 1)
    pairs = _pair_products(x0, x1)
    inv_scale = 1.0 / float(scale)

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Robust cost, scaled residuals and Jacobian at ``x``."""
        r, J = _pose_residuals_jacobian(x, R0, t0, b1, b2, x0, x1, pairs)
        r, J = r * inv_scale, J * inv_scale
        return 0.5 * float(np.log1p(r * r).sum()), r, J

    def normal_equations(r: np.ndarray, J: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradient, normal matrix and its floored diagonal: once per accepted point (a
        rejected step only shortens the next one)."""
        z = r * r
        g = J.T @ (r / (1.0 + z))
        # Curvature weights with the loss's second derivative (rho' + 2 z rho'', floored):
        # points far out on the loss get none, so the steps are Newton-like, not plain IRLS.
        A = J.T @ (J * np.maximum((1.0 - z) / (1.0 + z) ** 2, 1e-10)[:, None])
        return g, A, np.diag(np.maximum(np.diag(A), 1e-12))

    x = np.zeros(5)
    cost, r, J = evaluate(x)
    if not np.isfinite(cost):
        return R0, t0
    g, A, diag = normal_equations(r, J)
    damping = 1e-4
    for _ in range(_REFINE_MAX_ITERS):
        try:
            step = np.linalg.solve(A + damping * diag, -g)
        except np.linalg.LinAlgError:
            break
        # Converged: the next step would move the pose by under ~1e-7 rad (at the minimum,
        # rounding alone decides whether such a step lowers the cost).
        if not np.all(np.isfinite(step)) or np.abs(step).max() <= 1e-7:
            break
        cost_new, r, J = evaluate(x + step)
        if not (np.isfinite(cost_new) and cost_new < cost):
            damping *= 10.0  # too long a step: closer to gradient descent, shorter
            if damping > 1e8:
                break
            continue
        x = x + step
        decrease, cost = cost - cost_new, cost_new
        g, A, diag = normal_equations(r, J)
        damping = max(damping * 0.1, 1e-9)
        if decrease <= 1e-8 * cost:  # as a generic solver's default tolerance
            break
    return _pose_from_params(x, R0, t0, b1, b2)


def rotation_error_deg(R_est: np.ndarray, R_gt: np.ndarray) -> float:
    """Angle of ``R_est^T R_gt`` in degrees (geodesic distance on SO(3))."""
    R = np.asarray(R_est, np.float64).T @ np.asarray(R_gt, np.float64)
    c = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    return float(math.degrees(math.acos(c)))


def translation_angle_error_deg(t_est: np.ndarray, t_gt: np.ndarray,
                                sign_agnostic: bool = False) -> float:
    """Angle between two translation directions in degrees; ``sign_agnostic`` takes
    ``min(a, 180 - a)`` (for methods that cannot resolve the sign). NaN when a vector is zero."""
    a = np.asarray(t_est, np.float64).reshape(3)
    b = np.asarray(t_gt, np.float64).reshape(3)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return float("nan")
    c = float(np.clip(a @ b / (na * nb), -1.0, 1.0))
    ang = math.degrees(math.acos(c))
    return min(ang, 180.0 - ang) if sign_agnostic else ang
