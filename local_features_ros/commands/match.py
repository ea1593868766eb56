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

Exit statuses as ``extract`` (``_common.py``): 2 for a wrong setting, image, output name or
weights file (nothing written); a warning line for an image without keypoints, and status 1
when a learned method with trained weights finds none in either image.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..conventions import ConfigError
from ..settings import LIGHTGLUE_PREFIX, MATCHER_PREFIX, VERIFY_FIELDS, VERIFY_PREFIX, Settings
from ._common import (RUN_FAILED, add_extractor_arguments, command_settings, extractor_options,
                      fail, parse_settings, run_command, warn, warn_ignored_weights)

logger = logging.getLogger(__name__)

HELP = "match the features of two images (mutual NN + ratio, or LightGlue; RANSAC) into OUT.npz"

#: Verification models without camera intrinsics (``auto`` means ``fundamental`` then).
VERIFY_MODELS = ("homography", "fundamental", "none")


def add_matcher_arguments(parser: argparse.ArgumentParser) -> None:
    """``--matcher``, ``--matcher-weights``, ``--matcher-set`` (shared with ``evaluate``)."""
    parser.add_argument("--matcher", default=None,
                        help="matcher: nn (mutual nearest neighbour on L2, default) | lightglue "
                             "(released weights for --method aliked/disk/xfeat, else --matcher-weights); "
                             "= --set matcher.type=...")
    parser.add_argument("--matcher-weights", default=None, metavar="PATH",
                        help="local LightGlue weights file (wins over the released ones)")
    parser.add_argument("--matcher-set", dest="matcher_settings", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="matcher config (repeatable); lightglue: depth_confidence, "
                             "width_confidence (<= 0 = off), filter_threshold, n_layers, features "
                             "(= --set matcher.<key>=... / matcher.lightglue.<key>=...)")


def matcher_type(args: argparse.Namespace, given: Settings) -> str:
    """``--matcher`` or ``--set matcher.type`` (both given: they must agree); default ``nn``."""
    if given.matcher_type is not None and args.matcher not in (None, given.matcher_type):
        raise ConfigError(f"matcher given twice: --matcher {args.matcher} and --set "
                          f"matcher.type={given.matcher_type}")
    return given.matcher_type or args.matcher or "nn"


def build_matcher_from_args(args: argparse.Namespace, method: str, device: str,
                            precision: str = "fp32", given: Settings | None = None,
                            **conf: Any) -> Any:
    """The matcher the command line asks for; ``method`` picks LightGlue's released weights.

    Its config: ``conf`` (defaults from the command's own flags, e.g. ``nn``'s ``--ratio``),
    then ``--set matcher.<key>`` / ``matcher.lightglue.<key>`` (``given``) and ``--matcher-set``
    / ``--matcher-weights``; one key given both ways must have one value."""
    from ..matchers.base import build_matcher, get_matcher_class

    given = given or Settings()
    kind = matcher_type(args, given)
    cls = get_matcher_class(kind)
    for other in given.matcher:
        if other != kind:
            prefix = LIGHTGLUE_PREFIX if other == "lightglue" else MATCHER_PREFIX
            key = next(iter(given.matcher[other]))
            raise ConfigError(f"'{prefix}{key}' applies to matcher.type={other}, this run uses "
                              f"{kind}")
    from_set = dict(given.matcher.get(kind, {}))
    from_flags = parse_settings(args.matcher_settings)
    if args.matcher_weights:
        from_flags["weights"] = args.matcher_weights
    for key in from_set.keys() & from_flags.keys():
        if from_set[key] != from_flags[key]:
            raise ConfigError(f"matcher key '{key}' given twice: --set {from_set[key]!r} and "
                              f"--matcher-set/--matcher-weights {from_flags[key]!r}")
    conf = {**conf, **from_set, **from_flags}
    if "features" in cls.default_conf():
        conf.setdefault("features", method)
    return build_matcher(kind, device=device, precision=precision, **conf)


def verify_config(args: argparse.Namespace, given: Settings) -> Any:
    """``--verify``/``--threshold`` and ``--set verify.<key>`` -> ``VerifyConfig`` (values cast
    to each field's type; a flag and a setting given both ways must agree)."""
    from ..geometry import VerifyConfig

    defaults = VerifyConfig.field_defaults()
    fields = {"model": args.verify, "threshold_px": args.threshold}
    flag_names = {"model": "--verify", "threshold_px": "--threshold"}
    names = {f: n for n, f in VERIFY_FIELDS.items()}
    for key, text in given.verify.items():
        name = VERIFY_PREFIX + names.get(key, key)
        if key not in defaults:
            raise ConfigError(f"unknown setting '{name}' (known: " + ", ".join(
                sorted(VERIFY_PREFIX + names.get(f, f) for f in defaults)) + ")")
        value = VerifyConfig.cast(key, text, name)
        if fields.get(key) is not None and fields[key] != value:
            raise ConfigError(f"{name} given twice: {flag_names[key]} {fields[key]} and "
                              f"--set {name}={text}")
        fields[key] = value
    fields = {k: (defaults[k] if v is None else v) for k, v in fields.items()}
    fields["model"] = "fundamental" if fields["model"] == "auto" else fields["model"]
    if fields["model"] not in VERIFY_MODELS:
        raise ConfigError(f"verify.model must be one of {', '.join(VERIFY_MODELS)} here (no "
                          f"camera intrinsics), got '{fields['model']}'")
    return VerifyConfig(**fields)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_extractor_arguments(parser)
    add_matcher_arguments(parser)
    parser.add_argument("--ratio", type=float, default=1.0,
                        help="--matcher nn: Lowe ratio test threshold in (0, 1]; 1 = off "
                             "(default; = --set matcher.ratio=...)")
    parser.add_argument("--no-mutual", dest="mutual", action="store_false",
                        help="--matcher nn: plain nearest neighbour instead of mutual")
    parser.add_argument("--max-distance", type=float, default=0.0,
                        help="--matcher nn: drop matches with L2 descriptor distance above this "
                             "(0 = off)")
    parser.add_argument("--verify", default=None, choices=VERIFY_MODELS,
                        help="geometric verification model (default fundamental; = --set "
                             "verify.model=...)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="RANSAC inlier threshold in pixels (default 1.0; = --set "
                             "verify.ransac_threshold=...)")
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


@dataclass
class MatchJob:
    """What ``prepare`` checked and built: the work of ``match_pair``."""

    extractor: Any
    matcher: Any
    verify: Any
    paths: list[Path]
    images: list[np.ndarray]
    out: Path
    draw: Path | None


def prepare(args: argparse.Namespace) -> MatchJob:
    """Check settings, both images and the outputs, then build the models (errors: status 2)."""
    import cv2

    from .extract import read_image

    given = command_settings(args)
    options = extractor_options(args, args.method, matching=True)  # before any file work
    warn_ignored_weights("match", options)
    nn_conf: dict[str, Any] = {"mutual": bool(args.mutual), "ratio": float(args.ratio),
                               "max_distance": float(args.max_distance)}
    if matcher_type(args, given) != "nn":
        if nn_conf != {"mutual": True, "ratio": 1.0, "max_distance": 0.0}:
            raise ConfigError("--ratio / --no-mutual / --max-distance apply to --matcher nn only")
        nn_conf = {}
    matcher = build_matcher_from_args(args, args.method, options.device, options.precision,
                                      given, **nn_conf)
    verify = verify_config(args, given)
    paths = [Path(args.image0).expanduser(), Path(args.image1).expanduser()]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"input not found: {p}")
    images = [read_image(p) for p in paths]  # decode errors before the model is built
    out = Path(args.out).expanduser()
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {out}")
    draw = Path(args.draw).expanduser() if args.draw else None
    if draw is not None and not cv2.haveImageWriter(str(draw)):
        raise ValueError(f"--draw {draw}: no image writer for '{draw.suffix}' (use .png or .jpg)")
    for folder in {out.parent, *([draw.parent] if draw is not None else [])}:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create output folder {folder}: {exc.strerror or exc}") \
                from exc
    return MatchJob(options.build(), matcher, verify, paths, images, out, draw)


def match_pair(args: argparse.Namespace, job: MatchJob) -> int:
    """Extract, match, verify, write (and draw); warn about an image without keypoints."""
    from ..geometry import verify_matches
    from .extract import all_empty_is_failure, write_npz, zero_keypoints_hint

    extractor, paths, images = job.extractor, job.paths, job.images
    f0, f1 = (extractor.extract(img).float().to("cpu") for img in images)
    for p, f in zip(paths, (f0, f1)):
        if len(f) == 0:
            warn("match", f"{args.method} found 0 keypoints in {p} "
                          f"({zero_keypoints_hint(extractor)})")
    result = job.matcher.match(f0, f1)
    k0, k1 = f0.keypoints.numpy(), f1.keypoints.numpy()
    result = verify_matches(k0, k1, result, job.verify)
    model = result.model if result.model is not None else np.full((3, 3), np.nan)
    write_npz(job.out, {
        "keypoints0": k0.astype(np.float32), "keypoints1": k1.astype(np.float32),
        "scores0": f0.scores.numpy().astype(np.float32),
        "scores1": f1.scores.numpy().astype(np.float32),
        "image_size0": np.asarray(f0.image_size, np.int64),
        "image_size1": np.asarray(f1.image_size, np.int64),
        "matches": result.matches.astype(np.int64),
        "distances": result.distances.astype(np.float32),
        "inliers": result.inliers.astype(bool), "model": np.asarray(model, np.float64),
        "model_type": np.asarray(result.model_type),
    })
    if job.draw is not None:
        import cv2

        canvas = draw_matches(images[0], images[1], k0, k1, result.matches, result.inliers)
        if not cv2.imwrite(str(job.draw), canvas):
            raise RuntimeError(f"cannot write drawing {job.draw}")
    print(f"{paths[0].name}: {len(f0)} keypoints, {paths[1].name}: {len(f1)} keypoints, "
          f"{len(result)} matches ({job.matcher.name}), {result.num_inliers} inliers "
          f"({result.model_type}) -> {job.out}")
    if all_empty_is_failure(extractor, [len(f0), len(f1)]):
        return fail("match", f"{args.method} found 0 keypoints in both images with the weights "
                    f"{extractor.weights_source}: check detection_threshold and the weights",
                    RUN_FAILED)
    return 0


def main(args: argparse.Namespace) -> int:
    return run_command("match", lambda: prepare(args), lambda job: match_pair(args, job))
