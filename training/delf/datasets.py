"""Landmark classification data for DELF training (docs/method_facts/training_delf.md).

Why classification data: both DELF steps are trained with image-level landmark labels only
(descriptor fine-tuning, then attention "given the fixed descriptors"). Three sources give the
same ``LandmarkSet`` (image paths + integer labels):

- a class-per-folder tree (``root/<landmark>/*.jpg``);
- the Google-Landmarks CSV layout (``id,landmark_id[,path]``): images are found locally under
  ``image_root`` (``path`` column, or GLDv2's ``a/b/c/abc....jpg``, or ``<id>.jpg``); nothing is
  downloaded and rows whose image is missing are skipped and counted;
- robot data: frames of an SfM scene (``SceneIndex``) or a rosbag (image + pose topics) labelled
  by *place*: frames are clustered by camera position and viewing direction, so each class is a
  set of views of the same spot (the robot's own "landmarks").

Crops (paper): centre square crop, resize to ``resize`` (250 / 900) and a random ``crop`` (224 /
720) when training; validation takes the centre crop. Sizes are config values so CI can use
tiny ones. Randomness comes from generators keyed by (seed, epoch, index) for exact resume.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


@dataclass
class LandmarkSet:
    """Image paths with labels ``0..len(classes)-1`` (``classes[label]`` = original name/id)."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, idx: Sequence[int]) -> "LandmarkSet":
        return LandmarkSet([self.paths[i] for i in idx], self.labels[np.asarray(idx, np.int64)],
                           list(self.classes))


def _relabel(paths: list[Path], names: list[str], min_per_class: int) -> LandmarkSet:
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    keep = sorted(k for k, c in counts.items() if c >= int(min_per_class))
    lut = {k: i for i, k in enumerate(keep)}
    sel = [i for i, n in enumerate(names) if n in lut]
    return LandmarkSet([paths[i] for i in sel], np.array([lut[names[i]] for i in sel], np.int64),
                       keep)


def class_folder_tree(root: str | os.PathLike, min_per_class: int = 1) -> LandmarkSet:
    """``root/<class>/<image>``: one class per sub-folder (sorted names -> labels)."""
    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"landmark folder not found: {r}")
    paths, names = [], []
    for d in sorted(p for p in r.iterdir() if p.is_dir()):
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in IMAGE_EXTS:
                paths.append(f)
                names.append(d.name)
    if not paths:
        raise ValueError(f"no images in class folders under {r}")
    return _relabel(paths, names, min_per_class)


def gld_image_path(image_root: Path, image_id: str) -> Path | None:
    """Local file of a Google-Landmarks id: GLDv2 ``a/b/c/<id>.jpg``, else ``<id>.jpg``."""
    cands = [image_root / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"] \
        if len(image_id) >= 3 else []
    cands.append(image_root / f"{image_id}.jpg")
    return next((p for p in cands if p.is_file()), None)


def google_landmarks_csv(csv_path: str | os.PathLike, image_root: str | os.PathLike,
                         min_per_class: int = 1) -> LandmarkSet:
    """A ``train.csv`` of Google-Landmarks (columns ``id``, ``landmark_id``; an optional
    ``path`` column overrides the file lookup). Missing images are skipped (counted in the
    log): this never downloads anything."""
    root = Path(image_root)
    paths, names, missing = [], [], 0
    with open(csv_path, newline="") as f:
        rd = csv.DictReader(f)
        if rd.fieldnames is None or not {"id", "landmark_id"} <= set(rd.fieldnames):
            raise ValueError(f"{csv_path}: expected columns id,landmark_id (got {rd.fieldnames})")
        for row in rd:
            lm = (row.get("landmark_id") or "").strip()
            if lm in ("", "None"):
                continue
            if row.get("path"):
                p: Path | None = Path(row["path"])
                p = p if p.is_absolute() else root / p
                p = p if p.is_file() else None
            else:
                p = gld_image_path(root, row["id"].strip())
            if p is None:
                missing += 1
                continue
            paths.append(p)
            names.append(lm)
    if missing:
        logger.warning("%s: %d rows without a local image were skipped", csv_path, missing)
    if not paths:
        raise ValueError(f"{csv_path}: no row has a local image under {root}")
    return _relabel(paths, names, min_per_class)


def place_labels(T_world_cam: np.ndarray, radius: float = 1.0, max_angle_deg: float = 45.0
                 ) -> np.ndarray:
    """Greedy leader clustering of camera poses: a frame joins the first place whose leader is
    within ``radius`` (position units) *and* ``max_angle_deg`` (angle between optical axes);
    otherwise it starts a new place. Deterministic (frame order)."""
    T = np.asarray(T_world_cam, np.float64).reshape(-1, 4, 4)
    pos, axis = T[:, :3, 3], T[:, :3, 2]
    cos_th = math.cos(math.radians(max_angle_deg))
    leaders: list[int] = []
    labels = np.zeros(len(T), np.int64)
    for i in range(len(T)):
        for lab, j in enumerate(leaders):
            if np.linalg.norm(pos[i] - pos[j]) <= radius and float(axis[i] @ axis[j]) >= cos_th:
                labels[i] = lab
                break
        else:
            labels[i] = len(leaders)
            leaders.append(i)
    return labels


def places_from_poses(paths: Sequence[str | os.PathLike], T_world_cam: np.ndarray,
                      radius: float = 1.0, max_angle_deg: float = 45.0,
                      min_per_class: int = 2) -> LandmarkSet:
    """Place-labelled frames; places with fewer than ``min_per_class`` frames are dropped."""
    labels = place_labels(T_world_cam, radius, max_angle_deg)
    return _relabel([Path(p) for p in paths], [f"place_{int(v):04d}" for v in labels],
                    min_per_class)


def places_from_scene_index(index: Any, radius: float = 1.0, max_angle_deg: float = 45.0,
                            min_per_class: int = 2) -> LandmarkSet:
    """Frames of a ``training.sfm.SceneIndex`` (poses world -> camera) labelled by place."""
    T_world_cam = np.linalg.inv(np.asarray(index.poses, np.float64))
    paths = [index._abs(p) for p in index.image_paths]
    return places_from_poses(paths, T_world_cam, radius, max_angle_deg, min_per_class)


def places_from_bag(bag: str | os.PathLike, image_topic: str, pose_topic: str,
                    out_dir: str | os.PathLike, every_n: int = 1, max_dt: float = 0.05,
                    radius: float = 1.0, max_angle_deg: float = 45.0,
                    min_per_class: int = 2) -> LandmarkSet:
    """Frames of a rosbag with a pose topic (``T_world_cam``, e.g. odometry or SfM poses written
    back): every ``every_n``-th image with a pose within ``max_dt`` s is written to
    ``out_dir/images`` and labelled by place."""
    from local_features_ros.bags import iter_images, iter_poses

    poses = list(iter_poses(bag, pose_topic))
    if not poses:
        raise ValueError(f"{bag}: no poses on {pose_topic}")
    stamps = np.array([s for s, _ in poses])
    out = Path(out_dir) / "images"
    out.mkdir(parents=True, exist_ok=True)
    paths, Ts = [], []
    for k, fr in enumerate(iter_images(bag, [image_topic])):
        if k % max(int(every_n), 1):
            continue
        j = int(np.argmin(np.abs(stamps - fr.stamp)))
        if abs(stamps[j] - fr.stamp) > max_dt:
            continue
        img = fr.image
        if img.dtype != np.uint8:
            img = np.clip(img.astype(np.float32) * (255.0 if img.max() <= 1.0 else 1.0 / 256.0),
                          0, 255).astype(np.uint8)
        p = out / f"frame_{k:06d}.png"
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
        cv2.imwrite(str(p), bgr)
        paths.append(p)
        Ts.append(poses[j][1])
    if not paths:
        raise ValueError(f"{bag}: no {image_topic} frame has a pose within {max_dt} s")
    return places_from_poses(paths, np.stack(Ts), radius, max_angle_deg, min_per_class)


def load_landmarks(data: Mapping[str, Any]) -> LandmarkSet:
    """``data.folder`` | ``data.csv`` + ``data.image_root`` | ``data.scene_index`` |
    ``data.bag`` (+ ``image_topic``, ``pose_topic``, ``workdir``)."""
    mpc = int(data.get("min_per_class", 1))
    if data.get("folder"):
        return class_folder_tree(data["folder"], mpc)
    if data.get("csv"):
        return google_landmarks_csv(data["csv"], data["image_root"], mpc)
    pl = dict(data.get("places", {}))
    radius, ang = float(pl.get("radius", 1.0)), float(pl.get("max_angle_deg", 45.0))
    if data.get("scene_index"):
        from ..sfm.scene_index import SceneIndex

        return places_from_scene_index(SceneIndex.load(data["scene_index"]), radius, ang,
                                       max(mpc, 2))
    if data.get("bag"):
        return places_from_bag(data["bag"], data["image_topic"], data["pose_topic"],
                               data["workdir"], int(data.get("every_n", 1)), radius=radius,
                               max_angle_deg=ang, min_per_class=max(mpc, 2))
    raise ValueError("data needs one of folder, csv (+ image_root), scene_index or bag")


def split_per_class(ls: LandmarkSet, val_fraction: float, seed: int = 0
                    ) -> tuple[LandmarkSet, LandmarkSet | None]:
    """Per-class random split; classes with one image stay in training."""
    if val_fraction <= 0:
        return ls, None
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for c in range(ls.num_classes):
        idx = np.flatnonzero(ls.labels == c)
        rng.shuffle(idx)
        n_val = int(math.floor(val_fraction * len(idx))) if len(idx) > 1 else 0
        va += idx[:n_val].tolist()
        tr += idx[n_val:].tolist()
    return ls.subset(sorted(tr)), (ls.subset(sorted(va)) if va else None)


def centre_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return img[y0:y0 + s, x0:x0 + s]


class LandmarkCrops(Dataset):
    """RGB ``(3, crop, crop)`` float [0, 1] + label: centre square -> ``resize`` -> random
    ``crop`` (training) or centre ``crop`` (validation)."""

    def __init__(self, ls: LandmarkSet, resize: int, crop: int, train: bool = True,
                 seed: int = 0, cache: int = 256):
        if crop > resize:
            raise ValueError(f"crop {crop} > resize {resize}")
        self.ls, self.resize, self.crop, self.train = ls, int(resize), int(crop), bool(train)
        self.seed = int(seed)
        self.epoch = 0
        self.cache_size = int(cache)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ls)

    def _load(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        p = self.ls.paths[i]
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {p}")
        sq = centre_square(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        interp = cv2.INTER_AREA if sq.shape[0] > self.resize else cv2.INTER_LINEAR
        img = cv2.resize(sq, (self.resize, self.resize), interpolation=interp)
        if self.cache_size > 0:
            self._cache[i] = img
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return img

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        img = self._load(i)
        m = self.resize - self.crop
        if self.train and m > 0:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            y0, x0 = (int(v) for v in rng.integers(0, m + 1, 2))
        else:
            y0 = x0 = m // 2
        c = img[y0:y0 + self.crop, x0:x0 + self.crop]
        t = torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1).float() / 255.0
        return {"image": t, "label": torch.tensor(int(self.ls.labels[i]), dtype=torch.long)}
