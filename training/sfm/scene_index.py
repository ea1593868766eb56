"""Per-scene index for geometric pair training (the MegaDepth ``preprocess_scene.py`` npz).

Why an index: pair sampling needs the co-visibility of every image pair (overlap, scale ratio)
before any image is loaded; computing it from the SfM tracks once per scene keeps the training
loader cheap. Definitions follow docs/method_facts/sfm.md#megadepth-scenes:

- ``overlap_matrix[i, j]`` = |3D points seen by i and j| / |3D points seen by i| (asymmetric,
  -1 on the diagonal and where i sees no point);
- ``scale_ratio_matrix[i, j]`` = min over common points of max(nd_i/nd_j, nd_j/nd_i),
  nd = z_cam / ((fx + fy) / 2) (inf where there is no common point);
- ``angles[i, j]`` = degrees between the principal axes.

Intrinsics are in the project pixel convention (top-left pixel centre = (0, 0)); poses are
world -> camera 4x4 (``T_cam_world``), as in the official npz.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .colmap import ColmapModel, ColmapModelError, read_colmap_model

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff")
DEPTH_EXTS = (".h5", ".npy", ".png")
#: MegaDepth quirk (docs/method_facts/sfm.md#megadepth-scenes): h5 files under 100 KB are
#: foreground masks, not depth.
MEGADEPTH_MASK_BYTES = 100_000


class SceneError(ValueError):
    """A scene folder / index is inconsistent (missing depth, count mismatch, bad shapes)."""


@dataclass
class SceneIndex:
    """Everything pair sampling and correspondence warping need about one scene."""

    root: str  # folder the relative paths are resolved against
    image_paths: list[str]
    depth_paths: list[str | None]
    intrinsics: np.ndarray  # (N, 3, 3)
    poses: np.ndarray  # (N, 4, 4) world -> camera
    overlap_matrix: np.ndarray  # (N, N)
    scale_ratio_matrix: np.ndarray  # (N, N)
    angles: np.ndarray  # (N, N) degrees
    n_points3D: np.ndarray  # (N,) points seen per image
    depth_scale: float = 1.0  # multiply stored depth values by this to get index units

    def __post_init__(self) -> None:
        n = len(self.image_paths)
        if n == 0:
            raise SceneError("scene index has no images")
        if len(self.depth_paths) != n:
            raise SceneError(f"{n} images but {len(self.depth_paths)} depth entries")
        shapes = {"intrinsics": (n, 3, 3), "poses": (n, 4, 4), "overlap_matrix": (n, n),
                  "scale_ratio_matrix": (n, n), "angles": (n, n), "n_points3D": (n,)}
        for name, shape in shapes.items():
            arr = np.asarray(getattr(self, name))
            if arr.shape != shape:
                raise SceneError(f"{name} has shape {arr.shape}, expected {shape} "
                                 f"(image/pose count mismatch?)")
            setattr(self, name, arr)

    def __len__(self) -> int:
        return len(self.image_paths)

    def _abs(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else Path(self.root) / p

    def load_image(self, i: int) -> np.ndarray:
        """RGB uint8 ``(H, W, 3)``."""
        p = self._abs(self.image_paths[i])
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise SceneError(f"cannot read image {p}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def has_depth(self, i: int) -> bool:
        return self.depth_paths[i] is not None

    def load_depth(self, i: int) -> np.ndarray:
        """float32 ``(H, W)`` depth in the index's units, 0 where unknown."""
        rel = self.depth_paths[i]
        if rel is None:
            raise SceneError(f"image {self.image_paths[i]} has no depth map: geometric pairs "
                             "need depth for both images (pick a scene with depth or use "
                             "sparse SfM depth, see docs/training_geometric.md)")
        return read_depth(self._abs(rel)) * np.float32(self.depth_scale)

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            p, root=np.array(str(self.root)), image_paths=np.array(self.image_paths, dtype=object),
            depth_paths=np.array(self.depth_paths, dtype=object), intrinsics=self.intrinsics,
            poses=self.poses, overlap_matrix=self.overlap_matrix,
            scale_ratio_matrix=self.scale_ratio_matrix, angles=self.angles,
            n_points3D=self.n_points3D, depth_scale=np.array(self.depth_scale))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike, root: str | os.PathLike | None = None) -> "SceneIndex":
        """Read an index npz; ``root`` overrides the stored base folder (moved datasets)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"scene index not found: {p}")
        with np.load(p, allow_pickle=True) as z:
            missing = [k for k in ("image_paths", "intrinsics", "poses", "overlap_matrix")
                       if k not in z.files]
            if missing:
                raise SceneError(f"{p} is not a scene index (missing {', '.join(missing)})")
            stored_root = str(z["root"]) if "root" in z.files else str(p.parent)
            depth = [None if d is None else str(d) for d in z["depth_paths"]]
            n = len(z["image_paths"])
            return cls(root=str(root) if root is not None else stored_root,
                       image_paths=[str(s) for s in z["image_paths"]], depth_paths=depth,
                       intrinsics=z["intrinsics"], poses=z["poses"],
                       overlap_matrix=z["overlap_matrix"],
                       scale_ratio_matrix=z["scale_ratio_matrix"] if "scale_ratio_matrix" in z.files
                       else np.full((n, n), np.inf),
                       angles=z["angles"] if "angles" in z.files else principal_axis_angles(z["poses"]),
                       n_points3D=z["n_points3D"] if "n_points3D" in z.files else np.zeros(n, np.int64),
                       depth_scale=float(z["depth_scale"]) if "depth_scale" in z.files else 1.0)


def read_depth(path: str | os.PathLike, png_scale: float = 1e-3) -> np.ndarray:
    """Depth map from ``.h5`` (dataset ``depth``, MegaDepth), ``.npy`` (float metres) or
    ``.png`` (uint16, ``png_scale`` metres per unit: millimetres by default, REP 118).
    Non-finite and non-positive values become 0 (= unknown)."""
    p = Path(path)
    if not p.is_file():
        raise SceneError(f"depth file not found: {p}")
    ext = p.suffix.lower()
    if ext == ".h5":
        import h5py

        with h5py.File(p, "r") as f:
            if "depth" not in f:
                raise SceneError(f"{p} has no 'depth' dataset")
            d = np.asarray(f["depth"], np.float32)
    elif ext == ".npy":
        d = np.load(p).astype(np.float32)
    elif ext == ".png":
        raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2:
            raise SceneError(f"{p}: depth PNG must be single-channel 16-bit")
        d = raw.astype(np.float32) * np.float32(png_scale)
    else:
        raise SceneError(f"unsupported depth format {p.suffix} (use .h5, .npy or .png)")
    if d.ndim != 2:
        raise SceneError(f"{p}: depth must be 2-D, got shape {d.shape}")
    d[~np.isfinite(d) | (d <= 0)] = 0.0
    return d


def principal_axis_angles(poses: np.ndarray) -> np.ndarray:
    """Degrees between the cameras' optical axes (world frame: third row of R_cam_world)."""
    axes = np.asarray(poses)[:, 2, :3]
    axes = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip(axes @ axes.T, -1.0, 1.0)))


def covisibility(point_ids: Sequence[np.ndarray], ndepths: Sequence[np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Overlap and scale-ratio matrices from per-image observed point ids and their normalised
    depths (same order). See the module docstring for the definitions."""
    n = len(point_ids)
    overlap = np.full((n, n), -1.0)
    scale = np.full((n, n), np.inf)
    maps = []
    for ids, nd in zip(point_ids, ndepths):
        # a COLMAP track may hold the same image twice: keep one observation per point
        uniq, first = np.unique(np.asarray(ids, np.int64), return_index=True)
        maps.append((uniq, np.asarray(nd, np.float64)[first]))
    for i in range(n):
        ids_i, nd_i = maps[i]
        if len(ids_i) == 0:
            continue
        for j in range(n):
            if i == j:
                continue
            ids_j, nd_j = maps[j]
            common, ai, aj = np.intersect1d(ids_i, ids_j, assume_unique=True, return_indices=True)
            overlap[i, j] = len(common) / len(ids_i)
            if len(common):
                r = nd_i[ai] / nd_j[aj]
                scale[i, j] = float(np.min(np.maximum(r, 1.0 / r)))
    return overlap, scale


def index_from_model(model: ColmapModel, image_root: str | os.PathLike,
                     depth_paths: Sequence[str | None] | None = None,
                     root: str | os.PathLike | None = None, depth_scale: float = 1.0) -> SceneIndex:
    """Scene index from a COLMAP model; ``image_paths`` are ``image_root/name`` made relative
    to ``root`` (default: ``image_root``'s parent)."""
    image_root = Path(image_root)
    root = Path(root) if root is not None else image_root.parent
    if depth_paths is not None and len(depth_paths) != len(model.images):
        raise SceneError(f"{len(model.images)} registered images but {len(depth_paths)} depth maps")
    ids, nds, Ks, poses, paths = [], [], [], [], []
    for im in model.images:
        f = 0.5 * (im.K[0, 0] + im.K[1, 1])
        xyz = np.array([model.points3D[int(k)] for k in im.point3D_ids]).reshape(-1, 3)
        z = (im.T_cam_world[:3, :3] @ xyz.T + im.T_cam_world[:3, 3:4])[2]
        ids.append(im.point3D_ids)
        nds.append(z / f)
        Ks.append(im.K)
        poses.append(im.T_cam_world)
        paths.append(os.path.relpath(image_root / im.name, root))
    overlap, scale = covisibility(ids, nds)
    poses_a = np.stack(poses)
    return SceneIndex(root=str(root), image_paths=paths,
                      depth_paths=list(depth_paths) if depth_paths is not None else [None] * len(paths),
                      intrinsics=np.stack(Ks), poses=poses_a, overlap_matrix=overlap,
                      scale_ratio_matrix=scale, angles=principal_axis_angles(poses_a),
                      n_points3D=np.array([len(i) for i in ids], np.int64), depth_scale=depth_scale)


def _find_model_dir(folder: Path) -> Path:
    for cand in ("sparse/manhattan/0", "sparse/0", "sparse", "dense0/sparse", "model"):
        d = folder / cand
        if d.is_dir() and any((d / f).is_file() for f in ("cameras.bin", "cameras.txt")):
            return d
    raise ColmapModelError(f"no COLMAP model under {folder} (looked in sparse/manhattan/0, "
                           "sparse/0, sparse, dense0/sparse, model)")


def find_depth(depth_dir: Path, image_name: str) -> Path | None:
    """``depths/<stem>.{h5,npy,png}``; MegaDepth mask-sized h5 files are ignored."""
    stem = Path(image_name).with_suffix("")
    for ext in DEPTH_EXTS:
        p = depth_dir / (str(stem) + ext)
        if p.is_file():
            if ext == ".h5" and p.stat().st_size < MEGADEPTH_MASK_BYTES:
                logger.debug("%s is smaller than 100 KB: a MegaDepth mask, not depth", p)
                return None
            return p
    return None


def read_megadepth_scene(folder: str | os.PathLike, require_depth: bool = False) -> SceneIndex:
    """A MegaDepth-style scene folder: ``images/`` (undistorted), ``depths/`` (h5/npy/png, same
    stem as the image) and an undistorted PINHOLE COLMAP model (``sparse/...``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SceneError(f"scene folder not found: {folder}")
    image_dir = next((folder / d for d in ("images", "imgs", "dense0/imgs") if (folder / d).is_dir()),
                     None)
    if image_dir is None:
        raise SceneError(f"{folder} has no images/ folder")
    model = read_colmap_model(_find_model_dir(folder))
    depth_dir = next((folder / d for d in ("depths", "depth", "dense0/depths")
                      if (folder / d).is_dir()), None)
    depths: list[str | None] = []
    for im in model.images:
        if not (image_dir / im.name).is_file():
            raise SceneError(f"registered image {im.name} missing from {image_dir}")
        d = find_depth(depth_dir, im.name) if depth_dir is not None else None
        if d is None and require_depth:
            raise SceneError(f"no depth map for {im.name} in {depth_dir or folder / 'depths'}")
        depths.append(None if d is None else os.path.relpath(d, folder))
    if all(d is None for d in depths):
        logger.warning("scene %s has no depth maps: pairs from it cannot be warped", folder)
    return index_from_model(model, image_dir, depths, root=folder)


def tracks_from_depth(depths: Sequence[np.ndarray], Ks: Sequence[np.ndarray],
                      poses: Sequence[np.ndarray], step: int = 8, rel_tol: float = 0.01
                      ) -> tuple[list[np.ndarray], list[np.ndarray], dict[int, np.ndarray]]:
    """SfM-like tracks from dense depth + poses (renderer, odometry bags): every ``step``-th
    pixel with depth becomes a 3D point; it is observed in every image where it projects inside
    and agrees with that image's depth (relative ``rel_tol``, nearest pixel), i.e. is visible.

    Returns per-image ``point3D_ids``, per-image ``points2D`` (N, 2) and ``id -> xyz``, the
    inputs of :func:`colmap.write_colmap_text` / :func:`covisibility`.
    """
    n = len(depths)
    if not (len(Ks) == len(poses) == n):
        raise SceneError(f"{n} depth maps, {len(Ks)} intrinsics and {len(poses)} poses")
    world: list[np.ndarray] = []
    for d, K, P in zip(depths, Ks, poses):
        ys, xs = np.mgrid[step // 2:d.shape[0]:step, step // 2:d.shape[1]:step]
        z = d[ys, xs]
        m = z > 0
        pix = np.stack([xs[m], ys[m], np.ones(m.sum())]).astype(np.float64)
        Xc = np.linalg.solve(np.asarray(K, np.float64), pix) * z[m][None]
        Pinv = np.linalg.inv(np.asarray(P, np.float64))
        world.append((Pinv[:3, :3] @ Xc + Pinv[:3, 3:4]).T)
    xyz = np.concatenate(world) if world else np.zeros((0, 3))
    ids_all = np.arange(1, len(xyz) + 1)
    ids: list[np.ndarray] = []
    xys: list[np.ndarray] = []
    for d, K, P in zip(depths, Ks, poses):
        P = np.asarray(P, np.float64)
        Xc = P[:3, :3] @ xyz.T + P[:3, 3:4]
        zc = Xc[2]
        front = zc > 1e-9
        p = np.asarray(K, np.float64) @ (Xc / np.where(front, zc, 1.0)[None])
        x, y = p[0], p[1]
        h, w = d.shape
        inside = front & (x > -0.5) & (x < w - 0.5) & (y > -0.5) & (y < h - 0.5)
        xi = np.clip(np.rint(x), 0, w - 1).astype(np.int64)
        yi = np.clip(np.rint(y), 0, h - 1).astype(np.int64)
        dz = d[yi, xi]
        vis = inside & (dz > 0) & (np.abs(dz - zc) <= rel_tol * np.maximum(zc, 1e-9))
        ids.append(ids_all[vis])
        xys.append(np.stack([x[vis], y[vis]], 1))
    return ids, xys, {int(k): v for k, v in zip(ids_all, xyz)}
