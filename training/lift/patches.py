"""LIFT quadruplet patches from a COLMAP reconstruction (docs/lfnet_lift.md#lift-training).

Why from COLMAP's *database* and not only the model: LIFT crops each keypoint patch at the SIFT
scale and orientation of that observation, and only the database keeps them (COLMAP stores every
keypoint as an affine frame ``[x, y, a11, a12, a21, a22]``; for SIFT it is a similarity,
``a11 = s cos t``, ``a21 = s sin t``). The model's tracks (``point2D_idx``) index the database
keypoints of the same image, so the pair gives (x, y, sigma, angle, 3-D point id) per observation,
the ``[x, y, scale, angle, pointid]`` rows of tf-lift's ``*-kp-minsc-2.0.h5`` files.

Quadruplet (``networks/lift.py``): P1, P2 = the same 3-D point seen in two different images,
P3 = a keypoint patch of another 3-D point, P4 = a non-keypoint patch mined at a random (x, y,
sigma) whose region overlaps no SIFT keypoint by more than ``neg_overlap_th`` (0.1, "3-D
blocking" over x, y and scale). Positives are shifted by up to +-20 % of the patch half-width in
x and y (``fPerturbInfo`` [0.2, 0.2, 0]), so the detector has something to localise.

Patch geometry (docs/lfnet_lift.md#lift-training): 128x128, upright, half width 12 sigma (24
sigma in total); the descriptor/orientation input is the central 64/128 (half width 6 sigma).
Normalised patch coordinates use the pixel-area convention of ``extract_patches(corners=False)``:
patch pixel u sits at ``(2u + 1)/P - 1``; the keypoint's coordinate is stored as ``xy``
(``-offset/half``).
Randomness is drawn from generators keyed by (seed, epoch) and (seed, epoch, item): quadruplets
are regenerated every epoch (``pair_interval`` = 1) and a resumed run sees the same ones.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from local_features_ros.extractors.patches import extract_patches

logger = logging.getLogger(__name__)

DEFAULT_PATCH_CONF: dict[str, Any] = {
    "patch_size": 128,  # nPatchSize
    "half_width_sigma": 12.0,  # fRatioScale: half width of the 128-px patch in SIFT sigmas
    "min_scale": 2.0,  # kp-minsc-2.0: smaller SIFT keypoints are not used as positives
    "perturb": [0.2, 0.2],  # fPerturbInfo (x, y) as a fraction of the patch half width
    "neg_overlap_th": 0.1,  # fNegOverlapTh
    "neg_region_sigma": 1.0,  # keypoint region half width (sigmas) in the overlap test [assumed]
    "neg_max_tries": 100,
    "samples_per_point": 1,  # quadruplets per 3-D point and epoch
    "pair_interval": 1,  # regenerate quadruplets every N epochs (0 = never: a fixed set)
    "max_points": 0,  # use only the first N usable 3-D points (0 = all; tiny overfit runs)
    # --augment_rotations: every patch is cropped at a uniform random in-plane rotation (the
    # stored keypoint location and angle follow); gives the orientation stage something to learn
    # when the views barely rotate (e.g. a robot camera). tf-lift: incompatible with desc.
    "augment_rotations": False,
    "image_split": [0.6, 0.2, 0.2],  # train / valid / test images
    "image_cache": 64,  # decoded images kept in memory
}


@dataclass
class SfMImageKeypoints:
    """All SIFT keypoints of one image in project pixels (top-left pixel centre = (0, 0))."""

    name: str
    path: Path
    keypoints: np.ndarray  # (N, 4) x, y, sigma, angle (rad, direction of the frame's x axis)
    point3D_ids: np.ndarray  # (N,) int64, -1 where the observation is not in the model


@dataclass
class SfMKeypointSet:
    """Keypoints of every registered image and the tracks ``point id -> [(image, kp index)]``."""

    images: list[SfMImageKeypoints]
    tracks: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def scales(self) -> np.ndarray:
        return np.concatenate([im.keypoints[:, 2] for im in self.images]) if self.images \
            else np.zeros(0)


def affine_to_similarity(frames: np.ndarray) -> np.ndarray:
    """COLMAP keypoint rows -> ``(N, 4)`` [x, y, sigma, angle] in project pixels.

    6 columns (affine ``a11 a12 a21 a22``): sigma = sqrt(|det A|), angle = atan2(a21, a11).
    4 columns (legacy ``x y scale orientation``) are taken as they are. COLMAP's pixel
    convention puts the top-left pixel centre at (0.5, 0.5), hence the -0.5.
    """
    f = np.asarray(frames, np.float64)
    if f.ndim != 2 or f.shape[1] not in (2, 4, 6):
        raise ValueError(f"keypoints must be (N, 2|4|6), got {f.shape}")
    out = np.zeros((f.shape[0], 4))
    out[:, :2] = f[:, :2] - 0.5
    if f.shape[1] == 6:
        out[:, 2] = np.sqrt(np.abs(f[:, 2] * f[:, 5] - f[:, 3] * f[:, 4]))
        out[:, 3] = np.arctan2(f[:, 4], f[:, 2])
    elif f.shape[1] == 4:
        out[:, 2:] = f[:, 2:]
    else:
        raise ValueError("keypoints without scale/orientation (x, y only) cannot make LIFT "
                         "patches: use a database written by COLMAP's SIFT extractor")
    return out


def read_colmap_keypoints(database: str | os.PathLike, model: str | os.PathLike,
                          image_root: str | os.PathLike) -> SfMKeypointSet:
    """Keypoints (database) + 3-D point ids (model tracks) of every registered image.

    Raises ``ValueError`` when the model was not reconstructed from this database (keypoint
    counts differ), because the track indices would then point at the wrong keypoints.
    """
    import pycolmap

    db_path, model_path, root = Path(database), Path(model), Path(image_root)
    if not db_path.is_file():
        raise FileNotFoundError(f"COLMAP database not found: {db_path}")
    if not model_path.is_dir():
        raise FileNotFoundError(f"COLMAP model folder not found: {model_path}")
    rec = pycolmap.Reconstruction(str(model_path))
    db = pycolmap.Database()
    db.open(str(db_path))
    try:
        by_name = {im.name: im.image_id for im in db.read_all_images()}
        images: list[SfMImageKeypoints] = []
        slot: dict[int, int] = {}
        for image_id in sorted(rec.reg_image_ids(), key=lambda i: rec.images[i].name):
            im = rec.images[image_id]
            if im.name not in by_name:
                raise ValueError(f"image {im.name} of {model_path} is not in {db_path}")
            kps = affine_to_similarity(db.read_keypoints(by_name[im.name]))
            if len(kps) != len(im.points2D):
                raise ValueError(f"{im.name}: {len(kps)} database keypoints but {len(im.points2D)} "
                                 f"model observations: {model_path} was not made from {db_path}")
            pids = np.full(len(kps), -1, np.int64)
            for k, p2d in enumerate(im.points2D):
                if p2d.has_point3D():
                    pids[k] = int(p2d.point3D_id)
            slot[image_id] = len(images)
            images.append(SfMImageKeypoints(im.name, root / im.name, kps, pids))
    finally:
        db.close()
    tracks: dict[int, list[tuple[int, int]]] = {}
    for pid, pt in rec.points3D.items():
        obs = [(slot[e.image_id], int(e.point2D_idx)) for e in pt.track.elements
               if e.image_id in slot]
        tracks[int(pid)] = obs
    logger.info("LIFT keypoints from %s: %d images, %d keypoints, %d 3-D points", db_path,
                len(images), sum(len(i.keypoints) for i in images), len(tracks))
    return SfMKeypointSet(images, tracks)


def split_images(n: int, fractions: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Image indices -> (train, valid, test) by a seeded permutation (tf-lift 60/20/20)."""
    f = np.asarray(list(fractions) + [0.0] * (3 - len(fractions)), np.float64)[:3]
    if (f < 0).any() or f.sum() <= 0:
        raise ValueError(f"image_split must be non-negative fractions, got {list(fractions)}")
    f = f / f.sum()
    perm = np.random.default_rng(seed).permutation(n)
    a = int(round(f[0] * n))
    b = a + int(round(f[1] * n))
    return [np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:])]


def square_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of axis-aligned squares ``[x, y, half]`` (broadcasting over leading dims)."""
    ax0, ax1 = a[..., 0] - a[..., 2], a[..., 0] + a[..., 2]
    ay0, ay1 = a[..., 1] - a[..., 2], a[..., 1] + a[..., 2]
    bx0, bx1 = b[..., 0] - b[..., 2], b[..., 0] + b[..., 2]
    by0, by1 = b[..., 1] - b[..., 2], b[..., 1] + b[..., 2]
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = 4 * a[..., 2] ** 2 + 4 * b[..., 2] ** 2 - inter
    return inter / np.maximum(union, 1e-12)


def mine_negative(keypoints: np.ndarray, shape: tuple[int, int], scales: np.ndarray,
                  rng: np.random.Generator, conf: Mapping[str, Any]) -> np.ndarray | None:
    """A random ``[x, y, sigma]`` (sigma from the dataset's keypoint scales) whose region overlaps
    every keypoint region by at most ``neg_overlap_th``; None after ``neg_max_tries`` draws."""
    h, w = shape
    k = float(conf["neg_region_sigma"])
    regions = np.stack([keypoints[:, 0], keypoints[:, 1], k * keypoints[:, 2]], 1)
    for _ in range(int(conf["neg_max_tries"])):
        s = float(scales[rng.integers(len(scales))]) if len(scales) else 2.0
        cand = np.array([rng.uniform(0, w - 1), rng.uniform(0, h - 1), s])
        region = np.array([cand[0], cand[1], k * s])
        th = float(conf["neg_overlap_th"])
        if len(regions) == 0 or square_iou(region[None], regions).max() <= th:
            return cand
    return None


@dataclass
class Quadruplet:
    """Where the four patches come from: image index, patch centre (px), sigma, angle, keypoint
    location in normalised patch coordinates, 3-D point id (-1 for P4)."""

    image: np.ndarray  # (4,) int
    centre: np.ndarray  # (4, 2)
    sigma: np.ndarray  # (4,)
    angle: np.ndarray  # (4,)
    xy: np.ndarray  # (4, 2)
    point_id: np.ndarray  # (4,) int64
    rotation: np.ndarray  # (4,) in-plane rotation the patch was cropped at (0 = upright)


class LiftQuadruplets(Dataset):
    """Quadruplet patches ``(4, 1, P, P)`` in [0, 1] plus their geometry (see module docstring)."""

    def __init__(self, keypoints: SfMKeypointSet, conf: Mapping[str, Any] | None = None,
                 split: str = "training", seed: int = 0):
        self.conf = {**DEFAULT_PATCH_CONF, **dict(conf or {})}
        self.kps = keypoints
        self.seed = int(seed) + (0 if split == "training" else 7919)
        self.split = split
        parts = split_images(len(keypoints.images), self.conf["image_split"], int(seed))
        names = {"training": 0, "validation": 1, "test": 2}
        if split not in names:
            raise ValueError(f"split must be one of {sorted(names)}")
        self.image_ids = set(int(i) for i in parts[names[split]])
        min_s = float(self.conf["min_scale"])
        self.points: list[int] = []
        self.obs: dict[int, list[tuple[int, int]]] = {}
        for pid, track in sorted(keypoints.tracks.items()):
            good = [(i, k) for i, k in track if i in self.image_ids
                    and keypoints.images[i].keypoints[k, 2] >= min_s]
            if len({i for i, _ in good}) >= 2:
                self.points.append(pid)
                self.obs[pid] = good
        if int(self.conf["max_points"]) > 0:
            self.points = self.points[:int(self.conf["max_points"])]
        if len(self.points) < 2:
            raise ValueError(f"{split}: only {len(self.points)} 3-D points seen in >= 2 {split} "
                             f"images with sigma >= {min_s}; need at least 2 (more images, a "
                             "lower data.min_scale or another image_split)")
        self.scales = keypoints.scales()
        if (self.scales >= min_s).any():
            self.scales = self.scales[self.scales >= min_s]
        self._shapes: dict[int, tuple[int, int]] = {}
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.epoch = -1
        self.set_epoch(0)
        logger.info("LIFT %s quadruplets: %d points, %d per epoch", split, len(self.points),
                    len(self))

    # ------------------------------------------------------------------ images
    def image(self, i: int) -> torch.Tensor:
        """Gray float ``(1, 1, H, W)`` in [0, 1] (LRU-cached)."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        p = self.kps.images[i].path
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FileNotFoundError(f"cannot read image {p}")
        t = torch.from_numpy(img.astype(np.float32) / 255.0)[None, None]
        self._cache[i] = t
        self._shapes[i] = img.shape[:2]
        while len(self._cache) > max(int(self.conf["image_cache"]), 1):
            self._cache.popitem(last=False)
        return t

    def shape(self, i: int) -> tuple[int, int]:
        if i not in self._shapes:
            self.image(i)
        return self._shapes[i]

    # ------------------------------------------------------------------ sampling
    def __len__(self) -> int:
        return len(self.points) * int(self.conf["samples_per_point"])

    def set_epoch(self, epoch: int) -> None:
        """Regenerate the quadruplets every ``pair_interval`` epochs."""
        every = int(self.conf["pair_interval"])
        key = int(epoch) // every if every > 0 else 0
        if key == self.epoch:
            return
        self.epoch = key
        self.quads = [self._draw(i) for i in range(len(self))]

    def _draw(self, item: int) -> Quadruplet:
        rng = np.random.default_rng([self.seed, self.epoch, item])
        c = self.conf
        pid = self.points[item % len(self.points)]
        obs = self.obs[pid]
        a = obs[rng.integers(len(obs))]
        others = [o for o in obs if o[0] != a[0]]
        b = others[rng.integers(len(others))]
        j = int(rng.integers(len(self.points) - 1))
        pid3 = self.points[j if j < self.points.index(pid) else j + 1]
        obs3 = self.obs[pid3]
        d = obs3[rng.integers(len(obs3))]
        ims, cen, sig, ang, xy, ids = [], [], [], [], [], []
        hwf = float(c["half_width_sigma"])
        per = np.asarray(c["perturb"], np.float64)[:2]
        rot = rng.uniform(0.0, 2 * np.pi, 4) if c["augment_rotations"] else np.zeros(4)
        for n, ((i, k), p) in enumerate(((a, pid), (b, pid), (d, pid3))):
            x, y, s, t = self.kps.images[i].keypoints[k]
            off = rng.uniform(-1.0, 1.0, 2) * per  # fraction of the half width, image axes
            half = hwf * s
            ims.append(i)
            cen.append([x + off[0] * half, y + off[1] * half])
            sig.append(s)
            # patch sample = centre + half R(rot) o, so the keypoint sits at o = R(-rot)(-off)
            cr, sr = np.cos(rot[n]), np.sin(rot[n])
            xy.append([-(cr * off[0] + sr * off[1]), -(-sr * off[0] + cr * off[1])])
            ang.append(t - rot[n])
            ids.append(p)
        neg = None
        train_imgs = sorted(self.image_ids)
        for _ in range(len(train_imgs) * 4):
            i = int(train_imgs[rng.integers(len(train_imgs))])
            neg = mine_negative(self.kps.images[i].keypoints, self.shape(i), self.scales, rng, c)
            if neg is not None:
                break
        if neg is None:
            raise RuntimeError("could not mine a non-keypoint patch in any image: lower "
                               "data.neg_region_sigma or raise data.neg_overlap_th")
        ims.append(i)
        cen.append(neg[:2].tolist())
        sig.append(neg[2])
        ang.append(0.0)
        xy.append([0.0, 0.0])
        ids.append(-1)
        return Quadruplet(np.asarray(ims), np.asarray(cen, np.float64), np.asarray(sig, np.float64),
                          np.asarray(ang, np.float64), np.asarray(xy, np.float64),
                          np.asarray(ids, np.int64), rot)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        q = self.quads[item]
        p = int(self.conf["patch_size"])
        hwf = float(self.conf["half_width_sigma"])
        patches = []
        for n in range(4):
            img = self.image(int(q.image[n]))
            centre = torch.tensor(q.centre[n], dtype=torch.float32).view(1, 1, 2)
            half = torch.tensor([[hwf * q.sigma[n]]], dtype=torch.float32)
            rot = torch.tensor([[q.rotation[n]]], dtype=torch.float32)
            patches.append(extract_patches(img, centre, half, rot, p, corners=False)[0, 0])
        f = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
        return {"patches": torch.stack(patches), "xy": f(q.xy), "angle": f(q.angle),
                "sigma": f(q.sigma), "centre": f(q.centre), "rotation": f(q.rotation),
                "image": torch.from_numpy(q.image.astype(np.int64)),
                "point_id": torch.from_numpy(q.point_id)}


def area_to_corner(xy: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised pixel-area coordinates of a ``size``-px patch -> the corner convention
    (pixel i <-> -1 + 2i/(size-1)) that the runtime soft-argmax reports."""
    i = ((xy + 1.0) * size - 1.0) / 2.0
    return -1.0 + 2.0 * i / (size - 1)


def patch_pixels(xy: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised pixel-area coordinates -> patch pixel coordinates (centre of pixel 0 = 0)."""
    return (xy + 1.0) * size / 2.0 - 0.5


def inner_crops(patches: torch.Tensor, xy: torch.Tensor, angle: torch.Tensor | None,
                out_size: int = 64, fraction: float = 0.5) -> torch.Tensor:
    """Descriptor/orientation input: the ``out_size`` crop of half width ``fraction`` x the patch
    half width (6 of 12 sigma) centred at ``xy`` (normalised) and rotated by ``angle``.

    ``patches (N, 1, P, P)`` -> ``(N, 1, out, out)``; differentiable in ``xy`` and ``angle``.
    """
    n, _, p, _ = patches.shape
    centre = patch_pixels(xy, p).view(n, 1, 2)
    half = torch.full((n, 1), fraction * p / 2.0, dtype=patches.dtype, device=patches.device)
    oris = None if angle is None else angle.view(n, 1)
    # one "image" per patch: fold N into the batch of extract_patches
    return extract_patches(patches, centre, half, oris, out_size, corners=False)[:, 0]



def colmap_from_rendered(out_dir: str | os.PathLike, n_frames: int = 8, seed: int = 0,
                         width: int = 160, height: int = 120, kind: str = "orbit",
                         trajectory_kw: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Render frames of :class:`SyntheticScene` and run COLMAP (pycolmap: SIFT extraction,
    exhaustive matching, incremental mapping) on them: a real database + model for LIFT patches
    without any download. Reuses a finished folder. Returns ``database``, ``model``, ``images``.

    Why real COLMAP here rather than exact poses: the patch builder must read what COLMAP
    stores (affine SIFT frames, tracks indexing them); the renderer's exact depth and poses stay
    available to check the result independently.
    """
    import pycolmap

    from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene

    out = Path(out_dir)
    images, db, sparse = out / "images", out / "database.db", out / "sparse"
    done = sparse / "0" / "images.bin"
    if not done.is_file():
        images.mkdir(parents=True, exist_ok=True)
        scene = SyntheticScene(seed=int(seed), camera=PinholeCamera.default(width, height))
        for fr in scene.frames(int(n_frames), kind, **dict(trajectory_kw or {})):
            cv2.imwrite(str(images / f"frame_{fr.index:04d}.png"),
                        cv2.cvtColor(fr.image, cv2.COLOR_RGB2BGR))
        if db.exists():
            db.unlink()
        pycolmap.extract_features(db, images, camera_mode=pycolmap.CameraMode.SINGLE,
                                  camera_model="PINHOLE")
        pycolmap.match_exhaustive(db)
        sparse.mkdir(parents=True, exist_ok=True)
        recs = pycolmap.incremental_mapping(db, images, sparse)
        if not recs:
            raise RuntimeError(f"COLMAP reconstructed nothing from {images}")
        best = max(recs, key=lambda k: recs[k].num_reg_images())
        if best != 0:  # keep the largest model as sparse/0
            recs[best].write(str(sparse / "0"))
    return {"database": db, "model": sparse / "0", "images": images}
