"""``local-features evaluate hpatches|pairs|sequence``: accuracy protocols with machine-readable output.

Why one command for the three protocols: they share method building (registry methods plus the
evaluation-only peers below), the ``--set`` config path, and the JSON writer, so every number in the
README comes from the same features ``local-features extract`` would write for those options.

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

HELP = "evaluate a method: HPatches-style homographies, pose pairs, or VO sequences (JSON out)"

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
    parser.add_argument("protocol", choices=("hpatches", "pairs", "sequence"))
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
