"""Rendered scenes as geometric training data: one trajectory -> a rosbag *and* an SfM-style
scene folder with exact depth and poses.

Why both: the bag exercises the robot pipeline (:mod:`training.sfm.from_bag`) end to end with a
known answer, and the scene folder (images/, depths/, sparse/ COLMAP text model, index.npz) is
the same format a MegaDepth scene has, so it is a test fixture and a pretraining source for the
D2-Net / LF-Net trainers without any download.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene

from .colmap import read_colmap_model, write_colmap_text
from .scene_index import SceneIndex, index_from_model, tracks_from_depth

logger = logging.getLogger(__name__)


@dataclass
class RenderedScene:
    folder: Path
    index: SceneIndex
    index_path: Path
    bag: Path | None
    T_world_cam: list[np.ndarray]


def render_scene(out_dir: str | os.PathLike, n_frames: int = 10, seed: int = 0, width: int = 160,
                 height: int = 120, trajectory: str = "orbit",
                 trajectory_kw: Mapping[str, Any] | None = None, noise_std: float = 0.0,
                 point_step: int = 8, write_bag: bool = True, overwrite: bool = False
                 ) -> RenderedScene:
    """Render ``n_frames`` along a trajectory of :class:`SyntheticScene` and write
    ``images/*.png``, ``depths/*.npy`` (exact z-depth, metres, 0 = no surface), ``sparse/``
    (PINHOLE COLMAP text model; 3D points = depth samples every ``point_step`` px, tracked by
    visibility), ``index.npz`` and, with ``write_bag``, ``bag/`` (image, compressed, camera
    info, 32FC1 depth and PoseStamped ``T_world_cam`` topics).
    """
    from local_features_ros.bags import write_synthetic_bag

    out = Path(out_dir)
    params = {"n_frames": int(n_frames), "seed": int(seed), "width": int(width),
              "height": int(height), "trajectory": trajectory,
              "trajectory_kw": {k: (list(v) if isinstance(v, (list, tuple)) else v)
                                for k, v in dict(trajectory_kw or {}).items()},
              "noise_std": float(noise_std), "point_step": int(point_step),
              "write_bag": bool(write_bag)}
    if out.exists() and any(out.iterdir()) and not overwrite:
        stored = out / "render.json"
        if (out / "index.npz").is_file() and stored.is_file():
            if json.loads(stored.read_text()) != params:
                raise FileExistsError(f"{out} holds a scene rendered with other parameters "
                                      f"({stored}); pick another folder or pass overwrite=True")
            logger.info("reusing rendered scene %s", out)
            idx = SceneIndex.load(out / "index.npz", root=out)
            bag = out / "bag" if (out / "bag").is_dir() else None
            return RenderedScene(out, idx, out / "index.npz", bag,
                                 [np.linalg.inv(p) for p in idx.poses])
        raise FileExistsError(f"{out} exists and is not a rendered scene (pass overwrite=True)")
    for sub in ("images", "depths", "sparse", "bag"):
        shutil.rmtree(out / sub, ignore_errors=True)
    cam = PinholeCamera.default(width, height)
    scene = SyntheticScene(seed=seed, camera=cam, noise_std=noise_std)
    frames = list(scene.frames(n_frames, trajectory, **dict(trajectory_kw or {})))
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "depths").mkdir(parents=True, exist_ok=True)
    names = []
    for fr in frames:
        name = f"frame_{fr.index:04d}.png"
        cv2.imwrite(str(out / "images" / name), cv2.cvtColor(fr.image, cv2.COLOR_RGB2BGR))
        np.save(out / "depths" / name.replace(".png", ".npy"), fr.depth.astype(np.float32))
        names.append(name)
    poses = [np.linalg.inv(fr.T_world_cam) for fr in frames]
    ids, xys, pts = tracks_from_depth([fr.depth for fr in frames], [cam.K] * len(frames), poses,
                                      step=point_step)
    write_colmap_text(out / "sparse", [(cam.width, cam.height, cam.K)],
                      [(nm, 1, P, xy, pid) for nm, P, xy, pid in zip(names, poses, xys, ids)], pts)
    model = read_colmap_model(out / "sparse")
    depth_paths = [os.path.join("depths", nm.replace(".png", ".npy")) for nm in model.names]
    idx = index_from_model(model, out / "images", depth_paths, root=out)
    idx_path = idx.save(out / "index.npz")
    bag = None
    if write_bag:
        bag = write_synthetic_bag(out / "bag", [(fr.stamp, fr.image) for fr in frames], K=cam.K,
                                  depth=[fr.depth for fr in frames],
                                  poses=[fr.T_world_cam for fr in frames], overwrite=True)
    (out / "render.json").write_text(json.dumps(params))
    logger.info("rendered scene %s: %d frames, %d points", out, len(frames), len(pts))
    return RenderedScene(out, idx, idx_path, bag, [fr.T_world_cam for fr in frames])


def main(argv: list[str] | None = None) -> int:
    """``python -m training.sfm.render OUT [--frames N --width W --height H --seed S]``."""
    import argparse

    p = argparse.ArgumentParser(description="render a synthetic scene folder + bag")
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trajectory", default="orbit", choices=["orbit", "forward", "revisit"])
    p.add_argument("--no-bag", action="store_true")
    a = p.parse_args(argv)
    r = render_scene(a.out, a.frames, a.seed, a.width, a.height, a.trajectory,
                     write_bag=not a.no_bag)
    print(json.dumps({"folder": str(r.folder), "index": str(r.index_path),
                      "bag": str(r.bag) if r.bag else None, "images": len(r.index)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
