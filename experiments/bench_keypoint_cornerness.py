"""Where does a detector put its keypoints: on corners, or along edges?

For each image, the structure tensor (Sobel gradients, Gaussian window sigma 2 px) at every
keypoint gives the eigenvalue ratio ``l2 / l1``: near 0 on a straight edge (the point can slide
along it, so it is neither repeatable nor well localised), larger on corners and blobs. Prints
the share of edge-like keypoints (``l2 / l1 < 0.1``) and the median ratio per method, side by
side on the same images. A briefly trained SuperPoint fires along edges far more than ORB's
Harris-ranked FAST corners; this measures it for any checkpoint
(local_features_ros/data/weights/MODEL_CARD.md, "Run D").

    OMP_NUM_THREADS=2 python experiments/bench_keypoint_cornerness.py \
        --weights local_features_ros/data/weights/superpoint_lfr.pth \
        ../shared/data/hpatches/v_wormhole/1.ppm ../shared/data/oxford/boat1.jpg
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from local_features_ros.evaluation.hpatches import read_image
from local_features_ros.registry import build_extractor
from local_features_ros_training.data.cornerness import structure_tensor_ratio

EDGE_RATIO = 0.1


def eigen_ratio(gray: np.ndarray, keypoints: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """``l2 / l1`` of the structure tensor at each ``(x, y)`` keypoint (training's definition)."""
    return structure_tensor_ratio(gray, keypoints, sigma)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+")
    ap.add_argument("--weights", default="", help="SuperPoint checkpoint (default: shipped)")
    ap.add_argument("--methods", default="superpoint,orb")
    args = ap.parse_args(argv)
    extractors = {m: build_extractor(m, weights=args.weights if m == "superpoint" else None)
                  for m in args.methods.split(",")}
    print("| image | " + " | ".join(f"{m}: keypoints / edge-like / median l2/l1"
                                       for m in extractors) + " |")
    print("|---|" + "---|" * len(extractors))
    for path in args.images:
        img = read_image(path)
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
        cells = []
        for ex in extractors.values():
            kp = ex.extract(img).numpy()["keypoints"]
            if len(kp) == 0:
                cells.append("0 / - / -")
                continue
            r = eigen_ratio(gray, kp)
            cells.append(f"{len(kp)} / {np.mean(r < EDGE_RATIO):.2f} / {np.median(r):.2f}")
        print(f"| {path.split('/')[-1]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
