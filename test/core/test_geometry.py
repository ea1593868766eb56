"""Geometric verification: known homography, known relative pose from the rendered scene."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from local_features_ros.geometry import (
    VerifyConfig,
    relative_motion,
    rotation_error_deg,
    translation_angle_error_deg,
    verify_matches,
)
from local_features_ros.synthetic.scene import (
    PinholeCamera,
    SyntheticScene,
    relative_pose,
    warp_points_with_depth,
)
from local_features_ros.types import MatchResult


def _identity_matches(n: int) -> MatchResult:
    m = np.arange(n)
    return MatchResult(np.stack([m, m], 1), np.zeros(n, np.float32), np.ones(n, bool))


def _with_outliers(k0, k1, frac, rng, size):
    n_out = int(round(frac * len(k0) / (1 - frac)))
    o0 = rng.uniform(0, size, (n_out, 2))
    o1 = rng.uniform(0, size, (n_out, 2))
    return np.vstack([k0, o0]), np.vstack([k1, o1]), len(k0)


def test_recovers_known_homography():
    rng = np.random.default_rng(0)
    H = np.array([[0.9, 0.08, 12.0], [-0.05, 1.05, -7.0], [2e-4, -1e-4, 1.0]])
    k0 = rng.uniform(0, [320, 240], (300, 2))
    k1 = cv2.perspectiveTransform(k0[None], H)[0] + rng.normal(0, 0.3, (300, 2))
    p0, p1, n = _with_outliers(k0, k1, 0.3, rng, [320, 240])
    res = verify_matches(p0, p1, _identity_matches(len(p0)), VerifyConfig(model="homography"))
    assert res.model_type == "homography" and res.model.shape == (3, 3)
    assert res.inliers[:n].mean() > 0.9 and res.inliers[n:].mean() < 0.05
    corners = np.array([[0, 0], [319, 0], [319, 239], [0, 239]], np.float64)[None]
    err = np.linalg.norm(cv2.perspectiveTransform(corners, res.model)[0]
                         - cv2.perspectiveTransform(corners, H)[0], axis=1)
    assert err.max() < 0.5


@pytest.fixture(scope="module")
def scene_pair():
    cam = PinholeCamera.default(160, 120)
    scene = SyntheticScene(seed=1, camera=cam)
    T0, T1 = scene.trajectory(2, "orbit", step_deg=6.0, start_deg=30.0)
    return scene, cam, T0, T1


def _gt_correspondences(scene, cam0, cam1, T0, T1, n, rng):
    f0 = scene.render(T0, camera=cam0)
    f1 = scene.render(T1, camera=cam1)
    k0 = rng.uniform(0, [cam0.width - 1, cam0.height - 1], (n, 2))
    k1, valid = warp_points_with_depth(k0, f0.depth, cam0.K, cam1.K, relative_pose(T0, T1),
                                       depth1=f1.depth)
    return k0[valid], k1[valid]


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_recovers_known_relative_pose(scene_pair, noise):
    scene, cam, T0, T1 = scene_pair
    rng = np.random.default_rng(1)
    k0, k1 = _gt_correspondences(scene, cam, cam, T0, T1, 400, rng)
    k1 = k1 + rng.normal(0, noise, k1.shape)
    p0, p1, n = _with_outliers(k0, k1, 0.3, rng, [160, 120])
    res = verify_matches(p0, p1, _identity_matches(len(p0)), VerifyConfig(), cam.K, cam.K)
    assert res.model_type == "essential"  # auto with K
    assert res.inliers[:n].mean() > 0.9 and res.inliers[n:].mean() < 0.05
    motion = relative_motion(p0, p1, res, cam.K, cam.K)
    T10 = relative_pose(T0, T1)
    assert motion is not None and motion.num_inliers > 0.8 * n
    assert rotation_error_deg(motion.R, T10[:3, :3]) < 0.5
    assert translation_angle_error_deg(motion.t, T10[:3, 3]) < 2.0  # sign included (cheirality)
    assert np.linalg.norm(motion.t) == pytest.approx(1.0)


def test_relative_pose_two_different_cameras(scene_pair):
    scene, cam0, T0, T1 = scene_pair
    cam1 = PinholeCamera(fx=150.0, fy=140.0, cx=85.0, cy=57.0, width=170, height=115)
    rng = np.random.default_rng(2)
    k0, k1 = _gt_correspondences(scene, cam0, cam1, T0, T1, 300, rng)
    p0, p1, n = _with_outliers(k0, k1, 0.3, rng, [160, 115])
    res = _identity_matches(len(p0))  # unverified: relative_motion estimates E itself
    motion = relative_motion(p0, p1, res, cam0.K, cam1.K)
    T10 = relative_pose(T0, T1)
    assert rotation_error_deg(motion.R, T10[:3, :3]) < 0.5
    assert translation_angle_error_deg(motion.t, T10[:3, 3]) < 2.0


def test_fundamental_matches_ground_truth(scene_pair):
    scene, cam, T0, T1 = scene_pair
    rng = np.random.default_rng(3)
    k0, k1 = _gt_correspondences(scene, cam, cam, T0, T1, 300, rng)
    p0, p1, n = _with_outliers(k0, k1, 0.25, rng, [160, 120])
    res = verify_matches(p0, p1, _identity_matches(len(p0)), VerifyConfig())  # auto, no K
    assert res.model_type == "fundamental"
    assert res.inliers[:n].mean() > 0.9 and res.inliers[n:].mean() < 0.1
    # Ground-truth F = K^-T [t]x R K^-1: the estimate agrees with it up to scale and sign.
    T10 = relative_pose(T0, T1)
    t = T10[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    Kinv = np.linalg.inv(cam.K)
    F_gt = Kinv.T @ tx @ T10[:3, :3] @ Kinv
    a = F_gt.ravel() / np.linalg.norm(F_gt)
    b = res.model.ravel() / np.linalg.norm(res.model)
    assert min(np.linalg.norm(a - b), np.linalg.norm(a + b)) < 0.05


def test_rejections_and_model_none():
    rng = np.random.default_rng(4)
    k = rng.uniform(0, 100, (6, 2))
    res = verify_matches(k, k + 1, _identity_matches(6), VerifyConfig(model="fundamental"))
    assert res.model is None and not res.inliers.any()  # 6 < 8-point minimum
    res = verify_matches(k, k + 1, _identity_matches(6), VerifyConfig(model="none"))
    assert res.model_type == "none" and res.inliers.all()
    pure_noise0, pure_noise1 = rng.uniform(0, 100, (40, 2)), rng.uniform(0, 100, (40, 2))
    res = verify_matches(pure_noise0, pure_noise1, _identity_matches(40),
                         VerifyConfig(model="homography", threshold_px=0.5, min_inliers=15))
    assert res.model is None and not res.inliers.any()
    with pytest.raises(ValueError):
        verify_matches(k, k, _identity_matches(6), VerifyConfig(model="essential"))
    with pytest.raises(ValueError):
        VerifyConfig(model="similarity")
    assert relative_motion(k, k + 1, _identity_matches(6), np.eye(3)) is None
    empty = verify_matches(np.zeros((0, 2)), np.zeros((0, 2)), MatchResult.empty(), VerifyConfig())
    assert len(empty) == 0 and empty.model is None


def test_error_metrics_by_hand():
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    Rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    assert rotation_error_deg(Rz, np.eye(3)) == pytest.approx(30.0)
    assert rotation_error_deg(Rz, Rz) == pytest.approx(0.0, abs=1e-6)
    assert translation_angle_error_deg([1, 0, 0], [0, 2, 0]) == pytest.approx(90.0)
    assert translation_angle_error_deg([1, 0, 0], [-3, 0, 0]) == pytest.approx(180.0)
    assert translation_angle_error_deg([1, 0, 0], [-3, 0, 0], sign_agnostic=True) == pytest.approx(0.0)
    assert translation_angle_error_deg([1, 1, 0], [1, 0, 0]) == pytest.approx(45.0)
    assert math.isnan(translation_angle_error_deg([0, 0, 0], [1, 0, 0]))


def test_cheirality_agrees_with_opencv_recover_pose():
    """Our vectorised cheirality check picks the same (R, t) as cv2.recoverPose."""
    from local_features_ros.geometry import _recover

    rng = np.random.default_rng(5)
    for _ in range(5):
        X = rng.uniform([-2, -2, 2], [2, 2, 8], (150, 3))
        R = cv2.Rodrigues(rng.normal(0, 0.1, 3))[0]
        t = rng.normal(0, 1, 3)
        t /= np.linalg.norm(t)
        X1 = X @ R.T + 0.3 * t
        p0, p1 = X[:, :2] / X[:, 2:], X1[:, :2] / X1[:, 2:] + rng.normal(0, 1e-3, (150, 2))
        E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ R
        E *= rng.choice([-1.0, 1.0])  # E is defined up to sign
        n_cv, R_cv, t_cv, _ = cv2.recoverPose(E, p0, p1, np.eye(3))
        R_ours, t_ours, n_ours = _recover(E, p0, p1)
        np.testing.assert_allclose(R_ours, R_cv, atol=1e-9)
        np.testing.assert_allclose(t_ours, t_cv.ravel(), atol=1e-9)
        np.testing.assert_allclose(t_ours, t, atol=1e-6)  # and it is the true motion
        assert abs(n_ours - int(n_cv)) <= 3


def test_affine_model_recovers_a_known_affine_map(rng):
    """``affine`` (place recognition's verification of revisits) finds the map and its inliers."""
    A = np.array([[0.9, -0.2, 12.0], [0.15, 1.1, -7.0]])
    p0 = rng.uniform(0, 300, (60, 2))
    p1 = p0 @ A[:, :2].T + A[:, 2]
    p1[:10] += rng.uniform(30, 60, (10, 2))  # outliers
    res = MatchResult(matches=np.stack([np.arange(60)] * 2, axis=1),
                      distances=np.zeros(60, np.float32), inliers=np.ones(60, bool))
    out = verify_matches(p0, p1, res, VerifyConfig(model="affine", min_inliers=0))
    assert out.model_type == "affine" and np.allclose(out.model[:2], A, atol=1e-6)
    assert out.inliers.tolist() == [False] * 10 + [True] * 50


def _pose_problem(seed: int, n: int = 300, outliers: float = 0.3):
    """Normalised correspondences of a known motion (noise, outliers) and a perturbed start."""
    rng = np.random.default_rng(seed)
    X = rng.uniform([-3, -2, 4], [3, 2, 20], (n, 3))
    R = cv2.Rodrigues(rng.normal(0, 0.05, 3))[0]
    t = np.array([0.1, -0.05, 1.0]) + rng.normal(0, 0.1, 3)
    t /= np.linalg.norm(t)
    X1 = X @ R.T + t
    p0 = X[:, :2] / X[:, 2:] + rng.normal(0, 1e-3, (n, 2))
    p1 = X1[:, :2] / X1[:, 2:] + rng.normal(0, 1e-3, (n, 2))
    bad = rng.random(n) < outliers
    p1[bad] += rng.normal(0, 0.05, (int(bad.sum()), 2))
    R0 = R @ cv2.Rodrigues(rng.normal(0, 0.01, 3))[0]
    t0 = t + rng.normal(0, 0.03, 3)
    return R, t, R0, t0 / np.linalg.norm(t0), p0, p1


def test_pose_jacobian_matches_finite_differences():
    """The analytic Jacobian of the refinement equals central differences of its residuals, and
    the residuals are the Sampson errors of the pose the parameters describe."""
    from local_features_ros.geometry import (_pose_from_params, _pose_residuals_jacobian, _skew,
                                             _tangent_basis, sampson_residuals)

    _, _, R0, t0, p0, p1 = _pose_problem(11, n=60)
    b1, b2 = _tangent_basis(t0)
    assert abs(b1 @ t0) < 1e-12 and abs(b2 @ t0) < 1e-12 and abs(b1 @ b2) < 1e-12
    x0, x1 = np.c_[p0, np.ones(len(p0))], np.c_[p1, np.ones(len(p1))]
    for x in (np.zeros(5), np.array([0.02, -0.01, 0.03, 0.05, -0.08])):
        r, J = _pose_residuals_jacobian(x, R0, t0, b1, b2, x0, x1)
        R, t = _pose_from_params(x, R0, t0, b1, b2)
        np.testing.assert_allclose(r, sampson_residuals(_skew(t) @ R, p0, p1), atol=1e-15)
        h = 1e-6
        numeric = np.stack([
            (_pose_residuals_jacobian(x + h * e, R0, t0, b1, b2, x0, x1)[0]
             - _pose_residuals_jacobian(x - h * e, R0, t0, b1, b2, x0, x1)[0]) / (2 * h)
            for e in np.eye(5)], 1)
        np.testing.assert_allclose(J, numeric, atol=1e-7 * np.abs(J).max())


def test_pose_refinement_equals_a_generic_robust_fit():
    """``_refine_pose`` reaches the minimum that a generic solver finds with finite differences
    on the plain Sampson formula (same loss, same parametrisation), within numerical noise, and
    that minimum is close to the true motion."""
    from scipy.optimize import least_squares

    from local_features_ros.geometry import _refine_pose, sampson_residuals

    scale = 1e-3
    for seed in range(4):
        R_gt, t_gt, R0, t0, p0, p1 = _pose_problem(20 + seed)
        a = np.cross(t0, [1.0, 0.0, 0.0])
        a /= np.linalg.norm(a)
        c = np.cross(t0, a)

        def pose(x):
            t = t0 + x[3] * a + x[4] * c
            return R0 @ cv2.Rodrigues(x[:3])[0], t / np.linalg.norm(t)

        def residuals(x):
            R, t = pose(x)
            tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
            return sampson_residuals(tx @ R, p0, p1) / scale

        ref = least_squares(residuals, np.zeros(5), loss="cauchy", f_scale=1.0, method="trf",
                            x_scale=1e-3, max_nfev=200, ftol=1e-12, xtol=1e-12, gtol=1e-12)
        R_ref, t_ref = pose(ref.x)
        R, t = _refine_pose(R0, t0, p0, p1, scale)
        assert rotation_error_deg(R, R_ref) < 1e-3
        assert translation_angle_error_deg(t, t_ref) < 1e-2
        assert rotation_error_deg(R, R_gt) < 0.3 and translation_angle_error_deg(t, t_gt) < 2.0
