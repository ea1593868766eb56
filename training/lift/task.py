"""LIFT staged training (docs/lfnet_lift.md#lift-training): desc -> ori (desc fixed) -> kp (ori
bypassed) -> joint.

Why one ``Task`` per stage on the shared engine: each stage is an ordinary resumable engine run
(checkpoints, metrics, ``--resume``) whose export is the runtime LIFT checkpoint; the next stage
starts from it (``model.init_weights``). ``run_schedule`` chains the stages in the paper's order
into ``OUT/<stage>/`` and skips stages whose export already exists, so the whole schedule is
resumable too; ``run_desc`` / ``run_ori`` / ``run_kp`` / ``run_joint`` (CLI ``--stage desc`` ...)
run one stage alone through the same ``fit_stage``. The trained modules are the runtime
extractor's own (``LIFT.det/ori/desc``), so the export loads into ``LIFT`` strictly, with the
same normalisation and patch geometry.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.data import Dataset

from local_features_ros.extractors.lift import LIFT
from local_features_ros.extractors.lift.networks import orientation_from_output
from local_features_ros.extractors.lift.pyramid import KP_INPUT_SIZE
from local_features_ros.weights import load_checkpoint, save_checkpoint, unwrap_state_dict

from ..config import merge, thaw
from ..engine import Task, Trainer
from .losses import DEFAULT_LOSS, classification_loss, descriptor_loss, orientation_loss, \
    overlap_loss
from .patches import LiftQuadruplets, area_to_corner, colmap_from_rendered, inner_crops, \
    read_colmap_keypoints

logger = logging.getLogger(__name__)

STAGES = ("desc", "ori", "kp", "joint")
#: modules each stage trains (joint: ``stage.finetune``)
TRAINED = {"desc": ("desc",), "ori": ("ori",), "kp": ("det",)}
MODULE_OF = {"kp": "det", "det": "det", "ori": "ori", "desc": "desc"}


class LiftTrainModel(nn.Module):
    """The runtime ``LIFT`` modules with only the stage's modules trainable; frozen modules stay
    in eval mode (their BatchNorm statistics, if any, do not move)."""

    def __init__(self, lift_conf: Mapping[str, Any], trained: tuple[str, ...]):
        super().__init__()
        self.lift = LIFT(**dict(lift_conf))
        self.trained = tuple(MODULE_OF[m] for m in trained)
        for name in ("det", "ori", "desc"):
            for p in getattr(self.lift, name).parameters():
                p.requires_grad_(name in self.trained)

    def train(self, mode: bool = True) -> "LiftTrainModel":
        super().train(mode)
        for name in ("det", "ori", "desc"):
            if name not in self.trained:
                getattr(self.lift, name).eval()
        return self


def load_lift_weights(lift: LIFT, path: str | Path) -> None:
    """Runtime export, engine checkpoint (``model`` = ``lift.*``) or a plain state dict."""
    ck = load_checkpoint(path)
    if ck.get("format") == "local_features_ros.training":
        state = {k[len("lift."):]: v for k, v in ck["model"].items() if k.startswith("lift.")}
    else:
        state = lift.adapt_state_dict(unwrap_state_dict(ck))
    lift.load_state_dict(state, strict=True)
    logger.info("LIFT initialised from %s", path)


def corner_to_area(xy: torch.Tensor, size: int = KP_INPUT_SIZE) -> torch.Tensor:
    """Inverse of ``patches.area_to_corner``."""
    i = (xy + 1.0) * (size - 1) / 2.0
    return (2.0 * i + 1.0) / size - 1.0


def build_keypoint_set(data: Mapping[str, Any]):
    """``data.database`` + ``data.model`` + ``data.images``, or ``data.synthetic`` (rendered
    frames + pycolmap into ``data.synthetic.workdir``)."""
    if data.get("database"):
        return read_colmap_keypoints(data["database"], data["model"], data["images"])
    syn = data.get("synthetic")
    if not syn:
        raise ValueError("data needs database/model/images (a COLMAP run) or synthetic.workdir")
    paths = colmap_from_rendered(syn["workdir"], int(syn.get("frames", 8)), int(syn.get("seed", 0)),
                                 int(syn.get("width", 160)), int(syn.get("height", 120)),
                                 str(syn.get("kind", "orbit")), syn.get("trajectory", {}))
    return read_colmap_keypoints(paths["database"], paths["model"], paths["images"])


class LiftStageTask(Task):
    """One LIFT stage on quadruplet batches ``patches (B, 4, 1, P, P)``."""

    name = "lift"
    stage = "desc"
    default_conf = {
        "data": {},  # patches.py reads it
        "model": {"lift": {}, "init_weights": None},  # model.lift: the runtime LIFT's keys
        "loss": DEFAULT_LOSS,
        "finetune": ["kp", "ori", "desc"],  # modules the joint stage trains
        # the schedule's own sections (run_schedule / stage_config strip them before a stage)
        "schedule": {}, "stages": {},
    }

    def __init__(self, conf: Mapping[str, Any]):
        super().__init__(conf)
        self.lc = thaw(self.settings["loss"])

    # ------------------------------------------------------------------ engine hooks
    def trained_modules(self) -> tuple[str, ...]:
        if self.stage == "joint":
            return tuple(self.conf.get("finetune", ["kp", "ori", "desc"]))
        return TRAINED[self.stage]

    def build_model(self) -> nn.Module:
        m = self.conf.get("model", {})
        model = LiftTrainModel(m.get("lift", {}), self.trained_modules())
        if m.get("init_weights"):
            load_lift_weights(model.lift, m["init_weights"])
        return model

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        data = self.conf.get("data", {})
        kps = build_keypoint_set(data)
        seed = int(self.conf.get("train", {}).get("seed", 0))
        train = LiftQuadruplets(kps, data, "training", seed)
        val = None
        split = list(data.get("image_split", [0.6, 0.2, 0.2]))
        if len(split) > 1 and float(split[1]) > 0:
            try:
                val = LiftQuadruplets(kps, data, "validation", seed)
            except ValueError as exc:
                logger.warning("no LIFT validation set: %s", exc)
        return train, val

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _lift(model: nn.Module) -> LIFT:
        return (model.module if hasattr(model, "module") else model).lift

    @staticmethod
    def _describe(lift: LIFT, crops: torch.Tensor) -> torch.Tensor:
        """Raw 128-D descriptors (no L2 normalisation while training, as tf-lift)."""
        return lift.desc(lift.normalize(crops, "desc"))

    @staticmethod
    def _orient(lift: LIFT, crops: torch.Tensor) -> torch.Tensor:
        _, ang = orientation_from_output(lift.ori(lift.normalize(crops, "kp")),
                                         lift.conf["ori_variant"])
        return ang

    def _split(self, batch: Mapping[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        p = batch["patches"]
        b = p.shape[0]
        return (p.flatten(0, 1), batch["xy"].reshape(b * 4, 2), batch["angle"].reshape(b * 4),
                batch["point_id"])

    # ------------------------------------------------------------------ loss
    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], step: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        lift = self._lift(model)
        patches, xy, angle, ids = self._split(batch)
        b = batch["patches"].shape[0]
        lc = self.lc

        def per(t: torch.Tensor) -> list[torch.Tensor]:  # (B*4, ...) -> [P1, P2, P3, P4]
            v = t.view(b, 4, *t.shape[1:])
            return [v[:, k] for k in range(4)]

        if self.stage == "desc":
            sel = torch.arange(b * 4).view(b, 4)[:, :3].reshape(-1)
            d = self._describe(lift, inner_crops(patches[sel], xy[sel], angle[sel])).view(b, 3, -1)
            loss = descriptor_loss(d[:, 0], d[:, 1], d[:, 2], lc, ids)
            return loss, {"desc": float(loss.detach())}
        if self.stage == "ori":
            sel = torch.arange(b * 4).view(b, 4)[:, :2].reshape(-1)
            p, g = patches[sel], xy[sel]
            theta = self._orient(lift, inner_crops(p, g, None))
            d = self._describe(lift, inner_crops(p, g, theta)).view(b, 2, -1)
            loss = orientation_loss(d[:, 0], d[:, 1])
            return loss, {"ori": float(loss.detach())}
        out = lift.kp_patch_forward(patches)
        xy_pred, score = out["xy"], out["score"]
        s = per(score)
        cls = classification_loss(*s)
        if self.stage == "kp":
            gt = area_to_corner(xy, KP_INPUT_SIZE)
            x1, x2, _, _ = per(xy_pred)
            g1, g2, _, _ = per(gt)
            a1, a2, _, _ = per(angle)
            rot = bool(lc["rotate_offsets"])
            ov = overlap_loss(x1, x2, g1, g2, a1 if rot else None, a2 if rot else None,
                              float(lc["r_base"]))
            loss = float(lc["alpha_overlap"]) * ov + float(lc["alpha_classification"]) * cls
            return loss, {"overlap": float(ov.detach()), "classification": float(cls.detach())}
        # joint: detector -> orientation -> descriptor on P1..P3 at the detected locations
        sel = torch.arange(b * 4).view(b, 4)[:, :3].reshape(-1)
        loc = corner_to_area(xy_pred[sel])
        p = patches[sel]
        theta = self._orient(lift, inner_crops(p, loc, None))
        d = self._describe(lift, inner_crops(p, loc, theta)).view(b, 3, -1)
        dl = descriptor_loss(d[:, 0], d[:, 1], d[:, 2], lc, ids)
        loss = float(lc["alpha_kp"]) * cls + float(lc["alpha_desc"]) * dl
        return loss, {"desc": float(dl.detach()), "classification": float(cls.detach())}

    def export(self, model: nn.Module, path: Path) -> Path | None:
        lift = self._lift(model)
        return save_checkpoint(path, "lift", lift.state_dict(), config=dict(lift.conf),
                               stage=self.stage)


class LiftDescTask(LiftStageTask):
    stage = "desc"


class LiftOriTask(LiftStageTask):
    stage = "ori"


class LiftKpTask(LiftStageTask):
    stage = "kp"


class LiftJointTask(LiftStageTask):
    stage = "joint"


TASKS: dict[str, type[LiftStageTask]] = {"desc": LiftDescTask, "ori": LiftOriTask,
                                         "kp": LiftKpTask, "joint": LiftJointTask}


def stage_config(conf: Mapping[str, Any], stage: str, init: str | None) -> dict[str, Any]:
    """The base config with ``stages.<stage>`` merged over it and the previous export as init."""
    base = {k: v for k, v in conf.items() if k not in ("stages", "schedule")}
    sc = merge(base, dict(conf.get("stages", {}).get(stage, {}) or {}))
    if init:
        sc = merge(sc, {"model": {"init_weights": str(init)}})
    return sc


def fit_stage(conf: Mapping[str, Any], stage: str, init: str | None, out: str | Path,
              resume: bool = False) -> dict[str, Any]:
    """Train one stage into ``out`` with ``stages.<stage>`` merged over ``conf`` and ``init`` (the
    previous export) as its starting weights. Why one function: the schedule and the single-stage
    CLI entries must build a stage's config in exactly the same way."""
    if stage not in TASKS:
        raise ValueError(f"unknown LIFT stage '{stage}' (known: {', '.join(STAGES)})")
    sc = stage_config(copy.deepcopy(dict(conf)), stage, init)
    return Trainer(TASKS[stage](sc), sc, Path(out), resume=resume).fit()


def run_schedule(conf: Mapping[str, Any], out: Path, resume: bool = False) -> dict[str, Any]:
    """desc -> ori -> kp (-> joint when ``schedule.joint``), each in ``out/<stage>``; a stage
    with an export is done and skipped on ``resume``; an interrupted one resumes."""
    out = Path(out)
    sched = dict(conf.get("schedule", {}))
    stages = list(sched.get("stages", ["desc", "ori", "kp"]))
    if sched.get("joint") and "joint" not in stages:
        stages.append("joint")
    bad = [s for s in stages if s not in TASKS]
    if bad:
        raise ValueError(f"unknown LIFT stage(s) {bad} (known: {', '.join(STAGES)})")
    init = conf.get("model", {}).get("init_weights")
    results: dict[str, Any] = {}
    for st in stages:
        sdir = out / st
        export = sdir / "export" / "lift.pth"
        if resume and export.is_file():
            logger.info("LIFT stage %s already exported (%s): skipped", st, export)
            results[st] = {"skipped": True, "export": str(export)}
            init = str(export)
            continue
        results[st] = fit_stage(conf, st, init, sdir, resume)
        if not results[st].get("finished"):
            logger.warning("LIFT stage %s stopped before max_steps; rerun with --resume", st)
            return {"stages": results, "finished": False, "export": ""}
        init = results[st]["export"]
    return {"stages": results, "finished": True, "export": str(init or "")}


def run_single_stage(conf: Mapping[str, Any], out: Path, stage: str, resume: bool = False
                     ) -> dict[str, Any]:
    """One stage alone into ``out`` (``out/export/lift.pth``), from the same config file as the
    schedule. Its init is ``model.init_weights`` (the previous stage's export), passed to
    ``fit_stage`` as the schedule passes it to its first stage; ``--resume`` continues from
    ``out/checkpoints/last.pth``."""
    init = conf.get("model", {}).get("init_weights")
    if stage != "desc" and not stage_config(conf, stage, init).get("model", {}).get("init_weights"):
        logger.warning("LIFT stage %s without model.init_weights: the modules it keeps fixed "
                       "are random (set it to the previous stage's export)", stage)
    return fit_stage(conf, stage, init, out, resume)


def run_desc(conf: Mapping[str, Any], out: Path, resume: bool = False) -> dict[str, Any]:
    """CLI entry ``--stage desc`` (the stage table names procedures ``(conf, out, resume)``)."""
    return run_single_stage(conf, out, "desc", resume)


def run_ori(conf: Mapping[str, Any], out: Path, resume: bool = False) -> dict[str, Any]:
    """CLI entry ``--stage ori``: orientation on the fixed descriptor of ``init_weights``."""
    return run_single_stage(conf, out, "ori", resume)


def run_kp(conf: Mapping[str, Any], out: Path, resume: bool = False) -> dict[str, Any]:
    """CLI entry ``--stage kp``: the detector, with orientation and descriptor fixed."""
    return run_single_stage(conf, out, "kp", resume)


def run_joint(conf: Mapping[str, Any], out: Path, resume: bool = False) -> dict[str, Any]:
    """CLI entry ``--stage joint``: the ``finetune`` modules trained end to end."""
    return run_single_stage(conf, out, "joint", resume)
