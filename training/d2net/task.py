"""D2-Net as an engine ``Task`` (``local-features train d2net --stage train``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from local_features_ros.weights import save_checkpoint

from local_features_ros.extractors.d2net import D2Net

from ..config import thaw
from ..engine import Task
from ..sfm.data import build_pair_datasets, held_out_scene_images
from .losses import d2net_loss, dense_matching_accuracy
from .model import D2NetTrainModel

logger = logging.getLogger(__name__)

#: official ``train.py`` / ``lib/loss.py`` values (docs/method_facts/training_d2net.md#loss)
LOSS_DEFAULTS: dict[str, Any] = {"margin": 1.0, "safe_radius": 4, "scaling_steps": 3,
                                 "min_correspondences": 128, "depth_tol": 0.05,
                                 "relative_depth_tol": False}  # True for SfM-scale scenes


class D2NetTask(Task):
    name = "d2net"
    default_conf = {
        # training keys, then the runtime extractor's own keys (passed on to ``D2Net``)
        "model": {"init_weights": None, "trainable": "conv4_3", "preprocessing": "caffe",
                  **{k: v for k, v in D2Net.full_default_conf().items() if k != "preprocessing"}},
        "data": {},  # training/sfm/pairs.py reads it
        "loss": LOSS_DEFAULTS,
    }

    def _loss_conf(self) -> dict[str, Any]:
        return thaw(self.settings["loss"])

    def build_model(self) -> nn.Module:
        m = dict(self.conf.get("model", {}))
        return D2NetTrainModel(init_weights=m.pop("init_weights", None),
                               trainable=m.pop("trainable", "conv4_3"),
                               preprocessing=m.pop("preprocessing", "caffe"), **m)

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        seed = int(self.conf.get("train", {}).get("seed", 0))
        return build_pair_datasets(self.conf["data"], seed=seed)

    def export_check_images(self, train_ds: Dataset, val_ds: Dataset | None
                            ) -> list[tuple[str, np.ndarray]]:
        """Images of the validation scenes (``data.val_scenes``), else none."""
        return held_out_scene_images(val_ds)

    def _forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        b = batch["image0"].shape[0]
        if batch["image0"].shape == batch["image1"].shape:
            f = model(torch.cat([batch["image0"], batch["image1"]]))
            return f[:b], f[b:]
        return model(batch["image0"]), model(batch["image1"])

    def _loss(self, f1: torch.Tensor, f2: torch.Tensor, batch: Mapping[str, torch.Tensor]
              ) -> tuple[torch.Tensor, dict[str, float]]:
        lc = self._loss_conf()
        return d2net_loss(f1, f2, batch, float(lc["margin"]), int(lc["safe_radius"]),
                          int(lc["scaling_steps"]), int(lc["min_correspondences"]),
                          float(lc["depth_tol"]), bool(lc["relative_depth_tol"]))

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], step: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        f1, f2 = self._forward(model, batch)
        return self._loss(f1, f2, batch)

    @torch.no_grad()
    def validate(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        f1, f2 = self._forward(model, batch)
        lc = self._loss_conf()
        loss, metrics = self._loss(f1, f2, batch)
        acc = dense_matching_accuracy(f1, f2, batch, int(lc["scaling_steps"]), float(lc["depth_tol"]),
                                      relative_tol=bool(lc["relative_depth_tol"]))
        return {"loss": float(loss), "match_acc": acc, **metrics}

    def export(self, model: nn.Module, path: Path) -> Path | None:
        """Runtime checkpoint: ``build_extractor('d2net', weights=path)`` loads it (stride 4)."""
        assert isinstance(model, D2NetTrainModel)
        return save_checkpoint(path, "d2net", model.runtime_state_dict(), dict(self.conf),
                               stage="train")
