"""Metric stereo / RGB-D odometry (``local_features_ros/odometry``) against rendered ground truth.

Sequences come from ``synthetic.scene.SyntheticScene`` (exact intrinsics, depth and poses); the
right view of a stereo pair is the same camera shifted by the baseline. Expectations are the
true trajectory (a few centimetres of ATE on a few-metre path), the KITTI file format, and
metric values computed by hand on trajectories built to have them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("gtsam")

from local_features_ros.cli import main as cli  # noqa: E402
from local_features_ros.odometry import (OdometryConfig, RGBDOdometry, StereoOdometry,  # noqa: E402
                                         TrackingState)
from local_features_ros.odometry.bundle_adjustment import LocalBundleAdjuster  # noqa: E402
from local_features_ros.odometry.camera import RectifiedCamera, transform_points  # noqa: E402
from local_features_ros.odometry.config import BundleConfig, DepthConfig, StereoConfig  # noqa: E402
from local_features_ros.odometry.datasets import read_kitti_poses  # noqa: E402
from local_features_ros.odometry.local_map import LocalMap  # noqa: E402
from local_features_ros.odometry.metrics import trajectory_metrics  # noqa: E402
from local_features_ros.odometry.rgbd import rgbd_measurement, sample_depth  # noqa: E402
from local_features_ros.odometry.runner import run_frames  # noqa: E402
from local_features_ros.odometry.stereo import stereo_measurement, to_gray_float  # noqa: E402
from local_features_ros.odometry.synthetic import (rgbd_sequence, stereo_sequence,  # noqa: E402
                                                   write_kitti_stereo, write_tum_rgbd)
from local_features_ros.odometry.types import FrameMeasurement  # noqa: E402
from local_features_ros.registry import build_extractor  # noqa: E402
from local_features_ros.types import Features  # noqa: E402

N = 24


@pytest.fixture(scope="module")
def orb():
    return build_extractor("orb", device="cpu", precision="fp32", max_keypoints=1000)


@pytest.fixture(scope="module")
def stereo():
    return stereo_sequence(N, baseline=0.2, seed=1)


@pytest.fixture(scope="module")
def rgbd():
    return rgbd_sequence(N, seed=2)


def _pose(rz_deg: float = 0.0, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    a = math.radians(rz_deg)
    T = np.eye(4)
    T[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    T[:3, 3] = t
    return T


def _ate(run, poses) -> float:
    return trajectory_metrics(run.poses, poses).ate_rmse_m


# ------------------------------------------------------------------------------------ stereo
def test_stereo_depth_is_subpixel_accurate_and_on_rows(stereo, orb):
    """Triangulated depths agree with the rendered depth (better than without the sub-pixel
    step); accepted pairs obey the row and positive-disparity rules."""
    from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene

    cam = stereo.camera
    left, right = stereo.first[5], stereo.second[5]
    fl, fr = orb.extract(left), orb.extract(right)
    scene = SyntheticScene(1, camera=PinholeCamera.default(320, 240))
    z_true = scene.render(scene.trajectory(N, "forward")[5]).depth

    def depth_errors(cfg: StereoConfig) -> tuple[np.ndarray, object, object]:
        meas, pairs = stereo_measurement(fl, fr, to_gray_float(left), to_gray_float(right),
                                         cam, cfg, 0.5)
        px = np.rint(meas.keypoints[meas.has_depth]).astype(int)
        zt = z_true[px[:, 1], px[:, 0]]
        return np.abs(meas.points_cam[meas.has_depth, 2] - zt) / zt, meas, pairs

    rel, meas, pairs = depth_errors(StereoConfig())
    assert meas.num_depth > 150
    kl, kr = fl.keypoints.numpy(), fr.keypoints.numpy()
    assert np.all(np.abs(kl[pairs.left, 1] - kr[pairs.right, 1]) <= 2.0)
    assert np.all(pairs.disparity > 0)
    assert np.median(rel) < 0.02, np.median(rel)
    rel_plain, _, _ = depth_errors(StereoConfig(subpixel=False))
    assert np.median(rel) < np.median(rel_plain)


@pytest.mark.parametrize("kind", ["forward", "turn"])
def test_stereo_trajectory_matches_ground_truth(kind, stereo, orb):
    seq = stereo if kind == "forward" else stereo_sequence(N, baseline=0.2, seed=1, kind="turn",
                                                           turn_deg=98.0)
    run = run_frames(StereoOdometry(orb, seq.camera), seq.frames())
    assert len(run.poses) == len(seq)
    np.testing.assert_allclose(run.poses[0], np.eye(4), atol=1e-12)
    assert all(r.state in (TrackingState.INITIALISED, TrackingState.TRACKING)
               for r in run.results)
    m = trajectory_metrics(run.poses, seq.poses)
    assert m.path_length_m > 2.5
    assert m.ate_rmse_m < 0.05, m
    assert m.end_drift_percent < 3.0, m
    kfs = [r for r in run.results if r.is_keyframe]
    assert 2 <= len(kfs) < len(seq)
    adjusted = [r for r in kfs if r.ba_ms > 0]
    assert adjusted, "no bundle adjustment ran"
    cov = adjusted[-1].covariance
    assert cov is not None and cov.shape == (6, 6)
    np.testing.assert_allclose(cov, cov.T, atol=1e-9)
    assert np.all(np.linalg.eigvalsh(cov) > 0)


def test_fast_sustained_turn_is_tracked_through(orb):
    """98 degrees of yaw in 13 steps (7.5 degrees a frame, 75 deg/s at 10 Hz: faster than a car
    turns): most landmarks leave the view within a few frames, the keyframes follow the turn
    (rotation budget) and every frame is tracked, pipelined with the right image on demand."""
    seq = stereo_sequence(14, baseline=0.12, width=640, height=480, seed=6, kind="turn",
                          turn_deg=98.0, noise_std=2.0)
    run = run_frames(StereoOdometry(orb, seq.camera), seq.frames())
    assert [r.state for r in run.results[1:]] == [TrackingState.TRACKING] * 13
    m = trajectory_metrics(run.poses, seq.poses)
    assert m.ate_rmse_m < 0.05 and m.end_drift_percent < 3.0, m
    assert sum(r.is_keyframe for r in run.results) >= 5


def test_tracking_loss_is_relocalised_and_counted(stereo, orb):
    """Blank frames replace frames 10-12: they are lost (reporting the last good pose), the
    next frame is tracked again against the same map, and the trajectory stays metric."""
    blank = np.zeros_like(stereo.first[0])
    frames = [(blank, blank, t) if 10 <= k <= 12 else (a, b, t)
              for k, (a, b, t) in enumerate(stereo.frames())]
    run = run_frames(StereoOdometry(orb, stereo.camera), frames)
    states = [r.state for r in run.results]
    assert len(run.poses) == len(stereo)
    assert states[10:13] == [TrackingState.LOST] * 3
    assert states[13] is TrackingState.RELOCALISED
    assert all(s is TrackingState.TRACKING for s in states[14:])
    assert run.results[-1].losses == 1
    for k in (10, 11, 12):
        np.testing.assert_array_equal(run.poses[k], run.poses[9])
    good = [k for k in range(len(stereo)) if not 10 <= k <= 12]
    m = trajectory_metrics([run.poses[k] for k in good], [stereo.poses[k] for k in good])
    assert m.ate_rmse_m < 0.05, m


def test_reinitialisation_chains_from_the_last_good_pose(stereo, orb):
    """Without relocalisation a new map starts at the next good frame, at the last good pose,
    and the motion after it is metric again."""
    cfg = OdometryConfig().replace(**{"recovery.relocalise": False})
    blank = np.zeros_like(stereo.first[0])
    frames = [(blank, blank, t) if k == 10 else (a, b, t)
              for k, (a, b, t) in enumerate(stereo.frames())]
    run = run_frames(StereoOdometry(orb, stereo.camera, cfg), frames)
    states = [r.state for r in run.results]
    assert states[10] is TrackingState.LOST and states[11] is TrackingState.REINITIALISED
    assert run.results[-1].losses == 1
    np.testing.assert_allclose(run.poses[11], run.poses[9], atol=1e-12)  # continuous
    # after the jump, relative motion is right: compare frames 11.. with the truth re-anchored
    est = [np.linalg.inv(run.poses[11]) @ T for T in run.poses[11:]]
    gt = [np.linalg.inv(stereo.poses[11]) @ T for T in stereo.poses[11:]]
    m = trajectory_metrics(est, gt)
    assert m.ate_rmse_m < 0.04 and m.rpe_trans_rmse_m < 0.03, m


def test_stamp_going_backwards_starts_a_new_trajectory(stereo, orb):
    """A replayed bag that loops: the old stamp restarts the trajectory at the identity."""
    vo = StereoOdometry(orb, stereo.camera)
    frames = list(stereo.frames())
    results = [vo.process(*f) for f in frames[:6]]
    assert results[-1].state is TrackingState.TRACKING
    assert np.linalg.norm(results[-1].T_world_cam[:3, 3]) > 0.3
    again = vo.process(*frames[0])
    assert again.state is TrackingState.INITIALISED and again.frame_index == 0
    np.testing.assert_allclose(again.T_world_cam, np.eye(4), atol=1e-12)
    assert again.losses == 0


def test_pipelined_run_gives_the_serial_poses(stereo, orb):
    """Measuring frame N+1 on a worker thread while frame N is tracked (and the right image
    on demand, or on a thread of its own) changes when the work is done, not what it
    computes."""
    frames = list(stereo.frames())[:12]
    piped = run_frames(StereoOdometry(orb, stereo.camera), frames, pipelined=True)
    vo = StereoOdometry(orb, stereo.camera, right_on_demand=False, parallel_images=True)
    both = run_frames(vo, frames, pipelined=True)
    vo.close()
    serial = run_frames(StereoOdometry(orb, stereo.camera, right_on_demand=False,
                                       parallel_images=False), frames, pipelined=False)
    for a, b in zip(both.poses, serial.poses):
        np.testing.assert_array_equal(a, b)
    assert len(piped.results) == len(serial.results) == len(piped.seconds) == 12
    assert [r.frame_index for r in piped.results] == list(range(12))
    assert [r.state for r in piped.results] == [r.state for r in serial.results]
    for a, b in zip(piped.poses, serial.poses):
        np.testing.assert_array_equal(a, b)
    assert {"extract", "track"} <= set(piped.results[5].timings_ms)
    assert all(s > 0 for s in piped.seconds) and piped.frames_per_cpu_second > 0


class _Counting:
    """An extractor that counts its calls."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def extract(self, image):
        self.calls += 1
        return self.inner.extract(image)


def test_right_image_only_when_the_frame_needs_its_depths(stereo, orb):
    """With ``right_on_demand`` a frame tracked against the map costs one extraction: the right
    image is extracted for keyframes (and the first frame) only, the poses are unchanged."""
    frames = list(stereo.frames())[:14]
    lazy_x, eager_x = _Counting(orb), _Counting(orb)
    lazy = run_frames(StereoOdometry(lazy_x, stereo.camera), frames)
    eager = run_frames(StereoOdometry(eager_x, stereo.camera, right_on_demand=False,
                                      parallel_images=False), frames)
    for a, b in zip(lazy.poses, eager.poses):
        np.testing.assert_array_equal(a, b)
    keyframes = sum(r.is_keyframe for r in lazy.results)
    assert keyframes < len(frames) and eager_x.calls == 2 * len(frames)
    assert lazy_x.calls == len(frames) + keyframes
    for r, e in zip(lazy.results, eager.results):
        assert r.num_depth == (e.num_depth if r.is_keyframe else -1)
        assert r.is_keyframe == ("depth" in r.timings_ms)
    assert lazy.summary()["median_depth_points"] > 50


def test_pipelined_run_with_no_frames_and_a_failing_frame(stereo, orb):
    assert run_frames(StereoOdometry(orb, stereo.camera), iter(())).results == []
    frames = list(stereo.frames())[:3]
    bad = (frames[1][0], None, frames[1][2])  # no right image: the measurement fails
    vo = StereoOdometry(orb, stereo.camera)
    with pytest.raises(Exception):  # raised to the caller, not lost on the worker thread
        run_frames(vo, [frames[0], bad, frames[2]])
    vo.close()


def test_landmark_ids_name_the_same_point_and_are_never_reused(stereo, orb):
    """``update`` fills ``landmark_ids``: per keypoint the landmark it observes; ids of one
    frame are distinct, a new map (after a loss) and a new trajectory (stamps going back) never
    reuse an old id, so equal ids in two frames always mean the same map point."""
    cfg = OdometryConfig().replace(**{"recovery.relocalise": False})
    vo = StereoOdometry(orb, stereo.camera, cfg)
    blank = np.zeros_like(stereo.first[0])
    frames = [(blank, blank, t) if k == 8 else (a, b, t)
              for k, (a, b, t) in enumerate(stereo.frames())][:14]
    frames.append(list(stereo.frames())[0])  # back in time: a new trajectory
    seen: list[np.ndarray] = []
    states = []
    for a, b, t in frames:
        frame = vo.measure(a, b, t)
        res = vo.update(frame)
        ids = frame.landmark_ids
        assert ids is not None and ids.shape == (len(frame.measurement),)
        valid = ids[ids >= 0]
        assert len(np.unique(valid)) == len(valid)
        if res.state is TrackingState.TRACKING and not res.is_keyframe:
            assert len(valid) == res.num_inliers
            assert set(valid.tolist()) <= set(vo.core.map.landmarks)
        states.append(res.state)
        seen.append(valid)
    assert states[8] is TrackingState.LOST and len(seen[8]) == 0
    assert states[9] is TrackingState.REINITIALISED and states[-1] is TrackingState.INITIALISED
    before = np.concatenate(seen[:8])
    assert seen[9].min() > before.max()  # the new map's ids
    assert seen[-1].min() > np.concatenate(seen[9:-1]).max()  # the new trajectory's ids
    consecutive = [len(np.intersect1d(seen[k], seen[k + 1])) for k in range(7)]
    assert min(consecutive) >= 20, consecutive  # frames share the landmarks they track
    vo.close()


def _mutual_nn_reference(d0: np.ndarray, d1: np.ndarray, pairs: np.ndarray,
                         ratio: float) -> list[tuple[int, int]]:
    """The rule of ``mutual_nn_pairs`` written with loops: candidates in the order given,
    grouped by i0 (stable); nearest first-listed on ties, on both sides."""
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    dist = [float(np.linalg.norm(d0[i] - d1[j])) for i, j in pairs]
    row_best: dict[int, int] = {}
    col_best: dict[int, int] = {}
    for k, (i, j) in enumerate(pairs):
        if i not in row_best or dist[k] < dist[row_best[i]]:
            row_best[i] = k
        if j not in col_best or dist[k] < dist[col_best[j]]:
            col_best[j] = k
    out = []
    for i, k in sorted(row_best.items()):
        others = [dist[c] for c, (a, _) in enumerate(pairs) if a == i and c != k]
        if ratio < 1.0 and others and dist[k] > ratio * min(others):
            continue
        if col_best[pairs[k, 1]] == k:
            out.append((int(i), int(pairs[k, 1])))
    return out


@pytest.mark.parametrize("ties", [False, True])
def test_gated_mutual_nn_follows_its_rule(ties):
    from local_features_ros.odometry.association import mutual_nn_pairs

    rng = np.random.default_rng(3)
    d0 = rng.normal(size=(40, 8)).astype(np.float32)
    d1 = rng.normal(size=(50, 8)).astype(np.float32)
    if ties:  # few distinct values: equal distances everywhere (as with binary descriptors)
        d0, d1 = np.round(d0).clip(-1, 1), np.round(d1).clip(-1, 1)
    pairs = np.unique(np.stack([rng.integers(0, 40, 600), rng.integers(0, 50, 600)], 1), axis=0)
    pairs = pairs[rng.permutation(len(pairs))]  # not grouped
    for ratio in (1.0, 0.8):
        got, dist = mutual_nn_pairs(torch.from_numpy(d0), torch.from_numpy(d1), pairs, ratio)
        assert [tuple(m) for m in got.tolist()] == _mutual_nn_reference(d0, d1, pairs, ratio)
        np.testing.assert_allclose(dist, np.linalg.norm(d0[got[:, 0]] - d1[got[:, 1]], axis=1),
                                   rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ RGB-D
def test_sample_depth_rejects_invalid_pixels():
    d = np.full((20, 20), 2.0, np.float32)
    d[2, 2] = 0.0
    d[5, 5] = np.nan
    d[8, 8] = np.inf
    d[11, 11] = 50.0  # beyond max_depth
    d[14:, 14:] = 4.0  # a depth edge at row/column 14
    pts = np.array([[2, 2], [5, 5], [8, 8], [11, 11], [14, 14], [17, 17], [3.4, 16.6],
                    [-1, 3], [25, 3]], float)
    z = sample_depth(d, pts, DepthConfig(max_depth=10.0))
    assert np.isnan(z[[0, 1, 2, 3, 4, 7, 8]]).all()
    assert z[5] == pytest.approx(4.0) and z[6] == pytest.approx(2.0)
    # a keypoint of a coarse scale must be clear of the edge by about its scale
    near = np.array([[16.0, 16.0], [16.0, 16.0]])
    z = sample_depth(d, near, DepthConfig(), radius=np.array([1.0, 3.0]))
    assert z[0] == pytest.approx(4.0) and np.isnan(z[1])


def test_rgbd_trajectory_with_zero_and_nan_depth(rgbd, orb):
    """Holes of 0 and NaN depth (and a uint16 copy of the depth) change nothing but the
    number of measured points: no point comes from a hole, the trajectory stays right."""
    frames = []
    for img, dep, t in rgbd.frames():
        d = dep.copy()
        d[:, :60] = 0.0
        d[:80, 200:] = np.nan
        frames.append((img, d, t))
    vo = RGBDOdometry(orb, rgbd.camera)
    feats = orb.extract(frames[3][0])
    meas = rgbd_measurement(feats.float(), frames[3][1], vo.camera, DepthConfig(), 0.3)
    px = np.rint(feats.keypoints.numpy()).astype(int)  # the pixel a keypoint reads
    hole = (px[:, 0] < 60) | ((px[:, 1] < 80) & (px[:, 0] >= 200))
    assert hole.any() and not meas.has_depth[hole].any() and meas.num_depth > 100
    assert np.isfinite(meas.points_cam[meas.has_depth]).all()
    run = run_frames(vo, frames)
    assert len(run.poses) == len(rgbd)
    np.testing.assert_allclose(run.poses[0], np.eye(4), atol=1e-12)
    m = trajectory_metrics(run.poses, rgbd.poses)
    assert m.ate_rmse_m < 0.05 and m.end_drift_percent < 3.0, m
    # integer depth (TUM: metres x 5000) gives the same result as metres
    as_uint16 = [(a, np.rint(np.nan_to_num(d) * 5000).astype(np.uint16), t)
                 for a, d, t in frames[:6]]
    run16 = run_frames(RGBDOdometry(orb, rgbd.camera, depth_factor=5000.0), as_uint16)
    np.testing.assert_allclose(np.array(run16.poses)[:, :3, 3], np.array(run.poses[:6])[:, :3, 3],
                               atol=2e-3)


# ------------------------------------------------------------------------------------ bundle
def test_local_bundle_adjustment_recovers_perturbed_window():
    """Exact stereo observations of 150 points from 4 keyframes; poses 2-4 and the points are
    perturbed; gtsam brings them back and leaves the oldest (fixed) pose untouched."""
    cam = RectifiedCamera(400.0, 400.0, 320.0, 240.0, 0.3, 640, 480)
    rng = np.random.default_rng(0)
    pts = rng.uniform([-3, -2, 4], [3, 2, 12], (150, 3))
    true = [_pose(2.0 * k, (0.1 * k, 0.0, 0.5 * k)) for k in range(4)]
    lmap = LocalMap(retain=4)
    for k, T in enumerate(true):
        pc = transform_points(np.linalg.inv(T), pts)
        uv, _ = cam.project(pc)
        n = len(pts)
        meas = FrameMeasurement(
            features=Features(keypoints=torch.zeros(n, 2), scores=torch.ones(n),
                              descriptors=torch.eye(n)[:, :32].contiguous()),
            keypoints=uv, u_right=cam.right_u(uv[:, 0], pc[:, 2]), points_cam=pc,
            sigma=np.ones(n), stamp=float(k))
        assoc = np.zeros((0, 2), np.int64) if k == 0 else np.stack([np.arange(n), np.arange(n)], 1)
        noisy = T.copy()
        if k > 0:
            noisy = T @ _pose(0.5, (0.03, -0.02, 0.04))
        lmap.add_keyframe(meas, noisy, k, assoc, n)
    for lm in lmap.landmarks.values():
        lm.position = lm.position + rng.normal(0, 0.05, 3)
    report = LocalBundleAdjuster(cam, BundleConfig(window=4, iterations=30)).optimise(lmap)
    assert report is not None and report.final_error < 1e-3 * report.initial_error
    assert report.removed == 0 and report.covariance.shape == (6, 6)
    kfs = lmap.window(4)
    np.testing.assert_allclose(kfs[0].T_world_cam, true[0], atol=1e-12)
    for kf, T in zip(kfs[1:], true[1:]):
        np.testing.assert_allclose(kf.T_world_cam, T, atol=1e-4)


# ------------------------------------------------------------------------------------ metrics
def _arc(n: int, step: float = 1.0, radius: float = 40.0) -> list[np.ndarray]:
    """Camera poses along a circular arc in the x-z plane, looking along the path."""
    out = []
    for k in range(n):
        a = step * k / radius
        T = np.eye(4)
        c, s = math.cos(a), math.sin(a)
        T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        T[:3, 3] = [radius * (1 - c), 0.0, radius * s]
        out.append(T)
    return out


def test_metrics_match_hand_computation():
    """Trajectories built to have known errors: the path turned rigidly about its start
    (aligned ATE 0, unaligned ATE, end drift and RPE known), a 10 % scale error per step (RPE
    known), and a 250 m straight line with 1 % scale error (KITTI t_rel = 1 %, r_rel = 0,
    aligned ATE = 1 % of the spread of the positions); a short path has no KITTI metric."""
    gt = _arc(30)
    G = _arc(2, step=math.radians(5.0) * 40.0)[1]  # 5 degrees of heading (about y) ...
    G[:3, 3] = 0.0  # ... about the start: the whole path turned, a heading error
    est = [G @ T @ np.linalg.inv(G) for T in gt]
    np.testing.assert_allclose(est[0], np.eye(4), atol=1e-12)
    m = trajectory_metrics(est, gt)
    p_est = np.array([T[:3, 3] for T in est])
    p_gt = np.array([T[:3, 3] for T in gt])
    length = float(np.linalg.norm(np.diff(p_gt, axis=0), axis=1).sum())
    assert m.path_length_m == pytest.approx(length, rel=1e-12)
    assert m.ate_rmse_m == pytest.approx(0.0, abs=1e-9)
    assert m.ate_rmse_unaligned_m == pytest.approx(
        math.sqrt(np.mean(np.sum((p_est - p_gt) ** 2, axis=1))), rel=1e-9)
    assert m.ate_rmse_unaligned_m > 0.5
    assert m.end_drift_percent == pytest.approx(
        100 * np.linalg.norm(p_est[-1] - p_gt[-1]) / length, rel=1e-9)
    # each step's translation turned by 5 degrees about y (the steps lie in the x-z plane)
    steps = np.linalg.norm(np.diff(p_gt, axis=0), axis=1)
    assert m.rpe_trans_rmse_m == pytest.approx(
        2 * math.sin(math.radians(2.5)) * math.sqrt(np.mean(steps ** 2)), rel=1e-6)
    assert m.rpe_rot_rmse_deg == pytest.approx(0.0, abs=1e-5)
    assert m.kitti_t_rel_percent is None and "n/a" in m.kitti_note
    scaled = [T.copy() for T in gt]
    for T in scaled:
        T[:3, 3] *= 1.1
    m2 = trajectory_metrics(scaled, gt)
    assert m2.rpe_trans_rmse_m == pytest.approx(0.1 * math.sqrt(np.mean(steps ** 2)), rel=1e-6)
    assert m2.rpe_rot_rmse_deg == pytest.approx(0.0, abs=1e-6)
    long_gt = [_pose(0.0, (0.0, 0.0, 1.0 * k)) for k in range(251)]
    long_est = [_pose(0.0, (0.0, 0.0, 1.01 * k)) for k in range(251)]
    m3 = trajectory_metrics(long_est, long_gt)
    assert m3.kitti_t_rel_percent == pytest.approx(1.0, rel=1e-6)
    assert m3.kitti_r_rel_deg_per_100m == pytest.approx(0.0, abs=1e-9)
    assert m3.end_drift_percent == pytest.approx(1.0, rel=1e-9)
    assert m3.ate_rmse_m == pytest.approx(0.01 * np.std(np.arange(251.0)), rel=1e-6)


def test_metrics_agree_with_evo():
    """ATE (aligned and not) and RPE equal evo's on a noisy estimate of a curved path
    (evo, GPL-3.0, is a test-time reference only)."""
    evo_metrics = pytest.importorskip("evo.core.metrics")
    from evo.core.trajectory import PosePath3D

    rng = np.random.default_rng(3)
    gt = _arc(40, step=0.8, radius=15.0)
    est = [gt[0]]
    for a, b in zip(gt[:-1], gt[1:]):  # noisy relative motions, chained: a drifting estimate
        step = np.linalg.inv(a) @ b
        noise = _pose(rng.normal(0, 0.3), rng.normal(0, 0.02, 3))
        est.append(est[-1] @ step @ noise)
    ours = trajectory_metrics(est, gt)
    ref, raw = PosePath3D(poses_se3=gt), PosePath3D(poses_se3=est)
    aligned = PosePath3D(poses_se3=est)
    aligned.align(ref, correct_scale=False)

    def evo_value(metric, traj) -> float:
        metric.process_data((ref, traj))
        return float(metric.get_statistic(evo_metrics.StatisticsType.rmse))

    rel = evo_metrics.PoseRelation
    assert ours.ate_rmse_m == pytest.approx(
        evo_value(evo_metrics.APE(rel.translation_part), aligned), rel=1e-6)
    assert ours.ate_rmse_unaligned_m == pytest.approx(
        evo_value(evo_metrics.APE(rel.translation_part), raw), rel=1e-6)
    assert ours.rpe_trans_rmse_m == pytest.approx(
        evo_value(evo_metrics.RPE(rel.translation_part, delta=1), raw), rel=1e-6)
    assert ours.rpe_rot_rmse_deg == pytest.approx(
        evo_value(evo_metrics.RPE(rel.rotation_angle_deg, delta=1), raw), rel=1e-5)
    assert ours.ate_rmse_m > 0.01  # the comparison is not between zeros


# ------------------------------------------------------------------------------------ config
def test_config_is_validated_with_the_key_named():
    from local_features_ros.conventions import ConfigError

    cfg = OdometryConfig().replace(**{"bundle.window": "8", "recovery.relocalise": "false"})
    assert cfg.bundle.window == 8 and cfg.recovery.relocalise is False
    with pytest.raises(ConfigError, match="bundle.windw"):
        OdometryConfig().replace(**{"bundle.windw": 8})
    with pytest.raises(ConfigError, match="bundle.window"):
        OdometryConfig().replace(**{"bundle.window": "many"})
    with pytest.raises(ConfigError, match="stereo.min_disparity"):
        OdometryConfig().replace(**{"stereo.min_disparity": 0})


def test_config_sections_are_configs_and_refuse_what_they_do_not_know():
    """Each section is a ``Config`` (cast with ``config.coerce``, read like a mapping); a
    section given whole, as a mapping, becomes its ``Config``; an unknown section or key and a
    value of the wrong type are refused with the dotted key named; ``to_dict`` nests sections."""
    from local_features_ros.config import Config
    from local_features_ros.conventions import ConfigError

    cfg = OdometryConfig.create({"tracking.ratio": "0.8", "bundle": {"window": "4"}})
    assert isinstance(cfg.tracking, Config) and cfg.tracking["ratio"] == 0.8
    assert cfg.bundle.window == 4 and cfg.stereo == StereoConfig()
    assert OdometryConfig(depth={"max_depth": 5}).depth.max_depth == 5.0
    as_dict = cfg.to_dict()
    assert as_dict["bundle"]["window"] == 4 and as_dict["recovery"] == {
        "relocalise": True, "min_init_points": 50}
    with pytest.raises(ConfigError, match="'bogus.window'.*sections: stereo"):
        cfg.replace(**{"bogus.window": 3})
    with pytest.raises(ConfigError, match="'tracking.ratio' \\(expected float\\)"):
        cfg.replace(**{"tracking.ratio": "high"})
    with pytest.raises(ConfigError, match="'bundle.subpixel'"):
        OdometryConfig(bundle={"subpixel": True})
    with pytest.raises(ConfigError, match="'bundle' is a section"):
        cfg.replace(bundle=3)
    with pytest.raises(ConfigError, match="bundle.window must be >= 2"):
        BundleConfig(window=1)
    assert cfg.bundle.window == 4  # nothing changed by the refused copies


# ------------------------------------------------------------------------------------ CLI
def _check_kitti_file(path, n):
    rows = np.loadtxt(path, ndmin=2)
    assert rows.shape == (n, 12)
    np.testing.assert_allclose(rows[0].reshape(3, 4), np.eye(4)[:3], atol=1e-12)
    poses = read_kitti_poses(path)
    assert all(np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6) for T in poses)
    return poses


def test_cli_stereo_writes_kitti_trajectory_json_and_plot(tmp_path, stereo):
    root = write_kitti_stereo(stereo, tmp_path / "seq")
    out, js, plot = tmp_path / "traj.txt", tmp_path / "r.json", tmp_path / "top.png"
    assert cli(["evaluate", "odometry", "--method", "orb", "--set", "max_keypoints=1000",
                "--stereo", str(root), "--trajectory", str(out), "--json", str(js),
                "--plot", str(plot)]) == 0
    poses = _check_kitti_file(out, len(stereo))
    r = json.loads(js.read_text())
    assert r["protocol_name"] == "odometry" and r["sensor"] == "stereo"
    assert r["metrics"]["ate_rmse_m"] < 0.05 and r["metrics"]["frames"] == len(stereo)
    assert r["metrics"]["kitti_t_rel_percent"] is None
    assert r["run"]["losses"] == 0 and len(r["per_frame"]) == len(stereo)
    # the file holds what the metrics were computed on
    ours = trajectory_metrics(poses, stereo.poses)
    assert ours.ate_rmse_m == pytest.approx(r["metrics"]["ate_rmse_m"], abs=1e-6)
    assert plot.is_file() and plot.read_bytes()[:4] == b"\x89PNG"
    # no --method: the node's default for this hardware (hardware.choose_method)
    from local_features_ros.hardware import choose_method

    assert cli(["evaluate", "odometry", "--stereo", str(root), "--trajectory", str(out),
                "--json", str(js), "--max-frames", "6"]) == 0
    r = json.loads(js.read_text())
    assert r["method"] == choose_method("cpu").method and r["conf"]["max_keypoints"] == 2000
    _check_kitti_file(out, 6)


def test_cli_rgbd_with_intrinsics_and_errors(tmp_path, rgbd, capsys):
    root = write_tum_rgbd(rgbd, tmp_path / "tum")
    c = rgbd.camera
    out = tmp_path / "traj.txt"
    intr = f"{c.fx},{c.fy},{c.cx},{c.cy}"
    assert cli(["evaluate", "odometry", "--method", "orb", "--rgbd", str(root),
                "--intrinsics", intr, "--trajectory", str(out), "--max-frames", "12"]) == 0
    _check_kitti_file(out, 12)
    line = capsys.readouterr().out
    assert "rgbd" in line and "ATE" in line
    # without ground truth: the trajectory, no metrics
    (root / "groundtruth.txt").unlink()
    js = tmp_path / "r.json"
    assert cli(["evaluate", "odometry", "--method", "orb", "--rgbd", str(root), "--intrinsics",
                intr, "--trajectory", str(out), "--json", str(js), "--max-frames", "5"]) == 0
    _check_kitti_file(out, 5)
    assert json.loads(js.read_text())["metrics"] is None
    assert "ATE" not in capsys.readouterr().out
    # no intrinsics for a folder whose name names no TUM camera: refused with the reason
    assert cli(["evaluate", "odometry", "--method", "orb", "--rgbd", str(root),
                "--trajectory", str(out)]) == 2
    assert "--intrinsics" in capsys.readouterr().err
    assert cli(["evaluate", "odometry", "--method", "orb", "--rgbd", str(root), "--intrinsics",
                intr, "--odometry-set", "bundle.window=1", "--trajectory", str(out)]) == 2
    assert "bundle.window" in capsys.readouterr().err
