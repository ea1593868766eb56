"""``local-features match``: features of two images, matched and geometrically verified.

Output ``OUT.npz``: ``keypoints0``/``keypoints1`` (N, 2) float32 [x, y] original pixels,
``scores0``/``scores1``, ``image_size0``/``image_size1`` [w, h], ``matches`` (M, 2) int64
``[i0, i1]``, ``distances`` (M,) float32 (``--matcher nn``: L2 descriptor distances;
``--matcher lightglue``: 1 - match confidence), ``inliers`` (M,) bool,
``model`` (3, 3) float64 (NaN when no model), ``model_type`` (str: homography | fundamental |
none). ``--draw`` writes both images side by side with inlier (green) and outlier (red) lines.
Matching and verification are the same code the node uses (``matchers/``: ``nn`` = mutual NN +
ratio + max distance from ``matching.py``, ``lightglue`` = LightGlue with released ALIKED/DISK
weights or ``--matcher-weights``; ``geometry.py``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
from ._common import add_extractor_arguments, parse_settings

logger = logging.getLogger(__name__)

HELP = "match the features of two images (mutual NN + ratio, or LightGlue; RANSAC) into OUT.npz"


def add_matcher_arguments(parser: argparse.ArgumentParser) -> None:
    """``--matcher``, ``--matcher-weights``, ``--matcher-set`` (shared with ``evaluate``)."""
    parser.add_argument("--matcher", default="nn",
                        help="matcher: nn (mutual nearest neighbour on L2, default) | lightglue "
                             "(released weights for --method aliked/disk, else --matcher-weights)")
    parser.add_argument("--matcher-weights", default=None, metavar="PATH",
                        help="local LightGlue weights file (wins over the released ones)")
    parser.add_argument("--matcher-set", dest="matcher_settings", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="matcher config (repeatable); lightglue: depth_confidence, "
                             "width_confidence (<= 0 = off), filter_threshold, n_layers, features")


def build_matcher_from_args(args: argparse.Namespace, method: str, device: str | None = None,
                            **conf: Any) -> Any:
    """The matcher the command line asks for; ``method`` picks LightGlue's released weights,
    ``conf`` are defaults (e.g. ``nn``'s ratio) that ``--matcher-set`` overrides."""
    from ..matchers.base import build_matcher, get_matcher_class

    cls = get_matcher_class(args.matcher)
    known = cls.default_conf()
    conf = {**conf, **parse_settings(args.matcher_settings)}
    if args.matcher_weights:
        conf["weights"] = args.matcher_weights
    if "features" in known:
        conf.setdefault("features", method)
    return build_matcher(args.matcher, device=device or args.device, precision=args.precision,
                         **conf)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_extractor_arguments(parser)
    add_matcher_arguments(parser)
    parser.add_argument("--ratio", type=float, default=1.0,
                        help="--matcher nn: Lowe ratio test threshold in (0, 1]; 1 = off (default)")
    parser.add_argument("--no-mutual", dest="mutual", action="store_false",
                        help="--matcher nn: plain nearest neighbour instead of mutual")
    parser.add_argument("--max-distance", type=float, default=0.0,
                        help="--matcher nn: drop matches with L2 descriptor distance above this "
                             "(0 = off)")
    parser.add_argument("--verify", default="fundamental",
                        choices=("homography", "fundamental", "none"),
                        help="geometric verification model (default fundamental)")
    parser.add_argument("--threshold", type=float, default=1.0,
                        help="RANSAC inlier threshold in pixels (default 1.0)")
    parser.add_argument("--out", required=True, help="output .npz file")
    parser.add_argument("--draw", default=None, metavar="OUT.png", help="also draw the matches")
    parser.add_argument("image0", metavar="IMG0")
    parser.add_argument("image1", metavar="IMG1")


def draw_matches(image0: np.ndarray, image1: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray,
                 matches: np.ndarray, inliers: np.ndarray) -> np.ndarray:
    """Side-by-side bgr8 canvas; outliers drawn first so inliers stay visible on top."""
    import cv2

    from ..overlay import INLIER_BGR, OUTLIER_BGR, to_display_bgr

    a, b = to_display_bgr(image0), to_display_bgr(image1)
    h = max(a.shape[0], b.shape[0])
    canvas = np.zeros((h, a.shape[1] + b.shape[1], 3), np.uint8)
    canvas[:a.shape[0], :a.shape[1]] = a
    canvas[:b.shape[0], a.shape[1]:] = b
    off = np.array([a.shape[1], 0.0])
    for p in kpts0:
        cv2.circle(canvas, (int(round(p[0])), int(round(p[1]))), 1, (0, 200, 255), -1)
    for p in kpts1:
        q = p + off
        cv2.circle(canvas, (int(round(q[0])), int(round(q[1]))), 1, (0, 200, 255), -1)
    order = np.argsort(inliers, kind="stable")  # False (outliers) first
    for k in order:
        i0, i1 = matches[k]
        p, q = kpts0[i0], kpts1[i1] + off
        colour = INLIER_BGR if inliers[k] else OUTLIER_BGR
        cv2.line(canvas, (int(round(p[0])), int(round(p[1]))), (int(round(q[0])), int(round(q[1]))),
                 colour, 1, cv2.LINE_AA)
    return canvas


def main(args: argparse.Namespace) -> int:
    from ..geometry import VerifyConfig, verify_matches
    from ..registry import build_extractor, get_extractor_class
    from .extract import read_image, write_npz

    conf: dict[str, Any] = parse_settings(args.settings)
    get_extractor_class(args.method)  # unknown method fails before any file work
    nn_conf: dict[str, Any] = {"mutual": bool(args.mutual), "ratio": float(args.ratio),
                               "max_distance": float(args.max_distance)}
    if args.matcher != "nn":
        if nn_conf != {"mutual": True, "ratio": 1.0, "max_distance": 0.0}:
            raise ValueError("--ratio / --no-mutual / --max-distance apply to --matcher nn only")
        nn_conf = {}
    matcher = build_matcher_from_args(args, args.method, **nn_conf)
    verify = VerifyConfig(model=args.verify, threshold_px=float(args.threshold))
    paths = [Path(args.image0).expanduser(), Path(args.image1).expanduser()]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"input not found: {p}")
    images = [read_image(p) for p in paths]  # decode errors before the model is built
    out = Path(args.out).expanduser()
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    extractor = build_extractor(args.method, weights=args.weights, device=args.device,
                                precision=args.precision, **conf)
    f0, f1 = (extractor.extract(img).float().to("cpu") for img in images)
    result = matcher.match(f0, f1)
    k0, k1 = f0.keypoints.numpy(), f1.keypoints.numpy()
    result = verify_matches(k0, k1, result, verify)
    model = result.model if result.model is not None else np.full((3, 3), np.nan)
    write_npz(out, {
        "keypoints0": k0.astype(np.float32), "keypoints1": k1.astype(np.float32),
        "scores0": f0.scores.numpy().astype(np.float32),
        "scores1": f1.scores.numpy().astype(np.float32),
        "image_size0": np.asarray(f0.image_size, np.int64),
        "image_size1": np.asarray(f1.image_size, np.int64),
        "matches": result.matches.astype(np.int64), "distances": result.distances.astype(np.float32),
        "inliers": result.inliers.astype(bool), "model": np.asarray(model, np.float64),
        "model_type": np.asarray(result.model_type),
    })
    if args.draw:
        import cv2

        canvas = draw_matches(images[0], images[1], k0, k1, result.matches, result.inliers)
        draw = Path(args.draw).expanduser()
        draw.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(draw), canvas):
            raise ValueError(f"cannot write drawing {draw} (unknown image extension?)")
    print(f"{paths[0].name}: {len(f0)} keypoints, {paths[1].name}: {len(f1)} keypoints, "
          f"{len(result)} matches ({matcher.name}), {result.num_inliers} inliers "
          f"({result.model_type}) -> {out}")
    return 0
