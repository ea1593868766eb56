"""LF-Net as an engine ``Task`` (``local-features train lfnet --stage train``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from local_features_ros.extractors.lfnet import LFNet
from local_features_ros.weights import load_checkpoint, save_checkpoint, unwrap_state_dict

from ..config import thaw
from ..engine import Task
from ..sfm.data import build_pair_datasets, held_out_scene_images
from .losses import LOSS_DEFAULTS, lfnet_losses, match_score

logger = logging.getLogger(__name__)


class LFNetTask(Task):
    name = "lfnet"
    default_conf = {
        # ``init_weights`` + the runtime extractor's keys (passed on to ``LFNet``)
        "model": {"init_weights": None, **LFNet.full_default_conf()},
        "data": {},  # training/sfm/pairs.py reads it
        "loss": LOSS_DEFAULTS,
    }

    def _model_conf(self) -> dict[str, Any]:
        m = dict(self.conf.get("model", {}))
        m.pop("init_weights", None)
        # official training feeds the instance-normalised photo (docs/lfnet_lift.md#lf-net)
        m.setdefault("input_inst_norm", True)
        return m

    def build_model(self) -> nn.Module:
        model = LFNet(**self._model_conf())
        init = self.conf.get("model", {}).get("init_weights")
        if init:
            model.load_weights(init)
            logger.info("LF-Net initialised from %s", init)
        return model

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        seed = int(self.conf.get("train", {}).get("seed", 0))
        return build_pair_datasets(self.conf["data"], seed=seed)

    def export_check_images(self, train_ds: Dataset, val_ds: Dataset | None
                            ) -> list[tuple[str, np.ndarray]]:
        """Images of the validation scenes (``data.val_scenes``), else none."""
        return held_out_scene_images(val_ds)

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], step: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        net = model.module if hasattr(model, "module") else model
        return lfnet_losses(net, batch, step, self.conf.get("loss", {}))

    @torch.no_grad()
    def validate(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        lc = thaw(self.settings["loss"])
        loss, metrics = lfnet_losses(model, batch, 10**9, lc)
        ms = match_score(model, batch, int(lc["top_k"]), float(lc["match_reproj_thresh"]),
                         float(lc["depth_tol"]), bool(lc["relative_depth_tol"]))
        return {"loss": float(loss), "match_score": ms, **metrics}

    def export(self, model: nn.Module, path: Path) -> Path | None:
        """Runtime checkpoint; ``extractor_conf`` records the architecture / input keys the
        runtime must be built with (e.g. ``input_inst_norm``)."""
        assert isinstance(model, LFNet)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return save_checkpoint(path, "lfnet", state, dict(self.conf), stage="train",
                               extractor_conf=self._model_conf())


def load_lfnet_export(path: str, **conf: Any) -> LFNet:
    """Build the runtime LF-Net from an export, with the keys it was trained with."""
    ck = load_checkpoint(path)
    net = LFNet(**{**dict(ck.get("extractor_conf", {})), **conf})
    net.load_state_dict(unwrap_state_dict(ck), strict=True)
    return net.eval()
