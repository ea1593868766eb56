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
from pathlib import Path
from typing import Any

import numpy as np
from ._common import add_extractor_arguments, parse_settings

logger = logging.getLogger(__name__)

HELP = "evaluate a method: HPatches-style homographies, pose pairs, or VO sequences (JSON out)"

def build_method(method: str, weights: str | None = None, device: str = "cpu",
                 precision: str = "fp32", conf: dict[str, Any] | None = None) -> Any:
    """Any registry method, evaluation-only peers (``akaze``) included."""
    from ..registry import build_extractor

    return build_extractor(method, weights, device, precision, **dict(conf or {}))


def _floats(text: str | None) -> list[float] | None:
    if not text:
        return None
    return [float(x) for x in text.replace(" ", ",").split(",") if x]


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


def main(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation import hpatches as hp
    from ..evaluation import pairs as pp
    from ..evaluation import sequence as sq

    conf = parse_settings(args.settings)
    extractor = build_method(args.method, args.weights, args.device, args.precision, conf)
    from .match import build_matcher_from_args

    matcher = build_matcher_from_args(args, args.method, device=str(extractor.device))

    def extract(image: np.ndarray) -> hp.NumpyFeatures:
        return hp.extract_numpy(extractor, image)

    if args.protocol == "hpatches":
        cfg = hp.HPatchesConfig()
        if args.ransac_thresh is not None:
            cfg.ransac_reproj_thresh = args.ransac_thresh
        result = hp.evaluate_hpatches(args.path, extract, cfg, matcher=matcher)
    elif args.protocol == "pairs":
        pcfg = pp.PairsConfig()
        if args.ransac_thresh is not None:
            pcfg.ransac_thresh_px = args.ransac_thresh
        pairs, kind = pp.load_pose_pairs(args.path, args.image_dir, _floats(args.intrinsics),
                                         _floats(args.distortion), args.min_gap, args.max_gap)
        result = pp.evaluate_pairs(pairs, extract, pcfg, matcher=matcher)
        result["input_kind"] = kind
    else:
        seq = sq.load_sequence(args.path, _floats(args.intrinsics), _floats(args.distortion))
        result = sq.evaluate_sequence(seq, extract, stride=args.stride,
                                      max_frames=args.max_frames, matcher=matcher)
        result["input_kind"] = seq.kind

    result = {
        "protocol_name": args.protocol,
        "method": args.method,
        "weights": (extractor.weights_source if extractor.is_learned else None),
        "conf": dict(getattr(extractor, "conf", {})),
        "device": str(args.device),
        "precision": args.precision,
        "matcher": {"type": matcher.name, "description": matcher.describe(),
                    "conf": dataclasses.asdict(matcher.conf)},
        "path": str(args.path),
        "threads": {"torch": torch.get_num_threads(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        **result,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
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
