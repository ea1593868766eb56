"""One interface for every method (learned or classical).

Why: the node, the CLI, evaluation and training all talk to ``Extractor.extract`` and never to a
method's internals. A method declares itself once, with the class attributes below (``name``,
``summary``, ``weights_note``, ``licence``, ``evaluation_only``, ``shipped_weights``); the registry
finds every such class, so adding a method is one module (see ``docs/ARCHITECTURE.md``).

Configuration: a method declares its own keys in ``default_conf`` (a dict); ``config_class``
is made from it when the class is defined, on top of its base method's config and
``ExtractorConfig`` (the keys every method has), by the one configuration system
(``local_features_ros/config.py``). ``self.conf`` is such a config: frozen, typed, read like a
dict; ``validate_conf`` is a classmethod, so ``checked_conf`` checks settings with no instance.

Construction path (one, for every method): ``__init__(**conf)`` builds the architecture with
random weights; ``load_weights(path)`` loads a local checkpoint strictly; ``setup()`` moves it to
its device. ``build_extractor`` in ``registry.py`` does all three from a method name and then
attaches the ``backend`` runners (``attach_network_runners``): this module never imports
``backends``, which export and therefore import extractors. Device and precision rules live in
``local_features_ros/device.py``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

# PRECISIONS is not used here: ros/params.py and ros/node_params.py import it from this module.
from ..config import Config, KeyInfo, coerce, make_config
from ..conventions import PRECISIONS, ConfigError  # noqa: F401
from ..device import autocast_context, check_precision, precision_dtype, resolve_device
from ..image.preprocess import ResizeInfo, prepare_image
from ..types import Features
from ..weights import PACKAGE_WEIGHTS_DIR, check_state_dict, load_checkpoint, unwrap_state_dict

logger = logging.getLogger(__name__)

#: ``backend`` values: torch (the modules as they are), or the exported ONNX network in
#: onnxruntime (CPU / CUDA), OpenVINO (CPU) or TensorRT (onnxruntime's TensorRT provider, GPU).
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")


class ExtractorConfig(Config):
    """Keys every method has (docs/ARCHITECTURE.md#contracts); same names as the node parameters
    and the CLI's ``--set key=value`` (``settings.py`` renames ``resize_max_edge``). A method's
    config (``Extractor.config_class``) is made from its ``default_conf`` on top of these.

    ``backend``: what runs the network part (``local_features_ros/backends``); post-processing
    always stays in torch. It is restart-only: not in ``runtime_keys``."""

    max_keypoints: int = -1  # -1 keeps all
    detection_threshold: float = 0.0
    nms_radius: int = 4  # pixels
    remove_borders: int = 4  # pixels
    resize_max_edge: int = 0  # 0 = native size
    backend: str = "torch"

    owner: ClassVar[str] = "method 'base'"
    runtime_keys: ClassVar[frozenset[str]] = frozenset(
        {"max_keypoints", "detection_threshold", "nms_radius", "remove_borders", "resize_max_edge"})
    key_info: ClassVar[Mapping[str, KeyInfo]] = {
        "max_keypoints": KeyInfo("keep the N best keypoints (-1 = all)",
                                 int_range=(-1, 1_000_000)),
        "detection_threshold": KeyInfo("detector score threshold (method units; the method "
                                       "validates the range)"),
        "nms_radius": KeyInfo("non-maximum suppression radius (pixels)", int_range=(0, 256)),
        "remove_borders": KeyInfo("drop keypoints this close to the border (pixels)",
                                  int_range=(0, 4096)),
        "resize_max_edge": KeyInfo("resize so the long edge is at most this before inference "
                                   "(0 = native); keypoints are always published in original "
                                   "pixels", int_range=(0, 16384)),
        "backend": KeyInfo("what runs the network part: torch | onnxruntime | openvino | "
                           "tensorrt (exported to ONNX on first use, cached in $LFR_CACHE_DIR or "
                           "~/.cache/local_features_ros/onnx; post-processing stays in torch)",
                           choices=BACKENDS),
    }
    #: the method whose ``validate_conf`` checks this config (set on each method's config).
    extractor: ClassVar[Any] = None

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        super().validate(conf)
        if cls.extractor is not None:
            cls.extractor.validate_conf(conf)


#: Config keys shared by every method, runtime-changeable (``ExtractorConfig.runtime_keys``).
SHARED_DEFAULTS: dict[str, Any] = {k: v for k, v in ExtractorConfig.defaults().items()
                                   if k in ExtractorConfig.runtime_keys}
#: Keys every method has besides ``SHARED_DEFAULTS``, restart-only.
BASE_DEFAULTS: dict[str, Any] = {k: v for k, v in ExtractorConfig.defaults().items()
                                 if k not in ExtractorConfig.runtime_keys}


@dataclass(frozen=True)
class NetworkDecl:
    """One exportable network part of an extractor (see ``Extractor.networks``).

    ``call``: attribute of the extractor that computes it (a submodule or a method; called with
    the input tensors, returns a tensor or a tuple of tensors; must read only restart-only config
    keys, since an export freezes them). ``inputs``: ``(name, example shape, {axis: dim name})``
    per input, the dict naming the dynamic axes. ``outputs``: ``(name, {axis: dim name})``.
    ``dynamic``: False when the traced graph bakes the input size in (sizes computed with Python
    arithmetic): then one export per input shape is cached instead of one for all shapes.
    """

    call: str
    inputs: tuple[tuple[str, tuple[int, ...], dict[int, str]], ...]
    outputs: tuple[tuple[str, dict[int, str]], ...]
    dynamic: bool = True


class Extractor(nn.Module):
    """Base class: subclasses set ``name``, ``default_conf``, ``input_channels`` and implement
    ``_extract`` on a prepared ``(1, C, H, W)`` float tensor in [0, 1]."""

    #: Registry name. A subclass that sets it in its own body (and does not start with '_') is a
    #: registry method; helper base classes leave it alone.
    name: ClassVar[str] = "base"
    #: One line shown in generated parameter files and ``local-features methods``.
    summary: ClassVar[str] = ""
    #: What ``weights:`` takes for this method (generated parameter files).
    weights_note: ClassVar[str] = "local weights file (required)"
    #: Licence of the code and weights a user would run (generated parameter files,
    #: ``local-features methods``); every licence is listed in docs/methods.md, "Licences".
    licence: ClassVar[str] = "see docs/methods.md#licences"
    #: Evaluation-only peers (e.g. AKAZE): in ``extract``/``evaluate``/``bench``, not in the node.
    evaluation_only: ClassVar[bool] = False
    #: Released LightGlue weights for this method's features: a file name that
    #: ``pretrained.released_weights`` locates (``matcher.type: lightglue`` loads it when the
    #: matcher's weights are empty); None = none released. ``matchers/lightglue.py``
    #: ``RELEASED_WEIGHTS`` lists the same files (test/project/test_registry_lists.py).
    lightglue_weights: ClassVar[str | None] = None
    #: File name under ``local_features_ros/data/weights`` used when ``weights`` is empty.
    shipped_weights: ClassVar[str | None] = None
    #: This method's own config keys and defaults (a shared key may appear with another default);
    #: the keys of ``ExtractorConfig`` and of base methods are inherited. ``config_class`` is made
    #: from it when the class is defined.
    default_conf: ClassVar[Mapping[str, Any]] = {}
    #: One line per method-specific key (node parameter descriptions, parameter file comments).
    conf_help: ClassVar[Mapping[str, str]] = {}
    #: The typed, frozen config of this method (``self.conf`` is one).
    config_class: ClassVar[type[ExtractorConfig]] = ExtractorConfig
    #: Node defaults that differ from ``default_conf``: a live camera needs the frame rate more
    #: than an offline ``extract``/``match`` needs the last keypoint (e.g. XFeat's matching cost
    #: grows with the square of the keypoint count). Empty = the same defaults everywhere.
    node_conf: ClassVar[dict[str, Any]] = {}
    #: ``VerifyConfig`` fields the node's frame-to-frame verification uses for this method
    #: (e.g. a RANSAC threshold that fits how precisely its keypoints are localised).
    node_verify: ClassVar[dict[str, Any]] = {}
    #: keys that may change while running (node runtime parameters); others need a rebuild.
    runtime_keys: ClassVar[frozenset[str]] = ExtractorConfig.runtime_keys
    input_channels: ClassVar[int] = 1  # 1 = gray, 3 = RGB
    multiple_of: ClassVar[int] = 1  # network input size constraint
    #: wrapper keys official checkpoints use around the state dict (e.g. D2-Net's 'model').
    checkpoint_wrapper_keys: ClassVar[tuple[str, ...]] = ()
    is_learned: ClassVar[bool] = True
    #: Network parts that ``backend`` may run outside torch, by name (``NetworkDecl``); the
    #: extractor calls each through ``call_network(name, ...)``. Empty = torch only.
    networks: ClassVar[dict[str, NetworkDecl]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check = cls.__dict__.get("validate_conf")
        if callable(check) and not isinstance(check, (classmethod, staticmethod)):
            # Written as a plain method: validation reads class attributes only, so it runs
            # on the class (``checked_conf`` needs no instance).
            cls.validate_conf = classmethod(check)  # type: ignore[method-assign]
        # the nearest base method's config: its keys and defaults are inherited
        parent = next(b.__dict__["config_class"] for b in cls.__mro__[1:]
                      if "config_class" in b.__dict__)
        cls.config_class = make_config(
            f"{cls.__name__}Config", cls.__dict__.get("default_conf", {}), parent,
            owner=f"method '{cls.name}'", runtime_keys=cls.runtime_keys,
            key_info={k: KeyInfo(str(h)) for k, h in cls.__dict__.get("conf_help", {}).items()},
            namespace={"extractor": cls})

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **conf: Any):
        super().__init__()
        self.conf: ExtractorConfig = self.config_class.create(conf)
        self.precision = check_precision(precision)
        self._device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        self.weights_source: str = "random"
        #: network name -> backend runner (``attach_network_runners``; empty = torch)
        self._network_runners: dict[str, Any] = {}

    # ------------------------------------------------------------------ declaration
    @classmethod
    def default_weights(cls, conf: Mapping[str, Any] | None = None) -> Path | None:
        """Weights used when ``weights`` is empty (``conf``: the user's settings, for methods whose
        file depends on a key). Raise ``FileNotFoundError`` with the reason when they should exist
        but do not; return ``None`` when the method ships none."""
        if not cls.shipped_weights:
            return None
        p = PACKAGE_WEIGHTS_DIR / cls.shipped_weights
        return p if p.is_file() else None

    # ------------------------------------------------------------------ config
    @classmethod
    def full_default_conf(cls) -> dict[str, Any]:
        """Every key of this method with its default (shared keys first), builtin types."""
        return cls.config_class.defaults()

    @classmethod
    def method_keys(cls) -> list[str]:
        """The method-specific keys (not ``ExtractorConfig``'s), in declaration order."""
        return [k for k in cls.config_class.field_defaults() if k not in ExtractorConfig.key_names()]

    @classmethod
    def node_default_conf(cls) -> dict[str, Any]:
        """The node's defaults: ``full_default_conf`` with ``node_conf`` on top (the parameter
        table and ``config/<method>.yaml`` show these), checked like any user value."""
        return cls.config_class.create(cls.node_conf).to_dict()

    @classmethod
    def checked_conf(cls, conf: Mapping[str, Any]) -> dict[str, Any]:
        """The merged, cast and validated config ``__init__`` would use, without building the
        network or reading weights (the command line checks ``--set`` before any file work)."""
        return cls.config_class.check(conf)

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
        """Range checks on a complete config mapping; subclasses extend it (a classmethod: no
        instance is needed). Raise ``ConfigError`` with the reason."""
        if int(conf["max_keypoints"]) < -1 or int(conf["max_keypoints"]) == 0:
            raise ConfigError("max_keypoints must be -1 (all) or a positive number")
        if int(conf["nms_radius"]) < 0:
            raise ConfigError("nms_radius must be >= 0")
        if int(conf["remove_borders"]) < 0:
            raise ConfigError("remove_borders must be >= 0")
        if int(conf["resize_max_edge"]) < 0:
            raise ConfigError("resize_max_edge must be >= 0 (0 = native size)")
        backend = conf.get("backend", "torch")
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
        if backend != "torch" and not cls.networks:
            raise ConfigError(f"method '{cls.name}' has no exportable network: backend must be "
                              f"'torch' (got '{backend}')")

    def update_conf(self, **changes: Any) -> None:
        """Apply runtime-changeable keys atomically (all validated before any is applied)."""
        self.conf = self.conf.update_runtime(changes)

    # ------------------------------------------------------------------ device / precision
    @property
    def device(self) -> torch.device:
        return self._device

    def setup(self) -> "Extractor":
        """Move to the configured device, eval mode, and memory format for speed."""
        self.to(self._device).eval()
        if self._device.type == "cpu" or self.use_reduced_precision:
            self.to(memory_format=torch.channels_last)
        return self

    # ------------------------------------------------------------------ network parts
    def attach_network_runners(self, runners: Mapping[str, Any]) -> "Extractor":
        """Run the named network parts in a backend from now on (``runners``: part name ->
        callable returning fp32 tensors on this device; ``registry.build_extractor`` makes them
        with ``backends.create_runners`` for a ``backend`` other than torch). Empty = torch."""
        unknown = sorted(set(runners) - set(self.networks))
        if unknown:
            raise KeyError(f"method '{self.name}' declares no network '{unknown[0]}' "
                           f"(declared: {', '.join(self.networks) or 'none'})")
        self._network_runners = dict(runners)
        return self

    @property
    def backend(self) -> str:
        """What runs the network parts: ``torch`` or the backend of the attached runners."""
        return str(self.conf.get("backend", "torch")) if self._network_runners else "torch"

    def network_callable(self, name: str) -> Any:
        """The torch callable of network part ``name`` (``networks[name].call``)."""
        decl = self.networks.get(name)
        if decl is None:
            raise KeyError(f"method '{self.name}' declares no network '{name}' "
                           f"(declared: {', '.join(self.networks) or 'none'})")
        return getattr(self, decl.call)

    def call_network(self, name: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run network part ``name``: in torch (under the caller's autocast), or in the
        configured backend (fp32 outputs on this extractor's device). Always a tuple."""
        runner = self._network_runners.get(name)
        if runner is not None:
            return runner(*inputs)
        out = self.network_callable(name)(*inputs)
        return out if isinstance(out, tuple) else (out,)

    def run_image_network(self, name: str, image: torch.Tensor,
                          channels_last: bool = False) -> tuple[torch.Tensor, ...]:
        """Run image network part ``name`` as inference wants it: in the backend as is, or in
        torch under ``precision``'s autocast, in channels_last when ``setup()`` put the weights
        in that layout (an input in the other layout would be converted on every conv)."""
        if self._network_runners:  # exported network in onnxruntime / OpenVINO / TensorRT
            return self.call_network(name, image)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            return self.call_network(name, image)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype the network runs in under ``autocast()`` (``device.precision_dtype``; a
        method whose maxima move in reduced precision overrides it, e.g. DISK)."""
        return precision_dtype(self.precision, self._device)

    @property
    def use_reduced_precision(self) -> bool:
        return self.autocast_dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``autocast_dtype`` (fp16 on a CPU runs as bf16: ``device.autocast_context``)."""
        return autocast_context(self.autocast_dtype, self._device)

    # ------------------------------------------------------------------ weights
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map an official layout to this module's keys (identity by default)."""
        return state

    def load_weights(self, path: str, checkpoint: Mapping[str, Any] | None = None) -> "Extractor":
        """Strictly load a local checkpoint (``checkpoint``: already read from ``path``)."""
        ckpt = load_checkpoint(path) if checkpoint is None else checkpoint
        state = self.adapt_state_dict(unwrap_state_dict(ckpt, self.checkpoint_wrapper_keys))
        check_state_dict(self, state, source=str(path))
        self.load_state_dict(state, strict=True)
        self.on_weights_loaded(ckpt)
        self.weights_source = str(path)
        return self

    def on_weights_loaded(self, ckpt: Mapping[str, Any]) -> None:
        """Hook for checkpoints carrying more than tensors (e.g. DELF's PCA)."""

    # ------------------------------------------------------------------ inference
    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, ResizeInfo]:
        return prepare_image(image, self.input_channels, int(self.conf["resize_max_edge"]),
                             self.multiple_of, device=self._device)

    @torch.inference_mode()
    def extract(self, image: np.ndarray) -> Features:
        """Numpy image ``(H, W)`` gray or ``(H, W, 3)`` RGB (uint8, uint16 or float [0, 1]) ->
        ``Features`` in original pixels, float32, on this extractor's device."""
        tensor, info = self.prepare(image)
        feats = self._extract(tensor)
        return self.finish(feats, info)

    def finish(self, feats: Features, info: ResizeInfo) -> Features:
        """Top-k by score, fp32, and back to original pixels (scales follow the resize)."""
        feats = feats.float()
        k = int(self.conf["max_keypoints"])
        if k > 0 and len(feats) > k:
            feats = feats.select(torch.topk(feats.scores, k).indices)
        kpts = info.to_original(feats.keypoints)
        return Features(
            keypoints=kpts,
            scores=feats.scores,
            descriptors=feats.descriptors,
            scales=feats.scales * info.mean_scale,
            orientations=feats.orientations,
            image_size=info.orig_size,
            extra=feats.extra,
        )

    def _extract(self, image: torch.Tensor) -> Features:
        """``(1, C, H, W)`` in [0, 1] -> Features in network-input pixels."""
        raise NotImplementedError

    @property
    def descriptor_dim(self) -> int:
        raise NotImplementedError


#: The shared keys are checked by the base rules too (a config made from ``ExtractorConfig``).
ExtractorConfig.extractor = Extractor


def coerce_value(key: str, value: Any, default: Any) -> Any:
    """``config.coerce`` (the one coercion), under the name plugins and scripts import."""
    return coerce(key, value, default)
