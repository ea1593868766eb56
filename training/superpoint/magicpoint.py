"""Stage 1: MagicPoint (backbone + detector head) on Synthetic Shapes
(docs/method_facts/training_superpoint.md#stage-1-magicpoint-on-synthetic-shapes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.synthetic_shapes import SyntheticShapes
from ..engine import Task
from ..export_check import MAX_IMAGES, to_uint8
from .losses import detector_loss
from .model import SuperPointModel, export_runtime_checkpoint, load_initial_weights


def detection_metrics(logits: torch.Tensor, keypoint_map: torch.Tensor, threshold: float,
                      valid_mask: torch.Tensor | None = None) -> dict[str, float]:
    """Pixel-level precision/recall of the thresholded heatmap (tolerance: exact pixel, after
    a 3x3 max so one-pixel rounding does not count as a miss)."""
    from local_features_ros.extractors.superpoint import SuperPoint

    heat = SuperPoint.heatmap(logits.detach())
    pred = heat >= threshold
    if valid_mask is not None:
        pred &= valid_mask > 0
    gt = keypoint_map > 0
    gt_d = torch.nn.functional.max_pool2d(gt.float()[:, None], 3, 1, 1)[:, 0] > 0
    pred_d = torch.nn.functional.max_pool2d(pred.float()[:, None], 3, 1, 1)[:, 0] > 0
    tp_p = (pred & gt_d).sum().item()
    tp_r = (gt & pred_d).sum().item()
    return {"precision": tp_p / max(pred.sum().item(), 1), "recall": tp_r / max(gt.sum().item(), 1)}


class DetectorTask(Task):
    """Any detector-only stage on (image, keypoint_map, valid_mask) batches."""

    name = "magicpoint"
    default_conf = {
        "model": {"init_weights": None, "detection_threshold": 0.001,
                  "nms": 4},  # nms: in the shipped configs, not read by the detector stages
        "data": {},  # the dataset reads it (synthetic_shapes.py, image_folder.py)
    }

    def build_model(self) -> nn.Module:
        model = SuperPointModel(detector_only=True)
        load_initial_weights(model, self.conf.get("model", {}).get("init_weights"))
        return model

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], step: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch["image"])
        loss = detector_loss(out["logits"], batch["keypoint_map"], batch.get("valid_mask"))
        return loss, {}

    @torch.no_grad()
    def validate(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        out = model(batch["image"])
        loss = detector_loss(out["logits"], batch["keypoint_map"], batch.get("valid_mask"))
        thr = float(self.settings["model"]["detection_threshold"])
        return {"loss": float(loss), **detection_metrics(out["logits"], batch["keypoint_map"], thr,
                                                         batch.get("valid_mask"))}

    def export(self, model: nn.Module, path: Path) -> Path | None:
        return Path(export_runtime_checkpoint(model, str(path), self.conf, stage=self.name))

    def export_check_images(self, train_ds: Dataset, val_ds: Dataset | None
                            ) -> list[tuple[str, np.ndarray]]:
        """Held-out labelled images (``LabeledImages`` validation split), else none."""
        if not isinstance(val_ds, LabeledImages) or len(val_ds) == 0:
            return []
        return held_out_images(val_ds.base, val_ds.indices)


class MagicPointTask(DetectorTask):
    name = "magicpoint"

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        data: Mapping[str, Any] = self.conf["data"]
        train = SyntheticShapes(data, "training", data.get("train_size"))
        val = SyntheticShapes({**data, "augmentation": {"enable": False}}, "validation",
                              data.get("val_size"))
        return train, val

    def export_check_images(self, train_ds: Dataset, val_ds: Dataset | None
                            ) -> list[tuple[str, np.ndarray]]:
        """The first validation shapes that have keypoints (a 'gaussian noise' or 'ellipses'
        sample has none by design, so it cannot show whether the detector works)."""
        if not isinstance(val_ds, SyntheticShapes):
            return []
        out = []
        for i in range(min(len(val_ds), 32)):
            s = val_ds.raw(i)
            if len(s.points):
                out.append((f"synthetic shapes validation #{i} ({s.primitive})", to_uint8(s.image)))
            if len(out) == MAX_IMAGES:
                break
        return out


def held_out_images(base: Any, indices: Sequence[int]) -> list[tuple[str, np.ndarray]]:
    """``ImageFolder`` images of the held-out ``indices`` (as the training stage resized them),
    named by file, for the export check."""
    return [(str(base.files[int(i)]), base.load(int(i))[0]) for i in list(indices)[:MAX_IMAGES]]


class LabeledImages(Dataset):
    """Image folder + Homographic Adaptation labels, with the round-2 augmentation (photometric,
    then a homography applied to image, keypoints and valid mask;
    docs/method_facts/training_superpoint.md#optional-round-2-magicpoint-on-real-images)."""

    def __init__(self, conf: Mapping[str, Any], split: str = "training"):
        from ..data.image_folder import ImageFolder

        self.conf = dict(conf)
        self.base = ImageFolder(self.conf)
        self.augment = split == "training"
        self.seed = int(self.conf.get("seed", 0))
        n_val = int(self.conf.get("val_size", 0) or 0)
        idx = list(range(len(self.base)))
        self.indices = (idx[n_val:] or idx) if split == "training" else idx[:n_val]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        import numpy as np

        from ..data.detector_sample import detector_sample

        index = self.indices[i]
        img, pts = self.base.load(index)
        rng = np.random.default_rng([self.seed, index, self.epoch]) if self.augment else None
        return detector_sample(img, pts, rng, self.conf.get("augmentation", {}))


class MagicPointRetrainTask(DetectorTask):
    """Optional round 2: MagicPoint retrained on Homographic Adaptation labels of real
    images; export again with the result to get round-2 labels."""

    name = "magicpoint"

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        data: Mapping[str, Any] = self.conf["data"]
        val = LabeledImages(data, "validation") if int(data.get("val_size", 0) or 0) > 0 else None
        return LabeledImages(data, "training"), val
