"""``local-features evaluate hpatches|pairs|sequence|odometry``: accuracy protocols with
machine-readable output.

Why one command for the protocols: they share method building (registry methods plus the
evaluation-only peers below), the ``--set`` config path, and the JSON writer, so every number in the
README comes from the same features ``local-features extract`` would write for those options.
Each protocol is a sub-command with its own options: ``hpatches``, ``pairs`` and ``sequence``
take a folder and ``--json``; ``odometry`` runs the metric stereo / RGB-D odometry
(``local_features_ros/odometry``) over a KITTI- or TUM-layout folder and writes the trajectory.

Every method comes from the registry, evaluation-only peers included (``akaze``: OpenCV AKAZE,
declared in ``extractors/classical.py`` with ``evaluation_only = True``, so the node refuses it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..conventions import ConfigError
from ._common import (add_extractor_arguments, command_settings, extractor_options, run_command,
                      warn_ignored_weights)

logger = logging.getLogger(__name__)

HELP = ("evaluate a method: HPatches-style homographies, pose pairs, VO sequences (JSON out), "
        "or metric stereo / RGB-D odometry against ground truth")

#: The folder protocols and their one-line help.
PROTOCOLS = {
    "hpatches": "HPatches-format homography folders: MMA, homography accuracy, repeatability",
    "pairs": "pose pairs (pair list, Strecha or TUM folder): pose AUC",
    "sequence": "monocular frame-to-frame VO on a KITTI/TUM sequence: pose AUC and drift",
}

def _floats(text: str | None, option: str, counts: tuple[int, ...]) -> list[float] | None:
    """``"a,b,c"`` (commas or spaces) -> floats, refused with the option's name unless it holds
    one of ``counts`` numbers."""
    if not text:
        return None
    try:
        values = [float(x) for x in text.replace(" ", ",").split(",") if x]
    except ValueError:
        raise ConfigError(f"{option} must be numbers separated by commas, got '{text}'") from None
    if len(values) not in counts:
        raise ConfigError(f"{option} needs {' or '.join(map(str, counts))} numbers, got "
                          f"{len(values)} ('{text}')")
    return values


def jsonable(obj: Any) -> Any:
    """numpy -> python, inf/NaN -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for name, text in PROTOCOLS.items():
        _add_protocol_arguments(sub.add_parser(name, help=text, description=text))
    _add_odometry_arguments(sub.add_parser("odometry", help=ODOMETRY_HELP,
                                           description=ODOMETRY_HELP))


def _add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the folder protocols (hpatches, pairs, sequence)."""
    parser.add_argument("path", help="HPatches/Oxford folder | pair list or Strecha/TUM folder | "
                                     "KITTI/TUM sequence folder")
    add_extractor_arguments(parser, method_help="registry method, evaluation-only peers (akaze) "
                                                "included; see `local-features methods`")
    parser.add_argument("--json", required=True, metavar="OUT", help="write results here")
    parser.add_argument("--plot", metavar="DIR", help="write PNG figures into DIR")
    from .match import add_matcher_arguments

    add_matcher_arguments(parser)  # --matcher nn|lightglue, --matcher-weights, --matcher-set
    g = parser.add_argument_group("pairs / sequence")
    g.add_argument("--image-dir", help="image root of a pair list (default: the list's folder)")
    g.add_argument("--intrinsics", help="fx,fy,cx,cy for TUM-style folders")
    g.add_argument("--distortion", help="k1,k2,p1,p2[,k3] for TUM-style folders")
    g.add_argument("--min-gap", type=int, default=1, help="folder pairs: smallest index gap")
    g.add_argument("--max-gap", type=int, default=2, help="folder pairs: largest index gap")
    g.add_argument("--ransac-thresh", type=float, default=None,
                   help="px; hpatches: findHomography (default 3), pairs: essential (default 1)")
    g.add_argument("--stride", type=int, default=1, help="sequence: use every N-th frame")
    g.add_argument("--max-frames", type=int, default=0, help="sequence: stop after N frames")


def check_numbers(args: argparse.Namespace) -> None:
    """Ranges of the numeric options (a negative gap or stride would silently mean nothing)."""
    if args.min_gap < 1 or args.max_gap < args.min_gap:
        raise ConfigError(f"need 1 <= --min-gap <= --max-gap, got {args.min_gap} and "
                          f"{args.max_gap}")
    if args.stride < 1:
        raise ConfigError(f"--stride must be >= 1, got {args.stride}")
    if args.max_frames < 0:
        raise ConfigError(f"--max-frames must be >= 0 (0 = all), got {args.max_frames}")
    if args.ransac_thresh is not None and not args.ransac_thresh > 0:
        raise ConfigError(f"--ransac-thresh must be > 0 pixels, got {args.ransac_thresh}")


@dataclass
class EvaluationJob:
    """What ``prepare`` checked, loaded and built: the work of ``evaluate``."""

    extractor: Any
    matcher: Any
    data: Any  # protocol input: HPatches root, (pose pairs, kind) or a sequence


def prepare(args: argparse.Namespace) -> EvaluationJob:
    """Check options, settings and the data set, then build the models (errors: status 2)."""
    from ..evaluation import hpatches as hp
    from ..evaluation import pairs as pp
    from ..evaluation import sequence as sq
    from .match import build_matcher_from_args

    check_numbers(args)
    intrinsics = _floats(args.intrinsics, "--intrinsics", (4,))
    distortion = _floats(args.distortion, "--distortion", (4, 5))
    given = command_settings(args)
    if given.verify:
        raise ConfigError(f"'{given.matching_names()[-1]}': the protocols run their own "
                          "verification (--ransac-thresh)")
    options = extractor_options(args, args.method, matching=True)
    warn_ignored_weights("evaluate", options)
    data: Any
    if args.protocol == "hpatches":
        hp.load_homography_pairs(args.path)  # folder and its pairs exist (read again later)
        data = args.path
    elif args.protocol == "pairs":
        data = pp.load_pose_pairs(args.path, args.image_dir, intrinsics, distortion,
                                  args.min_gap, args.max_gap)
    else:
        data = sq.load_sequence(args.path, intrinsics, distortion)
    for folder in [Path(args.json).expanduser().parent] + ([Path(args.plot)] if args.plot else []):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create output folder {folder}: {exc.strerror or exc}") \
                from exc
    extractor = options.build()
    matcher = build_matcher_from_args(args, args.method, str(extractor.device),
                                      options.precision, given)
    return EvaluationJob(extractor, matcher, data)


def evaluate(args: argparse.Namespace, job: EvaluationJob) -> int:
    """Run the protocol, write the JSON (and plots), print the summary line."""
    import torch

    from ..evaluation import hpatches as hp
    from ..evaluation import pairs as pp
    from ..evaluation import sequence as sq

    extractor, matcher = job.extractor, job.matcher

    def extract(image: np.ndarray) -> hp.NumpyFeatures:
        return hp.extract_numpy(extractor, image)

    if args.protocol == "hpatches":
        cfg = hp.HPatchesConfig()
        if args.ransac_thresh is not None:
            cfg.ransac_reproj_thresh = args.ransac_thresh
        result = hp.evaluate_hpatches(job.data, extract, cfg, matcher=matcher)
    elif args.protocol == "pairs":
        pcfg = pp.PairsConfig()
        if args.ransac_thresh is not None:
            pcfg.ransac_thresh_px = args.ransac_thresh
        pairs, kind = job.data
        result = pp.evaluate_pairs(pairs, extract, pcfg, matcher=matcher)
        result["input_kind"] = kind
    else:
        seq = job.data
        result = sq.evaluate_sequence(seq, extract, stride=args.stride,
                                      max_frames=args.max_frames, matcher=matcher)
        result["input_kind"] = seq.kind

    result = {
        "protocol_name": args.protocol,
        "method": args.method,
        "weights": (extractor.weights_source if extractor.is_learned else None),
        "conf": dict(getattr(extractor, "conf", {})),
        "device": str(extractor.device),
        "precision": extractor.precision,
        "matcher": {"type": matcher.name, "description": matcher.describe(),
                    "conf": dataclasses.asdict(matcher.conf)},
        "path": str(args.path),
        "threads": {"torch": torch.get_num_threads(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        **result,
    }
    out = Path(args.json).expanduser()
    out.write_text(json.dumps(jsonable(result), indent=1))
    logger.info("wrote %s", out)

    if args.plot:
        from ..evaluation import plots

        stem = f"{args.protocol}_{args.method}"
        d = Path(args.plot)
        if args.protocol == "hpatches":
            plots.plot_mma({args.method: result["mma"]}, d / f"{stem}_mma.png")
        else:
            plots.plot_pose_auc({args.method: result["pose_auc"]}, d / f"{stem}_auc.png")
        if args.protocol == "sequence":
            plots.plot_trajectory(result["trajectory"]["estimated"],
                                  result["trajectory"]["ground_truth"], d / f"{stem}_traj.png",
                                  title=f"{args.method}: {Path(args.path).name}")
    _print_summary(result)
    return 0


def main(args: argparse.Namespace) -> int:
    if args.protocol == "odometry":
        return run_command("evaluate", lambda: prepare_odometry(args),
                           lambda job: evaluate_odometry(args, job))
    return run_command("evaluate", lambda: prepare(args), lambda job: evaluate(args, job))


def _print_summary(r: dict[str, Any]) -> None:
    """One human-readable line (CLI output); the JSON has everything."""
    if r["protocol_name"] == "hpatches":
        print(f"{r['method']}: MMA@1/3/5/10 {r['mma']['1']:.3f}/{r['mma']['3']:.3f}/"
              f"{r['mma']['5']:.3f}/{r['mma']['10']:.3f}  H-acc@1/3/5 "
              + "/".join(f"{r['homography_accuracy'][k]:.3f}" for k in ("1", "3", "5"))
              + f"  rep {_fmt(r['repeatability'])}  MLE {_fmt(r['localization_error'])}"
              f"  features {r['features']:.0f} matches {r['matches']:.0f} ({r['num_pairs']} pairs)")
    else:
        line = (f"{r['method']}: pose AUC@5/10/20 "
                + "/".join(f"{100 * r['pose_auc'][k]:.1f}" for k in ("5", "10", "20")))
        if r["protocol_name"] == "sequence":
            d = r["drift"]
            line += (f"  ATE {d['ate_rmse_m']:.3f} m  RPE {d['rpe_trans_rmse_m']:.3f} m "
                     f"{d['rpe_rot_mean_deg']:.3f} deg  failures {r['failures']}/"
                     f"{r['num_frames'] - 1}")
        else:
            line += f"  ({r['num_pairs']} pairs, {r['matches']:.0f} matches/pair)"
        print(line)


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


# ---------------------------------------------------------------------------------------- odometry
ODOMETRY_HELP = ("metric stereo (KITTI layout) or RGB-D (TUM layout) odometry: writes the "
                 "trajectory (KITTI poses format); with ground truth: ATE, end-point drift, RPE, "
                 "KITTI t_rel/r_rel")


def _add_odometry_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--stereo", metavar="DIR", help="KITTI-layout stereo folder (image_l/ + "
                     "image_r/, image_0/ + image_1/ or image_2/ + image_3/, calib.txt, optional "
                     "times.txt and poses.txt)")
    src.add_argument("--rgbd", metavar="DIR", help="TUM-layout RGB-D folder (rgb/, depth/, "
                     "rgb.txt, depth.txt, optional groundtruth.txt)")
    parser.add_argument("--method", default=None,
                        help="registry method (default: the node's choice for this hardware, "
                             "`method: auto`: XFeat on a CPU); max_keypoints defaults to 2000 "
                             "(--set max_keypoints=N)")
    add_extractor_arguments(parser, method=False)
    from .match import add_matcher_arguments

    add_matcher_arguments(parser)
    parser.add_argument("--trajectory", required=True, metavar="OUT.txt",
                        help="estimated poses: one line per frame, row-major 3x4 T_world_cam of "
                             "the left/colour camera, first line identity (KITTI poses.txt)")
    parser.add_argument("--json", metavar="OUT", help="write metrics, counts and timings here")
    parser.add_argument("--plot", metavar="P", help="top view (x-z) against ground truth: a .png "
                        "file, or a folder for odometry_<method>_<folder>.png")
    g = parser.add_argument_group("cameras")
    g.add_argument("--intrinsics", help="RGB-D: fx,fy,cx,cy of the colour camera")
    g.add_argument("--distortion", help="RGB-D with --intrinsics: k1,k2,p1,p2[,k3]")
    g.add_argument("--camera", choices=("tum-fr1", "tum-fr2", "tum-fr3"),
                   help="RGB-D: a TUM camera's intrinsics and distortion (default: from a "
                        "freiburgN / frN folder name)")
    g.add_argument("--depth-factor", type=float, default=5000.0,
                   help="RGB-D: depth image value per metre (TUM 5000)")
    g.add_argument("--baseline", type=float, default=None,
                   help="stereo: baseline in metres (default: from calib.txt P rows)")
    g = parser.add_argument_group("odometry")
    g.add_argument("--odometry-set", dest="odometry_settings", action="append", default=[],
                   metavar="SECTION.KEY=VALUE",
                   help="odometry setting (repeatable), e.g. bundle.window=8, "
                        "tracking.ransac_threshold=3 (sections: stereo, depth, tracking, "
                        "keyframes, bundle, recovery; docs/odometry.md)")
    g.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = all)")
    g.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1: the odometry already runs two "
                        "threads - the next frame's features beside the current frame's "
                        "tracking - and threads of one torch call spin-wait on a busy CPU; "
                        "0 = leave as is)")


@dataclass
class OdometryJob:
    """What ``prepare_odometry`` checked, loaded and built."""

    method: str
    method_reason: str
    sensor: str
    sequence: Any
    config: Any
    extractor: Any
    matcher: Any


def prepare_odometry(args: argparse.Namespace) -> OdometryJob:
    """Check options, pick the method, load the folder (names and calibration only) and build
    the extractor and matcher (errors: status 2)."""
    from ..hardware import choose_method
    from ..image_folders import parse_intrinsics
    from ..odometry.config import DEFAULT_MAX_KEYPOINTS, OdometryConfig
    from ..odometry.datasets import load_rgbd_folder, load_stereo_folder
    from ._common import parse_settings
    from .match import build_matcher_from_args

    if args.max_frames < 0:
        raise ConfigError(f"--max-frames must be >= 0 (0 = all), got {args.max_frames}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = leave as is), got {args.threads}")
    if not args.depth_factor > 0:
        raise ConfigError(f"--depth-factor must be > 0, got {args.depth_factor}")
    if args.stereo and (args.intrinsics or args.distortion or args.camera):
        raise ConfigError("--intrinsics/--distortion/--camera are for --rgbd; a stereo folder "
                          "takes its cameras from calib.txt")
    if args.rgbd and args.baseline is not None:
        raise ConfigError("--baseline is for --stereo")
    if args.distortion and not args.intrinsics:
        raise ConfigError("--distortion needs --intrinsics")
    given = command_settings(args)
    if given.verify:
        raise ConfigError(f"'{given.matching_names()[-1]}': odometry verifies matches with its "
                          "own PnP RANSAC (--odometry-set tracking.ransac_threshold=...)")
    method, reason = args.method, "given with --method"
    if not method:
        device = given.build.get("device") or args.device or "cpu"
        choice = choose_method(device)
        method, reason = choice.method, choice.reason
        logger.info("method %s: %s", method, reason)
    config = OdometryConfig().replace(**parse_settings(args.odometry_settings))
    options = extractor_options(args, method, matching=True)
    options.conf.setdefault("max_keypoints", DEFAULT_MAX_KEYPOINTS)
    warn_ignored_weights("evaluate", options)
    if args.stereo:
        sensor, sequence = "stereo", load_stereo_folder(Path(args.stereo), args.baseline)
    else:
        intrinsics = parse_intrinsics(args.intrinsics, args.distortion) if args.intrinsics \
            else None
        sensor, sequence = "rgbd", load_rgbd_folder(Path(args.rgbd), intrinsics, args.camera)
    outputs = [Path(args.trajectory).expanduser()]
    if args.json:
        outputs.append(Path(args.json).expanduser())
    for out in outputs:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create output folder {out.parent}: "
                             f"{exc.strerror or exc}") from exc
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    extractor = options.build()
    matcher = build_matcher_from_args(args, method, str(extractor.device), options.precision,
                                      given)
    return OdometryJob(method, reason, sensor, sequence, config, extractor, matcher)


def evaluate_odometry(args: argparse.Namespace, job: OdometryJob) -> int:
    """Run the sequence, write trajectory / JSON / plot, print the summary line."""
    import torch

    from ..odometry import evaluation as oe

    folder = Path(args.stereo or args.rgbd)
    ev = oe.evaluate_odometry(job.sensor, job.extractor, job.sequence, job.config,
                              matcher=job.matcher, depth_factor=args.depth_factor,
                              max_frames=args.max_frames,
                              trajectory=Path(args.trajectory).expanduser(), log_every=25)
    logger.info("wrote %s", args.trajectory)
    extractor = job.extractor
    if args.json:
        result = {
            "protocol_name": "odometry",
            "method": job.method,
            "method_reason": job.method_reason,
            "weights": (extractor.weights_source if extractor.is_learned else None),
            "conf": dict(getattr(extractor, "conf", {})),
            "device": str(extractor.device),
            "precision": extractor.precision,
            "matcher": {"type": job.matcher.name, "description": job.matcher.describe()},
            "path": str(folder),
            "trajectory": str(args.trajectory),
            "threads": {"torch": torch.get_num_threads(),
                        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
            "odometry": job.config.to_dict(),
            **ev.report(),
        }
        out = Path(args.json).expanduser()
        out.write_text(json.dumps(jsonable(result), indent=1))
        logger.info("wrote %s", out)
    if args.plot:
        from ..odometry.plots import plot_top_view

        plot = Path(args.plot).expanduser()
        if plot.suffix.lower() != ".png":
            plot = plot / f"odometry_{job.method}_{folder.resolve().name}.png"
        gt = job.sequence.ground_truth
        n = len(ev.run.results)
        m = ev.metrics
        title = f"{job.method} {job.sensor}: {folder.resolve().name}"
        if m is not None and m.end_drift_percent is not None:
            title += f" (end drift {m.end_drift_percent:.2f} %, ATE {m.ate_rmse_m:.3f} m)"
        plot_top_view(ev.run.poses, list(gt[:n]) if gt is not None else [], plot, title)
        logger.info("wrote %s", plot)
    print(oe.format_summary(job.method, ev))
    return 0
