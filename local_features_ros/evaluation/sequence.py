"""Monocular frame-to-frame VO protocol on sequences with ground-truth poses.

Why through ``FrameToFrameFrontend``: the numbers must describe what the ROS node publishes
(its own matching, verification and ``~/relative_motion``), not a separate evaluation pipeline.

Per consecutive processed frame pair: rotation error and translation-direction error (degrees) of the
frontend's relative motion against the ground truth ``T_cam1_cam0`` (the frontend's ``recoverPose``
fixes the sign of t, so the translation angle is not folded to min(e, 180 - e) here), and the pose
AUC of max(both). Drift: the trajectory is chained from the relative motions with the translation
scaled to the ground-truth step length (monocular VO has no scale), starting at the ground-truth first
pose; ATE = RMSE of positions after a rigid (rotation + translation, no scale) alignment, RPE per step
(Sturm et al.). A frame without a motion estimate counts as a failure (infinite error in the AUC) and
the trajectory keeps the previous step's motion (constant velocity).

Folders: KITTI-style ``image_0/*.png`` + ``poses.txt`` (row-major 3x4 T_world_cam per line) +
``calib.txt`` (``P0:`` gives K); TUM-style ``rgb/*.png`` + ``groundtruth.txt`` + intrinsics from the
caller (optional distortion: keypoints are undistorted before the frontend sees them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from . import metrics
from .hpatches import NumpyFeatures, read_image
from .pairs import intrinsics_matrix, read_tum_groundtruth

logger = logging.getLogger(__name__)


@dataclass
class Sequence:
    images: list[Path]
    poses: list[np.ndarray]  # T_world_cam per image
    K: np.ndarray
    stamps: list[float]
    dist: np.ndarray | None = None
    kind: str = "kitti"


def read_kitti_calib(path: str | Path, key: str = "P0") -> np.ndarray:
    for line in Path(path).read_text().splitlines():
        if line.startswith(f"{key}:"):
            return np.array(line.split()[1:13], np.float64).reshape(3, 4)[:, :3]
    raise ValueError(f"{path}: no '{key}:' line")


def read_kitti_folder(root: Path) -> Sequence:
    img_dir = root / "image_0"
    if not img_dir.is_dir():
        img_dir = root / "image_2"
    images = sorted(img_dir.glob("*.png"))
    if not images:
        raise FileNotFoundError(f"no image_0/*.png in {root}")
    rows = np.loadtxt(root / "poses.txt", ndmin=2)
    if rows.shape[1] != 12:
        raise ValueError(f"{root / 'poses.txt'}: expected 12 numbers per line, got {rows.shape[1]}")
    if len(rows) < len(images):
        logger.warning("poses.txt has %d poses for %d images; using the first %d images",
                       len(rows), len(images), len(rows))
        images = images[: len(rows)]
    poses = [np.vstack([r.reshape(3, 4), [0, 0, 0, 1]]) for r in rows[: len(images)]]
    key = "P0" if img_dir.name == "image_0" else "P2"
    K = read_kitti_calib(root / "calib.txt", key)
    times = root / "times.txt"
    stamps = (list(np.loadtxt(times, ndmin=1)[: len(images)]) if times.is_file()
              else [0.1 * i for i in range(len(images))])
    return Sequence(images, poses, K, [float(s) for s in stamps], None, "kitti")


def read_tum_sequence(root: Path, intrinsics: list[float] | None,
                      distortion: list[float] | None) -> Sequence:
    if not intrinsics:
        raise ValueError("a TUM-style folder needs --intrinsics fx,fy,cx,cy")
    images = sorted((root / "rgb").glob("*.png"))
    if not images:
        raise FileNotFoundError(f"no rgb/*.png in {root}")
    poses = read_tum_groundtruth(root / "groundtruth.txt", images)
    keep = [(p, T) for p, T in zip(images, poses) if T is not None]
    stamps = [float(p.stem) if _is_float(p.stem) else 0.1 * i for i, (p, _) in enumerate(keep)]
    dist = np.array(distortion, np.float64) if distortion else None
    return Sequence([p for p, _ in keep], [T for _, T in keep], intrinsics_matrix(intrinsics),
                    stamps, dist, "tum")


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_sequence(path: str | Path, intrinsics: list[float] | None = None,
                  distortion: list[float] | None = None) -> Sequence:
    root = Path(path)
    if (root / "poses.txt").is_file():
        return read_kitti_folder(root)
    if (root / "rgb").is_dir() and (root / "groundtruth.txt").is_file():
        return read_tum_sequence(root, intrinsics, distortion)
    raise FileNotFoundError(f"{root}: not a KITTI-style (image_0/ + poses.txt + calib.txt) or "
                            "TUM-style (rgb/ + groundtruth.txt) folder")


def undistort_features(feats: Any, K: np.ndarray, dist: np.ndarray) -> Any:
    """Same features with keypoints moved to undistorted pixels (same K) for the pinhole frontend."""
    import torch

    from ..types import Features

    k = feats.keypoints.detach().cpu().numpy().astype(np.float64)
    if len(k):
        k = cv2.undistortPoints(k[:, None], K, dist, P=K).reshape(-1, 2)
    return Features(keypoints=torch.from_numpy(k.astype(np.float32)).to(feats.keypoints.device),
                    scores=feats.scores, descriptors=feats.descriptors, scales=feats.scales,
                    orientations=feats.orientations, image_size=feats.image_size,
                    extra=dict(feats.extra))


def make_frontend(matcher: Any = None) -> Any:
    """The node's frontend with essential-matrix verification and ``matcher`` (a ``matchers``
    object; None = mutual NN on L2)."""
    from ..frontend import FrameToFrameFrontend
    from ..geometry import VerifyConfig
    from ..matching import MatcherConfig

    return FrameToFrameFrontend(matcher=matcher if matcher is not None
                                else MatcherConfig(mutual=True),
                                verify=VerifyConfig(model="essential"))


def evaluate_sequence(seq: Sequence, extract: Callable[[np.ndarray], NumpyFeatures],
                      stride: int = 1, max_frames: int = 0,
                      thresholds: tuple[int, ...] = metrics.POSE_THRESHOLDS,
                      frontend: Any = None, matcher: Any = None) -> dict[str, Any]:
    """Run the frontend over the sequence and compare every relative motion to the ground truth.
    ``matcher`` (a ``matchers`` object) goes to the default frontend; None = mutual NN."""
    idx = list(range(0, len(seq.images), max(1, stride)))
    if max_frames:
        idx = idx[:max_frames]
    if len(idx) < 2:
        raise ValueError("a sequence needs at least two frames")
    frontend = frontend or make_frontend(matcher)
    gt = [seq.poses[i] for i in idx]
    steps: list[np.ndarray] = []
    per_frame: list[dict[str, Any]] = []
    nfeat = []
    last_step = np.eye(4)
    for n, i in enumerate(idx):
        f = extract(read_image(seq.images[i]))
        nfeat.append(len(f))
        feats = f.raw
        if seq.dist is not None and np.any(seq.dist != 0):
            feats = undistort_features(feats, seq.K, seq.dist)
        res = frontend.process(feats, seq.stamps[i], seq.K)
        if n == 0:
            continue
        T_gt = metrics.relative_pose(gt[n - 1], gt[n])
        motion = getattr(res, "motion", None)
        match_res = getattr(res, "matches", None)
        if motion is not None:
            er, et, e = metrics.pose_error_deg(motion.R, motion.t, T_gt, sign_ambiguous=False)
            t = np.asarray(motion.t, np.float64).ravel()
            t = t / max(np.linalg.norm(t), 1e-12) * np.linalg.norm(T_gt[:3, 3])
            last_step = metrics.make_T(np.asarray(motion.R, np.float64), t)
        else:
            er = et = e = float("inf")
            # constant velocity, rescaled to this step's ground-truth length
            t = last_step[:3, 3]
            nt = np.linalg.norm(t)
            last_step = metrics.make_T(last_step[:3, :3],
                                       t / nt * np.linalg.norm(T_gt[:3, 3]) if nt > 0 else t)
        steps.append(last_step)
        per_frame.append({
            "frame": seq.images[i].name,
            "rotation_error": er, "translation_error": et, "pose_error": e,
            "matches": int(len(match_res)) if match_res is not None else 0,
            "inliers": int(motion.num_inliers) if motion is not None else 0,
            "gt_step_m": float(np.linalg.norm(T_gt[:3, 3])),
        })
        logger.info("%s: %d features, R err %.2f deg, t err %.2f deg, %d inliers",
                    seq.images[i].name, len(f), er, et, per_frame[-1]["inliers"])
    est = metrics.accumulate_trajectory(gt[0], steps)
    rpe_t, rpe_r = metrics.relative_pose_errors(est, gt)
    pos_gt = np.array([T[:3, 3] for T in gt])
    length = float(np.sum(np.linalg.norm(np.diff(pos_gt, axis=0), axis=1)))
    final_err = float(np.linalg.norm(est[-1][:3, 3] - gt[-1][:3, 3]))
    errs = [p["pose_error"] for p in per_frame]
    finite = lambda vals: [v for v in vals if np.isfinite(v)]  # noqa: E731
    return {
        "pose_auc": metrics.pose_auc(errs, thresholds),
        "rotation_error": [p["rotation_error"] for p in per_frame],
        "translation_error": [p["translation_error"] for p in per_frame],
        "median_rotation_error": float(np.median(finite(p["rotation_error"] for p in per_frame)))
        if finite(errs) else None,
        "median_translation_error": float(np.median(finite(p["translation_error"]
                                                           for p in per_frame)))
        if finite(errs) else None,
        "drift": {
            "ate_rmse_m": metrics.absolute_trajectory_error(est, gt, align=True),
            "ate_rmse_unaligned_m": metrics.absolute_trajectory_error(est, gt, align=False),
            "rpe_trans_rmse_m": float(np.sqrt(np.mean(rpe_t ** 2))),
            "rpe_rot_mean_deg": float(np.mean(rpe_r)),
            "final_position_error_m": final_err,
            "final_position_error_percent": 100.0 * final_err / length if length > 0 else None,
            "trajectory_length_m": length,
        },
        "failures": int(sum(not np.isfinite(e) for e in errs)),
        "features": float(np.mean(nfeat)),
        "num_frames": len(idx),
        "stride": stride,
        "trajectory": {"estimated": [T[:3, 3].tolist() for T in est],
                       "ground_truth": pos_gt.tolist()},
        "protocol": {
            "frontend": "FrameToFrameFrontend(matcher, VerifyConfig(model='essential'))",
            "matching": (frontend.matcher.describe() if hasattr(frontend, "matcher")
                         and hasattr(frontend.matcher, "describe")
                         else "mutual nearest neighbour, L2"),
            "error": "rotation angle and translation direction angle (sign kept), degrees",
            "drift": "steps scaled to ground-truth length; ATE after rigid alignment; RPE delta 1",
        },
        "per_frame": per_frame,
    }
