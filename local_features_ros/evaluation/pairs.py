"""Two-view relative pose protocol (SuperGlue): essential matrix RANSAC, pose error, pose AUC.

Inputs, chosen by what ``PATH`` is:
- a SuperGlue pair list file, one pair per line: ``name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)``
  (images relative to ``image_dir``, default the list's folder; ``rot`` k rotates the image with
  ``np.rot90(image, k)`` before extraction, and K and the pose follow that rotation);
- a Strecha-style folder: ``images/*.jpg`` + ``gt_dense_cameras/<image>.camera`` (K for the original
  resolution, scaled to the stored images by their width ratio: f * s, c -> (c + 0.5) s - 0.5;
  R camera-to-world, C centre);
- a TUM-style folder: ``rgb/*.png`` + ``groundtruth.txt`` (T_world_cam per line) + intrinsics given
  by the caller.
Folders give pairs ``(i, j)`` with ``min_gap <= j - i <= max_gap`` in file order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from . import metrics
from .hpatches import NumpyFeatures, match_features, matching_protocol, read_image

logger = logging.getLogger(__name__)


@dataclass
class PosePair:
    image0: Path
    image1: Path
    K0: np.ndarray
    K1: np.ndarray
    T_0to1: np.ndarray  # x1 = R x0 + t (T_cam1_cam0)
    rot0: int = 0
    rot1: int = 0
    dist0: np.ndarray | None = None
    dist1: np.ndarray | None = None


# ---------------------------------------------------------------------------------------- rotations
def _rot90_once(K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Effect of ``np.rot90(image, 1)`` (counter-clockwise) on K, on camera coordinates, on size.

    A pixel (x, y) of a W-wide image moves to (y, W-1-x); in camera coordinates X' = Y, Y' = -X, so
    K' = [[fy, 0, cy], [0, fx, W-1-cx], [0, 0, 1]] and the camera rotates by R_z(-90 deg).
    """
    w, h = size
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    K2 = np.array([[fy, 0, cy], [0, fx, w - 1 - cx], [0, 0, 1]], np.float64)
    R = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], np.float64)
    return K2, R, (h, w)


def rotate_view(image: np.ndarray, K: np.ndarray, rot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotate image by ``rot`` quarter turns; returns (image, K, R_new_old)."""
    R_tot = np.eye(3)
    size = (image.shape[1], image.shape[0])
    for _ in range(rot % 4):
        K, R, size = _rot90_once(K, size)
        R_tot = R @ R_tot
    return np.ascontiguousarray(np.rot90(image, rot % 4)), K, R_tot


# ---------------------------------------------------------------------------------------- readers
def read_pair_list(path: str | Path, image_dir: str | Path | None = None) -> list[PosePair]:
    """SuperGlue format: ``name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)`` per line."""
    path = Path(path)
    base = Path(image_dir) if image_dir else path.parent
    pairs = []
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 38:
            raise ValueError(f"{path}:{ln}: expected 38 fields (name0 name1 rot0 rot1 K0 K1 T), "
                             f"got {len(parts)}")
        vals = np.array([float(x) for x in parts[4:]])
        pairs.append(PosePair(base / parts[0], base / parts[1], vals[:9].reshape(3, 3),
                              vals[9:18].reshape(3, 3), vals[18:].reshape(4, 4),
                              int(parts[2]), int(parts[3])))
    if not pairs:
        raise ValueError(f"no pairs in {path}")
    return pairs


def read_strecha_camera(path: str | Path, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``.camera`` file -> (K for the stored image, T_world_cam). Scales K by stored/original width."""
    v = np.array(Path(path).read_text().split(), np.float64)
    if len(v) < 26:
        raise ValueError(f"{path}: expected 26 numbers, got {len(v)}")
    K, R, C, (w0, _h0) = v[:9].reshape(3, 3), v[12:21].reshape(3, 3), v[21:24], v[24:26]
    s = image_size[0] / w0
    K = K.copy()
    K[0, 0] *= s
    K[1, 1] *= s
    K[0, 2] = (K[0, 2] + 0.5) * s - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * s - 0.5
    return K, metrics.make_T(R, C)  # R camera-to-world, C = camera centre in world


def _gap_pairs(n: int, min_gap: int, max_gap: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + min_gap, min(n, i + max_gap + 1))]


def read_strecha_folder(root: str | Path, min_gap: int = 1, max_gap: int = 2) -> list[PosePair]:
    root = Path(root)
    images = sorted(p for p in (root / "images").iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".ppm"))
    views = []
    for p in images:
        cam = root / "gt_dense_cameras" / f"{p.name}.camera"
        if not cam.is_file():
            raise FileNotFoundError(f"no camera file {cam} for {p}")
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise FileNotFoundError(f"cannot read image {p}")
        views.append((p, *read_strecha_camera(cam, (img.shape[1], img.shape[0]))))
    return [PosePair(views[i][0], views[j][0], views[i][1], views[j][1],
                     metrics.relative_pose(views[i][2], views[j][2]))
            for i, j in _gap_pairs(len(views), min_gap, max_gap)]


def quat_to_R(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    q = np.array([qw, qx, qy, qz], np.float64)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def read_tum_groundtruth(path: str | Path, images: list[Path], max_dt: float = 0.02
                         ) -> list[np.ndarray | None]:
    """T_world_cam per image from ``groundtruth.txt``.

    Accepts the TUM format ``timestamp tx ty tz qx qy qz qw`` (nearest stamp to the image file name,
    within ``max_dt`` s) and the variant whose first column is the image file name.
    """
    by_name: dict[str, np.ndarray] = {}
    stamps, poses = [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        vals = [float(x) for x in parts[-7:]]
        T = metrics.make_T(quat_to_R(*vals[3:7]), vals[:3])
        if not _is_number(parts[0]):
            by_name[Path(parts[0]).name] = T
        else:
            stamps.append(float(parts[0]))
            poses.append(T)
    out: list[np.ndarray | None] = []
    st = np.array(stamps)
    for img in images:
        if img.name in by_name:
            out.append(by_name[img.name])
        elif len(st) and _is_number(img.stem):
            k = int(np.argmin(np.abs(st - float(img.stem))))
            out.append(poses[k] if abs(st[k] - float(img.stem)) <= max_dt else None)
        else:
            out.append(None)
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def intrinsics_matrix(values: list[float]) -> np.ndarray:
    """``fx,fy,cx,cy`` -> 3x3 K."""
    if len(values) != 4:
        raise ValueError(f"intrinsics must be fx,fy,cx,cy (4 numbers), got {len(values)}")
    fx, fy, cx, cy = values
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)


def read_tum_folder(root: str | Path, K: np.ndarray, dist: np.ndarray | None = None,
                    min_gap: int = 1, max_gap: int = 2) -> list[PosePair]:
    root = Path(root)
    images = sorted((root / "rgb").glob("*.png"))
    if not images:
        raise FileNotFoundError(f"no rgb/*.png in {root}")
    poses = read_tum_groundtruth(root / "groundtruth.txt", images)
    keep = [(p, T) for p, T in zip(images, poses) if T is not None]
    if len(keep) < len(images):
        logger.warning("%d of %d images have no ground-truth pose and are skipped",
                       len(images) - len(keep), len(images))
    return [PosePair(keep[i][0], keep[j][0], K, K, metrics.relative_pose(keep[i][1], keep[j][1]),
                     dist0=dist, dist1=dist)
            for i, j in _gap_pairs(len(keep), min_gap, max_gap)]


def load_pose_pairs(path: str | Path, image_dir: str | Path | None = None,
                    intrinsics: list[float] | None = None, distortion: list[float] | None = None,
                    min_gap: int = 1, max_gap: int = 2) -> tuple[list[PosePair], str]:
    """Pairs + the detected input kind (``pairs_list`` | ``strecha`` | ``tum``)."""
    path = Path(path)
    if path.is_file():
        return read_pair_list(path, image_dir), "pairs_list"
    if (path / "gt_dense_cameras").is_dir():
        return read_strecha_folder(path, min_gap, max_gap), "strecha"
    if (path / "rgb").is_dir() and (path / "groundtruth.txt").is_file():
        if not intrinsics:
            raise ValueError("a TUM-style folder needs --intrinsics fx,fy,cx,cy")
        dist = np.array(distortion, np.float64) if distortion else None
        return read_tum_folder(path, intrinsics_matrix(intrinsics), dist, min_gap, max_gap), "tum"
    raise FileNotFoundError(f"{path}: not a pair list, a Strecha folder (gt_dense_cameras/) or a "
                            "TUM folder (rgb/ + groundtruth.txt)")


# ---------------------------------------------------------------------------------------- protocol
@dataclass
class PairsConfig:
    ransac_thresh_px: float = 1.0  # SuperGlue: 1 px divided by the mean focal length
    confidence: float = 0.99999
    thresholds: tuple[int, ...] = metrics.POSE_THRESHOLDS


def evaluate_pairs(pairs: list[PosePair], extract: Callable[[np.ndarray], NumpyFeatures],
                   cfg: PairsConfig | None = None, matcher: Any = None) -> dict[str, Any]:
    """``matcher``: a ``matchers`` object (None = mutual NN on L2)."""
    cfg = cfg or PairsConfig()
    cache: dict[tuple[Path, int], tuple[NumpyFeatures, np.ndarray, np.ndarray]] = {}

    def view(path: Path, K: np.ndarray, rot: int):
        key = (path, rot)
        if key not in cache:
            img, K2, R = rotate_view(read_image(path), K, rot)
            cache[key] = (extract(img), K2, R)
        return cache[key]

    per_pair = []
    for p in pairs:
        cv2.setRNGSeed(0)  # RANSAC: same numbers on every run
        f0, K0, R0 = view(p.image0, p.K0, p.rot0)
        f1, K1, R1 = view(p.image1, p.K1, p.rot1)
        # Rotated cameras: T' = R1' T R0'^-1 (the camera centres do not move).
        T = metrics.make_T(R1, np.zeros(3)) @ p.T_0to1 @ metrics.make_T(R0.T, np.zeros(3))
        matches = match_features(f0, f1, matcher)
        est = None
        if len(matches) >= 5:
            est = metrics.estimate_relative_pose(f0.keypoints[matches[:, 0]],
                                                 f1.keypoints[matches[:, 1]], K0, K1,
                                                 cfg.ransac_thresh_px, cfg.confidence,
                                                 p.dist0, p.dist1)
        er, et, e = metrics.pose_error_deg(est.R if est else None, est.t if est else None, T)
        per_pair.append({"image0": p.image0.name, "image1": p.image1.name,
                         "features": [len(f0), len(f1)], "matches": int(len(matches)),
                         "inliers": int(est.inliers.sum()) if est else 0,
                         "rotation_error": er, "translation_error": et, "pose_error": e})
        logger.info("%s-%s: %d matches, %d inliers, R err %.2f deg, t err %.2f deg",
                    p.image0.name, p.image1.name, len(matches), per_pair[-1]["inliers"], er, et)
    errs = [q["pose_error"] for q in per_pair]
    return {
        "pose_auc": metrics.pose_auc(errs, cfg.thresholds),
        "median_rotation_error": float(np.median([q["rotation_error"] for q in per_pair])),
        "median_translation_error": float(np.median([q["translation_error"] for q in per_pair])),
        "features": float(np.mean([len(v[0]) for v in cache.values()])),
        "matches": float(np.mean([q["matches"] for q in per_pair])),
        "num_pairs": len(per_pair),
        "protocol": {
            "matching": matching_protocol(matcher),
            "pose": f"cv2.findEssentialMat RANSAC on normalised coordinates "
                    f"({cfg.ransac_thresh_px} px / mean focal, conf {cfg.confidence}) + recoverPose",
            "error": "max(rotation angle, translation direction angle, sign-ambiguous), degrees",
            "auc": "recall-vs-error integrated up to each threshold / threshold (SuperGlue)",
        },
        "per_pair": per_pair,
    }
