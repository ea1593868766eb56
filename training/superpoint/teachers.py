"""Who labels the images in Homographic Adaptation: the teacher (``teacher:`` of the export stage).

Why a teacher other than MagicPoint: a MagicPoint trained briefly on Synthetic Shapes is a weak
label source on real frames (it fires along edges, misses texture). A detector with released
weights (ALIKED, DISK) is a stronger one, and Homographic Adaptation makes its labels repeatable
by construction: its score maps go through exactly MagicPoint's aggregation (same homographies
from the same seed, same valid masks, same ``sum``/``max``, same box NMS and top-k; only the
thresholds are the teacher's, because the score scales differ).

Choices (``teacher:``):

- ``magicpoint`` (default, the paper's recipe): the SuperPoint-architecture detector in
  ``model.weights`` (MagicPoint in round 1; in the pipeline's later rounds the previous round's
  SuperPoint). Heatmap: the 65-way softmax without the dustbin, per pixel (``SuperPoint.heatmap``).
- ``aliked-n16`` (or any ``aliked-*`` model of the runtime's ``aliked`` method): the released
  weights; score map = ALIKED's own sigmoid score map (``ALIKED.dense``), already in [0, 1].
- ``disk``: the released depth weights; DISK's heatmap is a logit (about -440..+120 on a
  textured image; upstream keeps maxima with logit > 0). It is mapped into [0, 1] with the
  monotone ``sigmoid(logit / temperature)`` (default temperature 10: a plain sigmoid saturates to
  1 on every peak and its neighbours, so the aggregated map would be a plateau and NMS could not
  localise; logit 0, upstream's threshold, stays at 0.5).
- any other value: a path to a SuperPoint/MagicPoint checkpoint (loaded as ``model.weights``).

The runtime package is only *called* (``build_extractor`` and the extractors' public ``dense``);
nothing under ``local_features_ros`` knows about training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

#: the default teacher: the paper's recipe
DEFAULT_TEACHER = "magicpoint"

#: thresholds (and the DISK logit temperature) per teacher kind, on the *aggregated* map. None =
#: the export's ``detection.min_prob`` / ``detection.detection_threshold`` (the reference 0.015,
#: meant for SuperPoint's per-pixel softmax). Why other values for ALIKED/DISK: their maps are
#: sigmoids, not a 65-way softmax, so 0.015 is background level (ALIKED's median score on a
#: textured image is ~0.001, its 99th percentile ~0.04, its peaks 0.3-0.9). Defaults (measured on
#: generated images, docs/training.md): ALIKED 0.05 (a quarter of upstream's single-pass 0.2:
#: the back-warped views blur a peak, and averaging over views that miss it lowers it further);
#: DISK 0.25 on sigmoid(logit/10), i.e. a point whose views average to logit ~-11.
TEACHER_DEFAULTS: dict[str, dict[str, Any]] = {
    "superpoint": {"min_prob": None, "detection_threshold": None},
    "aliked": {"min_prob": 0.05, "detection_threshold": 0.05},
    "disk": {"min_prob": 0.25, "detection_threshold": 0.25, "temperature": 10.0},
}


@dataclass
class Teacher:
    """A label source: ``prob_fn`` maps gray ``(B, 1, H, W)`` in [0, 1] to ``(B, H, W)`` in [0, 1]."""

    name: str  # as configured
    kind: str  # superpoint | aliked | disk
    prob_fn: Callable[[torch.Tensor], torch.Tensor]
    weights: str | None = None
    conf: dict[str, Any] = field(default_factory=dict)  # resolved TEACHER_DEFAULTS entry

    def record(self) -> dict[str, Any]:
        """What the labels' metadata and the joint checkpoint record about the teacher."""
        return {"name": self.name, "kind": self.kind, "weights": self.weights, **self.conf}

    def thresholds(self, detection: Mapping[str, Any]) -> tuple[float, float]:
        """``(min_prob, detection_threshold)``: the teacher's, else the ``detection`` section's."""
        mp, thr = self.conf.get("min_prob"), self.conf.get("detection_threshold")
        return (float(detection.get("min_prob", 0.015) if mp is None else mp),
                float(detection.get("detection_threshold", 0.015) if thr is None else thr))


def teacher_kind(name: str) -> str:
    """``magicpoint`` / a path -> ``superpoint``; ``aliked-*`` -> ``aliked``; ``disk`` -> ``disk``."""
    from local_features_ros import pretrained

    name = str(name or DEFAULT_TEACHER)
    if name == "disk":
        return "disk"
    if name in pretrained.ALIKED_MODELS:
        return "aliked"
    if name == DEFAULT_TEACHER or Path(name).is_file():
        return "superpoint"
    raise ValueError(f"teacher must be magicpoint, disk, one of {', '.join(pretrained.ALIKED_MODELS)} "
                     f"or a SuperPoint/MagicPoint checkpoint file; got '{name}' (no such file)")


def _resolved_conf(kind: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    conf = dict(TEACHER_DEFAULTS[kind])
    for k, v in (overrides or {}).items():
        if k not in conf:
            raise ValueError(f"teacher_detection.{k} is not a setting of a {kind} teacher "
                             f"(known: {', '.join(sorted(conf))})")
        conf[k] = v
    if kind == "disk" and not float(conf["temperature"]) > 0:
        raise ValueError("teacher_detection.temperature must be > 0")
    return conf


def detector_prob_fn(model: torch.nn.Module, device: torch.device
                     ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``magicpoint`` teacher's label map: the detector's 65-way softmax without the dustbin,
    per pixel (``SuperPoint.heatmap`` of the runtime, so labels and inference decode alike)."""
    from local_features_ros.extractors.superpoint import SuperPoint

    @torch.no_grad()
    def fn(x: torch.Tensor) -> torch.Tensor:
        return SuperPoint.heatmap(model(x.to(device))["logits"])
    return fn


def build_teacher(name: str | None, weights: str | None, device: torch.device | str,
                  overrides: Mapping[str, Any] | None = None) -> Teacher:
    """The teacher ``name`` on ``device``; ``weights`` is the detector of ``magicpoint``
    (ignored by the others); ``overrides``: the export's ``teacher_detection`` section."""
    name = str(name or DEFAULT_TEACHER)
    kind = teacher_kind(name)
    device = torch.device(device)
    conf = _resolved_conf(kind, overrides)
    if kind == "superpoint":
        from .model import SuperPointModel, load_initial_weights

        path = weights if name == DEFAULT_TEACHER else name
        if not path:
            raise ValueError("teacher magicpoint needs model.weights (the MagicPoint checkpoint "
                             "to adapt)")
        model = SuperPointModel(detector_only=True)
        load_initial_weights(model, str(path))
        model.to(device).eval()
        return Teacher(name, kind, detector_prob_fn(model, device), str(path), conf)

    from local_features_ros.registry import build_extractor

    if kind == "aliked":
        ex = build_extractor("aliked", model=name, device=str(device), precision="fp32")

        @torch.no_grad()
        def aliked_fn(x: torch.Tensor) -> torch.Tensor:
            return ex.dense(x.to(device).float())[1][:, 0]  # sigmoid scores (B, H, W)

        return Teacher(name, kind, aliked_fn, str(ex.default_weights({"model": name})), conf)

    ex = build_extractor("disk", device=str(device), precision="fp32")
    temperature = float(conf["temperature"])

    @torch.no_grad()
    def disk_fn(x: torch.Tensor) -> torch.Tensor:
        heat = ex.dense(x.to(device).float())[0][:, 0]  # logits (B, H, W)
        return torch.sigmoid(heat / temperature)

    return Teacher(name, kind, disk_fn, str(ex.default_weights({})), conf)
