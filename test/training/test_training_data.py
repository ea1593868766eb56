"""Training data: Synthetic Shapes geometry, homography sampler bounds/masks, photometric ops,
image-folder resize. Expectations come from geometry (Harris corners, warped dots, corner
bounds), not from the code under test; the library homography solve and point warp are compared
with the former hand-written formulas."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from kornia.geometry.transform import get_perspective_transform

from local_features_ros_training.data.homographies import compute_valid_mask, erosion_kernel, \
    homography_from_corners, sample_homography, warp_image, warp_points
from local_features_ros_training.data.image_folder import ImageFolder, resize_crop
from local_features_ros_training.data.photometric import additive_speckle_noise, motion_blur, \
    photometric_augmentation, random_contrast
from local_features_ros_training.data.synthetic_shapes import PRIMITIVES, SyntheticShapes, generate_shape

SMALL = {"image_size": [480, 640], "resize": [120, 160], "blur_size": 11}


def _harris_at(img: np.ndarray, pts: np.ndarray, r: int = 2) -> np.ndarray:
    """Max Harris response within r px of each point, relative to the image maximum."""
    R = cv2.cornerHarris(img.astype(np.float32) / 255.0, 3, 3, 0.04)
    out = []
    for x, y in pts:
        xi, yi = int(round(x)), int(round(y))
        out.append(R[max(yi - r, 0):yi + r + 1, max(xi - r, 0):xi + r + 1].max())
    return np.asarray(out) / max(R.max(), 1e-12)


@pytest.mark.parametrize("primitive", ["draw_polygon", "draw_checkerboard", "draw_cube",
                                       "draw_stripes", "draw_multiple_polygons", "draw_star",
                                       "draw_lines"])
def test_shape_keypoints_lie_on_corners(primitive):
    kp_scores, rand_scores = [], []
    for seed in range(8):
        s = generate_shape(primitive, np.random.default_rng(seed), SMALL)
        h, w = s.image.shape
        assert s.image.dtype == np.uint8 and (h, w) == (120, 160)
        p = s.points
        assert len(p) > 0
        assert (p[:, 0] >= -0.5).all() and (p[:, 0] <= w - 0.5).all()
        assert (p[:, 1] >= -0.5).all() and (p[:, 1] <= h - 0.5).all()
        kp_scores += list(_harris_at(s.image, p))
        r = np.random.default_rng(seed + 99)
        rand = np.stack([r.uniform(0, w - 1, len(p)), r.uniform(0, h - 1, len(p))], 1)
        rand_scores += list(_harris_at(s.image, rand))
    kp, rnd = np.asarray(kp_scores), np.asarray(rand_scores)
    # keypoints sit on corner structure; random points mostly do not (the check discriminates)
    assert (kp > 0.01).mean() >= 0.75, (kp > 0.01).mean()
    assert (rnd > 0.01).mean() <= 0.15, (rnd > 0.01).mean()


@pytest.mark.parametrize("primitive", ["draw_ellipses", "gaussian_noise"])
def test_negative_primitives_have_no_keypoints(primitive):
    s = generate_shape(primitive, np.random.default_rng(0), SMALL)
    assert s.points.shape == (0, 2)
    assert s.image.std() > 1.0  # something was drawn


def test_polygon_corners_are_the_polygon_vertices():
    # the drawn polygon = the filled polygon of the keypoints: redraw it and compare regions
    from local_features_ros_training.data.synthetic_shapes import draw_polygon

    img = np.full((200, 200), 128, np.uint8)
    pts = draw_polygon(img, np.random.default_rng(3), {})
    ref = np.zeros_like(img)
    cv2.fillPoly(ref, [np.round(pts).astype(np.int32)], 1)
    assert len(pts) >= 3
    inside = img[ref > 0]
    assert np.all(inside == inside[0]) and abs(int(inside[0]) - 128) >= 30
    assert np.all(img[ref == 0] == 128)


def test_shapes_are_deterministic_and_cover_all_primitives():
    conf = {"seed": 3, "generation": SMALL, "augmentation": {"enable": False}}
    a = SyntheticShapes(conf, "training", size=40)
    b = SyntheticShapes(conf, "training", size=40)
    for i in (0, 7, 39):
        np.testing.assert_array_equal(a.raw(i).image, b.raw(i).image)
        np.testing.assert_array_equal(a.raw(i).points, b.raw(i).points)
    assert not np.array_equal(a.raw(0).image, a.raw(1).image)
    c = SyntheticShapes({**conf, "seed": 4}, "training", size=40)
    assert not np.array_equal(a.raw(0).image, c.raw(0).image)
    seen = {a.raw(i).primitive for i in range(40)}
    assert len(seen) >= 6
    assert set(seen) <= set(PRIMITIVES)


def test_shapes_cache_roundtrip(tmp_path):
    conf = {"seed": 0, "generation": SMALL, "cache_dir": str(tmp_path)}
    a = SyntheticShapes(conf, "training", size=4)
    s0 = a.raw(2)
    assert (tmp_path / "training" / "0000002.npz").is_file()
    s1 = SyntheticShapes(conf, "training", size=4).raw(2)
    np.testing.assert_array_equal(s0.image, s1.image)
    np.testing.assert_array_equal(s0.points, s1.points)


def test_augmented_item_keypoints_follow_the_warp():
    conf = {"seed": 1, "generation": SMALL,
            "augmentation": {"enable": True, "photometric": {"enable": False},
                             "homographic": {"enable": True, "valid_border_margin": 2,
                                             "params": {"patch_ratio": 0.8, "max_angle": 1.0,
                                                        "allow_artifacts": True}}}}
    ds = SyntheticShapes(conf, "training", size=16)
    item = ds[5]
    img = item["image"][0].numpy()
    kmap = item["keypoint_map"].numpy()
    assert img.shape == (120, 160) and kmap.shape == (120, 160)
    assert 0.0 <= img.min() and img.max() <= 1.0
    # the mask marks where the warp read the source; keypoints only inside it
    assert set(np.unique(item["valid_mask"].numpy())) <= {0.0, 1.0}
    ys, xs = np.nonzero(kmap)
    if len(ys):
        R = _harris_at((img * 255).astype(np.uint8), np.stack([xs, ys], 1).astype(np.float32))
        assert (R > 0.01).mean() >= 0.6


# ----------------------------------------------------------------------------- homographies
def _corners_source(hs, shape):
    h, w = shape
    pts1 = hs.corners_warped * [w, h]
    return warp_points(pts1, np.linalg.inv(hs.H)) / np.array([w, h], np.float32)


@pytest.mark.parametrize("seed", range(20))
def test_homography_bounds_without_artifacts(seed):
    rng = np.random.default_rng(seed)
    shape = (120, 160)
    hs = sample_homography(shape, rng, patch_ratio=0.6, perspective_amplitude_x=0.3,
                           perspective_amplitude_y=0.3, scaling_amplitude=0.3, max_angle=0.5,
                           allow_artifacts=False)
    src = _corners_source(hs, shape)
    # the patch corners read only inside the source image
    assert (src >= -1e-6).all() and (src <= 1 + 1e-6).all()
    assert abs(hs.angle) <= 0.5 + 1e-9


@pytest.mark.parametrize("seed", range(10))
def test_homography_rotation_only_is_a_rotation_within_max_angle(seed):
    rng = np.random.default_rng(seed)
    shape = (100, 100)
    hs = sample_homography(shape, rng, translation=False, scaling=False, perspective=False,
                           rotation=True, max_angle=0.4, allow_artifacts=True)
    H = hs.H / hs.H[2, 2]
    A = H[:2, :2]
    # pure rotation about the patch centre: orthonormal, det 1, no projective part
    np.testing.assert_allclose(A @ A.T, np.eye(2), atol=1e-6)
    np.testing.assert_allclose(H[2, :2], 0, atol=1e-9)
    angle = abs(math.atan2(A[1, 0], A[0, 0]))
    assert angle <= 0.4 + 1e-6
    # with artifacts allowed, the identity (angle 0) is never picked
    assert angle > 1e-6
    np.testing.assert_allclose(warp_points(np.array([[50.0, 50.0]]), H), [[50.0, 50.0]], atol=1e-4)


def test_homography_perspective_amplitude_bound():
    # perspective alone: corner displacement <= 2 std of the truncated normal = amplitude
    shape = (100, 100)
    for seed in range(30):
        hs = sample_homography(shape, np.random.default_rng(seed), translation=False,
                               rotation=False, scaling=False, perspective=True, patch_ratio=0.5,
                               perspective_amplitude_x=0.2, perspective_amplitude_y=0.2,
                               allow_artifacts=False)
        d = np.abs(_corners_source(hs, shape) - hs.corners_warped)
        assert d.max() <= 0.25 + 1e-5  # clamped to the margin (1 - 0.5) / 2 when no artifacts


def _former_homography_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The corner solve as a least-squares DLT (float64, h33 = 1): an independent statement."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        a.append([x, y, 1, 0, 0, 0, -x * u, -y * u])
        a.append([0, 0, 0, x, y, 1, -x * v, -y * v])
        b.extend([u, v])
    h, *_ = np.linalg.lstsq(np.asarray(a), np.asarray(b), rcond=None)
    return np.append(h, 1.0).reshape(3, 3)


def _former_warp_points(points: np.ndarray, H: np.ndarray) -> np.ndarray:
    """The point warp as it was written by hand before ``cv2.perspectiveTransform`` replaced it."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    hom = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ np.asarray(H, np.float64).T
    return (hom[:, :2] / hom[:, 2:3]).astype(np.float32)


@pytest.mark.parametrize("artifacts", [False, True])
def test_corner_solve_and_point_warp_equal_the_former_formulas(artifacts):
    rng = np.random.default_rng(7)
    for seed in range(20):
        hs = sample_homography((120, 160), np.random.default_rng(seed), patch_ratio=0.7,
                               allow_artifacts=artifacts)
        src, dst = hs.corners_warped * [160, 120], hs.corners_source * [160, 120]
        ref = _former_homography_from_points(src, dst)
        np.testing.assert_allclose(homography_from_corners(src, dst), ref, rtol=1e-8, atol=1e-9)
        kornia_h = get_perspective_transform(torch.from_numpy(src)[None],
                                             torch.from_numpy(dst)[None])[0].numpy()
        np.testing.assert_allclose(homography_from_corners(src, dst), kornia_h, rtol=1e-8,
                                   atol=1e-9)
        pts = rng.uniform(-20, 180, (50, 2))
        np.testing.assert_array_equal(warp_points(pts, hs.H), _former_warp_points(pts, hs.H))
    assert warp_points(np.zeros((0, 2)), np.eye(3)).shape == (0, 2)
    # the one difference: a point H sends to infinity (w = 0) is (0, 0) now, was inf
    H = np.array([[1.0, 0, 0], [0, 1, 0], [0.01, 0, -1]])
    np.testing.assert_array_equal(warp_points(np.array([[100.0, 5.0]]), H), [[0.0, 0.0]])
    with np.errstate(divide="ignore"):
        assert np.isinf(_former_warp_points(np.array([[100.0, 5.0]]), H)).all()


def test_homography_maps_points_like_cv2_warp():
    shape = (120, 160)
    hs = sample_homography(shape, np.random.default_rng(5), patch_ratio=0.8, max_angle=0.6)
    img = np.zeros(shape, np.float32)
    pts = np.array([[40.0, 30.0], [100.0, 60.0], [70.0, 90.0]])
    for x, y in pts:
        img[int(y), int(x)] = 1.0
    img = cv2.GaussianBlur(img, (0, 0), 2.0)
    warped = warp_image(img, hs.H)
    expected = warp_points(pts, hs.H)
    for e in expected:
        xi, yi = int(round(e[0])), int(round(e[1]))
        win = warped[yi - 6:yi + 7, xi - 6:xi + 7]
        dy, dx = np.unravel_index(np.argmax(win), win.shape)
        assert abs(xi - 6 + dx - e[0]) <= 1.0 and abs(yi - 6 + dy - e[1]) <= 1.0


@pytest.mark.parametrize("radius", [0, 2, 3])
def test_valid_mask_is_exactly_the_eroded_valid_region(radius):
    shape = (48, 64)
    hs = sample_homography(shape, np.random.default_rng(2), patch_ratio=0.7, max_angle=0.8,
                           allow_artifacts=True)
    mask = compute_valid_mask(shape, hs.H, radius)
    h, w = shape
    # independent: a warped pixel is valid iff its source position (nearest) is in the image
    ys, xs = np.mgrid[0:h, 0:w]
    src = warp_points(np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64),
                      np.linalg.inv(hs.H)).reshape(h, w, 2)
    valid = (np.floor(src[..., 0] + 0.5) >= 0) & (np.floor(src[..., 0] + 0.5) <= w - 1) & \
            (np.floor(src[..., 1] + 0.5) >= 0) & (np.floor(src[..., 1] + 0.5) <= h - 1)
    if radius:
        k = erosion_kernel(radius).astype(bool)
        kh, kw = k.shape
        ay, ax = kh // 2, kw // 2
        pad = np.pad(valid, ((ay, kh), (ax, kw)), constant_values=True)
        er = np.ones_like(valid)
        for dy in range(kh):
            for dx in range(kw):
                if k[dy, dx]:
                    er &= pad[dy:dy + h, dx:dx + w]
        valid = er
    # rounding on exact half-pixel boundaries may differ: allow a handful of pixels
    assert (mask.astype(bool) != valid).sum() <= 0.01 * valid.size
    assert mask.sum() > 0.2 * valid.size and (mask == 0).any()


def test_identity_mask_is_full():
    assert compute_valid_mask((30, 40), np.eye(3), 3).min() == 1.0


# ----------------------------------------------------------------------------- photometric
def test_speckle_noise_sets_only_extremes():
    img = np.full((50, 50), 100.0, np.float32)
    out = additive_speckle_noise(img, np.random.default_rng(0), (0.05, 0.05))
    changed = out != 100.0
    assert set(np.unique(out[changed])) <= {0.0, 255.0}
    assert 0.05 < changed.mean() < 0.15  # ~2 x 5 %


def test_contrast_keeps_mean_and_scales_deviation():
    img = np.linspace(50, 150, 100, dtype=np.float32).reshape(10, 10)
    out = random_contrast(img, np.random.default_rng(1), (1.5, 1.5))
    np.testing.assert_allclose(out.mean(), img.mean(), atol=1e-3)
    np.testing.assert_allclose(out.std(), 1.5 * img.std(), rtol=1e-4)


def test_motion_blur_preserves_mean_and_augmentation_stays_in_range():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (40, 40)).astype(np.float32)
    out = motion_blur(img, np.random.default_rng(3), 7)
    assert abs(out[10:-10, 10:-10].mean() - img[10:-10, 10:-10].mean()) < 5
    aug = photometric_augmentation(img, np.random.default_rng(4), {
        "params": {"additive_shade": {"kernel_size_range": [5, 15]}}})
    assert aug.shape == img.shape and aug.min() >= 0 and aug.max() <= 255
    again = photometric_augmentation(img, np.random.default_rng(4), {
        "params": {"additive_shade": {"kernel_size_range": [5, 15]}}})
    np.testing.assert_array_equal(aug, again)


# ----------------------------------------------------------------------------- image folder
def test_resize_crop_preserves_ratio_and_maps_points(tmp_path):
    img = np.zeros((100, 300), np.uint8)
    cv2.circle(img, (150, 50), 4, 255, -1)  # centre dot
    cv2.circle(img, (120, 20), 3, 255, -1)
    out, T = resize_crop(img, (60, 80))
    assert out.shape == (60, 80)
    # scale = max(60/100, 80/300) = 0.6 -> 60x180, centre crop 80 wide
    for (x, y) in [(150, 50), (120, 20)]:
        e = T @ np.array([x, y, 1.0])
        ys, xs = np.nonzero(out > 100)
        near = (np.abs(xs - e[0]) < 4) & (np.abs(ys - e[1]) < 4)
        assert near.any()
        assert abs(xs[near].mean() - e[0]) < 1.0 and abs(ys[near].mean() - e[1]) < 1.0
    cv2.imwrite(str(tmp_path / "a.png"), img)
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "b.jpg"), img)
    ds = ImageFolder({"image_dirs": [str(tmp_path)], "resize": [60, 80]})
    assert len(ds) == 2 and ds[0]["image"].shape == (1, 60, 80)
    assert isinstance(ds[0]["image"], torch.Tensor)


def test_edge_like_labels_can_be_dropped(tmp_path):
    """``label_min_cornerness`` keeps HA labels on corners and drops those along straight edges
    (structure-tensor eigenvalue ratio), and keeps everything at its default 0."""
    import cv2

    from local_features_ros_training.data.cornerness import structure_tensor_ratio
    from local_features_ros_training.data.image_folder import ImageFolder

    img = np.zeros((64, 64), np.uint8)
    img[16:48, 16:48] = 200
    (tmp_path / "im").mkdir()
    (tmp_path / "lab").mkdir()
    cv2.imwrite(str(tmp_path / "im" / "a.png"), img)
    rc = np.array([[16, 16], [16, 32], [47, 47], [32, 47]], np.float32)  # (row, col)
    np.savez(tmp_path / "lab" / "a.npz", points=rc, prob=np.ones(4, np.float32))
    ratio = structure_tensor_ratio(img, rc[:, ::-1])
    assert ratio[0] > 0.5 and ratio[2] > 0.5 and ratio[1] < 0.1 and ratio[3] < 0.1
    conf = {"image_dirs": [str(tmp_path / "im")], "labels_dir": str(tmp_path / "lab"),
            "resize": [64, 64]}
    _, pts = ImageFolder(conf).load(0)
    assert len(pts) == 4
    _, pts = ImageFolder({**conf, "label_min_cornerness": 0.1}).load(0)
    assert sorted(map(tuple, pts.tolist())) == [(16.0, 16.0), (47.0, 47.0)]  # the two corners
    assert len(structure_tensor_ratio(img, np.zeros((0, 2)))) == 0


def test_label_top_k_keeps_the_strongest_labels(tmp_path):
    """``label_top_k`` keeps the k labels with the highest export score (``prob``), whatever
    their order in the file; 0 keeps all; a label file without scores is refused."""
    import cv2

    from local_features_ros_training.data.image_folder import ImageFolder

    (tmp_path / "im").mkdir()
    (tmp_path / "lab").mkdir()
    cv2.imwrite(str(tmp_path / "im" / "a.png"), np.full((40, 40), 90, np.uint8))
    rc = np.array([[5, 5], [10, 20], [30, 30], [20, 8]], np.float32)  # (row, col)
    np.savez(tmp_path / "lab" / "a.npz", points=rc, prob=np.array([0.2, 0.9, 0.1, 0.5], np.float32))
    conf = {"image_dirs": [str(tmp_path / "im")], "labels_dir": str(tmp_path / "lab"),
            "resize": [40, 40]}
    assert len(ImageFolder(conf).load(0)[1]) == 4
    _, pts = ImageFolder({**conf, "label_top_k": 2}).load(0)
    assert pts.tolist() == [[20.0, 10.0], [8.0, 20.0]]  # (x, y) of prob 0.9 and 0.5
    np.savez(tmp_path / "lab" / "a.npz", points=rc)
    with pytest.raises(ValueError, match="prob"):
        ImageFolder({**conf, "label_top_k": 2}).load(0)
    with pytest.raises(ValueError, match="label_top_k"):
        ImageFolder({**conf, "label_top_k": -1})
