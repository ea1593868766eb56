"""Rendered stereo and RGB-D sequences with exact poses, and writers for the on-disk layouts.

Why: the tests and the benchmark need sequences whose true trajectory is known exactly and which
exercise the same loaders as real data (``datasets.load_stereo_folder`` /
``load_rgbd_folder``). Frames come from ``synthetic.scene.SyntheticScene``; the ground truth is
re-expressed with the first camera as the world, as the odometry reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..synthetic.scene import PinholeCamera, SyntheticScene
from .camera import RectifiedCamera
from .datasets import relative_to_first

__all__ = ["SyntheticSequence", "stereo_sequence", "rgbd_sequence", "turn_trajectory",
           "write_kitti_stereo", "write_tum_rgbd"]


@dataclass
class SyntheticSequence:
    """``first`` / ``second``: left and right images (stereo) or RGB and float depth in
    metres (RGB-D); ``poses``: true ``T_world_cam`` of the left/colour camera, world = first
    camera; ``baseline``: the stereo baseline (RGB-D: 0)."""

    first: list[np.ndarray]
    second: list[np.ndarray]
    stamps: list[float]
    poses: list[np.ndarray]
    camera: RectifiedCamera
    baseline: float

    def __len__(self) -> int:
        return len(self.first)

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
        """``(image, second image or depth, stamp)`` per frame, what ``process`` takes."""
        return iter(zip(self.first, self.second, self.stamps))


def turn_trajectory(scene: SyntheticScene, n: int, turn_deg: float) -> list[np.ndarray]:
    """``n`` poses along the start of the scene's ``revisit`` ellipse, turning ``turn_deg``
    degrees in total (a sustained turn: the heading changes at a steady rate)."""
    if not 0 < turn_deg < 360:
        raise ValueError("turn_deg must be in (0, 360)")
    total = int(round((n - 1) * 360.0 / turn_deg)) + 1
    return scene.trajectory(total, "revisit")[:n]


def _scene(seed: int, width: int, height: int, noise_std: float) -> SyntheticScene:
    return SyntheticScene(seed, camera=PinholeCamera.default(width, height), noise_std=noise_std)


def _rectified(cam: PinholeCamera, baseline: float) -> RectifiedCamera:
    return RectifiedCamera(cam.fx, cam.fy, cam.cx, cam.cy, baseline, cam.width, cam.height)


def stereo_sequence(n: int = 30, baseline: float = 0.2, width: int = 320, height: int = 240,
                    seed: int = 0, kind: str = "forward", turn_deg: float = 98.0,
                    noise_std: float = 0.0, fps: float = 10.0) -> SyntheticSequence:
    """A rendered rectified stereo sequence (``kind``: ``forward`` walk, or ``turn``: a
    sustained turn of ``turn_deg`` degrees); gray uint8 images."""
    scene = _scene(seed, width, height, noise_std)
    poses = (turn_trajectory(scene, n, turn_deg) if kind == "turn"
             else scene.trajectory(n, kind))
    left, right = [], []
    for k, T in enumerate(poses):
        lf, rf = scene.render_stereo(T, baseline, index=k, stamp=k / fps)
        left.append(lf.gray)
        right.append(rf.gray)
    return SyntheticSequence(left, right, [k / fps for k in range(n)], relative_to_first(poses),
                             _rectified(scene.camera, baseline), baseline)


def rgbd_sequence(n: int = 30, width: int = 320, height: int = 240, seed: int = 0,
                  kind: str = "forward", turn_deg: float = 98.0, noise_std: float = 0.0,
                  fps: float = 10.0) -> SyntheticSequence:
    """A rendered RGB-D sequence: RGB uint8 and exact float32 z-depth (0 = no surface)."""
    scene = _scene(seed, width, height, noise_std)
    poses = (turn_trajectory(scene, n, turn_deg) if kind == "turn"
             else scene.trajectory(n, kind))
    rgb, depth = [], []
    for k, T in enumerate(poses):
        f = scene.render(T, index=k, stamp=k / fps)
        rgb.append(f.image)
        depth.append(f.depth)
    return SyntheticSequence(rgb, depth, [k / fps for k in range(n)], relative_to_first(poses),
                             _rectified(scene.camera, 1.0), 0.0)


def _pose_line(T: np.ndarray) -> str:
    return " ".join(f"{v:.9e}" for v in np.asarray(T, float)[:3].reshape(-1))


def write_kitti_stereo(seq: SyntheticSequence, root: Path) -> Path:
    """KITTI layout: ``image_l/``, ``image_r/`` (``%06d.png``), ``calib.txt`` (P0/P1 rows),
    ``times.txt`` and ``poses.txt``."""
    root = Path(root)
    for d in ("image_l", "image_r"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for k, (a, b) in enumerate(zip(seq.first, seq.second)):
        cv2.imwrite(str(root / "image_l" / f"{k:06d}.png"), a)
        cv2.imwrite(str(root / "image_r" / f"{k:06d}.png"), b)
    c = seq.camera
    rows = []
    for tx in (0.0, -c.fx * seq.baseline):
        P = np.array([[c.fx, 0, c.cx, tx], [0, c.fy, c.cy, 0], [0, 0, 1, 0]], float)
        rows.append(" ".join(f"{v:.12e}" for v in P.reshape(-1)))
    (root / "calib.txt").write_text(f"P0: {rows[0]}\nP1: {rows[1]}\n")
    (root / "times.txt").write_text("".join(f"{t:.6e}\n" for t in seq.stamps))
    (root / "poses.txt").write_text("".join(_pose_line(T) + "\n" for T in seq.poses))
    return root


def write_tum_rgbd(seq: SyntheticSequence, root: Path, depth_factor: float = 5000.0,
                   start: float = 1.0e9) -> Path:
    """TUM layout: ``rgb/`` and ``depth/`` named by stamp, ``rgb.txt``, ``depth.txt``
    (depth uint16 = metres x ``depth_factor``, 0 = none) and ``groundtruth.txt``."""
    root = Path(root)
    for d in ("rgb", "depth"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rgb_lines, depth_lines, gt_lines = [], [], []
    for img, dep, t, T in zip(seq.first, seq.second, seq.stamps, seq.poses):
        stamp = f"{start + t:.6f}"
        cv2.imwrite(str(root / "rgb" / f"{stamp}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        d = np.nan_to_num(np.asarray(dep, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        cv2.imwrite(str(root / "depth" / f"{stamp}.png"),
                    np.clip(np.rint(d * depth_factor), 0, 65535).astype(np.uint16))
        rgb_lines.append(f"{stamp} rgb/{stamp}.png\n")
        depth_lines.append(f"{stamp} depth/{stamp}.png\n")
        q = _quaternion(T[:3, :3])
        gt_lines.append(f"{stamp} " + " ".join(f"{v:.9f}" for v in (*T[:3, 3], *q)) + "\n")
    (root / "rgb.txt").write_text("# timestamp filename\n" + "".join(rgb_lines))
    (root / "depth.txt").write_text("# timestamp filename\n" + "".join(depth_lines))
    (root / "groundtruth.txt").write_text("# timestamp tx ty tz qx qy qz qw\n"
                                          + "".join(gt_lines))
    return root


def _quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation matrix -> (qx, qy, qz, qw), TUM's order."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(np.asarray(R, float)).as_quat()
    return float(x), float(y), float(z), float(w)
