"""The whole SuperPoint recipe as one resumable command under one wall-clock budget
(docs/method_facts/training_superpoint.md).

Why: the reference budget (MagicPoint 200k steps x 32, Homographic Adaptation with 100 warps,
joint 600k steps x 2) is days of GPU time; what a robotics team often has is a few hours on one
GPU. Run stage by stage, a short time slot ends in a half-trained stage and nothing to deploy. This driver chains MagicPoint -> N x (Homographic Adaptation -> joint),
hands each stage its share of the *remaining* budget (time a stage does not use goes to the
next), fills in the paths between stages, and ends with an exported runtime checkpoint
(``OUT/superpoint.pth``) when the budget runs out. Every stage holds its own share (set-up,
export and export check inside it), so the whole pipeline holds the total; a stage whose export
fails the runtime check (``training/export_check.py``) ends the pipeline with that error.

Layout of ``OUT``: ``magicpoint/``, ``ha1/``, ``joint1/``, ``ha2/``, ... (each an ordinary run
directory of its stage), ``stage_done.json`` in each finished one, and ``pipeline.json``. With
``--resume``, finished stages are skipped and an interrupted one continues from its checkpoint.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

from ..config import ConfigError, get, load_yaml, set_dotted
from ..export_check import ExportCheckFailed

logger = logging.getLogger(__name__)

STAGES = ("magicpoint", "export", "joint")

DEFAULT_PIPELINE: dict[str, Any] = {
    "time_budget_s": 0,  # whole pipeline; 0 = every stage runs to its own max_steps / all images
    # share of the budget per stage kind; export/joint shares are split evenly over the rounds
    "fractions": {"magicpoint": 0.3, "export": 0.1, "joint": 0.6},
    "rounds": 1,  # Homographic Adaptation -> joint rounds after MagicPoint
    "init_weights": None,  # skip MagicPoint: round 1 adapts (and the joint stage starts from) these
    "device": "auto",  # every stage
    "precision": "auto",  # train.precision of the training stages (auto | fp32 | bf16)
}


def _stage_conf(spec: Mapping[str, Any] | None, kind: str) -> dict[str, Any]:
    """``{config: FILE, set: {dotted.key: value}}`` -> the stage's resolved config (the export
    section also takes ``teacher``, see ``_teacher``)."""
    spec = dict(spec or {})
    allowed = {"config", "set", "teacher"} if kind == "export" else {"config", "set"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"pipeline stage '{kind}': unknown key(s) {sorted(unknown)} "
                          f"(expected {', '.join(sorted(allowed))})")
    if not spec.get("config"):
        raise ConfigError(f"pipeline stage '{kind}' needs 'config: FILE'")
    conf = load_yaml(spec["config"])
    _apply_set(conf, spec.get("set") or {}, "")
    return conf


def _apply_set(conf: dict[str, Any], values: Mapping[str, Any], prefix: str) -> None:
    """Overrides as dotted keys (``train.lr: 1e-4``) or nested sections (``train: {lr: 1e-4}``);
    a nested mapping is descended into only where the config has a non-empty section of that
    name (an empty one, e.g. ``model.extractor_conf: {}``, is a free-form value: replaced)."""
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        section = get(conf, dotted)
        if isinstance(value, Mapping) and value and isinstance(section, dict) and section:
            _apply_set(conf, value, dotted + ".")
        else:
            set_dotted(conf, dotted, value)


def _teacher(conf: Mapping[str, Any]) -> str:
    """``export.teacher`` (default magicpoint): who labels round 1 (``teachers.py``). Rounds > 1
    re-label with the previous round's SuperPoint, as in the reference recipe."""
    from .teachers import DEFAULT_TEACHER, teacher_kind

    spec = conf.get("export") or {}
    teacher = str(spec.get("teacher") or DEFAULT_TEACHER)
    in_set = (spec.get("set") or {}).get("teacher")
    if in_set is not None and str(in_set) != teacher:
        raise ConfigError(f"pipeline: export.set.teacher ({in_set}) differs from export.teacher "
                          f"({teacher}); set export.teacher only")
    try:
        teacher_kind(teacher)
    except ValueError as e:
        raise ConfigError(f"pipeline: export.teacher: {e}") from None
    return teacher


def _plan(pipe: Mapping[str, Any], teacher: str = "magicpoint") -> list[tuple[str, str, float]]:
    """``(run dir name, stage kind, weight)`` in execution order. MagicPoint runs only when it is
    the teacher and no ``init_weights`` replace it."""
    rounds = int(pipe["rounds"])
    if rounds < 1:
        raise ConfigError(f"pipeline.rounds must be >= 1, got {rounds}")
    fr = {**DEFAULT_PIPELINE["fractions"], **(pipe.get("fractions") or {})}
    if any(float(v) < 0 for v in fr.values()):
        raise ConfigError("pipeline.fractions must be >= 0")
    skip = pipe.get("init_weights") or teacher != "magicpoint"
    plan = [] if skip else [("magicpoint", "magicpoint", float(fr["magicpoint"]))]
    for r in range(1, rounds + 1):
        plan += [(f"ha{r}", "export", float(fr["export"]) / rounds),
                 (f"joint{r}", "joint", float(fr["joint"]) / rounds)]
    return plan


#: what a stage gets when earlier ones used up the budget (0 would mean "no budget")
MIN_STAGE_BUDGET_S = 0.1


def _now() -> float:
    """Wall clock (a function so tests can drive the budget arithmetic)."""
    return time.time()


def _done_file(run_dir: Path) -> Path:
    return run_dir / "stage_done.json"


def run_pipeline(conf: Mapping[str, Any], out: Path, resume: bool = False) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) the pipeline described by ``conf``; see module doc."""
    from ..commands.train import run_stage

    t0 = _now()  # the budget counts from here: config checks and stage set-up are inside it
    pipe = {**DEFAULT_PIPELINE, **(conf.get("pipeline") or {})}
    unknown = set(pipe) - set(DEFAULT_PIPELINE)
    if unknown:
        raise ConfigError(f"pipeline: unknown key(s) {sorted(unknown)}")
    unknown = set(conf) - {"pipeline", *STAGES}
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {sorted(unknown)} (pipeline, {', '.join(STAGES)})")
    teacher = _teacher(conf)
    plan = _plan(pipe, teacher)
    # every stage config is resolved before anything runs: a typo in the last stage's overrides
    # must not cost the earlier stages' hours
    stage_confs = {kind: _stage_conf(conf.get(kind), kind) for kind in {k for _, k, _ in plan}}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    budget = float(pipe["time_budget_s"])
    weights = str(pipe["init_weights"]) if pipe.get("init_weights") else None  # detector to adapt
    joint_init = weights  # what the next joint stage starts from
    summary: list[dict[str, Any]] = []
    first_labels: dict[str, Any] | None = None  # round 1's teacher record
    rnd = 0
    for i, (name, kind, weight) in enumerate(plan):
        run_dir = out / name
        done = _done_file(run_dir)
        if resume and done.is_file():
            result = json.loads(done.read_text())
            logger.info("pipeline: %s already done, skipped", name)
        else:
            stage = copy.deepcopy(stage_confs[kind])
            stage_budget = 0.0
            if budget > 0:
                left = budget - (_now() - t0)
                rest = sum(w for _, _, w in plan[i:]) or 1.0
                # every stage holds its own budget (setup, export and its check included); one
                # left with nothing still makes its minimum (one step / one batch of views)
                stage_budget = max(left * weight / rest, MIN_STAGE_BUDGET_S)
            _wire(stage, kind, pipe, weights, joint_init, out, stage_budget)
            if kind == "export":  # round 1: the teacher; later rounds: the previous SuperPoint
                stage["teacher"] = teacher if rnd == 0 else "magicpoint"
            if kind == "export":  # a budget must not leave the joint stage less than one batch
                jt = stage_confs["joint"]
                stage["min_images"] = (int(get(jt, "train.batch_size", 2))
                                       + int(get(jt, "data.val_size", 0) or 0))
            logger.info("pipeline: %s (%s)%s", name, kind,
                        f", budget {stage_budget:.0f} s" if stage_budget else "")
            t_stage = _now()
            try:
                result = run_stage("superpoint", kind, stage, run_dir,
                                   resume=resume and run_dir.exists())
            except ExportCheckFailed:
                # weights of an earlier run in OUT must not pass for this run's result
                (out / "superpoint.pth").unlink(missing_ok=True)
                raise
            result = {**result, "wall_s": round(_now() - t_stage, 1)}
            if kind != "export" and not result.get("export"):
                raise RuntimeError(f"pipeline: stage {name} stopped before finishing (signal?); "
                                   "rerun the same command with --resume")
            run_dir.mkdir(parents=True, exist_ok=True)
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1))
            tmp.replace(done)
        summary.append({"stage": name, "kind": kind, **result})
        if kind == "export":  # this round's joint stage trains on these labels
            rnd += 1
            set_dotted(stage_confs["joint"], "data.image_dirs", [result["images_dir"]])
            set_dotted(stage_confs["joint"], "data.labels_dir", result["labels_dir"])
            record = dict(result.get("teacher") or {})
            if rnd == 1:
                first_labels = record
            elif first_labels:  # the chain starts at round 1's teacher
                record["round1_teacher"] = first_labels.get("name")
            stage_confs["joint"].setdefault("model", {})["teacher"] = record
        else:  # the next round adapts, and the next joint stage starts from, this export
            weights = joint_init = result["export"]
    final = out / "superpoint.pth"
    if joint_init is None:
        raise RuntimeError("pipeline produced no joint checkpoint")
    tmp = final.with_suffix(".tmp")
    shutil.copyfile(joint_init, tmp)
    tmp.replace(final)
    report = {"weights": str(final), "teacher": teacher, "wall_s": round(_now() - t0, 1),
              "stages": summary}
    (out / "pipeline.json").write_text(json.dumps(report, indent=1))
    return report


def _wire(stage: dict[str, Any], kind: str, pipe: Mapping[str, Any], weights: str | None,
          joint_init: str | None, out: Path, budget_s: float) -> None:
    """Fill in what a stage takes from the pipeline: device, precision, budget, input weights."""
    if kind == "export":
        stage["device"] = pipe["device"]
        stage.setdefault("model", {})["weights"] = weights
        if budget_s:
            stage["max_time_s"] = budget_s
        return
    train = stage.setdefault("train", {})
    train["device"] = pipe["device"]
    train["precision"] = pipe["precision"]
    if budget_s:
        train["max_time_s"] = budget_s
    if kind == "joint":
        stage.setdefault("model", {})["init_weights"] = joint_init

