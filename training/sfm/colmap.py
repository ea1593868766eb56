"""Read COLMAP models (binary or text) through ``pycolmap.Reconstruction``.

Why a thin wrapper: the rest of the data layer wants plain numpy (K, world->camera 4x4 poses,
3D point tracks) and *clear* errors for the usual mistakes (wrong folder, empty or truncated
model, distorted cameras) instead of pycolmap's C++ exceptions.

Pixel convention: COLMAP puts the centre of the top-left pixel at (0.5, 0.5); this project puts
it at (0, 0) (docs/ARCHITECTURE.md). Intrinsics returned here are converted to the project
convention (cx - 0.5, cy - 0.5), so every later warp uses ``u = column`` with no +0.5 shift.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Camera models without distortion: geometry from K alone is exact.
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
BINARY_FILES = ("cameras.bin", "images.bin", "points3D.bin")
TEXT_FILES = ("cameras.txt", "images.txt", "points3D.txt")


class ColmapModelError(ValueError):
    """A COLMAP model folder is missing, empty, corrupt or unusable for geometric training."""


@dataclass
class ColmapImage:
    """One registered image: name (relative to the image folder), intrinsics and pose."""

    image_id: int
    name: str
    K: np.ndarray  # (3, 3) project pixel convention (top-left pixel centre = (0, 0))
    T_cam_world: np.ndarray  # (4, 4) world -> camera
    width: int
    height: int
    point3D_ids: np.ndarray  # (M,) int64 ids of the 3D points this image observes
    points2D: np.ndarray  # (M, 2) float64 observations (project convention) of those points


@dataclass
class ColmapModel:
    """Registered images (sorted by name) and 3D points ``id -> xyz``."""

    path: Path
    images: list[ColmapImage]
    points3D: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [im.name for im in self.images]


def model_format(path: str | os.PathLike) -> str:
    """``"bin"`` or ``"txt"`` for a folder holding a complete COLMAP model, else an error."""
    p = Path(path)
    if not p.exists():
        raise ColmapModelError(f"COLMAP model folder not found: {p}")
    if not p.is_dir():
        raise ColmapModelError(f"COLMAP model path is not a folder: {p}")
    for fmt, files in (("bin", BINARY_FILES), ("txt", TEXT_FILES)):
        present = [f for f in files if (p / f).is_file()]
        if len(present) == len(files):
            return fmt
        if present:
            missing = sorted(set(files) - set(present))
            raise ColmapModelError(f"incomplete COLMAP model in {p}: missing {', '.join(missing)}")
    raise ColmapModelError(
        f"{p} is not a COLMAP model folder (expected cameras/images/points3D .bin or .txt; "
        "for a MegaDepth scene pass its sparse/ model folder)")


def _intrinsics(camera, allow_distortion: bool) -> np.ndarray:
    model = camera.model.name if hasattr(camera.model, "name") else str(camera.model)
    if model not in PINHOLE_MODELS and not allow_distortion:
        raise ColmapModelError(
            f"camera {camera.camera_id} uses model {model}: geometric training needs undistorted "
            "images (run `colmap image_undistorter` first, which writes PINHOLE cameras)")
    K = np.asarray(camera.calibration_matrix(), np.float64).copy()
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def read_colmap_model(path: str | os.PathLike, allow_distortion: bool = False) -> ColmapModel:
    """Read a COLMAP model folder (binary or text). Raises :class:`ColmapModelError` with the
    reason for a missing/incomplete/corrupt/empty model or a distorted camera model."""
    import pycolmap

    p = Path(path)
    fmt = model_format(p)
    try:
        rec = pycolmap.Reconstruction(str(p))
    except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError on parse errors
        raise ColmapModelError(f"cannot read COLMAP {fmt} model in {p}: {exc}") from exc
    reg = list(rec.reg_image_ids()) if hasattr(rec, "reg_image_ids") else list(rec.images)
    if not reg:
        raise ColmapModelError(f"COLMAP model in {p} has no registered images")
    images: list[ColmapImage] = []
    for image_id in reg:
        im = rec.images[image_id]
        cam = rec.cameras[im.camera_id]
        T = np.eye(4)
        T[:3, :] = np.asarray(im.cam_from_world().matrix(), np.float64)
        ids, xy = [], []
        for p2d in im.points2D:
            if p2d.has_point3D():
                ids.append(int(p2d.point3D_id))
                xy.append(np.asarray(p2d.xy, np.float64) - 0.5)
        images.append(ColmapImage(
            image_id=int(image_id), name=str(im.name), K=_intrinsics(cam, allow_distortion),
            T_cam_world=T, width=int(cam.width), height=int(cam.height),
            point3D_ids=np.asarray(ids, np.int64),
            points2D=np.asarray(xy, np.float64).reshape(-1, 2)))
    images.sort(key=lambda im: im.name)
    points = {int(pid): np.asarray(pt.xyz, np.float64).copy() for pid, pt in rec.points3D.items()}
    logger.info("read COLMAP %s model %s: %d images, %d points", fmt, p, len(images), len(points))
    return ColmapModel(path=p, images=images, points3D=points)


def write_colmap_text(path: str | os.PathLike, cameras: list[tuple[int, int, np.ndarray]],
                      images: list[tuple[str, int, np.ndarray, np.ndarray, np.ndarray]],
                      points3D: dict[int, np.ndarray]) -> Path:
    """Write a PINHOLE text model (what ``colmap model_converter --output_type TXT`` writes).

    ``cameras``: ``(width, height, K)`` in the project pixel convention (camera ids 1..n).
    ``images``: ``(name, camera_id, T_cam_world, points2D (M, 2) project convention,
    point3D_ids (M,))``. ``points3D``: ``id -> xyz``; tracks are derived from the images.
    Why: the renderer and the bag pipeline (odometry poses) produce models without running
    COLMAP, and the reader must accept them like any COLMAP output.
    """
    from scipy.spatial.transform import Rotation

    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    with open(p / "cameras.txt", "w") as f:
        f.write("# Camera list with one line of data per camera:\n")
        for cid, (w, h, K) in enumerate(cameras, start=1):
            f.write(f"{cid} PINHOLE {w} {h} {K[0, 0]:.10g} {K[1, 1]:.10g} "
                    f"{K[0, 2] + 0.5:.10g} {K[1, 2] + 0.5:.10g}\n")
    tracks: dict[int, list[tuple[int, int]]] = {int(k): [] for k in points3D}
    with open(p / "images.txt", "w") as f:
        f.write("# Image list with two lines of data per image:\n")
        for iid, (name, cid, T, xy, pids) in enumerate(images, start=1):
            qx, qy, qz, qw = Rotation.from_matrix(np.asarray(T)[:3, :3]).as_quat()
            t = np.asarray(T)[:3, 3]
            f.write(f"{iid} {qw:.12g} {qx:.12g} {qy:.12g} {qz:.12g} "
                    f"{t[0]:.12g} {t[1]:.12g} {t[2]:.12g} {cid} {name}\n")
            f.write(" ".join(f"{x + 0.5:.6f} {y + 0.5:.6f} {int(pid)}"
                             for (x, y), pid in zip(np.asarray(xy).reshape(-1, 2), pids)) + "\n")
            for k, pid in enumerate(pids):
                tracks[int(pid)].append((iid, k))
    with open(p / "points3D.txt", "w") as f:
        f.write("# 3D point list with one line of data per point:\n")
        for pid, xyz in points3D.items():
            tr = " ".join(f"{i} {k}" for i, k in tracks[int(pid)])
            f.write(f"{int(pid)} {xyz[0]:.10g} {xyz[1]:.10g} {xyz[2]:.10g} 128 128 128 0 {tr}\n")
    return p
