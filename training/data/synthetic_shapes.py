"""Synthetic Shapes: simple primitives whose corners are known exactly
(docs/method_facts/training_superpoint.md#stage-1-magicpoint-on-synthetic-shapes).

Why: MagicPoint learns "what is a corner" from images where the ground truth is unambiguous (the
corners/endpoints of drawn primitives), before any real image is used. Every sample is a pure
function of ``(seed, split, index)``, so the data are identical across runs, resumes and DDP ranks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .homographies import filter_points
from .detector_sample import detector_sample

logger = logging.getLogger(__name__)

PRIMITIVES = ("draw_lines", "draw_polygon", "draw_multiple_polygons", "draw_ellipses",
              "draw_star", "draw_checkerboard", "draw_stripes", "draw_cube", "gaussian_noise")

DEFAULT_GENERATION: dict[str, Any] = {
    "image_size": [960, 1280],  # drawing canvas (H, W)
    "resize": [120, 160],  # final (H, W)
    "blur_size": 21,
    "primitives": list(PRIMITIVES),
    "truncate": {"draw_ellipses": 0.3, "draw_stripes": 0.2, "gaussian_noise": 0.1},
    "background": {"nb_blobs": 100, "min_rad_ratio": 0.02, "max_rad_ratio": 0.031,
                   "min_kernel_size": 150, "max_kernel_size": 500},
    "multiple_polygons": {"max_polygons": 30, "nb_blobs": 3000, "kernel_range": [50, 100]},
    "checkerboard_transform": [0.05, 0.15],
    "stripes_transform": [0.1, 0.1],
    "cube_angle_range": [0.31415927, 1.25663706],  # [pi/10, 4 pi/10]
}

_SPLIT_ID = {"training": 0, "train": 0, "validation": 1, "val": 1, "test": 2}


@dataclass
class ShapeSample:
    """A rendered primitive: gray uint8 image and its keypoints ``(N, 2)`` [x, y] pixels."""

    image: np.ndarray
    points: np.ndarray
    primitive: str


# ----------------------------------------------------------------------------- helpers
def random_color(rng: np.random.Generator, background: float, min_diff: int = 30) -> int:
    """A gray level at least ``min_diff`` away from the background so edges have contrast."""
    c = int(rng.integers(0, 256))
    if abs(c - background) < min_diff:
        c = (c + 128) % 256
    return c


def generate_background(shape: tuple[int, int], rng: np.random.Generator, nb_blobs: int = 100,
                        min_rad_ratio: float = 0.01, max_rad_ratio: float = 0.05,
                        min_kernel_size: int = 50, max_kernel_size: int = 300) -> np.ndarray:
    """Smooth random background: binarised noise + random discs, box-blurred (no corners)."""
    h, w = shape
    noise = rng.integers(0, 256, (h, w)).astype(np.uint8)
    _, img = cv2.threshold(noise, int(rng.integers(0, 256)), 255, cv2.THRESH_BINARY)
    bg = float(img.mean())
    dim = max(h, w)
    for _ in range(nb_blobs):
        r = int(rng.uniform(min_rad_ratio, max_rad_ratio) * dim)
        cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), max(r, 1),
                   random_color(rng, bg), -1)
    k = int(rng.integers(min_kernel_size, max(max_kernel_size, min_kernel_size + 1)))
    return cv2.blur(img, (k, k))


def _ccw(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
    return (c[1] - a[1]) * (b[0] - a[0]) > (b[1] - a[1]) * (c[0] - a[0])


def segments_intersect(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    return _ccw(p1, q1, q2) != _ccw(p2, q1, q2) and _ccw(p1, p2, q1) != _ccw(p1, p2, q2)


def corner_angles(poly: np.ndarray) -> np.ndarray:
    """Interior angle at every vertex of a closed polygon (radians, in [0, pi])."""
    prev = np.roll(poly, 1, axis=0) - poly
    nxt = np.roll(poly, -1, axis=0) - poly
    cos = (prev * nxt).sum(1) / (np.linalg.norm(prev, axis=1) * np.linalg.norm(nxt, axis=1) + 1e-12)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def _clean_polygon(pts: np.ndarray) -> np.ndarray:
    """Drop degenerate edges and flat corners (angle >= 2pi/3) until every corner is a corner."""
    while len(pts) >= 3:
        edges = np.linalg.norm(pts - np.roll(pts, 1, axis=0), axis=1)
        keep = edges > 0.01 * 100  # sub-pixel-scale edges are degenerate at canvas resolution
        keep &= corner_angles(pts) < 2 * math.pi / 3
        if keep.all():
            return pts
        pts = pts[keep]
    return pts


def _random_polygon(rng: np.random.Generator, shape: tuple[int, int], max_rad_ratio: float = 0.5,
                    min_rad_ratio: float = 0.1) -> tuple[np.ndarray, float, np.ndarray]:
    h, w = shape
    min_dim = min(h, w)
    for _ in range(100):
        n = int(rng.integers(3, 8))  # 3..7 corners
        rad = max(rng.uniform() * min_dim * max_rad_ratio, min_dim * min_rad_ratio)
        cx = rng.uniform(rad, w - rad)
        cy = rng.uniform(rad, h - rad)
        slices = np.linspace(0, 2 * math.pi, n + 1)
        ang = slices[:-1] + rng.uniform(size=n) * (slices[1:] - slices[:-1])
        r = np.maximum(rng.uniform(size=n), 0.4) * rad
        pts = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1)
        pts = _clean_polygon(pts)
        if len(pts) >= 3:
            return pts, rad, np.array([cx, cy])
    raise RuntimeError("could not draw a valid polygon")


# ----------------------------------------------------------------------------- primitives
def draw_lines(img: np.ndarray, rng: np.random.Generator, conf: Mapping[str, Any]) -> np.ndarray:
    """1-9 non-intersecting segments; keypoints are both endpoints."""
    h, w = img.shape
    bg = float(img.mean())
    min_dim = min(h, w)
    segs: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(int(rng.integers(1, 10))):
        p = np.array([rng.integers(0, w), rng.integers(0, h)], np.float64)
        q = np.array([rng.integers(0, w), rng.integers(0, h)], np.float64)
        if np.linalg.norm(p - q) < 0.05 * min_dim:
            continue
        if any(segments_intersect(p, q, a, b) for a, b in segs):
            continue
        segs.append((p, q))
        t = max(int(rng.uniform(0.01, 0.02) * min_dim), 1)
        cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), random_color(rng, bg), t)
    return np.array([pt for s in segs for pt in s], np.float32).reshape(-1, 2)


def draw_polygon(img: np.ndarray, rng: np.random.Generator, conf: Mapping[str, Any]) -> np.ndarray:
    """One filled polygon with 3-7 sharp corners; keypoints are the corners."""
    pts, _, _ = _random_polygon(rng, img.shape)
    cv2.fillPoly(img, [np.round(pts).astype(np.int32)], random_color(rng, float(img.mean())))
    return pts.astype(np.float32)


def _texture(rng: np.random.Generator, shape: tuple[int, int], color: int, nb_blobs: int,
             kernel_range: tuple[int, int]) -> np.ndarray:
    """Blob texture with mean ``color`` (fills polygons without creating strong corners)."""
    h, w = shape
    tex = np.full((h, w), 128, np.uint8)
    dim = max(h, w)
    for _ in range(nb_blobs):
        cv2.circle(tex, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                   max(int(rng.uniform(0.0, 0.05) * dim), 1), int(rng.integers(0, 256)), -1)
    k = int(rng.integers(kernel_range[0], max(kernel_range[1], kernel_range[0] + 1)))
    t = cv2.blur(tex, (k, k)).astype(np.float32)
    return np.clip(t - t.mean() + color, 0, 255)


def draw_multiple_polygons(img: np.ndarray, rng: np.random.Generator, conf: Mapping[str, Any]
                           ) -> np.ndarray:
    """Up to 30 non-overlapping textured polygons; keypoints are all their corners."""
    c = conf.get("multiple_polygons", DEFAULT_GENERATION["multiple_polygons"])
    h, w = img.shape
    bg = float(img.mean())
    circles: list[tuple[np.ndarray, float]] = []
    points: list[np.ndarray] = []
    for _ in range(int(c["max_polygons"])):
        pts, rad, center = _random_polygon(rng, img.shape, max_rad_ratio=0.25, min_rad_ratio=0.05)
        if any(np.linalg.norm(center - c0) < rad + r0 for c0, r0 in circles):
            continue
        circles.append((center, rad))
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round(pts - [x0, y0]).astype(np.int32)], 1)
        nb = max(int(c["nb_blobs"] * (y1 - y0) * (x1 - x0) / float(h * w)), 20)
        tex = _texture(rng, mask.shape, random_color(rng, bg), nb, tuple(
            max(int(k * max(y1 - y0, x1 - x0) / max(h, w)), 3) for k in c["kernel_range"]))
        roi = img[y0:y1, x0:x1]
        roi[mask > 0] = tex[mask > 0].astype(np.uint8)
        points.append(pts)
    return np.concatenate(points).astype(np.float32) if points else np.zeros((0, 2), np.float32)


def draw_ellipses(img: np.ndarray, rng: np.random.Generator, conf: Mapping[str, Any]) -> np.ndarray:
    """Up to 20 non-overlapping ellipses: negatives (smooth curves are not corners)."""
    h, w = img.shape
    bg = float(img.mean())
    min_dim = min(h, w)
    circles: list[tuple[np.ndarray, float]] = []
    for _ in range(20):
        ax = max(rng.uniform() * min_dim / 4, min_dim / 20)
        ay = max(rng.uniform() * min_dim / 4, min_dim / 20)
        r = max(ax, ay)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        if any(np.linalg.norm(np.array([cx, cy]) - c0) < r + r0 for c0, r0 in circles):
            continue
        circles.append((np.array([cx, cy]), r))
        cv2.ellipse(img, (int(cx), int(cy)), (int(ax), int(ay)), float(rng.uniform(0, 90)), 0, 360,
                    random_color(rng, bg), -1)
    return np.zeros((0, 2), np.float32)


def draw_star(img: np.ndarray, rng: np.random.Generator, conf: Mapping[str, Any]) -> np.ndarray:
    """3-5 thick branches from a centre; keypoints are the centre and the tips."""
    h, w = img.shape
    bg = float(img.mean())
    min_dim = min(h, w)
    n = int(rng.integers(3, 6))
    t = max(int(rng.uniform(0.01, 0.02) * min_dim), 1)
    rad = max(rng.uniform() * min_dim / 2, min_dim / 5)
    cx, cy = rng.uniform(rad, w - rad), rng.uniform(rad, h - rad)
    slices = np.linspace(0, 2 * math.pi, n + 1)
    ang = slices[:-1] + rng.uniform(size=n) * (slices[1:] - slices[:-1])
    r = np.maximum(rng.uniform(size=n), 0.3) * rad
    tips = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1)
    for tip in tips:
        cv2.line(img, (int(cx), int(cy)), (int(tip[0]), int(tip[1])), random_color(rng, bg), t)
    return np.concatenate([[[cx, cy]], tips]).astype(np.float32)


def _random_warp(rng: np.random.Generator, corners: np.ndarray, dim: float,
                 params: tuple[float, float]) -> np.ndarray:
    """Random affine then perspective perturbation of a board, as a homography on its corners."""
    a = dim * (params[0] + rng.uniform() * params[1])
    src3 = corners[:3].astype(np.float32)
    dst3 = (src3 + rng.uniform(-a, a, (3, 2))).astype(np.float32)
    affine = np.vstack([cv2.getAffineTransform(src3, dst3), [0, 0, 1]])
    moved = cv2.perspectiveTransform(corners[None].astype(np.float64), affine)[0]
    p = dim * (params[0] + rng.uniform() * params[1])
    persp_dst = moved + rng.uniform(-p, p, (4, 2))
    H2 = cv2.getPerspectiveTransform(moved.astype(np.float32), persp_dst.astype(np.float32))
    return H2 @ affine


def draw_checkerboard(img: np.ndarray, rng: np.random.Generator, conf: Mapping[str, Any]
                      ) -> np.ndarray:
    """A warped 3-6 x 3-6 checkerboard; keypoints are the grid intersections inside the image."""
    h, w = img.shape
    bg = float(img.mean())
    rows, cols = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    cell = min((h - 1) / rows, (w - 1) / cols)
    gx, gy = np.meshgrid(np.arange(cols + 1) * cell, np.arange(rows + 1) * cell)
    grid = np.stack([gx, gy], -1).reshape(-1, 2)
    board = np.array([[0, 0], [cols * cell, 0], [cols * cell, rows * cell], [0, rows * cell]])
    H = _random_warp(rng, board, max(h, w), tuple(conf.get("checkerboard_transform", (0.05, 0.15))))
    warped = cv2.perspectiveTransform(grid[None].astype(np.float64), H)[0].reshape(rows + 1, cols + 1, 2)
    colors = np.zeros((rows, cols), int)
    for i in range(rows):
        for j in range(cols):
            c = random_color(rng, bg)
            # neighbouring cells must differ, else their shared corner is no corner
            for _ in range(20):
                ok = (i == 0 or abs(c - colors[i - 1, j]) >= 30) and \
                     (j == 0 or abs(c - colors[i, j - 1]) >= 30)
                if ok:
                    break
                c = random_color(rng, bg)
            colors[i, j] = c
            quad = np.array([warped[i, j], warped[i, j + 1], warped[i + 1, j + 1], warped[i + 1, j]])
            cv2.fillConvexPoly(img, np.round(quad).astype(np.int32), int(c))
    # random boundary lines along the grid (makes the edges look like real boards)
    t = max(int(0.01 * min(h, w)), 1)
    for i in range(rows + 1):
        if rng.uniform() < 0.5:
            a, b = warped[i, 0], warped[i, cols]
            cv2.line(img, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)),
                     random_color(rng, bg), t)
    for j in range(cols + 1):
        if rng.uniform() < 0.5:
            a, b = warped[0, j], warped[rows, j]
            cv2.line(img, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)),
                     random_color(rng, bg), t)
    return filter_points(warped.reshape(-1, 2), (h, w))


def draw_stripes(img: np.ndarray, rng: np.random.Generator, conf: Mapping[str, Any]) -> np.ndarray:
    """5-12 warped vertical stripes; keypoints are the stripe corners (top and bottom ends)."""
    h, w = img.shape
    bg = float(img.mean())
    min_dim = min(h, w)
    n = int(rng.integers(5, 13))
    min_width = 0.04 * min_dim
    board_w = w * rng.uniform(0.6, 1.0)
    board_h = h * rng.uniform(0.6, 1.0)
    for _ in range(100):
        cuts = np.sort(rng.uniform(0, board_w, n - 1))
        xs = np.concatenate([[0], cuts, [board_w]])
        if np.all(np.diff(xs) >= min_width):
            break
    else:
        xs = np.linspace(0, board_w, n + 1)
    x0, y0 = (w - board_w) / 2, (h - board_h) / 2
    top = np.stack([xs + x0, np.full_like(xs, y0)], 1)
    bottom = np.stack([xs + x0, np.full_like(xs, y0 + board_h)], 1)
    board = np.array([top[0], top[-1], bottom[-1], bottom[0]])
    H = _random_warp(rng, board, max(h, w), tuple(conf.get("stripes_transform", (0.1, 0.1))))
    top = cv2.perspectiveTransform(top[None].astype(np.float64), H)[0]
    bottom = cv2.perspectiveTransform(bottom[None].astype(np.float64), H)[0]
    prev = bg
    for i in range(len(xs) - 1):
        c = random_color(rng, prev)
        quad = np.array([top[i], top[i + 1], bottom[i + 1], bottom[i]])
        cv2.fillConvexPoly(img, np.round(quad).astype(np.int32), int(c))
        prev = c
    return filter_points(np.concatenate([top, bottom]), (h, w))


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), \
        math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def draw_cube(img: np.ndarray, rng: np.random.Generator, conf: Mapping[str, Any]) -> np.ndarray:
    """An orthographically projected box: 3 visible faces, 7 visible corners as keypoints."""
    h, w = img.shape
    bg = float(img.mean())
    min_dim = min(h, w)
    lo, hi = conf.get("cube_angle_range", DEFAULT_GENERATION["cube_angle_range"])
    size = min_dim * (0.2 + rng.uniform(0, 0.3, 3))
    verts = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float64)
    verts = (verts - 0.5) * size
    R = _rotation(*rng.uniform(lo, hi, 3))
    scale = 0.4 + rng.uniform() * 0.6
    pts3 = verts @ R.T * scale
    center = np.array([w / 2, h / 2]) + rng.uniform(-0.15, 0.15, 2) * [w, h]
    proj = pts3[:, :2] + center
    # viewer looks along +z: the vertex with the largest z is the one hidden behind the box
    hidden = int(np.argmax(pts3[:, 2]))
    faces = [(0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5)]
    prev = bg
    for f in faces:
        if hidden in f:
            continue
        c = random_color(rng, prev)
        cv2.fillConvexPoly(img, np.round(proj[list(f)]).astype(np.int32), int(c))
        prev = c
    edge_col = random_color(rng, bg)
    t = max(int(0.01 * min_dim), 1)
    for f in faces:
        if hidden in f:
            continue
        for a, b in zip(f, f[1:] + f[:1]):
            cv2.line(img, tuple(np.round(proj[a]).astype(int)), tuple(np.round(proj[b]).astype(int)),
                     edge_col, t)
    keep = np.array([i for i in range(8) if i != hidden])
    return filter_points(proj[keep], (h, w))


def gaussian_noise(img: np.ndarray, rng: np.random.Generator, conf: Mapping[str, Any]) -> np.ndarray:
    """Pure noise, no keypoints (teaches the detector to ignore texture)."""
    img[...] = rng.integers(0, 256, img.shape).astype(np.uint8)
    return np.zeros((0, 2), np.float32)


DRAWERS: dict[str, Callable[[np.ndarray, np.random.Generator, Mapping[str, Any]], np.ndarray]] = {
    "draw_lines": draw_lines, "draw_polygon": draw_polygon,
    "draw_multiple_polygons": draw_multiple_polygons, "draw_ellipses": draw_ellipses,
    "draw_star": draw_star, "draw_checkerboard": draw_checkerboard, "draw_stripes": draw_stripes,
    "draw_cube": draw_cube, "gaussian_noise": gaussian_noise,
}


def generate_shape(primitive: str, rng: np.random.Generator,
                   conf: Mapping[str, Any] | None = None) -> ShapeSample:
    """Draw ``primitive`` on a fresh background, blur, resize; keypoints follow the resize."""
    c = {**DEFAULT_GENERATION, **(conf or {})}
    if primitive not in DRAWERS:
        raise ValueError(f"unknown primitive '{primitive}' (known: {', '.join(PRIMITIVES)})")
    h, w = (int(v) for v in c["image_size"])
    img = generate_background((h, w), rng, **c["background"])
    pts = DRAWERS[primitive](img, rng, c).reshape(-1, 2)
    pts = filter_points(pts, (h, w))
    b = int(c["blur_size"])
    if b > 0:
        img = cv2.GaussianBlur(img, (b | 1, b | 1), 0)
    rh, rw = (int(v) for v in c["resize"])
    if (rh, rw) != (h, w):
        img = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_LINEAR)
        s = np.array([rw / w, rh / h], np.float32)
        pts = (pts + 0.5) * s - 0.5  # centre-aligned pixel convention
        pts = filter_points(pts, (rh, rw))
    return ShapeSample(image=img, points=pts.astype(np.float32), primitive=primitive)


def sample_rng(seed: int, split: str, index: int, epoch: int = 0) -> np.random.Generator:
    """Independent stream per (seed, split, index, epoch) -- no shared global state."""
    return np.random.default_rng([int(seed), _SPLIT_ID.get(split, 3), int(index), int(epoch)])


class SyntheticShapes(Dataset):
    """Map-style dataset of Synthetic Shapes; optional npz cache; MagicPoint-style augmentation.

    Items: ``image`` (1, H, W) float in [0, 1], ``keypoint_map`` (H, W), ``valid_mask`` (H, W).
    Primitive frequencies follow the reference split sizes times the ``truncate`` fractions.
    """

    def __init__(self, conf: Mapping[str, Any], split: str = "training", size: int | None = None):
        self.conf = dict(conf)
        self.gen = {**DEFAULT_GENERATION, **self.conf.get("generation", {})}
        self.split = split
        self.seed = int(self.conf.get("seed", 0))
        sizes = self.conf.get("split_sizes", {"training": 10000, "validation": 200, "test": 500})
        prims = list(self.gen["primitives"])
        weights = np.array([float(self.gen["truncate"].get(p, 1.0)) for p in prims])
        self.primitives = prims
        self.probs = weights / weights.sum()
        self.size = int(size if size is not None else
                        round(float(sizes.get(split, 100)) * weights.sum()))
        cache = self.conf.get("cache_dir")
        self.cache_dir = Path(cache) / split if cache else None
        self.augment = bool(self.conf.get("augmentation", {}).get("enable", split == "training"))
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        """Augmentations differ per epoch (the drawn shapes do not)."""
        self.epoch = int(epoch)

    def raw(self, index: int) -> ShapeSample:
        if self.cache_dir is not None:
            f = self.cache_dir / f"{index:07d}.npz"
            if f.is_file():
                d = np.load(f)
                return ShapeSample(d["image"], d["points"], str(d["primitive"]))
        rng = sample_rng(self.seed, self.split, index)
        prim = self.primitives[int(rng.choice(len(self.primitives), p=self.probs))]
        s = generate_shape(prim, rng, self.gen)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_dir / f".{index:07d}.{id(self)}.npz"
            np.savez_compressed(tmp, image=s.image, points=s.points, primitive=s.primitive)
            tmp.replace(self.cache_dir / f"{index:07d}.npz")
        return s

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.raw(index)
        rng = sample_rng(self.seed + 1, self.split, index, self.epoch + 1) if self.augment else None
        return detector_sample(s.image, s.points, rng, self.conf.get("augmentation", {}))
