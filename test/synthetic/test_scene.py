"""Synthetic scene: exact depth, pose/warp consistency (geometric and photometric), trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from local_features_ros.synthetic.scene import (
    PinholeCamera,
    SyntheticScene,
    look_at,
    relative_pose,
    warp_points_with_depth,
)

CAM = PinholeCamera.default(160, 120)


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene(seed=3, camera=CAM)


def _backproject(frame, px: np.ndarray) -> np.ndarray:
    """World points of integer pixels (independent of warp_points_with_depth)."""
    x, y = px[:, 0], px[:, 1]
    z = frame.depth[y, x].astype(np.float64)
    cam = frame.camera
    pc = np.stack([(x - cam.cx) / cam.fx * z, (y - cam.cy) / cam.fy * z, z], 1)
    return pc @ frame.T_world_cam[:3, :3].T + frame.T_world_cam[:3, 3]


def _bilinear(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    x0 = np.floor(pts[:, 0]).astype(int)
    y0 = np.floor(pts[:, 1]).astype(int)
    ax, ay = (pts[:, 0] - x0)[:, None], (pts[:, 1] - y0)[:, None]
    f = img.astype(np.float64)
    return ((1 - ax) * (1 - ay) * f[y0, x0] + ax * (1 - ay) * f[y0, x0 + 1]
            + (1 - ax) * ay * f[y0 + 1, x0] + ax * ay * f[y0 + 1, x0 + 1])


def test_default_camera():
    c = PinholeCamera.default(320, 240)
    assert c.fx == c.fy == 256.0 and (c.cx, c.cy) == (159.5, 119.5)
    assert c.K.dtype == np.float64 and c.K[0, 2] == 159.5 and c.K[2, 2] == 1.0


def test_depth_is_exact_on_the_hit_face(scene):
    T = scene.trajectory(1, "orbit", start_deg=40.0)[0]
    fr = scene.render(T)
    assert fr.image.shape == (120, 160, 3) and fr.image.dtype == np.uint8
    assert fr.depth.dtype == np.float32 and np.all(fr.depth > 0)  # closed room: every ray hits
    ys, xs = np.mgrid[0:120:3, 0:160:3]
    px = np.stack([xs.ravel(), ys.ravel()], 1)
    pw = _backproject(fr, px)
    fid = fr.face_ids[px[:, 1], px[:, 0]]
    on_face = np.array([scene.faces[f].contains(p[None], tol=2e-5 * fr.depth.max())[0]
                        for f, p in zip(fid, pw)])
    assert on_face.all()
    # Independent check for the floor: z = 0 in the world, and it is seen from above.
    floor = np.array([scene.faces[f].name == "floor" for f in fid])
    assert floor.sum() > 50
    np.testing.assert_allclose(pw[floor, 2], 0.0, atol=1e-5)
    # The hit is the *nearest* surface: no other face intersects the ray segment before it.
    centre = T[:3, 3]
    for p, f in list(zip(pw, fid))[::25]:
        for g, face in enumerate(scene.faces):
            if g == f:
                continue
            n = face.normal
            d = p - centre
            den = n @ d
            if abs(den) < 1e-12:
                continue
            s = n @ (face.origin - centre) / den
            if 1e-6 < s < 1 - 1e-6:
                q = centre + s * d - face.origin
                a, b = q @ face.u_dir, q @ face.v_dir
                assert not (0 < a < face.size_u and 0 < b < face.size_v)


def test_warp_geometry_round_trip(scene):
    T0, T1 = scene.trajectory(2, "orbit", step_deg=5.0)
    f0, f1 = scene.render(T0), scene.render(T1)
    rng = np.random.default_rng(0)
    k0 = rng.uniform(2, [157, 117], (400, 2))
    T10 = relative_pose(T0, T1)
    k1, valid = warp_points_with_depth(k0, f0.depth, CAM.K, CAM.K, T10, depth1=f1.depth)
    assert valid.mean() > 0.6
    # Independent path: world point from frame 0 (exact plane intersection of the ray with the
    # face the renderer hit), projected into camera 1 through T_world_cam1.
    fid = f0.face_ids[np.rint(k0[:, 1]).astype(int), np.rint(k0[:, 0]).astype(int)]
    c0 = T0[:3, 3]
    rays = np.stack([(k0[:, 0] - CAM.cx) / CAM.fx, (k0[:, 1] - CAM.cy) / CAM.fy, np.ones(400)], 1)
    rw = rays @ T0[:3, :3].T
    errs = []
    for i in np.flatnonzero(valid):
        face = scene.faces[fid[i]]
        s = face.normal @ (face.origin - c0) / (face.normal @ rw[i])
        pw = c0 + s * rw[i]
        if not face.contains(pw[None], tol=1e-9)[0]:
            continue  # sub-pixel point on a neighbouring face (depth edge)
        pc1 = np.linalg.inv(T1)[:3] @ np.append(pw, 1.0)
        proj = CAM.K @ (pc1 / pc1[2])
        errs.append(np.linalg.norm(proj[:2] - k1[i]))
    errs = np.array(errs)
    assert len(errs) > 200
    # Bilinear inverse depth is exact on planes: only points straddling a depth edge are off.
    assert np.median(errs) < 1e-3 and np.mean(errs < 0.05) > 0.95
    # Round trip 0 -> 1 -> 0 with depth1.
    k0b, valid_b = warp_points_with_depth(k1[valid], f1.depth, CAM.K, CAM.K, relative_pose(T1, T0))
    back = np.linalg.norm(k0b - k0[valid], axis=1)
    assert np.median(back[valid_b]) < 1e-3


def test_warp_photometric_consistency(scene):
    T0, T1 = scene.trajectory(2, "forward", step=0.2)
    f0, f1 = scene.render(T0), scene.render(T1)
    ys, xs = np.mgrid[4:116:4, 4:156:4]
    k0 = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    k1, valid = warp_points_with_depth(k0, f0.depth, CAM.K, CAM.K, relative_pose(T0, T1),
                                       depth1=f1.depth)
    valid &= (k1[:, 0] > 1) & (k1[:, 0] < 158) & (k1[:, 1] > 1) & (k1[:, 1] < 118)
    assert valid.sum() > 500
    c0 = f0.image[k0[valid, 1].astype(int), k0[valid, 0].astype(int)].astype(np.float64)
    c1 = _bilinear(f1.image, k1[valid])
    diff = np.abs(c0 - c1).mean(1)
    # Wrong correspondences (the same points shifted by 3 px) must be clearly worse.
    c1_wrong = _bilinear(f1.image, np.clip(k1[valid] + [3.0, 0.0], 1, [158, 118]))
    diff_wrong = np.abs(c0 - c1_wrong).mean(1)
    assert np.median(diff) < 8.0, np.median(diff)
    assert np.median(diff_wrong) > 2.5 * np.median(diff)


@pytest.mark.parametrize("kind", ["orbit", "forward", "revisit"])
def test_trajectories_valid(scene, kind):
    n = 120 if kind == "revisit" else 24  # revisit spreads one whole loop over n frames
    poses = scene.trajectory(n, kind)
    assert len(poses) == n
    for T in poses:
        R = T[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_array_equal(T[3], [0, 0, 0, 1])
        assert abs(T[0, 3]) < 6.0 and abs(T[1, 3]) < 4.0 and 0 < T[2, 3] < 3.0  # inside the room
    steps = [np.linalg.norm(b[:3, 3] - a[:3, 3]) for a, b in zip(poses, poses[1:])]
    assert 0.01 < min(steps) and max(steps) < 0.5  # smooth enough for frame-to-frame matching
    fr = scene.render(poses[5])
    assert fr.depth.min() > 0.3  # never inside or touching a box/wall
    if kind == "revisit":
        assert np.linalg.norm(poses[-1][:3, 3] - poses[0][:3, 3]) < 1.2 * max(steps)
        Rrel = poses[-1][:3, :3].T @ poses[0][:3, :3]
        assert np.degrees(np.arccos(np.clip((np.trace(Rrel) - 1) / 2, -1, 1))) < 20
        mid = poses[n // 2]
        assert np.linalg.norm(mid[:3, 3] - poses[0][:3, 3]) > 4.0  # it really goes away first
    if kind == "orbit":  # the optical axis passes through the target
        T = poses[7]
        to_target = np.array([0.0, 0.0, 0.6]) - T[:3, 3]
        assert np.linalg.norm(np.cross(T[:3, 2], to_target / np.linalg.norm(to_target))) < 1e-9


def test_look_at_and_relative_pose():
    T0 = look_at(np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 1.0]))
    # Looking along +x with z up: camera x (right) = -y world, camera y (down) = -z world.
    np.testing.assert_allclose(T0[:3, :3], [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    T1 = T0.copy()
    T1[:3, 3] += [0.5, 0.0, 0.0]  # moved 0.5 m forward
    T10 = relative_pose(T0, T1)
    np.testing.assert_allclose(T10[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(T10[:3, 3], [0, 0, -0.5], atol=1e-12)  # points come closer


def test_deterministic_by_seed_and_noise():
    T = SyntheticScene(seed=5, camera=CAM).trajectory(1)[0]
    a = SyntheticScene(seed=5, camera=CAM).render(T).image
    b = SyntheticScene(seed=5, camera=CAM).render(T).image
    c = SyntheticScene(seed=6, camera=CAM).render(T).image
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 20
    noisy = SyntheticScene(seed=5, camera=CAM, noise_std=4.0)
    n1, n2 = noisy.render(T, index=1).image, noisy.render(T, index=1).image
    n3 = noisy.render(T, index=2).image
    np.testing.assert_array_equal(n1, n2)
    d = n1.astype(float) - a
    assert 3.0 < d.std() < 5.0 and np.abs(n3.astype(float) - n1).mean() > 1.0


def test_frames_stamps_and_texture(scene):
    frames = list(scene.frames(3, "forward", fps=5.0))
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.stamp for f in frames] == pytest.approx([0.0, 0.2, 0.4])
    # Feature-rich: plenty of strong corners for classical detectors.
    import cv2

    corners = cv2.goodFeaturesToTrack(frames[0].gray, 500, 0.01, 3)
    assert corners is not None and len(corners) > 150


def test_bad_trajectory_arguments(scene):
    with pytest.raises(ValueError, match="unknown trajectory kind"):
        scene.trajectory(3, "spiral")
    with pytest.raises(ValueError, match="step_deg"):
        scene.trajectory(3, "forward", step_deg=2.0)  # an orbit option
    assert scene.trajectory(0) == []
