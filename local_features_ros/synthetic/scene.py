"""A textured 3D room with exact depth and poses, rendered by vectorised ray casting.

Why our own renderer: tests, the demo and training need image pairs whose geometry is known
*exactly* (depth, intrinsics, poses) without any data on disk. A room of textured rectangles is
enough: every surface is a plane, so depth is exact, and procedural textures give every detector
(SuperPoint, ORB, SIFT, ...) plenty of corners and blobs.

Conventions (``docs/ARCHITECTURE.md``): world frame z-up (floor at z = 0), OpenCV cameras
(x right, y down, z forward), ``T_world_cam`` camera-to-world, pixel centre of the top-left
pixel at (0, 0). ``depth`` is the z-depth in the camera frame (not the ray length).

Rendering: for every pixel ray and every rectangle the ray-plane intersection is computed in
closed form (numpy, broadcast over pixel rows and columns); the nearest hit wins (z-buffer).
Colours are sampled *bilinearly* from one texture atlas with ``cv2.remap``. Anti-aliasing uses
a quincunx pattern: the pixel-centre sample (weight 1/2) plus the four pixel corners (1/8 each,
shared with the neighbours), i.e. two ray-casting passes for five samples. The kernel is
symmetric around the pixel centre, so it does not shift geometry. Depth is the centre sample.
Shading is Lambertian with one directional light (a constant per face), so a surface point has
the same colour from every viewpoint: this is what makes photometric checks possible.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "PinholeCamera",
    "RenderedFrame",
    "SyntheticScene",
    "Face",
    "warp_points_with_depth",
    "relative_pose",
    "look_at",
]


# ----------------------------------------------------------------------------- camera / frames
@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole intrinsics (no distortion) and the image size in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def K(self) -> np.ndarray:  # noqa: N802 (the usual name)
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
                        dtype=np.float64)

    @classmethod
    def default(cls, width: int = 320, height: int = 240) -> "PinholeCamera":
        """~64 degree horizontal field of view, principal point at the image centre."""
        f = 0.8 * width
        return cls(fx=f, fy=f, cx=width / 2.0 - 0.5, cy=height / 2.0 - 0.5,
                   width=int(width), height=int(height))


@dataclass
class RenderedFrame:
    """One rendered view: RGB image, exact z-depth, pose and intrinsics."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (H, W) float32 z-depth in metres, 0 where no surface
    T_world_cam: np.ndarray  # (4, 4) float64 camera-to-world
    camera: PinholeCamera
    index: int
    stamp: float  # seconds
    face_ids: np.ndarray | None = None  # (H, W) int32 index into SyntheticScene.faces, -1 = none

    @property
    def K(self) -> np.ndarray:  # noqa: N802
        return self.camera.K

    @property
    def gray(self) -> np.ndarray:
        return cv2.cvtColor(self.image, cv2.COLOR_RGB2GRAY)


def relative_pose(T_world_cam0: np.ndarray, T_world_cam1: np.ndarray) -> np.ndarray:
    """``T_cam1_cam0`` (maps camera-0 points into camera 1: ``x1 = R x0 + t``)."""
    return np.linalg.inv(np.asarray(T_world_cam1, np.float64)) @ np.asarray(T_world_cam0, np.float64)


def look_at(position: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0]),
            roll_rad: float = 0.0) -> np.ndarray:
    """Camera-to-world pose of an OpenCV camera at ``position`` looking at ``target``."""
    p = np.asarray(position, np.float64)
    z = np.asarray(target, np.float64) - p
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, np.float64))
    if np.linalg.norm(x) < 1e-9:  # looking straight up/down: any right vector will do
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=1)
    if roll_rad:
        c, s = math.cos(roll_rad), math.sin(roll_rad)
        R = R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = p
    return T


def warp_points_with_depth(kpts0: np.ndarray, depth0: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                           T_cam1_cam0: np.ndarray, depth1: np.ndarray | None = None,
                           interpolation: str = "bilinear", occlusion_tol: float = 0.02,
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Project image-0 pixels into image 1 through ``depth0`` and the relative pose.

    Depth lookup (``interpolation``): ``"bilinear"`` interpolates *inverse* depth between the 4
    neighbouring pixels, which is exact on a plane (1/z is affine in the pixel coordinates), and
    falls back to the nearest pixel when a neighbour is empty or the 4 depths disagree by more
    than 5 % (a depth edge: interpolating across it would invent a surface); ``"nearest"`` uses
    the nearest pixel only.

    Returns ``(kpts1 (N, 2) float64, valid (N,) bool)``; invalid rows of ``kpts1`` are NaN.
    ``valid``: depth > 0 at the keypoint and the point lies in front of camera 1. When ``depth1`` is given, ``valid`` also requires the
    point to land inside image 1 and to agree with ``depth1`` there (relative ``occlusion_tol``),
    i.e. to be visible, not occluded.
    """
    k = np.asarray(kpts0, np.float64).reshape(-1, 2)
    d0 = np.asarray(depth0, np.float64)
    h, w = d0.shape
    n = k.shape[0]
    if n == 0:
        return np.zeros((0, 2), np.float64), np.zeros(0, bool)
    z = _sample_depth(d0, k, interpolation)
    valid = np.isfinite(z) & (z > 0)
    z = np.where(valid, z, 1.0)
    rays = np.linalg.solve(np.asarray(K0, np.float64), np.stack([k[:, 0], k[:, 1], np.ones(n)], 0))
    X0 = rays * z[None]
    T = np.asarray(T_cam1_cam0, np.float64)
    X1 = T[:3, :3] @ X0 + T[:3, 3:4]
    valid &= X1[2] > 1e-9
    X1z = np.where(valid, X1[2], 1.0)
    p = np.asarray(K1, np.float64) @ (X1 / X1z[None])
    kpts1 = p[:2].T.copy()
    kpts1[~valid] = np.nan
    if depth1 is not None:
        d1 = np.asarray(depth1, np.float64)
        h1, w1 = d1.shape
        inside = valid & (kpts1[:, 0] > -0.5) & (kpts1[:, 0] < w1 - 0.5) \
            & (kpts1[:, 1] > -0.5) & (kpts1[:, 1] < h1 - 0.5)
        z1 = np.full(n, np.nan)
        z1[inside] = _sample_depth(d1, kpts1[inside], interpolation)
        vis = inside & np.isfinite(z1) & (z1 > 0)
        vis[vis] &= np.abs(z1[vis] - X1[2][vis]) <= occlusion_tol * X1[2][vis]
        valid = vis
    return kpts1, valid


def _sample_depth(depth: np.ndarray, pts: np.ndarray, interpolation: str) -> np.ndarray:
    """Depth at sub-pixel points (see ``warp_points_with_depth``); NaN outside the image."""
    h, w = depth.shape
    x, y = pts[:, 0], pts[:, 1]
    out = np.full(len(pts), np.nan)
    inside = (x > -0.5) & (x < w - 0.5) & (y > -0.5) & (y < h - 0.5)
    xi = np.clip(np.rint(x), 0, w - 1).astype(np.int64)
    yi = np.clip(np.rint(y), 0, h - 1).astype(np.int64)
    nearest = depth[yi, xi]
    out[inside] = nearest[inside]
    if interpolation == "nearest":
        return out
    if interpolation != "bilinear":
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got '{interpolation}'")
    x0 = np.clip(np.floor(x), 0, w - 2).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, h - 2).astype(np.int64)
    ax = np.clip(x - x0, 0.0, 1.0)
    ay = np.clip(y - y0, 0.0, 1.0)
    q = np.stack([depth[y0, x0], depth[y0, x0 + 1], depth[y0 + 1, x0], depth[y0 + 1, x0 + 1]], 1)
    ok = inside & np.all(q > 0, axis=1)
    ok[ok] &= (q[ok].max(1) - q[ok].min(1)) <= 0.05 * q[ok].min(1)
    inv = 1.0 / np.where(q > 0, q, 1.0)
    wts = np.stack([(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay], 1)
    interp = 1.0 / (inv * wts).sum(1)
    out[ok] = interp[ok]
    return out


# ----------------------------------------------------------------------------- scene geometry
@dataclass(frozen=True)
class Face:
    """A textured rectangle ``origin + a * u_dir + b * v_dir``, ``a in [0, size_u]``, ``b in [0,
    size_v]`` (metres). ``normal`` = u_dir x v_dir points to the side it is seen from."""

    origin: np.ndarray  # (3,)
    u_dir: np.ndarray  # (3,) unit
    v_dir: np.ndarray  # (3,) unit, orthogonal to u_dir
    size_u: float
    size_v: float
    name: str

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.u_dir, self.v_dir)
        return n / np.linalg.norm(n)

    def contains(self, points: np.ndarray, tol: float = 1e-6) -> np.ndarray:
        """Which world points lie on this rectangle (within ``tol`` metres)."""
        d = np.asarray(points, np.float64).reshape(-1, 3) - self.origin
        a, b, c = d @ self.u_dir, d @ self.v_dir, d @ self.normal
        return ((np.abs(c) <= tol) & (a >= -tol) & (a <= self.size_u + tol)
                & (b >= -tol) & (b <= self.size_v + tol))


def _face(origin, u, v, name: str) -> Face:
    u = np.asarray(u, np.float64)
    v = np.asarray(v, np.float64)
    return Face(np.asarray(origin, np.float64), u / np.linalg.norm(u), v / np.linalg.norm(v),
                float(np.linalg.norm(u)), float(np.linalg.norm(v)), name)


def _room_faces(sx: float, sy: float, sz: float, ceiling: bool) -> list[Face]:
    """Inward-facing floor, walls and ceiling of the box [-sx, sx] x [-sy, sy] x [0, sz]."""
    X, Y, Z = (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0]))
    faces = [
        _face([-sx, -sy, 0], 2 * sx * X, 2 * sy * Y, "floor"),  # normal +z
        _face([-sx, -sy, 0], 2 * sy * Y, sz * Z, "wall_x-"),  # normal +x
        _face([sx, sy, 0], -2 * sy * Y, sz * Z, "wall_x+"),  # normal -x
        _face([sx, -sy, 0], -2 * sx * X, sz * Z, "wall_y-"),  # normal +y
        _face([-sx, sy, 0], 2 * sx * X, sz * Z, "wall_y+"),  # normal -y
    ]
    if ceiling:
        faces.append(_face([-sx, sy, sz], 2 * sx * X, -2 * sy * Y, "ceiling"))  # normal -z
    return faces


def _box_faces(centre_xy: np.ndarray, half: np.ndarray, height: float, yaw: float,
               name: str) -> list[Face]:
    """The 4 sides and the top of a box standing on the floor (outward normals, no bottom)."""
    c, s = math.cos(yaw), math.sin(yaw)
    ex = np.array([c, s, 0.0])
    ey = np.array([-s, c, 0.0])
    Z = np.array([0.0, 0.0, 1.0])
    ctr = np.array([centre_xy[0], centre_xy[1], 0.0])
    hx, hy = float(half[0]), float(half[1])
    p = lambda a, b, z=0.0: ctr + a * hx * ex + b * hy * ey + z * Z  # noqa: E731
    return [
        _face(p(1, -1), 2 * hy * ey, height * Z, f"{name}_x+"),  # normal ey x Z = ex
        _face(p(-1, 1), -2 * hy * ey, height * Z, f"{name}_x-"),  # normal -ex
        _face(p(1, 1), -2 * hx * ex, height * Z, f"{name}_y+"),  # normal ey
        _face(p(-1, -1), 2 * hx * ex, height * Z, f"{name}_y-"),  # normal -ey
        _face(p(-1, -1, height), 2 * hx * ex, 2 * hy * ey, f"{name}_top"),  # normal Z
    ]


# ----------------------------------------------------------------------------- textures
def _procedural_texture(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Feature-rich RGB texture: colour gradient + rectangles, blobs, polygons, checker patches,
    lines and fine noise. Everything high-contrast so corners survive shading and blur."""
    # Low-frequency colour field.
    gw, gh = max(2, w // 64 + 2), max(2, h // 64 + 2)
    base = rng.uniform(40, 215, (gh, gw, 3)).astype(np.float32)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    n_prims = max(6, int(w * h / 900))
    for _ in range(n_prims):
        kind = rng.integers(0, 7)
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:  # push towards black / white for contrast
            col = tuple(int(v) for v in (rng.integers(0, 50, 3) if rng.random() < 0.5
                                         else rng.integers(205, 256, 3)))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(6, 40))
        if kind == 0:  # axis-aligned rectangle
            cv2.rectangle(img, (cx, cy), (cx + size, cy + int(rng.integers(6, 40))), col, -1)
        elif kind == 1:  # blob / ellipse
            cv2.ellipse(img, (cx, cy), (size // 2 + 2, int(rng.integers(4, 22))),
                        float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
        elif kind == 2:  # random triangle / quad
            k = int(rng.integers(3, 5))
            pts = np.array([[cx, cy]]) + rng.integers(-size, size + 1, (k, 2))
            cv2.fillPoly(img, [pts.astype(np.int32)], col, cv2.LINE_AA)
        elif kind == 3:  # checker patch
            cell = int(rng.integers(4, 10))
            nc = int(rng.integers(2, 5))
            col2 = tuple(255 - v for v in col)
            for i in range(nc):
                for j in range(nc):
                    x0, y0 = cx + i * cell, cy + j * cell
                    cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1),
                                  col if (i + j) % 2 == 0 else col2, -1)
        elif kind == 4:  # thick line
            ang = rng.uniform(0, math.pi)
            d = np.array([math.cos(ang), math.sin(ang)]) * size * 1.5
            cv2.line(img, (int(cx - d[0]), int(cy - d[1])), (int(cx + d[0]), int(cy + d[1])),
                     col, int(rng.integers(2, 5)), cv2.LINE_AA)
        elif kind == 5:  # gradient patch
            pw, ph = size + 8, int(rng.integers(10, 48))
            x1, y1 = min(w, cx + pw), min(h, cy + ph)
            if x1 > cx and y1 > cy:
                ramp = np.linspace(0.0, 1.0, x1 - cx, dtype=np.float32)[None, :, None]
                c0 = np.array(col, np.float32)
                patch = c0 * (1 - ramp) + (255 - c0) * ramp
                img[cy:y1, cx:x1] = np.broadcast_to(patch, (y1 - cy, x1 - cx, 3)).astype(np.uint8)
        else:  # ring
            cv2.circle(img, (cx, cy), size // 2 + 3, col, int(rng.integers(2, 4)), cv2.LINE_AA)
    noise = rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    img = np.clip(img.astype(np.float32) + noise, 0, 255)
    img = cv2.GaussianBlur(img, (0, 0), 0.7)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class _Atlas:
    image: np.ndarray  # (Ha, Wa, 3) uint8
    offset: np.ndarray  # (F, 2) texel offset (x, y) of each face's tile
    size: np.ndarray  # (F, 2) tile size (w, h) in texels


_ATLAS_PAD = 2  # texels between tiles so bilinear sampling never bleeds into a neighbour


def _pack_atlas(textures: list[np.ndarray], max_width: int = 2048) -> _Atlas:
    """Shelf packing (tallest first) of the face textures into one image for one ``cv2.remap``."""
    order = sorted(range(len(textures)), key=lambda i: -textures[i].shape[0])
    offset = np.zeros((len(textures), 2), np.int64)
    x = y = shelf_h = 0
    width = max(max_width, max(t.shape[1] for t in textures) + _ATLAS_PAD)
    for i in order:
        th, tw = textures[i].shape[:2]
        if x + tw + _ATLAS_PAD > width:
            x, y, shelf_h = 0, y + shelf_h + _ATLAS_PAD, 0
        offset[i] = (x, y)
        x += tw + _ATLAS_PAD
        shelf_h = max(shelf_h, th)
    atlas = np.zeros((y + shelf_h + _ATLAS_PAD, width, 3), np.uint8)
    for i, t in enumerate(textures):
        ox, oy = offset[i]
        atlas[oy:oy + t.shape[0], ox:ox + t.shape[1]] = t
    sizes = np.array([[t.shape[1], t.shape[0]] for t in textures], np.int64)
    return _Atlas(atlas, offset, sizes)


# ----------------------------------------------------------------------------- the scene
ROOM_HALF_X, ROOM_HALF_Y, ROOM_HEIGHT = 6.0, 4.0, 3.0
#: Boxes stay inside this disc around the origin, so the default trajectories never enter one.
BOX_REGION_RADIUS = 1.8


@functools.lru_cache(maxsize=8)
def _build_scene(seed: int, texels_per_metre: float, ceiling: bool, n_boxes: int
                 ) -> tuple[tuple[Face, ...], _Atlas, np.ndarray]:
    """Faces, texture atlas and per-face shading (cached: textures are the slow part)."""
    rng = np.random.default_rng(seed)
    faces = _room_faces(ROOM_HALF_X, ROOM_HALF_Y, ROOM_HEIGHT, ceiling)
    placed: list[tuple[np.ndarray, float]] = []
    for b in range(n_boxes):
        for _ in range(100):  # rejection-sample a footprint that stays in the box region
            half = rng.uniform(0.2, 0.42, 2)
            r = rng.uniform(0.0, BOX_REGION_RADIUS - float(np.hypot(*half)))
            a = rng.uniform(0, 2 * math.pi)
            centre = np.array([r * math.cos(a), r * math.sin(a)])
            yaw = float(rng.uniform(0, math.pi))
            if all(np.hypot(*(centre - c)) > h + float(np.hypot(*half)) + 0.05
                   for c, h in placed):
                break
        placed.append((centre, float(np.hypot(*half))))
        faces += _box_faces(centre, half, float(rng.uniform(0.3, 1.6)), yaw, f"box{b}")
    textures = []
    for f in faces:
        tw = int(np.clip(math.ceil(f.size_u * texels_per_metre), 8, 1600))
        th = int(np.clip(math.ceil(f.size_v * texels_per_metre), 8, 1600))
        textures.append(_procedural_texture(tw, th, rng))
    atlas = _pack_atlas(textures)
    atlas.image.setflags(write=False)  # shared by every scene with this seed (cache)
    light = np.array([0.35, -0.25, 0.9])
    light /= np.linalg.norm(light)
    # Lambertian + ambient, with |n.l| so inward room faces and outward box faces are both lit.
    shade = np.array([0.55 + 0.45 * abs(float(f.normal @ light)) for f in faces], np.float32)
    return tuple(faces), atlas, shade


class SyntheticScene:
    """A deterministic (by ``seed``) textured room with boxes, and trajectories through it.

    ``noise_std``: Gaussian image noise in 8-bit intensity units (deterministic per seed and
    frame index). ``antialias``: quincunx anti-aliasing (see the module docstring).
    """

    def __init__(self, seed: int = 0, camera: PinholeCamera | None = None, noise_std: float = 0.0,
                 texels_per_metre: float = 100.0, ceiling: bool = True, n_boxes: int = 4,
                 antialias: bool = True):
        if noise_std < 0 or texels_per_metre <= 0 or n_boxes < 0:
            raise ValueError("noise_std >= 0, texels_per_metre > 0 and n_boxes >= 0 are required")
        self.seed = int(seed)
        self.camera = camera or PinholeCamera.default()
        self.noise_std = float(noise_std)
        self.antialias = bool(antialias)
        self.texels_per_metre = float(texels_per_metre)
        faces, atlas, shade = _build_scene(self.seed, self.texels_per_metre, bool(ceiling),
                                           int(n_boxes))
        self.faces: tuple[Face, ...] = faces
        self._atlas = atlas
        self._shade = shade
        # Per-face arrays for the ray caster.
        self._o = np.stack([f.origin for f in faces])
        self._u = np.stack([f.u_dir for f in faces])
        self._v = np.stack([f.v_dir for f in faces])
        self._n = np.stack([f.normal for f in faces])
        self._su = np.array([f.size_u for f in faces])
        self._sv = np.array([f.size_v for f in faces])

    # ------------------------------------------------------------------ rendering
    def render(self, T_world_cam: np.ndarray, index: int = 0, stamp: float = 0.0,
               camera: PinholeCamera | None = None) -> RenderedFrame:
        cam = camera or self.camera
        T = np.asarray(T_world_cam, np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"T_world_cam must be 4x4, got {T.shape}")
        xs = (np.arange(cam.width) - cam.cx) / cam.fx
        ys = (np.arange(cam.height) - cam.cy) / cam.fy
        depth, fid, colour = self._cast(T, xs, ys)
        if self.antialias:
            xc = (np.arange(cam.width + 1) - 0.5 - cam.cx) / cam.fx
            yc = (np.arange(cam.height + 1) - 0.5 - cam.cy) / cam.fy
            _, _, corners = self._cast(T, xc, yc)
            colour = 0.5 * colour + 0.125 * (corners[:-1, :-1] + corners[:-1, 1:]
                                             + corners[1:, :-1] + corners[1:, 1:])
        if self.noise_std > 0:
            rng = np.random.default_rng([self.seed, int(index), 7919])
            colour = colour + rng.normal(0.0, self.noise_std, colour.shape).astype(np.float32)
        image = np.clip(colour + 0.5, 0, 255).astype(np.uint8)
        return RenderedFrame(image=image, depth=depth.astype(np.float32), T_world_cam=T.copy(),
                             camera=cam, index=int(index), stamp=float(stamp), face_ids=fid)

    def _cast(self, T: np.ndarray, xs: np.ndarray, ys: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rays through normalised coordinates ``(xs[j], ys[i], 1)`` -> z-depth, face id, colour.

        With the ray ``d = R (x, y, 1)`` (unit camera-z component) the hit parameter *is* the
        z-depth, and every dot product with ``d`` is affine in (x, y): a row + a column term.
        """
        R, c = T[:3, :3], T[:3, 3]
        h, w = len(ys), len(xs)
        zbuf = np.full((h, w), np.inf)
        fid = np.full((h, w), -1, np.int32)
        a_map = np.zeros((h, w))
        b_map = np.zeros((h, w))
        # Camera-frame versions of the per-face vectors.
        nc, uc, vc = self._n @ R, self._u @ R, self._v @ R  # (F, 3): R^T n per face
        rel = self._o - c  # (F, 3)
        num = np.einsum("fk,fk->f", self._n, rel)  # n.(o - c): signed distance to the plane
        a0 = -np.einsum("fk,fk->f", self._u, rel)  # (c - o).u
        b0 = -np.einsum("fk,fk->f", self._v, rel)
        for f in range(len(self.faces)):
            if num[f] >= 0:  # camera behind the visible side (or on the plane): face is culled
                continue
            den = nc[f, 0] * xs[None, :] + (nc[f, 1] * ys[:, None] + nc[f, 2])
            with np.errstate(divide="ignore", invalid="ignore"):  # rays parallel to the plane
                t = num[f] / den
                a = a0[f] + t * (uc[f, 0] * xs[None, :] + (uc[f, 1] * ys[:, None] + uc[f, 2]))
                b = b0[f] + t * (vc[f, 0] * xs[None, :] + (vc[f, 1] * ys[:, None] + vc[f, 2]))
            hit = (t > 1e-6) & (t < zbuf) & (a >= 0) & (a <= self._su[f]) & (b >= 0) \
                & (b <= self._sv[f])
            np.copyto(zbuf, t, where=hit)
            np.copyto(a_map, a, where=hit)
            np.copyto(b_map, b, where=hit)
            fid[hit] = f
        any_hit = fid >= 0
        depth = np.where(any_hit, zbuf, 0.0)
        # Texture lookup: metres on the face -> texel coordinates (texel centres at +0.5 texel).
        f_safe = np.where(any_hit, fid, 0)
        size = self._atlas.size[f_safe]
        off = self._atlas.offset[f_safe]
        tx = np.clip(a_map / self._su[f_safe] * size[..., 0] - 0.5, 0, size[..., 0] - 1) + off[..., 0]
        ty = np.clip(b_map / self._sv[f_safe] * size[..., 1] - 0.5, 0, size[..., 1] - 1) + off[..., 1]
        colour = cv2.remap(self._atlas.image, tx.astype(np.float32), ty.astype(np.float32),
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        colour *= np.where(any_hit, self._shade[f_safe], 0.0)[..., None].astype(np.float32)
        return depth, fid, colour

    # ------------------------------------------------------------------ trajectories
    def trajectory(self, n: int, kind: str = "orbit", **kw) -> list[np.ndarray]:
        """``n`` camera-to-world poses.

        - ``orbit``: circle (``radius`` 3.0 m, ``height`` 1.5 m) around the boxes, looking at
          ``target`` (0, 0, 0.6); ``step_deg`` (3) per frame from ``start_deg`` (0), small bob.
        - ``forward``: walk along the room's long axis (``lateral`` y = -2.8 m, from x =
          ``start_x`` -5.0) looking ahead, ``step`` 0.12 m per frame, gentle yaw sway
          (``sway_deg`` 4) and head bob.
        - ``revisit``: one closed loop on an ellipse (``a`` 4.2, ``b`` 2.8 m) looking along the
          direction of travel turned ``inward_deg`` (25) towards the centre; frame n-1 ends one
          step before the start, so the last frames see what the first ones saw.
        """
        allowed = {"orbit": {"radius", "height", "target", "start_deg", "step_deg"},
                   "forward": {"step", "start_x", "lateral", "height", "sway_deg"},
                   "revisit": {"a", "b", "height", "inward_deg"}}
        if kind not in allowed:
            raise ValueError(f"unknown trajectory kind '{kind}' (orbit | forward | revisit)")
        unknown = set(kw) - allowed[kind]
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for trajectory '{kind}' "
                             f"(known: {', '.join(sorted(allowed[kind]))})")
        if n <= 0:
            return []
        i = np.arange(n, dtype=np.float64)
        poses: list[np.ndarray] = []
        if kind == "orbit":
            radius = float(kw.get("radius", 3.0))
            height = float(kw.get("height", 1.5))
            target = np.asarray(kw.get("target", (0.0, 0.0, 0.6)), np.float64)
            ang = np.deg2rad(float(kw.get("start_deg", 0.0)) + float(kw.get("step_deg", 3.0)) * i)
            for k, a in enumerate(ang):
                pos = np.array([radius * math.cos(a), radius * math.sin(a),
                                height + 0.1 * math.sin(0.3 * k)])
                poses.append(look_at(pos, target, roll_rad=math.radians(2.0) * math.sin(0.2 * k)))
        elif kind == "forward":
            step = float(kw.get("step", 0.12))
            start_x = float(kw.get("start_x", -5.0))
            lateral = float(kw.get("lateral", -2.8))
            height = float(kw.get("height", 1.4))
            sway = math.radians(float(kw.get("sway_deg", 4.0)))
            max_len = ROOM_HALF_X - 0.8 - start_x
            if step * (n - 1) > max_len:  # stay inside the room
                step = max_len / max(n - 1, 1)
            for k in i:
                pos = np.array([start_x + step * k, lateral, height + 0.03 * math.sin(0.9 * k)])
                yaw = sway * math.sin(0.25 * k)
                pitch = math.radians(-5.0)
                fwd = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch),
                                math.sin(pitch)])
                poses.append(look_at(pos, pos + fwd))
        elif kind == "revisit":
            ea, eb = float(kw.get("a", 4.2)), float(kw.get("b", 2.8))
            height = float(kw.get("height", 1.5))
            inward = math.radians(float(kw.get("inward_deg", 25.0)))
            for k in i:
                th = 2 * math.pi * k / n
                pos = np.array([ea * math.cos(th), eb * math.sin(th), height])
                tangent = np.array([-ea * math.sin(th), eb * math.cos(th)])
                yaw = math.atan2(tangent[1], tangent[0]) + inward  # counter-clockwise: centre is left
                fwd = np.array([math.cos(yaw), math.sin(yaw), math.tan(math.radians(-8.0))])
                poses.append(look_at(pos, pos + fwd))
        else:
            raise ValueError(f"unknown trajectory kind '{kind}' (orbit | forward | revisit)")
        return poses

    def render_stereo(self, T_world_cam: np.ndarray, baseline: float, index: int = 0,
                      stamp: float = 0.0, camera: PinholeCamera | None = None
                      ) -> tuple[RenderedFrame, RenderedFrame]:
        """A rectified stereo pair: the left view at ``T_world_cam`` and the right view with
        the same intrinsics and orientation, ``baseline`` metres along the left camera's +x
        (a point's right-image column is its left one minus ``fx * baseline / depth``)."""
        if not baseline > 0:
            raise ValueError(f"baseline must be > 0 m, got {baseline}")
        T_left = np.asarray(T_world_cam, np.float64)
        T_left_right = np.eye(4)
        T_left_right[0, 3] = float(baseline)
        return (self.render(T_left, index=index, stamp=stamp, camera=camera),
                self.render(T_left @ T_left_right, index=index, stamp=stamp, camera=camera))

    def frames(self, n: int, kind: str = "orbit", fps: float = 10.0, **kw) -> Iterator[RenderedFrame]:
        """Render a trajectory lazily; ``stamp = index / fps``."""
        if fps <= 0:
            raise ValueError("fps must be > 0")
        for k, T in enumerate(self.trajectory(n, kind, **kw)):
            yield self.render(T, index=k, stamp=k / fps)
