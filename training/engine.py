"""The training engine shared by every method: methods plug in as ``Task`` objects.

Why one engine: checkpoint/resume, logging, validation, NaN handling and DDP are the same for
every method and stage; a task only says how to build its model and data, what its loss is and
how to export the runtime checkpoint. The engine never looks at which method it runs.

Resume is bit-for-bit: a checkpoint holds the model, optimizer, step, the resolved config, the
torch/numpy/python RNG states and the data position (epoch + batches consumed). Datasets draw
their randomness from per-sample generators, the sampler is a pure function of (seed, epoch) and
the DataLoader gets its own generator, so a resumed run sees exactly the batches and random numbers
the uninterrupted run would have seen.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from local_features_ros.weights import atomic_torch_save, load_checkpoint

from . import distributed as D
from local_features_ros.conventions import PRECISIONS as RUNTIME_PRECISIONS

from .budget import Deadline, RecentMax
from .config import DEFAULT_TRAIN, FrozenConf, freeze, merge_conf, save_config
from .export_check import MAX_IMAGES, ExportCheckFailed, probe_cost, publish_export

logger = logging.getLogger(__name__)

#: The runtime's precision names less fp16 (training has no loss scaling).
PRECISIONS = tuple(p for p in RUNTIME_PRECISIONS if p != "fp16")


class TrainingDiverged(RuntimeError):
    """Loss or gradient became NaN/inf; the last good checkpoint is kept untouched."""


class Task:
    """A method/stage plug-in. Subclasses implement the four ``build_*``/``loss`` hooks.

    ``default_conf``: the task's one declaration of its config sections and their defaults
    (top-level sections; ``train`` is always the engine's ``DEFAULT_TRAIN``). When a task declares
    one, the YAML is merged over it with ``config.merge_conf`` (an unknown key fails, naming the
    known ones) and ``self.settings`` is the frozen result; ``self.conf`` stays the config as given
    (it is what the run directory and checkpoints record). An empty ``default_conf`` checks
    nothing (``settings`` is then the frozen config as given).
    """

    name = "task"
    default_conf: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, conf: Mapping[str, Any]):
        self.conf = dict(conf)
        self.settings: FrozenConf = self.resolve_settings(conf)

    @classmethod
    def full_default_conf(cls) -> dict[str, Any]:
        return {"train": dict(DEFAULT_TRAIN), **copy.deepcopy(dict(cls.default_conf))}

    @classmethod
    def resolve_settings(cls, conf: Mapping[str, Any]) -> FrozenConf:
        if not cls.default_conf:
            return freeze(dict(conf))
        return freeze(merge_conf(cls.full_default_conf(), conf, where=f"{cls.name} training"))

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], step: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss to minimise and detached metrics to log."""
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        loss, metrics = self.loss(model, batch, -1)
        return {"loss": float(loss), **metrics}

    def export(self, model: nn.Module, path: Path) -> Path | None:
        """Write the runtime checkpoint (project format) for the trained model."""
        return None

    def export_check_images(self, train_ds: Dataset, val_ds: Dataset | None
                            ) -> list[tuple[str, np.ndarray]]:
        """Held-out images (name, HxW gray or HxWx3 RGB uint8) the exported weights are run on by
        the runtime extractor before the export counts (``training/export_check.py``). Why a
        hook: only the task knows where its held-out images are; ``[]`` (the default) checks on
        a generated textured image."""
        return []


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val: float = math.inf


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the hardware computes in bf16 natively (CUDA with bf16 support,
    CPUs with AVX512-BF16/AMX), else ``fp32``. Why: emulated bf16 is a slowdown, not a speed-up
    (SuperPoint joint step, 2-core AMD EPYC without AVX-512: 29 s bf16 vs 1.6 s fp32)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    from local_features_ros.device import cpu_supports_bf16

    return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"


class ResumableSampler(Sampler[int]):
    """DistributedSampler (shuffled by seed + epoch, sharded by rank) that can skip the batches a
    resumed run has already consumed in the current epoch."""

    def __init__(self, dataset: Dataset, info: D.DistInfo, seed: int, shuffle: bool = True):
        self.inner = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                        shuffle=shuffle, seed=seed, drop_last=True)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip:])

    def __len__(self) -> int:
        return max(len(self.inner) - self.skip, 0)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"key": np_state[0], "state": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


class MetricsLog:
    """Long-format CSV (step, split, name, value, wall time): any metric set, easy to plot."""

    FIELDS = ("step", "split", "name", "value", "time")

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.is_file():
            # drop rows logged after the checkpoint we resume from (they will be redone)
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            self._rewrite(rows)
        elif not path.is_file() or resume_step is None:
            self._rewrite([])

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        now = f"{time.time():.3f}"
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            for k, v in metrics.items():
                w.writerow([step, split, k, f"{float(v):.6g}", now])


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return [{**r, "step": int(r["step"]), "value": float(r["value"])} for r in csv.DictReader(f)]


class Trainer:
    """Runs a ``Task``: ``Trainer(task, conf, out_dir).fit()``."""

    def __init__(self, task: Task, conf: Mapping[str, Any], out_dir: str | os.PathLike,
                 resume: bool = False):
        self.task = task
        self.conf = dict(conf)
        self.tc = {**DEFAULT_TRAIN, **self.conf.get("train", {})}
        self.conf["train"] = self.tc  # the resolved config records every engine default
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.resume = resume
        self.info = D.init_from_env()
        self.device = D.device_for(self.info, str(self.tc["device"]))
        if self.device.type == "cuda":
            # fixed training crop sizes: let cuDNN pick the fastest convolution algorithms once
            torch.backends.cudnn.benchmark = True
        if self.tc["precision"] not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, "
                             f"got '{self.tc['precision']}'")
        self.precision = resolve_precision(str(self.tc["precision"]), self.device)
        self.state = TrainState()
        self._stop_requested = False

    # ------------------------------------------------------------------ setup
    @property
    def last_checkpoint(self) -> Path:
        return self.ckpt_dir / "last.pth"

    def _build(self) -> None:
        seed = int(self.tc["seed"])
        seed_everything(seed)  # identical initial weights on every rank
        self.model = self.task.build_model().to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.tc["optimizer"] == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                params, lr=float(self.tc["lr"]), betas=tuple(self.tc["betas"]),
                weight_decay=float(self.tc["weight_decay"]))
        elif self.tc["optimizer"] == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=float(self.tc["lr"]),
                                             weight_decay=float(self.tc["weight_decay"]))
        else:
            raise ValueError(f"train.optimizer must be adam or sgd, got '{self.tc['optimizer']}'")
        self.train_ds, self.val_ds = self.task.build_datasets()
        self.sampler = ResumableSampler(self.train_ds, self.info, seed)
        bs = int(self.tc["batch_size"])
        if len(self.sampler.inner) < bs:
            raise ValueError(f"training set too small: {len(self.train_ds)} samples "
                             f"for batch size {bs} x {self.info.world_size} ranks")
        self.loader_gen = torch.Generator()  # keeps the global RNG out of loader creation
        self.loader = DataLoader(self.train_ds, batch_size=bs, sampler=self.sampler,
                                 num_workers=int(self.tc["num_workers"]), drop_last=True,
                                 generator=self.loader_gen,
                                 pin_memory=self.device.type == "cuda",  # async host->GPU copies
                                 collate_fn=getattr(self.task, "collate", None))
        self.ddp_model: nn.Module = self.model
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DDP(self.model, device_ids=ids)

    def _save(self, path: Path) -> None:
        if not self.info.is_main:
            return
        atomic_torch_save({
            "format": "local_features_ros.training",
            "task": self.task.name,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.state.step,
            "epoch": self.state.epoch,
            "batch_in_epoch": self.state.batch_in_epoch,
            "best_val": self.state.best_val,
            "config": self.conf,
            "rng": rng_state(),
        }, path)

    def _load(self, path: Path) -> None:
        ck = load_checkpoint(path)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.state = TrainState(step=int(ck["step"]), epoch=int(ck["epoch"]),
                                batch_in_epoch=int(ck["batch_in_epoch"]),
                                best_val=float(ck.get("best_val", math.inf)))
        set_rng_state(ck["rng"])
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.state.step,
                    self.state.epoch, self.state.batch_in_epoch)

    # ------------------------------------------------------------------ loop
    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches; epoch and in-epoch position are tracked in ``self.state``."""
        while True:
            self.sampler.set_epoch(self.state.epoch, self.state.batch_in_epoch * int(self.tc["batch_size"]))
            if hasattr(self.train_ds, "set_epoch"):
                self.train_ds.set_epoch(self.state.epoch)
            for batch in self.loader:
                yield batch
            self.state.epoch += 1
            self.state.batch_in_epoch = 0

    def _to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                for k, v in batch.items()}

    def _on_signal(self, signum: int, frame: Any) -> None:
        logger.warning("signal %d: stopping after this step with a checkpoint", signum)
        self._stop_requested = True

    def validate(self) -> dict[str, float] | None:
        if self.val_ds is None or int(self.tc["val_batches"]) <= 0:
            return None
        loader = DataLoader(self.val_ds, batch_size=int(self.tc["val_batch_size"]), shuffle=False,
                            num_workers=0, collate_fn=getattr(self.task, "collate", None))
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        # validation must not perturb the training RNG stream (resume equality)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.tc["seed"]) + 12345)
            for i, batch in enumerate(loader):
                if i >= int(self.tc["val_batches"]):
                    break
                m = self.task.validate(self.model, self._to_device(batch))
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n += 1
        self.model.train()
        return {k: v / max(n, 1) for k, v in sums.items()}

    def _autocast(self) -> Any:
        """bf16 autocast on the training device when ``train.precision`` asks for it."""
        import contextlib

        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------ export
    @property
    def export_path(self) -> Path:
        return self.out / "export" / f"{self.task.name}.pth"

    def _write_export(self, path: Path) -> Path | None:
        written = self.task.export(self.model, path)
        return None if written is None else Path(written)

    def _check_images(self) -> list[tuple[str, np.ndarray]]:
        """The task's held-out images for the export check (rank 0 only; it alone exports)."""
        if not self.info.is_main:
            return []
        return list(self.task.export_check_images(self.train_ds, self.val_ds))[:MAX_IMAGES]

    def _export(self, images: list[tuple[str, np.ndarray]]) -> Path | None:
        """Rank 0 exports and has the runtime check the export; every rank raises when it failed
        (no rank may wait for a partner that has stopped)."""
        error: ExportCheckFailed | None = None
        exported = None
        if self.info.is_main:
            try:
                exported = publish_export(self._write_export, self.export_path, images,
                                          self.device, self.last_checkpoint)
            except ExportCheckFailed as e:
                error = e
        if D.any_true(error is not None, self.info):
            raise error or ExportCheckFailed("export check failed on rank 0 (see its log)")
        return exported

    # ------------------------------------------------------------------ training
    def fit(self) -> dict[str, Any]:
        """Train to ``train.max_steps`` or the time budget; returns a summary dict.

        ``train.max_time_s`` counts from here: building the data and model, validation,
        checkpoints, the export and its runtime check are all inside it. Before every step the
        run checks that the step (the largest of the last few step times) plus the finishing work
        (final checkpoint + export + check, measured once at the start) still fit, and stops
        otherwise; a validation that would not fit is skipped. A run always makes at least one
        step, so a budget shorter than one step plus the finishing work is overrun by that."""
        budget = Deadline(float(self.tc["max_time_s"]))
        self._build()
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        resumed = False
        if self.resume and self.last_checkpoint.is_file():
            self._load(self.last_checkpoint)
            resumed = True
        elif self.resume:
            logger.warning("--resume given but %s does not exist: starting fresh",
                           self.last_checkpoint)
        if not resumed:
            seed_everything(int(self.tc["seed"]) + 1000 * self.info.rank)
        log = None
        if self.info.is_main:
            save_config(self.conf, self.out / "config.yaml")
            log = MetricsLog(self.out / "metrics.csv", self.state.step if resumed else None)
        old_handler = None
        if self.info.is_main or not self.info.enabled:
            try:
                old_handler = signal.signal(signal.SIGTERM, self._on_signal)
            except ValueError:  # not the main thread
                old_handler = None

        max_steps = int(self.tc["max_steps"])
        bs = int(self.tc["batch_size"]) * self.info.world_size
        check_images = self._check_images()
        # what finishing costs (export + runtime check), measured on the current weights
        export_cost = 0.0
        if budget.enabled and self.info.is_main and self.state.step < max_steps:
            export_cost = probe_cost(self._write_export, self.export_path, check_images,
                                     self.device)
        save_cost = 0.0  # one checkpoint write, measured at the first one
        step_cost = RecentMax(window=5)
        val_cost: float | None = None
        val_scale = max(int(self.tc["val_batch_size"]) / max(int(self.tc["batch_size"]), 1), 1.0)
        saved_step = self.state.step if resumed else -1
        steps_run = 0
        out_of_time = False
        pbar = None
        if self.info.is_main:
            from tqdm import tqdm

            pbar = tqdm(total=max_steps, initial=self.state.step, desc=self.task.name,
                        mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
        self.model.train()
        batches = self._batches()
        last_loss = float("nan")
        t_log, n_log = time.time(), 0
        try:
            while self.state.step < max_steps:
                finish = save_cost + export_cost
                out_of_time = (budget.enabled and steps_run > 0
                               and not budget.fits(step_cost.value + finish))
                if D.any_true(self._stop_requested or out_of_time, self.info):
                    logger.warning("stopping at step %d (%s); resume with --resume", self.state.step,
                                   "time budget" if out_of_time else "signal")
                    break
                t_step = time.monotonic()
                batch = self._to_device(next(batches))
                with self._autocast():
                    loss, metrics = self.task.loss(self.ddp_model, batch, self.state.step)
                loss = loss.float()
                bad = D.any_true(not bool(torch.isfinite(loss.detach()).all()), self.info)
                if not bad:
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    grads = [p.grad for p in self.model.parameters() if p.grad is not None]
                    clip = float(self.tc["grad_clip"])
                    norm = torch.nn.utils.clip_grad_norm_(
                        [p for p in self.model.parameters() if p.grad is not None],
                        clip if clip > 0 else float("inf"))
                    bad = D.any_true(bool(grads) and not bool(torch.isfinite(norm)), self.info)
                if bad:
                    raise TrainingDiverged(
                        f"non-finite loss/gradient at step {self.state.step + 1} "
                        f"(loss={float(loss.detach())}); stopped without updating. Last good "
                        f"checkpoint: {self.last_checkpoint if self.last_checkpoint.is_file() else 'none'}"
                        " (lower train.lr or check the data, then --resume)")
                self.optimizer.step()
                self.state.step += 1
                self.state.batch_in_epoch += 1
                steps_run += 1
                last_loss = D.all_reduce_mean(float(loss.detach()), self.info)
                t_train = time.monotonic() - t_step
                n_log += 1
                if pbar is not None:
                    pbar.update(1)
                if self.state.step % int(self.tc["log_every"]) == 0 or self.state.step == max_steps:
                    dt = max(time.time() - t_log, 1e-9)
                    rate = n_log * bs / dt
                    if log is not None:
                        log.write(self.state.step, "train", {"loss": last_loss, **metrics,
                                                             "lr": self.optimizer.param_groups[0]["lr"],
                                                             "samples_per_s": rate})
                    if pbar is not None:
                        pbar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{rate:.1f}")
                    t_log, n_log = time.time(), 0
                t_val = 0.0
                if self.state.step % int(self.tc["val_every"]) == 0 and self.info.is_main:
                    est = val_cost if val_cost is not None else \
                        t_train * int(self.tc["val_batches"]) * val_scale
                    if budget.fits(est + save_cost + export_cost):
                        tv = time.monotonic()
                        self._validate_and_log(log)
                        val_cost = t_val = time.monotonic() - tv
                    else:
                        logger.warning("step %d: validation skipped (it would not fit the time "
                                       "budget)", self.state.step)
                # under a budget the first step also measures what a checkpoint write costs
                if (self.state.step % int(self.tc["checkpoint_every"]) == 0
                        or (budget.enabled and steps_run == 1)):
                    ts = time.monotonic()
                    self._save(self.last_checkpoint)
                    D.barrier(self.info)
                    save_cost = max(save_cost, time.monotonic() - ts)
                    saved_step = self.state.step
                step_cost.add(time.monotonic() - t_step - t_val)
        finally:
            if pbar is not None:
                pbar.close()
            if old_handler is not None:
                signal.signal(signal.SIGTERM, old_handler)
        if saved_step != self.state.step:
            self._save(self.last_checkpoint)
        exported = None
        # a run that used up its time budget is a finished run too (export what it reached);
        # one stopped by a signal is not (it will be resumed)
        signalled = D.any_true(self._stop_requested, self.info)
        if self.state.step >= max_steps or (budget.enabled and not signalled):
            exported = self._export(check_images)
            if exported:
                logger.info("exported runtime checkpoint: %s", exported)
        D.barrier(self.info)
        if budget.enabled:
            logger.info("time budget: %.1f of %.1f s used (%d steps this run)", budget.elapsed(),
                        budget.seconds, steps_run)
        return {"step": self.state.step, "loss": last_loss, "export": str(exported or ""),
                "finished": self.state.step >= max_steps}

    def _validate_and_log(self, log: MetricsLog | None) -> None:
        """One validation pass: metrics to the CSV, ``best.pth`` at a new lowest loss."""
        vm = self.validate()
        if vm is None or log is None:
            return
        log.write(self.state.step, "val", vm)
        logger.info("step %d validation: %s", self.state.step,
                    ", ".join(f"{k}={v:.4g}" for k, v in vm.items()))
        if vm.get("loss", math.inf) < self.state.best_val:
            self.state.best_val = vm["loss"]
            self._save(self.ckpt_dir / "best.pth")
