"""``local-features train METHOD --stage STAGE --config FILE --out DIR [--resume] [--set k=v]``.

Why declarations: each training package says, once, in its ``__init__.py``, which stages it has
(``TRAINING = TrainingSpec(...)``, ``training/spec.py``): each (method, stage) names either a
``Task`` (trained by the shared engine) or a procedure (e.g. Homographic Adaptation export). This
command reads those declarations (and the ``local_features_ros.training`` entry points of plugin
packages), so adding a method touches its own package only.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..spec import TrainingSpec, find_specs

HELP = "train a method's stage from a YAML config (checkpoints, --resume, torchrun DDP)"

logger = logging.getLogger(__name__)


def specs() -> dict[str, TrainingSpec]:
    """method -> declaration, read from the training packages and plugins (``training/spec.py``)."""
    return find_specs()


def _stage_table() -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType({m: sp.stages for m, sp in specs().items()})


def _default_config_table() -> Mapping[tuple[str, str], str]:
    return MappingProxyType({(m, st): cfg for m, sp in specs().items()
                             for st, cfg in sp.default_configs.items()})


def __getattr__(name: str) -> Any:
    """``STAGES`` (method -> stage -> "module:attr") and ``DEFAULT_CONFIGS`` ((method, stage) ->
    YAML), read-only views derived from the declarations; there is no table to keep here."""
    if name == "STAGES":
        return _stage_table()
    if name == "DEFAULT_CONFIGS":
        return _default_config_table()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def stage_help() -> str:
    """Stages per method, written from the declarations so ``--help`` cannot drift from them."""
    return "; ".join(f"{m}: {'|'.join(sp.stages)}" for m, sp in specs().items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", choices=sorted(specs()), help="method to train")
    parser.add_argument("--stage", required=True, help=f"stage ({stage_help()})")
    parser.add_argument("--config", default=None,
                        help="YAML config (default: the stage's file in training/configs, "
                             "e.g. every lift stage: lift_eccv2016.yaml)")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, metrics, export)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pth")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted config override, e.g. --set train.lr=1e-4 (repeatable)")


def resolve(method: str, stage: str) -> Any:
    spec = specs().get(method)
    if spec is None:
        raise ValueError(f"unknown stage '{stage}' for method '{method}' (known methods: "
                         f"{', '.join(sorted(specs()))})")
    return spec.resolve(stage)


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
    cfg = args.config or specs()[args.method].default_configs.get(args.stage)
    if cfg is None:
        raise ValueError("--config is required for this stage")
    conf = load_config(cfg, args.overrides)
    result = run_stage(args.method, args.stage, conf, args.out, resume=args.resume)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # `python -m training.commands.train ...` where the package is not
    import sys              # installed (no entry points), e.g. a checkout copied to a GPU machine

    _parser = argparse.ArgumentParser(prog="python -m training.commands.train", description=HELP)
    add_arguments(_parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sys.exit(main(_parser.parse_args()))
    except (FileNotFoundError, ValueError, RuntimeError) as _exc:
        # the same one-line reason and status 1 as `local-features train` (e.g. a failed
        # export check, a diverged run)
        print(f"train: error: {_exc}", file=sys.stderr)
        sys.exit(1)
