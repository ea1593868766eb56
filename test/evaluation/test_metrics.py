"""Evaluation metrics against hand-computed cases and known geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from local_features_ros.evaluation import metrics as M
from local_features_ros.evaluation.pairs import (quat_to_R, read_pair_list, read_strecha_camera,
                                                 read_tum_groundtruth, rotate_view)


def _rz(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def _ry(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


H_GT = np.array([[0.9, 0.05, 12.0], [-0.04, 1.1, -7.0], [1e-4, 2e-4, 1.0]])


# ---------------------------------------------------------------------------------------- MMA
def test_perfect_matcher_has_mma_one(rng):
    k0 = rng.uniform(0, 150, (40, 2))
    k1 = M.warp_points(H_GT, k0)[::-1].copy()  # shuffled order: matches must index correctly
    matches = np.stack([np.arange(40), np.arange(40)[::-1]], axis=1)
    errs = M.match_errors_homography(k0, k1, matches, H_GT)
    assert np.allclose(errs, 0, atol=1e-9)
    assert M.matching_accuracy(errs) == {str(t): 1.0 for t in range(1, 11)}


def test_known_offsets_give_known_correctness():
    k0 = np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0], [70.0, 80.0]])
    w = M.warp_points(H_GT, k0)
    # Hand-made errors: 2 px (x), 5 px (3-4-5 triangle), 0.5 px (y), 12 px (x).
    k1 = w + np.array([[2.0, 0.0], [3.0, 4.0], [0.0, 0.5], [12.0, 0.0]])
    errs = M.match_errors_homography(k0, k1, np.stack([np.arange(4)] * 2, 1), H_GT)
    assert np.allclose(errs, [2, 5, 0.5, 12])
    acc = M.matching_accuracy(errs)
    assert acc["1"] == 0.25 and acc["2"] == 0.5 and acc["4"] == 0.5
    assert acc["5"] == 0.75 and acc["10"] == 0.75
    assert M.matching_accuracy(np.zeros(0))["3"] == 0.0  # no matches -> 0, not NaN


def test_warp_points_matches_opencv(rng):
    import cv2

    p = rng.uniform(0, 100, (20, 2))
    ref = cv2.perspectiveTransform(p[None], H_GT)[0]
    assert np.allclose(M.warp_points(H_GT, p), ref)


# ---------------------------------------------------------------------------------------- homography
def test_corner_error_of_known_shift():
    T = np.array([[1, 0, 3.0], [0, 1, 4.0], [0, 0, 1]])  # every warped point moves by (3, 4)
    err = M.homography_corner_error(T @ H_GT, H_GT, (160, 120))
    assert err == pytest.approx(5.0, abs=1e-9)
    assert M.homography_corner_error(None, H_GT, (160, 120)) == math.inf


def test_ransac_homography_recovers_truth(rng):
    p0 = rng.uniform(0, 160, (60, 2))
    p1 = M.warp_points(H_GT, p0)
    p1[:10] += rng.uniform(30, 60, (10, 2))  # outliers
    H = M.estimate_homography(p0, p1, 3.0)
    assert M.homography_corner_error(H, H_GT, (160, 120)) < 1e-3
    assert M.estimate_homography(p0[:3], p1[:3]) is None


# ---------------------------------------------------------------------------------------- repeatability
def test_repeatability_identical_sets_is_one(rng):
    k = rng.uniform(0, 99, (30, 2))
    r = M.repeatability(k, k, np.eye(3), (100, 100), (100, 100))
    assert r.repeatability == 1.0 and r.localization_error == 0.0 and r.num_points == 60


def test_repeatability_hand_case():
    H = np.array([[1, 0, 10.0], [0, 1, 0], [0, 0, 1]])  # image 1 = image 0 shifted right by 10
    k0 = np.array([[10.0, 10.0], [50.0, 50.0], [95.0, 50.0]])  # (95,50) -> (105,50): outside
    k1 = np.array([[21.0, 10.0], [90.0, 90.0], [5.0, 5.0]])  # (5,5) -> (-5,5) in image 0: outside
    r = M.repeatability(k0, k1, H, (100, 100), (100, 100), threshold=3.0)
    # Visible: k0 -> (20,10), (60,50); k1: (21,10), (90,90). Pairs within 3 px: (20,10)-(21,10).
    assert r.num_points == 4 and r.num_repeated == 2
    assert r.repeatability == pytest.approx(0.5)
    assert r.localization_error == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------- pose
def test_pose_auc_hand_computed():
    errs = [1.0, 3.0, math.inf, math.inf]
    # Recall curve: (0,0) (1,.25) (3,.5), flat to the threshold.
    # @5: [0.125 + 0.75 + 1.0] / 5 = 0.375 ; @2: [0.125 + 0.25] / 2 = 0.1875
    auc = M.pose_auc(errs, (2, 5))
    assert auc["2"] == pytest.approx(0.1875)
    assert auc["5"] == pytest.approx(0.375)
    assert M.pose_auc([0.0] * 5) == {"5": 1.0, "10": 1.0, "20": 1.0}  # perfect estimates
    assert M.pose_auc([math.inf] * 3)["20"] == 0.0


def test_angle_errors():
    assert M.rotation_error_deg(_rz(10), np.eye(3)) == pytest.approx(10.0)
    assert M.rotation_error_deg(_ry(-7) @ _rz(0), np.eye(3)) == pytest.approx(7.0)
    assert M.translation_angle_deg([1, 0, 0], [1, 1, 0]) == pytest.approx(45.0)
    assert M.translation_angle_deg([-1, 0, 0], [2, 0, 0]) == pytest.approx(0.0)
    assert M.translation_angle_deg([-1, 0, 0], [2, 0, 0], sign_ambiguous=False) == pytest.approx(180)


def test_essential_pose_recovers_known_motion(rng):
    K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    R, t = _ry(5) @ _rz(2), np.array([0.3, -0.05, 0.1])
    X = np.c_[rng.uniform(-2, 2, (120, 2)), rng.uniform(4, 8, 120)]
    X1 = X @ R.T + t
    p0 = ((X / X[:, 2:]) @ K.T)[:, :2]
    p1 = ((X1 / X1[:, 2:]) @ K.T)[:, :2]
    p1[:15] += rng.uniform(10, 20, (15, 2)) * rng.choice([-1, 1], (15, 2))  # outliers
    est = M.estimate_relative_pose(p0, p1, K, K)
    er, et, e = M.pose_error_deg(est.R, est.t, M.make_T(R, t), sign_ambiguous=False)
    assert er < 0.05 and et < 0.3
    assert not est.inliers[:15].any() or est.inliers[:15].mean() < 0.2


# ---------------------------------------------------------------------------------------- trajectories
def _gt_poses(n: int = 8) -> list[np.ndarray]:
    return [M.make_T(_rz(4 * i) @ _ry(2 * i), [0.5 * i, 0.1 * i * i, 0.2]) for i in range(n)]


def test_accumulated_gt_motions_reproduce_trajectory():
    gt = _gt_poses()
    steps = [M.relative_pose(gt[i], gt[i + 1]) for i in range(len(gt) - 1)]
    est = M.accumulate_trajectory(gt[0], steps)
    assert all(np.allclose(a, b) for a, b in zip(est, gt))
    assert M.absolute_trajectory_error(est, gt) == pytest.approx(0, abs=1e-9)
    te, re = M.relative_pose_errors(est, gt)
    assert np.allclose(te, 0, atol=1e-9) and np.allclose(re, 0, atol=1e-6)


def test_rpe_and_ate_hand_case():
    gt = [M.make_T(np.eye(3), [float(i), 0, 0]) for i in range(4)]
    est = [M.make_T(np.eye(3), p) for p in ([0, 0, 0], [1, 0, 0], [2.5, 0, 0], [3.5, 0, 0])]
    te, re = M.relative_pose_errors(est, gt)
    assert np.allclose(te, [0, 0.5, 0]) and np.allclose(re, 0)
    # Unaligned position errors 0, 0, .5, .5 -> RMSE sqrt(0.5/4).
    assert M.absolute_trajectory_error(est, gt, align=False) == pytest.approx(math.sqrt(0.125))
    # A rigid motion of the whole estimate is removed by the alignment.
    G = M.make_T(_rz(30), [1, 2, 3])
    moved = [G @ T for T in gt]
    assert M.absolute_trajectory_error(moved, gt, align=True) == pytest.approx(0, abs=1e-9)


# ---------------------------------------------------------------------------------------- readers
def test_strecha_camera_downsampling_rule(tmp_path):
    # fountain-P11 0000: K for 3072x2048; the stored images are 1536x1024.
    txt = ("2759.48 0 1520.69\n0 2764.16 1006.81\n0 0 1\n0 0 0\n"
           "0.450927 -0.0945642 -0.887537\n-0.892535 -0.0401974 -0.449183\n"
           "0.00679989 0.994707 -0.102528\n-7.28137 -7.57667 0.204446\n3072 2048\n")
    (tmp_path / "c.camera").write_text(txt)
    K, T = read_strecha_camera(tmp_path / "c.camera", (1536, 1024))
    assert K[0, 0] == pytest.approx(2759.48 / 2) and K[1, 1] == pytest.approx(2764.16 / 2)
    assert K[0, 2] == pytest.approx((1520.69 + 0.5) / 2 - 0.5)  # 760.095
    assert K[1, 2] == pytest.approx((1006.81 + 0.5) / 2 - 0.5)  # 503.155
    assert np.allclose(T[:3, 3], [-7.28137, -7.57667, 0.204446])  # centre = camera-to-world t


def test_quaternion_and_tum_groundtruth(tmp_path):
    s = math.sqrt(0.5)
    assert np.allclose(quat_to_R(0, 0, s, s), _rz(90))
    (tmp_path / "groundtruth.txt").write_text(
        "# timestamp tx ty tz qx qy qz qw\n"
        "100.00 1 2 3 0 0 0 1\n100.10 4 5 6 0 0 0.7071068 0.7071068\n")
    imgs = [tmp_path / "100.004.png", tmp_path / "100.099.png", tmp_path / "200.0.png"]
    poses = read_tum_groundtruth(tmp_path / "groundtruth.txt", imgs)
    assert np.allclose(poses[0][:3, 3], [1, 2, 3]) and np.allclose(poses[1][:3, :3], _rz(90))
    assert poses[2] is None  # no stamp within 20 ms


def test_pair_list_parsing(tmp_path):
    K = "300 0 160 0 300 120 0 0 1"
    T = " ".join(str(v) for v in M.make_T(_rz(3), [1, 0, 0]).ravel())
    (tmp_path / "pairs.txt").write_text(f"a.png b.png 0 1 {K} {K} {T}\n")
    (p,) = read_pair_list(tmp_path / "pairs.txt")
    assert p.image0 == tmp_path / "a.png" and p.rot1 == 1
    assert np.allclose(p.T_0to1[:3, :3], _rz(3))
    (tmp_path / "bad.txt").write_text("a.png b.png 0 0 1 2 3\n")
    with pytest.raises(ValueError, match="38 fields"):
        read_pair_list(tmp_path / "bad.txt")


@pytest.mark.parametrize("rot", [1, 2, 3])
def test_rotated_view_projects_consistently(rot):
    """A dot drawn at the projection of X lands, after np.rot90, at K' (R X)."""
    K = np.array([[200.0, 0, 70], [0, 180.0, 45], [0, 0, 1]])
    X = np.array([0.3, -0.2, 2.0])
    u = K @ X
    img = np.zeros((96, 128), np.uint8)
    img[int(round(u[1] / u[2])), int(round(u[0] / u[2]))] = 255
    img2, K2, R = rotate_view(img, K, rot)
    v = K2 @ (R @ X)
    y, x = np.unravel_index(np.argmax(img2), img2.shape)
    assert (x, y) == (int(round(v[0] / v[2])), int(round(v[1] / v[2])))
    assert np.allclose(R @ R.T, np.eye(3)) and np.linalg.det(R) == pytest.approx(1)
