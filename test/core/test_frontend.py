"""Frame-to-frame front-end and track ids, checked against the rendered scene's ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from local_features_ros.frontend import FrameToFrameFrontend
from local_features_ros.geometry import VerifyConfig, rotation_error_deg, translation_angle_error_deg
from local_features_ros.matching import MatcherConfig
from local_features_ros.synthetic.scene import (
    PinholeCamera,
    SyntheticScene,
    relative_pose,
    warp_points_with_depth,
)
from local_features_ros.tracking import TrackManager
from local_features_ros.types import Features


def _sift(image: np.ndarray, n: int = 600) -> Features:
    """SIFT straight from OpenCV (independent of the package's extractors)."""
    kp, desc = cv2.SIFT_create(nfeatures=n).detectAndCompute(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), None)
    desc = desc / np.linalg.norm(desc, axis=1, keepdims=True)
    return Features(torch.tensor(np.array([p.pt for p in kp]), dtype=torch.float32),
                    torch.tensor([p.response for p in kp], dtype=torch.float32),
                    torch.from_numpy(desc.astype(np.float32)),
                    image_size=(image.shape[1], image.shape[0]))


def _orb(image: np.ndarray, n: int = 600) -> Features:
    """ORB bits unpacked to 0/1 floats (the package's ORB descriptor contract)."""
    kp, desc = cv2.ORB_create(nfeatures=n).detectAndCompute(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), None)
    return Features(torch.tensor(np.array([p.pt for p in kp]), dtype=torch.float32),
                    torch.tensor([p.response for p in kp], dtype=torch.float32),
                    torch.from_numpy(np.unpackbits(desc, axis=1).astype(np.float32)),
                    image_size=(image.shape[1], image.shape[0]))


@pytest.fixture(scope="module")
def forward_frames():
    scene = SyntheticScene(seed=0, camera=PinholeCamera.default(240, 180))
    return list(scene.frames(5, "forward", fps=10.0))


def _check_tracks_against_depth(frames, results, max_err_px: float) -> int:
    """Keypoints sharing a track id must be the same scene point: warp each with ground-truth
    depth + pose from the frame where the track started. Returns the number of checked links."""
    first_seen: dict[int, tuple[int, np.ndarray]] = {}
    checked = 0
    errors = []
    for k, (fr, res) in enumerate(zip(frames, results)):
        kp = res.features.keypoints.numpy().astype(np.float64)
        for tid, p in zip(res.track_ids.tolist(), kp):
            if tid not in first_seen:
                first_seen[tid] = (k, p)
                continue
            k0, p0 = first_seen[tid]
            f0 = frames[k0]
            w, valid = warp_points_with_depth(p0[None], f0.depth, f0.K, fr.K,
                                              relative_pose(f0.T_world_cam, fr.T_world_cam))
            if valid[0]:
                errors.append(np.linalg.norm(w[0] - p))
                checked += 1
    errors = np.array(errors)
    assert np.mean(errors < max_err_px) > 0.95, np.percentile(errors, [50, 90, 99])
    return checked


def test_sift_forward_sequence_tracks_and_motion(forward_frames):
    fe = FrameToFrameFrontend(MatcherConfig(mutual=True), VerifyConfig(threshold_px=1.0))
    results = []
    for f in forward_frames:
        results.append(fe.process(_sift(f.image), f.stamp, f.K))
    first = results[0]
    assert first.matches is None and first.motion is None and first.prev_stamp is None
    assert first.frame_index == 0 and first.track_ids.dtype == np.uint32
    np.testing.assert_array_equal(first.track_ids, np.arange(len(first.features)))
    seen_ids = set(first.track_ids.tolist())
    for k in range(1, 5):
        prev, res = results[k - 1], results[k]
        assert res.frame_index == k and res.prev_stamp == pytest.approx(prev.stamp)
        m = res.matches
        assert m.model_type == "essential" and m.num_inliers > 100
        inl = m.matches[m.inliers]
        # Inlier matches carry the id over; every other keypoint gets a fresh, unused id.
        np.testing.assert_array_equal(res.track_ids[inl[:, 1]], prev.track_ids[inl[:, 0]])
        fresh = np.setdiff1d(np.arange(len(res.features)), inl[:, 1])
        assert len(set(res.track_ids.tolist())) == len(res.features)  # unique within the frame
        assert not set(res.track_ids[fresh].tolist()) & seen_ids
        assert res.track_ids[fresh].min() > max(seen_ids)  # monotonic
        seen_ids |= set(res.track_ids.tolist())
        T10 = relative_pose(forward_frames[k - 1].T_world_cam, forward_frames[k].T_world_cam)
        assert res.motion is not None
        assert rotation_error_deg(res.motion.R, T10[:3, :3]) < 2.0
        assert translation_angle_error_deg(res.motion.t, T10[:3, 3]) < 10.0
    # Some tracks live through all five frames, and every track is one scene point.
    assert len(set(results[0].track_ids.tolist()) & set(results[4].track_ids.tolist())) > 50
    assert _check_tracks_against_depth(forward_frames, results, max_err_px=2.0) > 500


def test_orb_bits_work(forward_frames):
    fe = FrameToFrameFrontend(MatcherConfig(mutual=True), VerifyConfig(threshold_px=2.0))
    results = [fe.process(_orb(f.image), f.stamp, f.K) for f in forward_frames[:3]]
    for k in (1, 2):
        m = results[k].matches
        assert m.num_inliers > 80 and m.num_inliers > 0.6 * len(m)
        T10 = relative_pose(forward_frames[k - 1].T_world_cam, forward_frames[k].T_world_cam)
        assert rotation_error_deg(results[k].motion.R, T10[:3, :3]) < 3.0
        # ORB: squared L2 on bits = Hamming distance, an integer.
        np.testing.assert_allclose(m.distances ** 2, np.round(m.distances ** 2), atol=1e-3)
    _check_tracks_against_depth(forward_frames[:3], results, max_err_px=3.0)


def test_runtime_config_reset_and_edge_cases(forward_frames):
    fe = FrameToFrameFrontend()
    f0, f1, f2 = forward_frames[:3]
    a = fe.process(_sift(f0.image, 200), f0.stamp)  # no K: fundamental, no motion
    b = fe.process(_sift(f1.image, 200), f1.stamp)
    assert b.matches.model_type == "fundamental" and b.motion is None
    fe.verify = VerifyConfig(model="none")
    fe.matcher = MatcherConfig(mutual=False)
    c = fe.process(_sift(f2.image, 200), f2.stamp, f2.K)
    assert c.matches.model_type == "none" and c.matches.inliers.all()
    assert len(c.matches) == len(b.features)  # plain NN: one match per previous keypoint
    assert c.motion is None  # previous frame had no K
    max_id = int(max(a.track_ids.max(), b.track_ids.max(), c.track_ids.max()))
    fe.reset()
    d = fe.process(_sift(f0.image, 200), 10.0, f0.K)
    assert d.matches is None and d.frame_index == 0 and d.track_ids.min() > max_id
    # Empty frame: no crash, empty matches, then recovery.
    e = fe.process(Features.empty(128, (240, 180)), 10.1, f0.K)
    assert len(e.matches) == 0 and e.track_ids.shape == (0,)
    # Stamp going backwards starts a new sequence; descriptor size change too.
    g = fe.process(_sift(f1.image, 200), 5.0, f1.K)
    assert g.matches is None and g.frame_index == 0
    h = fe.process(_orb(f1.image, 200), 5.1, f1.K)
    assert h.matches is None


def test_track_manager_chain():
    tm = TrackManager()
    ids0 = tm.update(3)
    np.testing.assert_array_equal(ids0, [0, 1, 2])
    ids1 = tm.update(4, np.array([[0, 2], [2, 0]]))  # prev 0 -> cur 2, prev 2 -> cur 0
    np.testing.assert_array_equal(ids1, [2, 3, 0, 4])
    ids2 = tm.update(2, np.array([[2, 1], [3, 0]]))
    np.testing.assert_array_equal(ids2, [4, 0])  # id 0 has now lived three frames
    ids3 = tm.update(3, np.array([[0, 0], [0, 1], [1, 1]]))  # duplicates: first one wins
    np.testing.assert_array_equal(ids3, [4, 5, 6])
    tm.reset()
    np.testing.assert_array_equal(tm.update(2, np.array([[0, 0]])), [7, 8])  # matches ignored
    assert tm.update(0).shape == (0,)
