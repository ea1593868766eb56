"""Stereo (KITTI layout) and RGB-D (TUM layout) folders as odometry inputs, and trajectory files.

Why on top of ``image_folders``: that module already knows the layouts, their file lists,
stamps and calibration rows (it feeds ``images-to-bag``); this one adds what odometry needs on
top - the rectified camera with its baseline, depth/colour association, and ground truth
expressed with the first frame as the world - and reads no image until a frame is asked for.

Trajectory files follow KITTI's ``poses.txt``: one line per frame, the 12 numbers of the
row-major 3x4 ``T_world_cam`` of the left (colour) camera; the first line is the identity.
TUM ground truth (``groundtruth.txt``: ``stamp tx ty tz qx qy qz qw``) is matched to the colour
frames by the nearest stamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..atomic import atomic_path
from ..evaluation.pairs import quat_to_R
from ..image_folders import Intrinsics, LayoutError, data_lines, load_sequence
from .camera import RectifiedCamera, invert_pose

__all__ = ["StereoSequence", "RGBDSequence", "load_stereo_folder", "load_rgbd_folder",
           "read_kitti_poses", "write_kitti_trajectory", "read_tum_trajectory",
           "associate_stamps", "relative_to_first", "read_image"]


def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """An image file as stored (colour converted BGR -> RGB); a clear error if unreadable."""
    img = cv2.imread(str(path), flags)
    if img is None:
        raise OSError(f"cannot read image {path}")
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    return img


def relative_to_first(poses: list[np.ndarray]) -> list[np.ndarray]:
    """Poses re-expressed with the first one as the world (``T_0^-1 T_i``)."""
    if not poses:
        return []
    inv0 = invert_pose(np.asarray(poses[0], float))
    return [inv0 @ np.asarray(T, float) for T in poses]


@dataclass
class StereoSequence:
    left: list[Path]
    right: list[Path]
    stamps: list[float]
    camera: RectifiedCamera
    ground_truth: list[np.ndarray] | None  # T_world_cam per frame, world = first frame

    def __len__(self) -> int:
        return len(self.left)

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
        for lp, rp, t in zip(self.left, self.right, self.stamps):
            yield read_image(lp), read_image(rp), t


@dataclass
class RGBDSequence:
    rgb: list[Path]
    depth: list[Path]
    stamps: list[float]
    camera: RectifiedCamera  # colour camera (its baseline is replaced by the virtual one)
    distortion: np.ndarray | None
    ground_truth: list[np.ndarray | None] | None  # world = first frame with ground truth

    def __len__(self) -> int:
        return len(self.rgb)

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
        for cp, dp, t in zip(self.rgb, self.depth, self.stamps):
            yield read_image(cp), read_image(dp), t


def _image_size(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise LayoutError(f"cannot read image {path}")
    return int(img.shape[1]), int(img.shape[0])


def read_kitti_poses(path: Path) -> list[np.ndarray]:
    """KITTI ``poses.txt`` (12 numbers a line) -> 4x4 poses."""
    try:
        rows = np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as exc:
        raise LayoutError(f"unreadable poses file {path}: {exc}") from None
    if rows.shape[1] != 12:
        raise LayoutError(f"{path}: expected 12 numbers per line, got {rows.shape[1]}")
    out = []
    for r in rows:
        T = np.eye(4)
        T[:3] = r.reshape(3, 4)
        out.append(T)
    return out


def write_kitti_trajectory(path: Path, poses: list[np.ndarray]) -> None:
    """One line per pose: row-major 3x4, ``%.9e`` (written atomically)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for T in poses:
                f.write(" ".join(f"{v:.9e}" for v in np.asarray(T, float)[:3].reshape(-1)))
                f.write("\n")


def read_tum_trajectory(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """TUM ``stamp tx ty tz qx qy qz qw`` lines -> stamps and 4x4 poses."""
    stamps, poses = [], []
    for n, parts, _ in data_lines(path):
        if len(parts) != 8:
            raise LayoutError(f"{path} line {n}: expected 'stamp tx ty tz qx qy qz qw'")
        v = [float(p) for p in parts]
        T = np.eye(4)
        T[:3, :3] = quat_to_R(*v[4:8])
        T[:3, 3] = v[1:4]
        stamps.append(v[0])
        poses.append(T)
    return np.asarray(stamps), poses


def associate_stamps(query: list[float], reference: np.ndarray, max_dt: float) -> np.ndarray:
    """Index into ``reference`` (sorted or not) of the nearest stamp of each query, -1 when
    none is within ``max_dt`` seconds."""
    ref = np.asarray(reference, float)
    if len(ref) == 0:
        return np.full(len(query), -1, np.int64)
    order = np.argsort(ref)
    rs = ref[order]
    q = np.asarray(query, float)
    pos = np.clip(np.searchsorted(rs, q), 1, max(len(rs) - 1, 1))
    lo = np.clip(pos - 1, 0, len(rs) - 1)
    hi = np.clip(pos, 0, len(rs) - 1)
    pick = np.where(np.abs(rs[lo] - q) <= np.abs(rs[hi] - q), lo, hi)
    out = order[pick]
    out[np.abs(ref[out] - q) > max_dt] = -1
    return out.astype(np.int64)


def load_stereo_folder(path: Path, baseline: float | None = None) -> StereoSequence:
    """A KITTI-layout stereo folder (``image_l/`` + ``image_r/``, ``image_0/`` + ``image_1/``
    or ``image_2/`` + ``image_3/``, ``calib.txt``, optional ``times.txt`` and ``poses.txt``)."""
    seq = load_sequence(Path(path), "kitti", baseline=baseline)
    if seq.kind != "stereo":
        raise LayoutError(f"{path} is not a stereo folder (needs image_l/ + image_r/, image_0/ "
                          "+ image_1/ or image_2/ + image_3/)")
    left, right = seq.streams["left"], seq.streams["right"]
    cl, cr = seq.calib["left"], seq.calib["right"]
    b = -cr.tx / float(cr.K[0, 0])
    w, h = _image_size(left.files[0])
    K = cl.K
    camera = RectifiedCamera(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                             float(b), w, h)
    n = len(left.files)
    stamps = list(left.stamps) if left.stamps is not None else [0.1 * i for i in range(n)]
    gt = None
    poses_file = Path(path) / "poses.txt"
    if poses_file.is_file():
        poses = read_kitti_poses(poses_file)
        idx = [int(f.stem) if f.stem.isdigit() else i for i, f in enumerate(left.files)]
        if all(0 <= i < len(poses) for i in idx):
            gt = relative_to_first([poses[i] for i in idx])
        elif len(poses) == n:
            gt = relative_to_first(poses)
        else:
            raise LayoutError(f"{poses_file} has {len(poses)} poses for {n} frames")
    return StereoSequence(list(left.files), list(right.files), stamps, camera, gt)


def load_rgbd_folder(path: Path, intrinsics: Intrinsics | None = None,
                     camera: str | None = None, max_dt: float = 0.02) -> RGBDSequence:
    """A TUM-layout RGB-D folder (``rgb/``, ``depth/``, ``rgb.txt``/``depth.txt``, optional
    ``groundtruth.txt``). Intrinsics: ``intrinsics``, else the ``camera`` preset (tum-fr1/2/3),
    else a preset named by the folder (``freiburgN``/``frN``)."""
    root = Path(path)
    seq = load_sequence(root, "tum", intrinsics=intrinsics, camera=camera)
    if seq.kind != "rgbd":
        raise LayoutError(f"{root} has no depth images (needs depth/ or depth.txt)")
    if "rgb" not in seq.calib:
        raise LayoutError(f"no intrinsics for {root}: pass --intrinsics fx,fy,cx,cy or "
                          "--camera tum-fr1|tum-fr2|tum-fr3")
    rgb, depth = seq.streams["rgb"], seq.streams["depth"]
    if rgb.stamps is None or depth.stamps is None:
        raise LayoutError(f"{root}: rgb and depth frames need timestamps (rgb.txt/depth.txt "
                          "or timestamp file names) to be associated")
    pick = associate_stamps(rgb.stamps, np.asarray(depth.stamps), max_dt)
    keep = np.flatnonzero(pick >= 0)
    if len(keep) == 0:
        raise LayoutError(f"{root}: no depth frame within {max_dt} s of a colour frame")
    cal = seq.calib["rgb"]
    w, h = _image_size(rgb.files[int(keep[0])])
    K = cal.K
    cam = RectifiedCamera(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                          1.0, w, h)
    dist = np.asarray(cal.D, float) if np.any(np.asarray(cal.D) != 0) else None
    stamps = [float(rgb.stamps[i]) for i in keep]
    gt = None
    gt_file = root / "groundtruth.txt"
    if gt_file.is_file():
        gt_stamps, gt_poses = read_tum_trajectory(gt_file)
        at = associate_stamps(stamps, gt_stamps, max_dt)
        raw = [gt_poses[i] if i >= 0 else None for i in at]
        first = next((T for T in raw if T is not None), None)
        if first is not None:
            inv0 = invert_pose(first)
            gt = [None if T is None else inv0 @ T for T in raw]
    return RGBDSequence([rgb.files[i] for i in keep], [depth.files[pick[i]] for i in keep],
                        stamps, cam, dist, gt)
