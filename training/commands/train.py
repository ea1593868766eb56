"""``local-features train METHOD --stage STAGE --config FILE --out DIR [--resume] [--set k=v]``.

Why a stage table: each (method, stage) names either a ``Task`` (trained by the shared engine) or
a procedure (e.g. Homographic Adaptation export); adding a method is one table entry.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from pathlib import Path
from typing import Any

HELP = "train a method's stage from a YAML config (checkpoints, --resume, torchrun DDP)"

logger = logging.getLogger(__name__)

#: method -> stage -> "module:attr"; attr is a Task subclass or a ``run(conf, out, resume)``.
STAGES: dict[str, dict[str, str]] = {
    "superpoint": {
        "magicpoint": "training.superpoint.magicpoint:MagicPointTask",
        "export": "training.superpoint.homographic_adaptation:run_export",
        "retrain": "training.superpoint.magicpoint:MagicPointRetrainTask",
        "joint": "training.superpoint.joint:JointTask",
        # MagicPoint -> N x (export -> joint) under one time budget (training/superpoint/pipeline.py)
        "pipeline": "training.superpoint.pipeline:run_pipeline",
    },
    # The geometric trainers (training/d2net, training/lfnet: SfM/rosbag/rendered scenes)
    "d2net": {"train": "training.d2net.task:D2NetTask"},
    "lfnet": {"train": "training.lfnet.task:LFNetTask"},
    # LIFT and DELF trainers (training/lift, training/delf) plug into the same engine.
    # LIFT: one stage alone (``stages.<stage>`` merged over the config, init from
    # ``model.init_weights``) or the whole schedule desc -> ori -> kp (-> joint) with ``all``
    "lift": {
        "desc": "training.lift.trainer:run_desc",
        "ori": "training.lift.trainer:run_ori",
        "kp": "training.lift.trainer:run_kp",
        "joint": "training.lift.trainer:run_joint",
        "all": "training.lift.trainer:run_schedule",
    },
    "delf": {
        "finetune": "training.delf.trainer:DelfFinetuneTask",
        "attention": "training.delf.trainer:DelfAttentionTask",
        "pca": "training.delf.trainer:run_pca",
    },
}

DEFAULT_CONFIGS: dict[tuple[str, str], str] = {
    ("superpoint", "magicpoint"): "superpoint_magicpoint_shapes.yaml",
    ("superpoint", "export"): "superpoint_homographic_adaptation.yaml",
    ("superpoint", "joint"): "superpoint_joint.yaml",
    ("superpoint", "retrain"): "superpoint_magicpoint_retrain.yaml",
    ("superpoint", "pipeline"): "superpoint_pipeline.yaml",
    ("d2net", "train"): "d2net_megadepth.yaml",
    ("lfnet", "train"): "lfnet_sfm.yaml",
    **{("lift", s): "lift_eccv2016.yaml" for s in ("desc", "ori", "kp", "joint", "all")},
    ("delf", "finetune"): "delf_finetune.yaml",
    ("delf", "attention"): "delf_attention.yaml",
    ("delf", "pca"): "delf_pca.yaml",
}


def stage_help() -> str:
    """Stages per method, written from ``STAGES`` so ``--help`` cannot drift from the table."""
    return "; ".join(f"{m}: {'|'.join(st)}" for m, st in STAGES.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", choices=sorted(STAGES), help="method to train")
    parser.add_argument("--stage", required=True, help=f"stage ({stage_help()})")
    parser.add_argument("--config", default=None,
                        help="YAML config (default: the stage's file in training/configs, "
                             "e.g. every lift stage: lift_eccv2016.yaml)")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, metrics, export)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pth")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted config override, e.g. --set train.lr=1e-4 (repeatable)")


def resolve(method: str, stage: str) -> Any:
    stages = STAGES.get(method)
    if stages is None or stage not in stages:
        known = ", ".join(sorted(stages or {}))
        raise ValueError(f"unknown stage '{stage}' for method '{method}' (known: {known})")
    module, attr = stages[stage].split(":")
    return getattr(importlib.import_module(module), attr)


def run_stage(method: str, stage: str, conf: dict[str, Any], out: str | Path,
              resume: bool = False) -> dict[str, Any]:
    from ..engine import Task, Trainer

    target = resolve(method, stage)
    if isinstance(target, type) and issubclass(target, Task):
        return Trainer(target(conf), conf, out, resume=resume).fit()
    return target(conf, Path(out), resume=resume)


def main(args: argparse.Namespace) -> int:
    from ..config import load_config

    resolve(args.method, args.stage)  # unknown stage -> one-line error before reading configs
    cfg = args.config or DEFAULT_CONFIGS.get((args.method, args.stage))
    if cfg is None:
        raise ValueError("--config is required for this stage")
    conf = load_config(cfg, args.overrides)
    result = run_stage(args.method, args.stage, conf, args.out, resume=args.resume)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # `python -m training.commands.train ...` where the package is not
    import sys              # installed (no entry points), e.g. on a leased GPU machine

    _parser = argparse.ArgumentParser(prog="python -m training.commands.train", description=HELP)
    add_arguments(_parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(_parser.parse_args()))
