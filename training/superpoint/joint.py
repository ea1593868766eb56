"""Stage 3: joint SuperPoint training on warped pairs
(docs/method_facts/training_superpoint.md#stage-3-joint-training).

Why pairs from one image: a homography gives exact cell-to-cell correspondences for the
descriptor loss, and Homographic Adaptation labels give the detector targets in both views.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.homographies import compute_valid_mask, filter_points, homography_conf, \
    points_to_map, sample_homography, warp_image, warp_points
from ..data.image_folder import ImageFolder
from ..data.photometric import photometric_augmentation
from ..config import thaw
from ..engine import Task
from .losses import descriptor_loss, detector_loss
from .magicpoint import detection_metrics, held_out_images
from .model import SuperPointModel, export_runtime_checkpoint, load_initial_weights


class WarpedPairs(Dataset):
    """(image, warped image) pairs with labels, valid masks and the homography (source px ->
    warped px). Every random draw comes from a generator keyed by (seed, index, epoch)."""

    def __init__(self, conf: Mapping[str, Any], split: str = "training"):
        self.conf = dict(conf)
        self.base = ImageFolder(self.conf)
        self.seed = int(self.conf.get("seed", 0)) + (0 if split == "training" else 7919)
        self.augment = split == "training"
        self.epoch = 0
        n_val = int(self.conf.get("val_size", 0) or 0)
        idx = np.arange(len(self.base))
        self.indices = idx[n_val:] if split == "training" else idx[:n_val]
        if split == "training" and len(self.indices) == 0:
            self.indices = idx

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = int(self.indices[i])
        img, pts = self.base.load(index)
        rng = np.random.default_rng([self.seed, index, self.epoch if self.augment else 0])
        shape = img.shape[:2]
        pts = np.zeros((0, 2), np.float32) if pts is None else pts
        wp = self.conf.get("warped_pair", {})
        hs = sample_homography(shape, rng, **homography_conf(wp.get("params", {})))
        margin = int(wp.get("valid_border_margin", 3))
        img_f = img.astype(np.float32)
        warped = warp_image(img_f, hs.H)
        wpts = filter_points(warp_points(pts, hs.H), shape)
        photo = self.conf.get("augmentation", {}).get("photometric", {})
        if self.augment and photo.get("enable", True):
            img_f = photometric_augmentation(img_f, rng, photo)
            warped = photometric_augmentation(warped, rng, photo)

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x, np.float32))

        return {
            "image": t(img_f / 255.0)[None],
            "keypoint_map": t(points_to_map(pts, shape)),
            "valid_mask": t(np.ones(shape, np.float32)),
            "warped_image": t(warped / 255.0)[None],
            "warped_keypoint_map": t(points_to_map(wpts, shape)),
            "warped_valid_mask": t(compute_valid_mask(shape, hs.H, margin)),
            "homography": torch.from_numpy(hs.H.astype(np.float32)),
        }


class JointTask(Task):
    name = "superpoint"
    default_conf = {
        # extractor_conf: runtime keys the weights recommend (recorded in the export)
        # teacher: who labelled data.labels_dir (the export's labels/teacher.json when left
        # empty; the pipeline fills it in), recorded in the exported checkpoint
        "model": {"init_weights": None, "detection_threshold": 0.015, "extractor_conf": {},
                  "teacher": {}},
        "data": {},  # WarpedPairs / ImageFolder read it
        "loss": {"lambda_loss": 1e-4, "descriptor": {}},  # descriptor: losses.descriptor_loss
    }

    def build_model(self) -> nn.Module:
        model = SuperPointModel(detector_only=False)
        load_initial_weights(model, self.conf.get("model", {}).get("init_weights"))
        return model

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        data = self.conf["data"]
        train = WarpedPairs(data, "training")
        val = WarpedPairs(data, "validation") if int(data.get("val_size", 0) or 0) > 0 else None
        return train, val

    def _losses(self, model: nn.Module, batch: Mapping[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, float], dict[str, torch.Tensor]]:
        lc = self.settings["loss"]
        b = batch["image"].shape[0]
        out = model(torch.cat([batch["image"], batch["warped_image"]], 0))
        logits, desc = out["logits"], out["descriptors"]
        det0 = detector_loss(logits[:b], batch["keypoint_map"], batch["valid_mask"])
        det1 = detector_loss(logits[b:], batch["warped_keypoint_map"], batch["warped_valid_mask"])
        dl = descriptor_loss(desc[:b], desc[b:], batch["homography"], batch["warped_valid_mask"],
                             thaw(lc["descriptor"] or {}))
        total = det0 + det1 + float(lc["lambda_loss"]) * dl
        metrics = {"detector": float(det0.detach()), "detector_warped": float(det1.detach()),
                   "descriptor": float(dl.detach())}
        return total, metrics, {"logits": logits[:b]}

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], step: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        total, metrics, _ = self._losses(model, batch)
        return total, metrics

    @torch.no_grad()
    def validate(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        total, metrics, out = self._losses(model, batch)
        thr = float(self.settings["model"]["detection_threshold"])
        return {"loss": float(total), **metrics,
                **detection_metrics(out["logits"], batch["keypoint_map"], thr)}

    def export_check_images(self, train_ds: Dataset, val_ds: Dataset | None
                            ) -> list[tuple[str, np.ndarray]]:
        """Held-out images (``data.val_size`` > 0), else none (a generated image is used)."""
        if not isinstance(val_ds, WarpedPairs) or len(val_ds) == 0:
            return []
        return held_out_images(val_ds.base, val_ds.indices)

    def export(self, model: nn.Module, path: Path) -> Path | None:
        # post-processing the weights recommend (e.g. subpixel_radius), recorded in the checkpoint:
        # the runtime uses it wherever the user leaves the key at its "auto" default
        rec = dict(self.conf.get("model", {}).get("extractor_conf") or {})
        teacher = labels_teacher(self.conf)
        conf = {**self.conf, "model": {**dict(self.conf.get("model") or {}), "teacher": teacher}}
        return Path(export_runtime_checkpoint(model, str(path), conf, stage="joint",
                                              teacher=teacher,
                                              **({"extractor_conf": rec} if rec else {})))


def labels_teacher(conf: Mapping[str, Any]) -> dict[str, Any]:
    """The teacher record of the labels a joint stage trains on: ``model.teacher`` if set, else
    the export's ``labels/teacher.json`` (``{}`` for labels from elsewhere)."""
    import json

    from .homographic_adaptation import TEACHER_FILE

    given = thaw((conf.get("model") or {}).get("teacher") or {})
    if given:
        return dict(given)
    labels = (conf.get("data") or {}).get("labels_dir")
    meta = Path(labels) / TEACHER_FILE if labels else None
    return json.loads(meta.read_text()) if meta is not None and meta.is_file() else {}
