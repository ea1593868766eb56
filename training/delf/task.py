"""DELF two-step training + PCA (docs/method_facts/training_delf.md).

Step 1 (``finetune``): the ResNet-50 block3 backbone is fine-tuned with a landmark
classification loss (global average pooled block3 -> linear classifier; the paper's descriptor
fine-tuning; 250 -> random 224 crops by default).
Step 2 (``attention``): the backbone is *fixed* (no gradient, BatchNorm in eval mode) and the
attention head is trained through attention-weighted pooling + classifier: ``logits =
W mean_n(alpha_n * l2norm(f_n))`` (the official code's form of eq. 1); 900 -> random 720 crops,
then the whole batch is downscaled by a random gamma in [``min_downscale``, 1].
Step 3 (``pca``): descriptors of the trained extractor (its own pyramid + attention top-k) are
collected over the training images and a 40-D PCA is fitted (``fit_pca`` of the runtime).

Why the runtime ``DELF`` module is trained directly: the exported state dict is exactly what the
extractor loads (backbone, attention head, PCA buffers), with the same input normalisation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from local_features_ros.extractors.delf import DELF, fit_pca
from local_features_ros.weights import load_checkpoint, save_checkpoint, unwrap_state_dict

from ..config import save_config
from ..engine import Task
from ..export_check import MAX_IMAGES, publish_export, read_image
from .datasets import LandmarkCrops, LandmarkSet, load_landmarks, split_per_class

logger = logging.getLogger(__name__)

DEFAULT_DATA = {
    "finetune": {"resize": 250, "crop": 224},
    "attention": {"resize": 900, "crop": 720, "min_downscale": 0.3535},
}


class DelfTrainModel(nn.Module):
    """Runtime ``DELF`` + the two training classifiers (``desc_fc`` after GAP, ``att_fc`` after
    attention pooling). ``stage`` decides what is trainable; the rest is frozen and kept in eval
    mode."""

    def __init__(self, num_classes: int, delf_conf: Mapping[str, Any], stage: str):
        super().__init__()
        if stage not in ("finetune", "attention"):
            raise ValueError(f"stage must be finetune or attention, got '{stage}'")
        self.stage = stage
        self.delf = DELF(**dict(delf_conf))
        self.desc_fc = nn.Linear(1024, num_classes)
        self.att_fc = nn.Linear(1024, num_classes)
        train_names = ("backbone", "desc_fc") if stage == "finetune" else ("attention", "att_fc")
        for name, mod in self.parts().items():
            for p in mod.parameters():
                p.requires_grad_(name in train_names)
        self.train_names = train_names

    def parts(self) -> dict[str, nn.Module]:
        return {"backbone": self.delf.backbone, "attention": self.delf.attention,
                "desc_fc": self.desc_fc, "att_fc": self.att_fc}

    def train(self, mode: bool = True) -> "DelfTrainModel":
        super().train(mode)
        for name, mod in self.parts().items():
            if name not in self.train_names:
                mod.eval()
        return self

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.delf.backbone(self.delf.normalize(image))

    def desc_logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.desc_fc(self.features(image).mean(dim=(2, 3)))

    def att_logits(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            f = self.features(image)
        a = self.delf.attention(f)  # (B, 1, h, w)
        pooled = (F.normalize(f, dim=1) * a).mean(dim=(2, 3))
        return self.att_fc(pooled), a


def load_delf_into(model: DelfTrainModel, path: str | Path) -> None:
    """Init from an engine checkpoint of either step (``model`` keys), a runtime DELF export or
    a torchvision ResNet-50 state dict (backbone only). Classifier shapes must match to be kept."""
    ck = load_checkpoint(path)
    if ck.get("format") == "local_features_ros.training":
        own = model.state_dict()
        state = {k: v for k, v in ck["model"].items() if k in own and v.shape == own[k].shape}
        skipped = [k for k in ck["model"] if k not in state]
        model.load_state_dict({**own, **state}, strict=True)
        if skipped:
            logger.warning("init from %s: %d keys not used (e.g. %s)", path, len(skipped),
                           skipped[0])
    else:
        state = model.delf.adapt_state_dict(unwrap_state_dict(ck))
        own = model.delf.state_dict()
        missing = [k for k in own if k not in state and not k.startswith("pca_")]
        if missing:
            raise ValueError(f"{path}: missing DELF key '{missing[0]}'")
        model.delf.load_state_dict({**own, **state}, strict=True)
    logger.info("DELF initialised from %s", path)


class _DelfTask(Task):
    name = "delf"
    stage = "finetune"
    default_conf = {
        "data": {},  # datasets.py reads it (``data.<step>``: DEFAULT_DATA)
        "model": {"delf": {}, "init_weights": None},  # model.delf: the runtime DELF's keys
        "pca": {},  # step 3 (run_pca)
    }

    def __init__(self, conf: Mapping[str, Any]):
        super().__init__(conf)
        self._landmarks: LandmarkSet | None = None

    def landmarks(self) -> LandmarkSet:
        if self._landmarks is None:
            self._landmarks = load_landmarks(self.conf.get("data", {}))
        return self._landmarks

    def stage_data(self) -> dict[str, Any]:
        d = self.conf.get("data", {})
        return {**DEFAULT_DATA[self.stage], **dict(d.get(self.stage, {}) or {})}

    def build_model(self) -> nn.Module:
        m = self.conf.get("model", {})
        model = DelfTrainModel(self.landmarks().num_classes, m.get("delf", {}), self.stage)
        if m.get("init_weights"):
            load_delf_into(model, m["init_weights"])
        return model

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        data = self.conf.get("data", {})
        seed = int(self.conf.get("train", {}).get("seed", 0))
        tr, va = split_per_class(self.landmarks(), float(data.get("val_fraction", 0.0)), seed)
        sd = self.stage_data()
        train = LandmarkCrops(tr, int(sd["resize"]), int(sd["crop"]), True, seed)
        val = LandmarkCrops(va, int(sd["resize"]), int(sd["crop"]), False, seed) if va else None
        return train, val

    @staticmethod
    def _m(model: nn.Module) -> DelfTrainModel:
        return model.module if hasattr(model, "module") else model

    def export_check_images(self, train_ds: Dataset, val_ds: Dataset | None
                            ) -> list[tuple[str, np.ndarray]]:
        """The held-out images (``data.val_fraction`` > 0), whole, else none."""
        return held_out_landmarks(val_ds.ls if isinstance(val_ds, LandmarkCrops) else None)

    def export(self, model: nn.Module, path: Path) -> Path | None:
        m = self._m(model)
        ls = self.landmarks()
        return save_checkpoint(path, "delf", m.delf.state_dict(), config=dict(m.delf.conf),
                               stage=self.stage, classes=list(ls.classes))


class DelfFinetuneTask(_DelfTask):
    """Step 1: backbone + GAP classifier, cross-entropy."""

    stage = "finetune"

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], step: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self._m(model).desc_logits(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        return loss, {"accuracy": float(acc)}


class DelfAttentionTask(_DelfTask):
    """Step 2: attention head + attention-pooled classifier on fixed block3 features, with a
    random per-batch downscale gamma (generator keyed by (seed, step): resume-exact)."""

    stage = "attention"

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], step: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        img = batch["image"]
        lo = float(self.stage_data().get("min_downscale", 1.0))
        gamma = 1.0
        if step >= 0 and lo < 1.0:
            seed = int(self.conf.get("train", {}).get("seed", 0))
            g = torch.Generator().manual_seed(seed * 100003 + int(step))
            gamma = lo + (1.0 - lo) * float(torch.rand((), generator=g))
            size = max(int(round(img.shape[-1] * gamma)), 16)
            if size < img.shape[-1]:
                img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False,
                                    antialias=True)
        logits, a = self._m(model).att_logits(img)
        loss = F.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        return loss, {"accuracy": float(acc), "attention_mean": float(a.detach().mean()),
                      "gamma": gamma}


def held_out_landmarks(ls: LandmarkSet | None) -> list[tuple[str, np.ndarray]]:
    """Whole held-out images (RGB uint8) for the export check; none without a split."""
    if ls is None:
        return []
    return [(str(p), read_image(p)) for p in list(ls.paths)[:MAX_IMAGES]]


def collect_descriptors(delf: DELF, ls: LandmarkSet, max_edge: int, max_per_image: int,
                        max_total: int, seed: int = 0) -> torch.Tensor:
    """L2-normalised raw 1024-D descriptors (the extractor's own pyramid and attention top-k)
    of every image, randomly subsampled to ``max_total``."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    old_k = delf.conf["max_keypoints"]
    delf.update_conf(max_keypoints=int(max_per_image))  # validated like any runtime change
    try:
        for p in ls.paths:
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise FileNotFoundError(f"cannot read image {p}")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            s = max_edge / max(rgb.shape[:2]) if max_edge > 0 else 1.0
            if s < 1.0:
                rgb = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            d = delf.raw_descriptors(rgb)
            if len(d):
                out.append(d.cpu())
    finally:
        delf.update_conf(max_keypoints=old_k)
    if not out:
        raise ValueError("no DELF descriptors collected for the PCA (images too small?)")
    x = torch.cat(out)
    if max_total > 0 and len(x) > max_total:
        x = x[torch.from_numpy(np.sort(rng.choice(len(x), max_total, replace=False)))]
    return x


def explained_variance(desc: torch.Tensor, variance: torch.Tensor) -> float:
    """Fraction of the total variance of the (L2-normalised) descriptors the PCA keeps."""
    x = F.normalize(desc.double(), dim=1)
    total = float(((x - x.mean(0)) ** 2).sum(1).mean() * len(x) / max(len(x) - 1, 1))
    return float(variance.double().sum()) / max(total, 1e-12)


def run_pca(conf: Mapping[str, Any], out: Path, resume: bool = False) -> dict[str, Any]:
    """Step 3: fit the PCA on descriptors of the step-2 model and write the final runtime
    checkpoint ``out/export/delf.pth`` (backbone + attention + PCA). ``resume``: an existing
    export is kept."""
    out = Path(out)
    export = out / "export" / "delf.pth"
    summary_path = out / "pca_summary.json"
    if resume and export.is_file() and summary_path.is_file():
        return json.loads(summary_path.read_text())
    m = conf.get("model", {})
    if not m.get("init_weights"):
        raise ValueError("model.init_weights must name the attention-step export")
    delf = DELF(**dict(m.get("delf", {})))
    ck = load_checkpoint(m["init_weights"])
    state = unwrap_state_dict(ck) if ck.get("format") != "local_features_ros.training" else \
        {k[len("delf."):]: v for k, v in ck["model"].items() if k.startswith("delf.")}
    own = delf.state_dict()
    delf.load_state_dict({**own, **{k: v for k, v in state.items() if not k.startswith("pca_")}},
                         strict=True)
    delf.setup()
    pc = dict(conf.get("pca", {}))
    ls = load_landmarks(conf.get("data", {}))
    desc = collect_descriptors(delf, ls, int(pc.get("max_edge", 0)),
                               int(pc.get("max_per_image", 1000)),
                               int(pc.get("max_descriptors", 200000)), int(pc.get("seed", 0)))
    dim = int(delf.conf["pca_dim"])
    mean, matrix, var = fit_pca(desc, dim)
    delf.set_pca(mean, matrix, var)
    ratio = explained_variance(desc, var)
    out.mkdir(parents=True, exist_ok=True)
    save_config(dict(conf), out / "config.yaml")
    # the final DELF goes through the same runtime check as every engine export; its held-out
    # images are the validation split of the steps before (the PCA itself sees every image)
    data = conf.get("data", {})
    _, held_out = split_per_class(ls, float(data.get("val_fraction", 0.0) or 0.0),
                                  int(conf.get("train", {}).get("seed", 0)))
    publish_export(lambda p: save_checkpoint(
        p, "delf", delf.state_dict(), config=dict(delf.conf), stage="pca",
        classes=list(ck.get("classes", [])), pca_explained_variance=ratio,
        pca_num_descriptors=int(len(desc))), export, held_out_landmarks(held_out), delf.device,
        m["init_weights"])
    summary = {"export": str(export), "num_descriptors": int(len(desc)), "pca_dim": dim,
               "explained_variance": ratio, "finished": True}
    summary_path.write_text(json.dumps(summary, indent=1))
    logger.info("DELF PCA: %d descriptors, %d-D keeps %.1f%% of the variance", len(desc), dim,
                100 * ratio)
    return summary
