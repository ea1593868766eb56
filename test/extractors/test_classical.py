"""ORB / SIFT baselines: OpenCV parity, descriptor conventions, rotation, empty images, resize."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import textured_image

from local_features_ros.registry import build_extractor


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    return textured_image(120, 160, seed=0)


def test_orb_matches_opencv_and_hamming(img):
    feats = build_extractor("orb").extract(img)
    kps, raw = cv2.ORB_create(nfeatures=1000).detectAndCompute(img, None)
    assert len(feats) == len(kps) > 20
    np.testing.assert_allclose(feats.keypoints.numpy(), np.array([k.pt for k in kps]), atol=1e-4)
    np.testing.assert_allclose(feats.scales.numpy(), np.array([k.size for k in kps]) / 31.0, rtol=1e-6)
    np.testing.assert_allclose(feats.orientations.numpy(), np.radians([k.angle for k in kps]), rtol=1e-5)
    d = feats.descriptors
    assert d.shape == (len(kps), 256) and d.dtype == torch.float32
    assert set(torch.unique(d).tolist()) <= {0.0, 1.0}
    # squared L2 on the unpacked bits == Hamming on the packed bytes
    for i, j in [(0, 1), (2, 5), (3, 3)]:
        ham = cv2.norm(raw[i], raw[j], cv2.NORM_HAMMING)
        assert float(((d[i] - d[j]) ** 2).sum()) == ham


def test_sift_descriptors_and_rootsift(img):
    plain = build_extractor("sift").extract(img)
    root = build_extractor("sift", root_sift=True).extract(img)
    kps, raw = cv2.SIFT_create().detectAndCompute(img, None)
    assert len(plain) == len(kps) > 20 and plain.descriptor_dim == 128
    np.testing.assert_allclose(plain.keypoints.numpy(), np.array([k.pt for k in kps]), atol=1e-4)
    np.testing.assert_allclose(plain.descriptors.norm(dim=1).numpy(), 1.0, atol=1e-5)
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(plain.descriptors.numpy(), expected, atol=1e-5)
    expected_root = np.sqrt(raw / raw.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(root.descriptors.numpy(), expected_root, atol=1e-5)
    # scale 1 == OpenCV size 2 * 1.6 (the base sigma)
    np.testing.assert_allclose(plain.scales.numpy() * 3.2, [k.size for k in kps], rtol=1e-5)


@pytest.mark.parametrize("method", ["orb", "sift"])
def test_rot90_keypoints_and_orientations_follow(img, method):
    e = build_extractor(method)
    f = e.extract(img)
    g = e.extract(np.ascontiguousarray(np.rot90(img)))  # counter-clockwise on screen
    w = img.shape[1]
    # np.rot90: new[r, c] = old[c, W - 1 - r]  ->  (x, y) maps to (y, W - 1 - x)
    mapped = torch.stack([f.keypoints[:, 1], (w - 1) - f.keypoints[:, 0]], dim=1)
    dist, idx = torch.cdist(mapped, g.keypoints).min(dim=1)
    ok = dist < 1.0
    assert len(f) > 20 and ok.float().mean() >= 0.85, (len(f), ok.float().mean())
    # OpenCV angles are measured with y pointing down: a CCW screen rotation is -90 degrees.
    turn = np.degrees((g.orientations[idx[ok]] - f.orientations[ok]).numpy()) % 360.0
    assert np.mean(np.abs(turn - 270.0) < 10.0) >= 0.8
    if method == "orb":  # rotated BRIEF follows the rotation almost bit for bit
        ham = ((f.descriptors[ok] - g.descriptors[idx[ok]]) ** 2).sum(1)
        assert float(ham.median()) <= 10


@pytest.mark.parametrize("method,dim", [("orb", 256), ("sift", 128)])
def test_uniform_image_gives_no_features(method, dim):
    e = build_extractor(method)
    for im in (np.full((64, 64), 128, np.uint8), np.zeros((48, 64, 3), np.uint8)):
        f = e.extract(im)
        assert len(f) == 0 and f.descriptors.shape == (0, dim)
        assert f.image_size == (im.shape[1], im.shape[0])
        assert f.numpy()["keypoints"].shape == (0, 2)


@pytest.mark.parametrize("method", ["orb", "sift"])
def test_resize_maps_back_to_original_pixels(img, method):
    big = cv2.resize(img, (320, 240), interpolation=cv2.INTER_NEAREST)
    small = build_extractor(method).extract(img)
    resized = build_extractor(method, resize_max_edge=160).extract(big)
    # the network-size image is bit-identical to img, so the mapping is exact
    assert len(resized) == len(small) > 0 and resized.image_size == (320, 240)
    assert torch.allclose(resized.keypoints, (small.keypoints + 0.5) * 2 - 0.5, atol=1e-4)
    assert torch.allclose(resized.scales, small.scales * 2)


def test_rgb_input_uses_opencv_gray(img):
    rgb = np.ascontiguousarray(np.stack([img, np.roll(img, 3, axis=1), img[::-1]], axis=2))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    a = build_extractor("orb").extract(rgb)
    b = build_extractor("orb").extract(gray)
    assert torch.equal(a.keypoints, b.keypoints) and torch.equal(a.descriptors, b.descriptors)


def test_thresholds_and_max_keypoints(img):
    loose = build_extractor("orb", detection_threshold=5).extract(img)
    strict = build_extractor("orb", detection_threshold=60).extract(img)
    assert len(loose) > len(strict)
    few = build_extractor("sift", max_keypoints=15).extract(img)
    all_ = build_extractor("sift").extract(img)
    assert len(few) == 15 < len(all_)
    # top-k by response: the kept scores are the 15 best
    best = np.sort(all_.scores.numpy())[::-1][:15]
    np.testing.assert_allclose(np.sort(few.scores.numpy())[::-1], best, rtol=1e-6)
    e = build_extractor("sift")
    e.update_conf(detection_threshold=0.2)  # runtime change rebuilds the OpenCV object
    assert len(e.extract(img)) < len(all_)


def test_bad_config_rejected():
    from local_features_ros.extractors.base import ConfigError

    with pytest.raises(ConfigError):
        build_extractor("orb", detection_threshold=300)
    with pytest.raises(ConfigError):
        build_extractor("sift", n_octave_layers=0)
    with pytest.raises(ConfigError, match="unknown config key"):
        build_extractor("sift", root="yes")
