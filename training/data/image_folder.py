"""Any folder of images (e.g. frames exported from a bag) as a training dataset.

Why ratio-preserving resize + centre crop: networks train on a fixed size (e.g. 240x320) and
anisotropic resizing would distort the geometry the detector learns from: scale by the larger
of the two size ratios, then centre-crop, as the reference Homographic Adaptation export does
(docs/method_facts/training_superpoint.md#stage-2-homographic-adaptation).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .homographies import points_to_map

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")


def list_images(roots: Iterable[str | Path], max_images: int = 0) -> list[Path]:
    """Sorted image files under each root (recursive); a root may also be a single file."""
    files: list[Path] = []
    for r in roots:
        p = Path(r)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            raise FileNotFoundError(f"image folder not found: {p}")
    return files[:max_images] if max_images and max_images > 0 else files


def resize_crop(image: np.ndarray, size_hw: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Scale by the larger ratio so the image covers ``size_hw``, then centre-crop.

    Returns the image and the 3x3 matrix mapping original [x, y] pixels to output pixels.
    """
    th, tw = int(size_hw[0]), int(size_hw[1])
    h, w = image.shape[:2]
    s = max(th / h, tw / w)
    nh, nw = max(int(round(h * s)), th), max(int(round(w * s)), tw)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    img = cv2.resize(image, (nw, nh), interpolation=interp)
    y0, x0 = (nh - th) // 2, (nw - tw) // 2
    img = img[y0:y0 + th, x0:x0 + tw]
    sx, sy = nw / w, nh / h
    # centre-aligned pixel convention: x' = (x + .5) * s - .5 - x0
    T = np.array([[sx, 0, 0.5 * sx - 0.5 - x0], [0, sy, 0.5 * sy - 0.5 - y0], [0, 0, 1]], np.float64)
    return np.ascontiguousarray(img), T


def scaled_tiles(image: np.ndarray, size_hw: Sequence[int], scales: Sequence[float]
                 ) -> list[tuple[str, np.ndarray]]:
    """Crops of ``size_hw`` covering the image rescaled by each factor in ``scales``.

    Why: a whole-image resize to 240x320 keeps only the centre of wide frames (KITTI is 1226x370)
    and trains at one content scale, while the extractor runs on full-resolution frames. Tiles
    at several scales (1.0 = native pixels) use every part of each frame and match the scale the
    network sees at run time. Tiles are evenly spaced and overlap just enough to cover the
    rescaled image; a rescaled image smaller than a tile falls back to ``resize_crop``.
    Returns ``(suffix, tile)`` pairs, the suffix naming scale and tile index.
    """
    th, tw = int(size_hw[0]), int(size_hw[1])
    out: list[tuple[str, np.ndarray]] = []
    for s in scales:
        s = float(s)
        if s <= 0:
            raise ValueError(f"tile scales must be > 0, got {s}")
        h, w = image.shape[:2]
        nh, nw = int(round(h * s)), int(round(w * s))
        tag = f"s{int(round(s * 100)):03d}"
        if nh < th or nw < tw:
            out.append((f"{tag}_t0", resize_crop(image, size_hw)[0]))
            continue
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        img = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=interp)
        ny, nx = -(-nh // th), -(-nw // tw)
        ys = np.linspace(0, nh - th, ny).round().astype(int) if ny > 1 else [(nh - th) // 2]
        xs = np.linspace(0, nw - tw, nx).round().astype(int) if nx > 1 else [(nw - tw) // 2]
        k = 0
        for y in ys:
            for x in xs:
                out.append((f"{tag}_t{k}", np.ascontiguousarray(img[y:y + th, x:x + tw])))
                k += 1
    return out


def read_gray(path: str | Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return img


def sample_name(path: Path, root: Path | None = None) -> str:
    """Unique flat name for label files: relative path with separators replaced."""
    rel = path.relative_to(root) if root is not None and root in path.parents else Path(path.name)
    return "__".join(rel.with_suffix("").parts)


class ImageFolder(Dataset):
    """Gray images resized/cropped to ``resize`` ``[H, W]``; optional npz labels (``points`` as
    (row, col)) from Homographic Adaptation give a ``keypoint_map``."""

    def __init__(self, conf: Mapping[str, Any]):
        self.conf = dict(conf)
        roots = self.conf.get("image_dirs") or []
        if isinstance(roots, (str, Path)):
            roots = [roots]
        self.files = list_images(roots, int(self.conf.get("max_images", 0) or 0))
        if not self.files:
            raise ValueError(f"no images found in {roots}")
        self.size = tuple(int(v) for v in self.conf.get("resize", [240, 320]))
        self.labels_dir = Path(self.conf["labels_dir"]) if self.conf.get("labels_dir") else None
        # drop edge-like labels (structure-tensor l2/l1 below this; 0 = keep all, the reference)
        self.min_cornerness = float(self.conf.get("label_min_cornerness", 0.0) or 0.0)
        # keep the k strongest labels per image (the export's ``prob``; 0 = all, the reference):
        # caps a dense teacher's labels near the density the 65-way cell softmax is trained for
        self.label_top_k = int(self.conf.get("label_top_k", 0) or 0)
        if self.label_top_k < 0:
            raise ValueError("data.label_top_k must be >= 0 (0 = keep every label)")
        self.names = [p.stem for p in self.files]
        if self.labels_dir is not None:
            keep = [(f, n) for f, n in zip(self.files, self.names)
                    if (self.labels_dir / f"{n}.npz").is_file()]
            if not keep:
                raise ValueError(f"no label files in {self.labels_dir} match the images")
            if len(keep) < len(self.files):
                logger.warning("%d images have no labels and are skipped", len(self.files) - len(keep))
            self.files, self.names = [k[0] for k in keep], [k[1] for k in keep]

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(H, W) uint8 image and (N, 2) [x, y] label points (or None)."""
        img, _ = resize_crop(read_gray(self.files[index]), self.size)
        pts = None
        if self.labels_dir is not None:
            lab = np.load(self.labels_dir / f"{self.names[index]}.npz")
            pts = np.asarray(lab["points"], np.float32).reshape(-1, 2)[:, ::-1].copy()  # -> (x, y)
            if self.label_top_k and len(pts) > self.label_top_k:
                if "prob" not in lab.files:
                    raise ValueError(f"data.label_top_k needs label scores ('prob') in "
                                     f"{self.names[index]}.npz")
                order = np.argsort(-np.asarray(lab["prob"], np.float64), kind="stable")
                pts = pts[order[:self.label_top_k]]
            if self.min_cornerness > 0 and len(pts):
                from .cornerness import structure_tensor_ratio

                pts = pts[structure_tensor_ratio(img, pts) >= self.min_cornerness]
        return img, pts

    def __getitem__(self, index: int) -> dict[str, Any]:
        img, pts = self.load(index)
        out: dict[str, Any] = {
            "image": torch.from_numpy(img.astype(np.float32) / 255.0)[None],
            "name": self.names[index],
        }
        if pts is not None:
            out["keypoint_map"] = torch.from_numpy(points_to_map(pts, img.shape[:2]))
        return out
