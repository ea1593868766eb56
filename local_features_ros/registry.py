"""The one registry of methods: name -> extractor class, and ``build_extractor``.

Why lazy import paths: building ``orb`` must not import torch models it does not use, and a
method's module is the only file to touch when adding a method.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from .extractors.base import ConfigError, Extractor
from .weights import WeightsError, is_project_checkpoint, load_checkpoint

logger = logging.getLogger(__name__)

METHODS: dict[str, str] = {
    "superpoint": "local_features_ros.extractors.superpoint:SuperPoint",
    "d2net": "local_features_ros.extractors.d2net:D2Net",
    "lfnet": "local_features_ros.extractors.lfnet:LFNet",
    "lift": "local_features_ros.extractors.lift:LIFT",
    "delf": "local_features_ros.extractors.delf:DELF",
    "orb": "local_features_ros.extractors.classical:ORB",
    "sift": "local_features_ros.extractors.classical:SIFT",
}

#: Weights shipped with the package (trained by this project's own pipeline).
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent / "data" / "weights"
DEFAULT_WEIGHTS: dict[str, str] = {
    "superpoint": "superpoint_lfr.pth",
}

#: ``weights: random`` builds an untrained network (tests, training from scratch).
RANDOM_WEIGHTS = "random"


def available_methods() -> list[str]:
    return sorted(METHODS)


def get_extractor_class(method: str) -> type[Extractor]:
    if method not in METHODS:
        raise ConfigError(f"unknown method '{method}' (available: {', '.join(available_methods())})")
    module_name, cls_name = METHODS[method].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def default_weights(method: str) -> Path | None:
    name = DEFAULT_WEIGHTS.get(method)
    if name is None:
        return None
    p = PACKAGE_WEIGHTS_DIR / name
    return p if p.is_file() else None


def build_extractor(method: str, weights: str | None = None, device: str = "cpu",
                    precision: str = "fp32", **conf: Any) -> Extractor:
    """Build, load weights, move to device, eval mode.

    ``weights``: a local path (official layout or project checkpoint); ``None``/``""`` = the
    package's shipped weights for that method (error if there are none); ``"random"`` = untrained.
    """
    cls = get_extractor_class(method)
    if cls.is_learned and weights in (None, ""):
        shipped = default_weights(method)
        if shipped is None:
            raise FileNotFoundError(
                f"method '{method}' needs weights: pass weights=PATH to a local checkpoint "
                f"(or weights={RANDOM_WEIGHTS} for an untrained network)"
            )
        weights = str(shipped)
    if not cls.is_learned or weights == RANDOM_WEIGHTS:
        if cls.is_learned:
            logger.warning("method '%s' runs with RANDOM weights (testing only)", method)
        return cls(device=device, precision=precision, **conf).setup()
    ckpt = load_checkpoint(weights)
    if is_project_checkpoint(ckpt) and ckpt.get("method") not in (None, method):
        raise WeightsError(f"{weights} is a '{ckpt.get('method')}' checkpoint, not '{method}'")
    # Our own checkpoints carry the architecture/input keys they were trained with
    # (``extractor_conf``); they are defaults here, explicit user settings win.
    stored = dict(ckpt.get("extractor_conf") or {}) if is_project_checkpoint(ckpt) else {}
    known = cls.full_default_conf()
    extractor = cls(device=device, precision=precision,
                    **{**{k: v for k, v in stored.items() if k in known}, **conf})
    extractor.load_weights(weights, checkpoint=ckpt)
    return extractor.setup()
