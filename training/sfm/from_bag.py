"""rosbag -> scene folder (images/, depths/, sparse/, index.npz) for geometric training.

Why two pose sources: a robot either logs its own poses (odometry / localisation / tf) or it does
not; in the second case SfM on the recorded frames (pycolmap: SIFT extraction, sequential
matching, incremental mapping, all on CPU) recovers them up to scale. Depth comes from a depth
topic when the robot has a depth camera; otherwise from the SfM points, which is *sparse*:
only pixels that observe a triangulated point (a few hundred to a few thousand per image instead
of every pixel) get a depth, splatted to a small square (``sparse_depth_radius``) so the
4-corner bilinear lookup of the warp can use it. Fewer pixels with depth means fewer training
correspondences per pair (see docs/training_geometric.md).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from local_features_ros.bags import (BagError, BagReport, iter_depth, iter_images, iter_poses,
                                     list_topics, read_camera_info)

from .colmap import ColmapModel, read_colmap_model, write_colmap_text
from .scene_index import SceneError, SceneIndex, index_from_model, tracks_from_depth

logger = logging.getLogger(__name__)


@dataclass
class BagSceneOptions:
    """How to turn a bag into a scene. ``pose_topic`` None -> SfM."""

    image_topic: str | None = None  # None: the only Image/CompressedImage topic (error if several)
    camera_info_topic: str | None = None  # None: the only CameraInfo topic
    K: Sequence[Sequence[float]] | None = None  # overrides camera_info (3x3, project convention)
    pose_topic: str | None = None
    T_body_cam: Sequence[Sequence[float]] | None = None  # camera in the pose's child frame
    depth_topic: str | None = None
    max_dt: float = 0.05  # s: pose interpolation gap / depth association tolerance
    every: int = 1  # keep every k-th frame
    max_frames: int = 0  # 0 = all
    point_step: int = 8  # dense depth -> tracks sampling (pose + depth mode)
    sparse_depth_radius: int = 1  # SfM depth splat half-size (px)
    sfm_max_features: int = 4096
    sfm_overlap: int = 10  # sequential matching window
    sfm_num_threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def _only_topic(topics: dict[str, str], types: tuple[str, ...], what: str) -> str:
    cands = sorted(t for t, ty in topics.items() if ty in types)
    if len(cands) != 1:
        raise BagError(f"cannot choose the {what} topic automatically (candidates: "
                       f"{cands or 'none'}); pass it explicitly")
    return cands[0]


def interpolate_poses(stamps: np.ndarray, pose_stamps: np.ndarray, poses: np.ndarray,
                      max_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """``T`` at ``stamps`` by slerp/lerp between the bracketing poses; a stamp outside the pose
    range or in a gap wider than ``max_gap`` (s) gets ``valid = False``."""
    order = np.argsort(pose_stamps)
    ps, P = pose_stamps[order], poses[order]
    out = np.tile(np.eye(4), (len(stamps), 1, 1))
    valid = np.zeros(len(stamps), bool)
    if len(ps) == 0:
        return out, valid
    k = np.searchsorted(ps, stamps)
    for n, (t, kk) in enumerate(zip(stamps, k)):
        exact = np.flatnonzero(np.abs(ps - t) < 1e-6)
        if len(exact):
            out[n] = P[exact[0]]
            valid[n] = True
            continue
        if kk == 0 or kk >= len(ps) or ps[kk] - ps[kk - 1] > max_gap:
            continue
        a = (t - ps[kk - 1]) / (ps[kk] - ps[kk - 1])
        rot = Slerp([0.0, 1.0], Rotation.from_matrix(P[kk - 1:kk + 1, :3, :3]))([a]).as_matrix()[0]
        out[n, :3, :3] = rot
        out[n, :3, 3] = (1 - a) * P[kk - 1, :3, 3] + a * P[kk, :3, 3]
        valid[n] = True
    return out, valid


def _nearest(stamps: np.ndarray, ref: np.ndarray, max_dt: float) -> np.ndarray:
    """Index into ``ref`` of the nearest stamp within ``max_dt`` (-1 if none)."""
    if len(ref) == 0:
        return np.full(len(stamps), -1)
    k = np.abs(stamps[:, None] - ref[None, :]).argmin(1)
    return np.where(np.abs(ref[k] - stamps) <= max_dt, k, -1)


def export_frames(bag: str | os.PathLike, out: Path, opts: BagSceneOptions
                  ) -> tuple[list[str], np.ndarray, list[np.ndarray], np.ndarray]:
    """Decode the image topic -> ``images/frame_XXXXX.png``; returns names, stamps, RGB frames
    and K (project convention)."""
    topics = list_topics(bag)
    img_topic = opts.image_topic or _only_topic(
        topics, ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"), "image")
    if opts.image_topic is None and opts.depth_topic and img_topic == opts.depth_topic:
        raise BagError("image topic and depth topic are the same")
    report = BagReport()
    frames = []
    for k, im in enumerate(iter_images(bag, [img_topic], report=report)):
        if k % max(opts.every, 1):
            continue
        frames.append(im)
        if opts.max_frames and len(frames) >= opts.max_frames:
            break
    if not frames:
        raise BagError(f"no decodable image on {img_topic} in {bag}")
    if opts.K is not None:
        K = np.asarray(opts.K, np.float64).reshape(3, 3)
    else:
        ci_topic = opts.camera_info_topic or _only_topic(topics, ("sensor_msgs/msg/CameraInfo",),
                                                         "camera_info")
        info = read_camera_info(bag, ci_topic)
        if info is None:
            raise BagError(f"{ci_topic} has no CameraInfo message; pass K explicitly")
        if np.any(np.abs(info["D"]) > 1e-9):
            raise BagError(f"{ci_topic}: distorted camera (D={info['D']}); record rectified "
                           "images (image_proc) so geometry from K alone is exact")
        K = info["K"]
    (out / "images").mkdir(parents=True, exist_ok=True)
    names, rgbs = [], []
    for n, im in enumerate(frames):
        rgb = im.image if im.image.ndim == 3 else cv2.cvtColor(im.image, cv2.COLOR_GRAY2RGB)
        if rgb.dtype != np.uint8:
            rgb = cv2.normalize(rgb, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        name = f"frame_{n:05d}.png"
        cv2.imwrite(str(out / "images" / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        names.append(name)
        rgbs.append(rgb)
    if report.skipped:
        logger.warning("%s: skipped %d bad messages %s", bag, report.skipped, dict(report.reasons))
    return names, np.array([im.stamp for im in frames]), rgbs, K


def _load_depths(bag: str | os.PathLike, topic: str, stamps: np.ndarray, shape: tuple[int, int],
                 max_dt: float) -> list[np.ndarray | None]:
    d_st, d_maps = [], []
    for t, d in iter_depth(bag, topic):
        d_st.append(t)
        d_maps.append(d)
    if not d_maps:
        raise BagError(f"no decodable depth image on {topic}")
    k = _nearest(stamps, np.array(d_st), max_dt)
    out: list[np.ndarray | None] = []
    for kk in k:
        if kk < 0:
            out.append(None)
            continue
        d = np.nan_to_num(d_maps[kk], nan=0.0).astype(np.float32)
        if d.shape != shape:
            raise SceneError(f"depth {d.shape} and image {shape} sizes differ on {topic}: "
                             "register depth to the colour camera first")
        out.append(d)
    return out


def run_sfm(out: Path, names: Sequence[str], K: np.ndarray, opts: BagSceneOptions) -> ColmapModel:
    """pycolmap on CPU: SIFT with the known PINHOLE K (fixed), sequential matching, incremental
    mapping; the largest model is written to ``out/sparse`` (binary)."""
    import pycolmap

    db = out / "database.db"
    if db.exists():
        db.unlink()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    reader.camera_params = ",".join(f"{v:.10g}" for v in (K[0, 0], K[1, 1], K[0, 2] + 0.5,
                                                          K[1, 2] + 0.5))
    sift = pycolmap.SiftExtractionOptions()
    sift.max_num_features = int(opts.sfm_max_features)
    sift.num_threads = int(opts.sfm_num_threads)
    pycolmap.extract_features(str(db), str(out / "images"), image_names=list(names),
                              camera_mode=pycolmap.CameraMode.SINGLE, camera_model="PINHOLE",
                              reader_options=reader, sift_options=sift, device=pycolmap.Device.cpu)
    mopts = pycolmap.SequentialMatchingOptions()
    mopts.overlap = int(opts.sfm_overlap)
    mopts.num_threads = int(opts.sfm_num_threads)
    smopts = pycolmap.SiftMatchingOptions()
    smopts.num_threads = int(opts.sfm_num_threads)
    pycolmap.match_sequential(str(db), sift_options=smopts, matching_options=mopts,
                              device=pycolmap.Device.cpu)
    popts = pycolmap.IncrementalPipelineOptions()
    popts.num_threads = int(opts.sfm_num_threads)
    popts.ba_refine_focal_length = False
    popts.ba_refine_principal_point = False
    popts.ba_refine_extra_params = False
    tmp = out / "sfm_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    recs = pycolmap.incremental_mapping(str(db), str(out / "images"), str(tmp), options=popts)
    if not recs:
        raise SceneError("SfM failed: no reconstruction (too little overlap or texture between "
                         "consecutive frames?)")
    best = max(recs.values(), key=lambda r: r.num_reg_images())
    sparse = out / "sparse"
    shutil.rmtree(sparse, ignore_errors=True)
    sparse.mkdir(parents=True)
    best.write(str(sparse))
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info("SfM registered %d / %d frames, %d points", best.num_reg_images(), len(names),
                best.num_points3D())
    return read_colmap_model(sparse)


def sparse_depth(model: ColmapModel, shape: tuple[int, int], radius: int = 1) -> list[np.ndarray]:
    """Per registered image: z of its observed 3D points splatted to a (2r+1)^2 square (nearest
    point wins), 0 elsewhere."""
    h, w = shape
    out = []
    for im in model.images:
        d = np.full((h, w), np.inf, np.float32)
        if len(im.point3D_ids):
            xyz = np.array([model.points3D[int(k)] for k in im.point3D_ids])
            z = (im.T_cam_world[:3, :3] @ xyz.T + im.T_cam_world[:3, 3:4])[2]
            xi = np.rint(im.points2D[:, 0]).astype(int)
            yi = np.rint(im.points2D[:, 1]).astype(int)
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    x, y = xi + dx, yi + dy
                    m = (x >= 0) & (x < w) & (y >= 0) & (y < h) & (z > 0)
                    np.minimum.at(d, (y[m], x[m]), z[m].astype(np.float32))
        d[~np.isfinite(d)] = 0.0
        out.append(d)
    return out


def bag_to_scene(bag: str | os.PathLike, out_dir: str | os.PathLike,
                 options: BagSceneOptions | None = None) -> SceneIndex:
    """Build ``out_dir`` (images/, depths/, sparse/, index.npz) from a bag; returns the index.

    Pose topic given: poses interpolated at the image stamps (``T_world_cam = T_world_body @
    T_body_cam``), dense depth from ``depth_topic`` (required), tracks from depth.
    No pose topic: SfM on the frames; depth from ``depth_topic`` (SfM scaled to metres by the
    median depth ratio) or, without one, sparse SfM depth.
    """
    opts = options or BagSceneOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names, stamps, rgbs, K = export_frames(bag, out, opts)
    shape = rgbs[0].shape[:2]
    depths: list[np.ndarray | None]
    if opts.pose_topic:
        if not opts.depth_topic:
            raise SceneError("poses from a topic need a depth topic for correspondences (without a "
                             "depth camera, leave pose_topic unset to use SfM sparse depth)")
        ps, pm = [], []
        for t, T in iter_poses(bag, opts.pose_topic):
            ps.append(t)
            pm.append(T)
        if not pm:
            raise BagError(f"no pose message on {opts.pose_topic}")
        T_wb, ok = interpolate_poses(stamps, np.array(ps), np.array(pm), opts.max_dt)
        T_bc = np.eye(4) if opts.T_body_cam is None else np.asarray(opts.T_body_cam, np.float64)
        depths = _load_depths(bag, opts.depth_topic, stamps, shape, opts.max_dt)
        keep = [n for n in range(len(names)) if ok[n] and depths[n] is not None]
        if len(keep) < 2:
            raise SceneError(f"only {len(keep)} of {len(names)} frames have a pose within "
                             f"{opts.max_dt}s and a depth image: check the topics / max_dt")
        if len(keep) < len(names):
            logger.warning("%d of %d frames dropped (no pose or no depth)", len(names) - len(keep),
                           len(names))
        names = [names[n] for n in keep]
        poses = [np.linalg.inv(T_wb[n] @ T_bc) for n in keep]
        depths = [depths[n] for n in keep]
        ids, xys, pts = tracks_from_depth(depths, [K] * len(keep), poses, step=opts.point_step)
        write_colmap_text(out / "sparse", [(shape[1], shape[0], K)],
                          [(nm, 1, P, xy, pid) for nm, P, xy, pid in zip(names, poses, xys, ids)],
                          pts)
        model = read_colmap_model(out / "sparse")
        by_name = dict(zip(names, depths))
        depth_list = [by_name[nm] for nm in model.names]
    else:
        model = run_sfm(out, names, K, opts)
        if opts.depth_topic:
            dmap = dict(zip(names, _load_depths(bag, opts.depth_topic, stamps, shape, opts.max_dt)))
            model = _scale_to_metric(model, dmap)
            depth_list = [dmap[nm] for nm in model.names]
        else:
            depth_list = sparse_depth(model, shape, opts.sparse_depth_radius)
            dens = np.mean([np.mean(d > 0) for d in depth_list])
            logger.info("sparse SfM depth: %.2f %% of pixels have depth", 100 * dens)
    (out / "depths").mkdir(exist_ok=True)
    rel: list[str | None] = []
    for im, d in zip(model.images, depth_list):
        if d is None:
            rel.append(None)
            continue
        p = out / "depths" / Path(im.name).with_suffix(".npy")
        np.save(p, d.astype(np.float32))
        rel.append(os.path.relpath(p, out))
    idx = index_from_model(model, out / "images", rel, root=out)
    idx.save(out / "index.npz")
    return idx


def _scale_to_metric(model: ColmapModel, depths: dict[str, np.ndarray | None]) -> ColmapModel:
    """SfM is up to scale: multiply translations and points by median(sensor z / SfM z)."""
    ratios = []
    for im in model.images:
        d = depths.get(im.name)
        if d is None or not len(im.point3D_ids):
            continue
        xyz = np.array([model.points3D[int(k)] for k in im.point3D_ids])
        z = (im.T_cam_world[:3, :3] @ xyz.T + im.T_cam_world[:3, 3:4])[2]
        xi = np.clip(np.rint(im.points2D[:, 0]).astype(int), 0, d.shape[1] - 1)
        yi = np.clip(np.rint(im.points2D[:, 1]).astype(int), 0, d.shape[0] - 1)
        s = d[yi, xi]
        m = (s > 0) & (z > 0)
        ratios.append(s[m] / z[m])
    if not ratios or not len(np.concatenate(ratios)):
        raise SceneError("cannot scale SfM to the depth topic: no SfM point has sensor depth")
    s = float(np.median(np.concatenate(ratios)))
    for im in model.images:
        im.T_cam_world = im.T_cam_world.copy()
        im.T_cam_world[:3, 3] *= s
    model.points3D = {k: v * s for k, v in model.points3D.items()}
    logger.info("SfM scaled to metres by %.4g", s)
    return model


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.sfm.from_bag BAG OUT [--pose-topic T --depth-topic D ...]``."""
    import argparse
    import json

    p = argparse.ArgumentParser(description="rosbag -> scene folder for D2-Net / LF-Net training")
    p.add_argument("bag")
    p.add_argument("out")
    p.add_argument("--image-topic")
    p.add_argument("--camera-info-topic")
    p.add_argument("--pose-topic", help="PoseStamped/Odometry/TransformStamped/TF; omit for SfM")
    p.add_argument("--depth-topic", help="32FC1 (m) or 16UC1 (mm); omit for sparse SfM depth")
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--max-frames", type=int, default=0)
    p.add_argument("--max-dt", type=float, default=0.05)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    idx = bag_to_scene(a.bag, a.out, BagSceneOptions(
        image_topic=a.image_topic, camera_info_topic=a.camera_info_topic, pose_topic=a.pose_topic,
        depth_topic=a.depth_topic, every=a.every, max_frames=a.max_frames, max_dt=a.max_dt))
    print(json.dumps({"images": len(idx), "index": str(Path(a.out) / "index.npz")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
