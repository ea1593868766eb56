"""Geometric training data: COLMAP reading, scene index, pairs/crops/warps, bags -> scenes."""

from __future__ import annotations

import math
import shutil

import cv2
import numpy as np
import pytest
import torch

from local_features_ros.geometry import rotation_error_deg
from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene, look_at
from local_features_ros_training.sfm.colmap import ColmapModelError, read_colmap_model, write_colmap_text
from local_features_ros_training.sfm.from_bag import BagSceneOptions, bag_to_scene, interpolate_poses
from local_features_ros_training.sfm.pairs import (GeometricPairs, rotate_scale_view, sample_pairs, warp_depth,
                                warp_pixels_np)
from local_features_ros_training.sfm.render import render_scene
from local_features_ros_training.sfm.scene_index import (SceneError, SceneIndex, index_from_model,
                                      read_megadepth_scene)


def _project(K, T_cam_world, X):
    Xc = T_cam_world[:3, :3] @ X.T + T_cam_world[:3, 3:4]
    with np.errstate(divide="ignore", invalid="ignore"):  # points in the camera plane
        p = K @ (Xc / Xc[2])
    return p[:2].T, Xc[2]


# ----------------------------------------------------------------------------------- warping
def test_warp_lands_where_renderer_projects_surface_points():
    cam = PinholeCamera.default(160, 120)
    scene = SyntheticScene(seed=3, camera=cam)
    T0 = look_at(np.array([3.0, 0.2, 1.5]), np.array([0.0, 0.0, 0.6]))
    T1 = look_at(np.array([2.7, 1.3, 1.6]), np.array([0.0, 0.0, 0.6]))
    f0, f1 = scene.render(T0), scene.render(T1)
    P0, P1 = np.linalg.inv(T0), np.linalg.inv(T1)
    rng = np.random.default_rng(0)
    # independent 3D points: random positions on the scene's rectangles (not from any depth map)
    pts, fids = [], []
    for _ in range(4000):
        k = int(rng.integers(len(scene.faces)))
        f = scene.faces[k]
        pts.append(f.origin + rng.uniform(0, f.size_u) * f.u_dir + rng.uniform(0, f.size_v) * f.v_dir)
        fids.append(k)
    X, fids = np.array(pts), np.array(fids)
    p0, z0 = _project(cam.K, P0, X)
    p1, z1 = _project(cam.K, P1, X)
    inside = lambda p, z: (z > 0.1) & (p[:, 0] > 1) & (p[:, 0] < 158) & (p[:, 1] > 1) & (p[:, 1] < 118)  # noqa: E731
    ok = inside(p0, z0) & inside(p1, z1)
    r0 = np.rint(p0[ok]).astype(int)
    r1 = np.rint(p1[ok]).astype(int)
    vis0 = f0.face_ids[r0[:, 1], r0[:, 0]] == fids[ok]
    vis1 = f1.face_ids[r1[:, 1], r1[:, 0]] == fids[ok]
    warped, valid = warp_pixels_np(p0[ok], f0.depth, cam.K, P0, f1.depth, cam.K, P1,
                                   depth_tol=0.02, relative_tol=True)
    both = vis0 & vis1
    assert both.sum() > 100
    err = np.linalg.norm(warped[both & valid] - p1[ok][both & valid], axis=1)
    assert (both & valid).sum() > 0.8 * both.sum()
    assert np.median(err) < 0.05 and np.percentile(err, 95) < 0.3
    # occluded in view 1 (another face in front): the depth-consistency check must reject it
    occluded = vis0 & ~vis1 & (f1.depth[r1[:, 1], r1[:, 0]] > 0) \
        & (f1.depth[r1[:, 1], r1[:, 0]] < 0.9 * z1[ok])
    if occluded.sum():
        assert valid[occluded].mean() < 0.05


def test_crop_offsets_keep_geometry(tmp_path):
    r = render_scene(tmp_path / "s", n_frames=3, width=160, height=120, write_bag=False)
    idx = r.index
    d0, d1 = idx.load_depth(0), idx.load_depth(2)
    K0, K1, P0, P1 = idx.intrinsics[0], idx.intrinsics[2], idx.poses[0], idx.poses[2]
    pts = np.array([[40.0, 30.0], [100.5, 70.25], [120.0, 90.0]])
    full, v_full = warp_pixels_np(pts, d0, K0, P0, d1, K1, P1)
    t = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    b0, b1 = (13, 21), (7, 30)
    crop0, crop1 = d0[b0[0]:, b0[1]:], d1[b1[0]:, b1[1]:]
    pos = torch.from_numpy(np.stack([pts[:, 1] - b0[0], pts[:, 0] - b0[1]]))
    _, pos2, ids = warp_depth(pos, t(crop0), t(K0), t(P0), t(b0), t(crop1), t(K1), t(P1), t(b1))
    assert ids.tolist() == np.flatnonzero(v_full).tolist()
    np.testing.assert_allclose(pos2.numpy()[1] + b1[1], full[v_full, 0], atol=1e-6)
    np.testing.assert_allclose(pos2.numpy()[0] + b1[0], full[v_full, 1], atol=1e-6)


def test_euclidean_augmentation_is_a_camera_change(tmp_path):
    r = render_scene(tmp_path / "s", n_frames=2, width=160, height=120, write_bag=False)
    idx = r.index
    img, dep = idx.load_image(1), idx.load_depth(1)
    img2, dep2, K2, P2 = rotate_scale_view(img, dep, idx.intrinsics[1], idx.poses[1],
                                           math.radians(40.0), 1.3)
    # the augmented view is exactly what the renderer gives for the rolled / zoomed camera
    c = idx.intrinsics[1]
    cam = PinholeCamera(fx=c[0, 0] * 1.3, fy=c[1, 1] * 1.3, cx=c[0, 2], cy=c[1, 2], width=160,
                        height=120)
    ref = SyntheticScene(seed=0, camera=cam).render(np.linalg.inv(P2))
    m = (dep2 > 0) & (ref.depth > 0)
    m = cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert m.mean() > 0.5
    np.testing.assert_allclose(K2, cam.K, atol=1e-9)
    rel = np.abs(dep2[m] - ref.depth[m]) / ref.depth[m]  # nearest resampling: ~1 px slack
    assert np.median(rel) < 0.01 and np.percentile(rel, 90) < 0.03
    diff = np.abs(img2.astype(float) - ref.image.astype(float))[m]
    assert np.median(diff) < 12


# ------------------------------------------------------------------------ overlap / scale
def _plane_model(tmp_path):
    """Camera A 10 m from a point grid, B on the same axis 20 m away, C turned 90 degrees."""
    K = np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]])
    xs, ys = np.meshgrid(np.linspace(-12, 12, 25), np.linspace(-9, 9, 19))
    X = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 10.0)], 1)
    A = np.eye(4)
    B = np.eye(4)
    B[2, 3] = 10.0  # world -> camera: camera centre at z = -10
    C = np.eye(4)
    C[:3, :3] = np.array([[0, 0, -1.0], [0, 1, 0], [1, 0, 0]])  # looks along world -x
    C[:3, 3] = [0, 0, 0]
    images, seen = [], []
    for name, P in (("a.png", A), ("b.png", B), ("c.png", C)):
        p, z = _project(K, P, X)
        vis = (z > 0) & (p[:, 0] >= 0) & (p[:, 0] <= 159) & (p[:, 1] >= 0) & (p[:, 1] <= 119)
        images.append((name, 1, P, p[vis], np.flatnonzero(vis) + 1))
        seen.append(set(np.flatnonzero(vis) + 1))
    points = {i + 1: X[i] for i in range(len(X))}
    write_colmap_text(tmp_path / "sparse", [(160, 120, K)], images, points)
    return seen


def test_overlap_and_scale_ratio_known_answers(tmp_path):
    seen = _plane_model(tmp_path)
    model = read_colmap_model(tmp_path / "sparse")
    idx = index_from_model(model, tmp_path / "images")
    a, b, c = 0, 1, 2  # sorted by name
    assert seen[c] == set() and seen[a] < seen[b]
    assert idx.overlap_matrix[a, b] == pytest.approx(1.0)
    assert idx.overlap_matrix[b, a] == pytest.approx(len(seen[a]) / len(seen[b]))
    assert idx.overlap_matrix[a, c] == 0.0 and idx.overlap_matrix[c, a] == -1.0
    assert idx.scale_ratio_matrix[a, b] == pytest.approx(2.0)  # 20 m / 10 m, same focal
    assert idx.scale_ratio_matrix[b, a] == pytest.approx(2.0)
    assert math.isinf(idx.scale_ratio_matrix[a, c])
    assert idx.angles[a, b] == pytest.approx(0.0, abs=1e-6)
    assert idx.angles[a, c] == pytest.approx(90.0)
    # COLMAP (0.5-centred) principal point 80, 60 -> project convention 79.5, 59.5
    np.testing.assert_allclose(idx.intrinsics[0], [[100, 0, 79.5], [0, 100, 59.5], [0, 0, 1]])
    saved = SceneIndex.load(idx.save(tmp_path / "index.npz"))
    np.testing.assert_array_equal(saved.overlap_matrix, idx.overlap_matrix)
    assert saved.image_paths == idx.image_paths
    rng = np.random.default_rng(0)
    pairs = sample_pairs(saved, 20, rng, min_overlap=0.9, require_depth=False)
    assert {tuple(p) for p in pairs} == {(a, b)}
    with pytest.raises(SceneError, match="no pair"):
        sample_pairs(saved, 5, rng, min_overlap=0.5)  # no depth maps at all


def test_megadepth_folder_depth_formats(tmp_path):
    r = render_scene(tmp_path / "r", n_frames=3, width=96, height=72, write_bag=False)
    md = tmp_path / "scene"
    shutil.copytree(r.folder / "images", md / "images")
    shutil.copytree(r.folder / "sparse", md / "sparse" / "manhattan" / "0")
    (md / "depths").mkdir()
    depths = [np.load(r.folder / "depths" / f"frame_{i:04d}.npy") for i in range(3)]
    cv2.imwrite(str(md / "depths" / "frame_0000.png"), np.rint(depths[0] * 1000).astype(np.uint16))
    np.save(md / "depths" / "frame_0001.npy", depths[1])
    import h5py

    with h5py.File(md / "depths" / "frame_0002.h5", "w") as f:  # < 100 KB: a MegaDepth mask
        f.create_dataset("depth", data=depths[2])
    idx = read_megadepth_scene(md)
    assert np.abs(idx.load_depth(0) - depths[0]).max() <= 0.0005 + 1e-6
    np.testing.assert_array_equal(idx.load_depth(1), depths[1])
    assert idx.depth_paths[2] is None
    with pytest.raises(SceneError, match="no depth map"):
        idx.load_depth(2)
    with pytest.raises(SceneError, match="no depth map for frame_0002"):
        read_megadepth_scene(md, require_depth=True)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_models_give_clear_errors(tmp_path):
    with pytest.raises(ColmapModelError, match="not found"):
        read_colmap_model(tmp_path / "nope")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ColmapModelError, match="not a COLMAP model"):
        read_colmap_model(tmp_path / "empty_dir")
    write_colmap_text(tmp_path / "empty", [(10, 10, np.eye(3))], [], {})
    with pytest.raises(ColmapModelError, match="no registered images"):
        read_colmap_model(tmp_path / "empty")
    bad = tmp_path / "corrupt"
    bad.mkdir()
    for f in ("cameras.bin", "images.bin", "points3D.bin"):
        (bad / f).write_bytes(b"\x07garbage")
    with pytest.raises(ColmapModelError, match="cannot read"):
        read_colmap_model(bad)
    (bad / "points3D.bin").unlink()
    with pytest.raises(ColmapModelError, match="missing points3D.bin"):
        read_colmap_model(bad)
    with pytest.raises(SceneError, match="image/pose count mismatch"):
        SceneIndex(root=".", image_paths=["a", "b"], depth_paths=[None, None],
                   intrinsics=np.tile(np.eye(3), (2, 1, 1)), poses=np.tile(np.eye(4), (3, 1, 1)),
                   overlap_matrix=np.zeros((2, 2)), scale_ratio_matrix=np.zeros((2, 2)),
                   angles=np.zeros((2, 2)), n_points3D=np.zeros(2))


# ---------------------------------------------------------------------------------- bags
def test_bag_with_pose_and_depth_topics(tmp_path):
    r = render_scene(tmp_path / "r", n_frames=5, width=96, height=72)
    idx = bag_to_scene(r.bag, tmp_path / "out", BagSceneOptions(
        image_topic="/camera/image_raw", pose_topic="/camera/pose", depth_topic="/camera/depth"))
    assert len(idx) == 5
    np.testing.assert_allclose(idx.poses, r.index.poses, atol=1e-6)
    np.testing.assert_allclose(idx.overlap_matrix, r.index.overlap_matrix, atol=1e-9)
    np.testing.assert_allclose(idx.load_depth(3), r.index.load_depth(3), atol=1e-6)
    with pytest.raises(SceneError, match="need a depth topic"):
        bag_to_scene(r.bag, tmp_path / "out2", BagSceneOptions(image_topic="/camera/image_raw",
                                                               pose_topic="/camera/pose"))


def test_pose_interpolation_midpoint():
    from scipy.spatial.transform import Rotation

    A, B = np.eye(4), np.eye(4)
    B[:3, :3] = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    B[:3, 3] = [2, 0, 0]
    T, ok = interpolate_poses(np.array([0.5, 3.0]), np.array([0.0, 1.0]), np.stack([A, B]), 2.0)
    assert ok.tolist() == [True, False]
    np.testing.assert_allclose(T[0][:3, 3], [1, 0, 0])
    assert rotation_error_deg(T[0][:3, :3], Rotation.from_euler("z", 45, degrees=True).as_matrix()) < 1e-6


def test_sfm_on_bag_recovers_poses_up_to_scale(tmp_path):
    r = render_scene(tmp_path / "r", n_frames=8, width=320, height=240,
                     trajectory_kw={"step_deg": 4})
    idx = bag_to_scene(r.bag, tmp_path / "sfm", BagSceneOptions(image_topic="/camera/image_raw"))
    assert len(idx) >= 7
    gt = {f"frame_{i:05d}.png": np.linalg.inv(T) for i, T in enumerate(r.T_world_cam)}
    names = [p.split("/")[-1] for p in idx.image_paths]
    rot_err, scales = [], []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            R = idx.poses[b][:3, :3] @ idx.poses[a][:3, :3].T
            Rg = gt[names[b]][:3, :3] @ gt[names[a]][:3, :3].T
            rot_err.append(rotation_error_deg(R, Rg))
            # camera centre distances fix the unknown scale; must agree for every pair
            ca = -idx.poses[a][:3, :3].T @ idx.poses[a][:3, 3]
            cb = -idx.poses[b][:3, :3].T @ idx.poses[b][:3, 3]
            ga = -gt[names[a]][:3, :3].T @ gt[names[a]][:3, 3]
            gb = -gt[names[b]][:3, :3].T @ gt[names[b]][:3, 3]
            scales.append(np.linalg.norm(gb - ga) / np.linalg.norm(cb - ca))
    assert max(rot_err) < 1.0
    assert np.std(scales) / np.mean(scales) < 0.02
    # sparse SfM depth: few pixels, but right up to the same scale
    s = float(np.mean(scales))
    k = names.index("frame_00003.png")
    d = idx.load_depth(k)
    g = r.index.load_depth(3)
    m = (d > 0) & (g > 0)
    assert 0.002 < (d > 0).mean() < 0.3
    rel = np.abs(d[m] * s - g[m]) / g[m]
    assert np.median(rel) < 0.02


def test_pairs_dataset_returns_consistent_crops(tmp_path):
    r = render_scene(tmp_path / "r", n_frames=4, width=160, height=120, write_bag=False)
    ds = GeometricPairs([r.index], {"pairs_per_scene": 6, "crop_size": [64, 80], "min_overlap": 0.3})
    item = ds[0]
    assert item["image0"].shape == (3, 64, 80) and item["depth1"].shape == (64, 80)
    # the crop content equals the full image at the bbox offset
    s, i, _ = ds.pairs[0]
    top, left = (int(v) for v in item["bbox0"])
    full = torch.from_numpy(r.index.load_image(i)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(item["image0"], full[:, top:top + 64, left:left + 80])
    ds.set_epoch(1)
    assert len(ds) == 6


def test_rendered_scene_reuse_checks_parameters(tmp_path):
    a = render_scene(tmp_path / "s", n_frames=2, width=64, height=48, write_bag=False)
    b = render_scene(tmp_path / "s", n_frames=2, width=64, height=48, write_bag=False)
    np.testing.assert_array_equal(a.index.poses, b.index.poses)
    with pytest.raises(FileExistsError, match="other parameters"):
        render_scene(tmp_path / "s", n_frames=3, width=64, height=48, write_bag=False)
    c = render_scene(tmp_path / "s", n_frames=3, width=64, height=48, write_bag=False, overwrite=True)
    assert len(c.index) == 3
