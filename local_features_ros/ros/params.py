"""The ``feature_extractor`` parameter table: names, defaults, descriptors, where values go.

Why one table: declaration (with ``ParameterDescriptor`` ranges), validation of a runtime change,
and applying it all read the same ``ParamSpec`` rows, so a parameter cannot be declared with one
range and validated against another. Restart-only parameters are declared ``read_only`` (rclpy
then refuses ``SetParameters`` on them with its own reason); YAML/``--params-file`` still sets
them at startup.

Targets: ``extractor:<key>`` (an extractor config key, applied with ``Extractor.update_conf``),
``matcher:<field>`` / ``verify:<field>`` (fields of ``MatcherConfig`` / ``VerifyConfig``),
``lightglue:<field>`` (fields of ``matchers.lightglue.LightGlueConfig``, applied with
``Matcher.update_conf``), and ``node:<name>`` (read by the node itself; ``matcher.type`` is one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)

from ..conventions import DEFAULT_METHOD, PRECISIONS, ConfigError
from ..extractors.base import BACKENDS, SHARED_DEFAULTS
from ..pipeline import check_extractor_changes, replace_fields
from ..registry import available_methods
# The one vocabulary of node names <-> extractor config keys, shared with the command line:
# RENAMED_KEYS (config key -> node name), EXTRACTOR_PREFIX (``extractor.nms`` -> ``nms``).
from ..settings import EXTRACTOR_PREFIX, RENAMED_KEYS

DEVICES_HELP = "auto | cpu | cuda | cuda:N"
TRANSPORTS = ("raw", "compressed")

#: Images with more pixels than this are rejected before decoding (an 8k frame would stall the
#: worker for seconds and is almost always a misconfigured driver).
DEFAULT_MAX_INPUT_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: ROS name, default, help text, and where its value is applied."""

    name: str
    default: Any
    description: str
    runtime: bool
    target: str
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, type=ros_type(self.default),
                                description=self.description, read_only=not self.runtime)
        constraints = []
        if self.choices:
            constraints.append("one of: " + ", ".join(self.choices))
        if not self.runtime:
            constraints.append("restart-only")
        d.additional_constraints = "; ".join(constraints)
        if self.int_range is not None:
            d.integer_range = [IntegerRange(from_value=self.int_range[0],
                                            to_value=self.int_range[1], step=1)]
        if self.float_range is not None:
            d.floating_point_range = [FloatingPointRange(from_value=float(self.float_range[0]),
                                                         to_value=float(self.float_range[1]),
                                                         step=0.0)]
        return d


def ros_type(value: Any) -> int:
    if isinstance(value, bool):
        return ParameterType.PARAMETER_BOOL
    if isinstance(value, int):
        return ParameterType.PARAMETER_INTEGER
    if isinstance(value, float):
        return ParameterType.PARAMETER_DOUBLE
    if isinstance(value, str):
        return ParameterType.PARAMETER_STRING
    if isinstance(value, (list, tuple)) and value:
        first = value[0]
        if isinstance(first, bool):
            return ParameterType.PARAMETER_BOOL_ARRAY
        if isinstance(first, int):
            return ParameterType.PARAMETER_INTEGER_ARRAY
        if isinstance(first, float):
            return ParameterType.PARAMETER_DOUBLE_ARRAY
        return ParameterType.PARAMETER_STRING_ARRAY
    return ParameterType.PARAMETER_NOT_SET


# ----------------------------------------------------------------------------------- table
def node_specs() -> list[ParamSpec]:
    """Parameters that do not depend on the method (read before the extractor is built)."""
    return [
        ParamSpec("method", DEFAULT_METHOD, "feature method (registry name): "
                  + ", ".join(available_methods(include_evaluation_only=False)), False,
                  "node:method"),
        ParamSpec("weights", "", "local weights file (official or project checkpoint); empty = "
                  "the package's shipped weights; 'random' = untrained (tests)", False,
                  "node:weights"),
        ParamSpec("device", "auto", f"inference device ({DEVICES_HELP})", False, "node:device"),
        ParamSpec("precision", "auto", "inference precision (auto: fp16 on CUDA, bf16 on CPUs "
                  "with native bf16, else fp32)", False, "node:precision",
                  choices=PRECISIONS),
        ParamSpec("input_transport", "raw", "raw: subscribe 'image' (sensor_msgs/Image); "
                  "compressed: subscribe 'image/compressed' (CompressedImage)", False,
                  "node:input_transport", choices=TRANSPORTS),
        ParamSpec("qos.depth", 1, "input subscription depth (KEEP_LAST); best effort by "
                  "default, both overridable with qos_overrides", False, "node:qos.depth",
                  int_range=(1, 1000)),
        ParamSpec("qos.output_depth", 5, "output publisher depth (reliable, KEEP_LAST)", False,
                  "node:qos.output_depth", int_range=(1, 1000)),
        ParamSpec("queue_size", 100, "bounded frame queue used when process_every_frame is "
                  "true; a full queue drops the newest frame and counts it", False,
                  "node:queue_size", int_range=(1, 100000)),
        ParamSpec("relative_motion.child_frame_suffix", "_current", "~/relative_motion: "
                  "header.frame_id = camera frame of the previous processed image, "
                  "child_frame_id = current image frame_id + this suffix", False,
                  "node:relative_motion.child_frame_suffix"),
        ParamSpec("publish_overlay", True, "draw ~/overlay (only while someone subscribes)",
                  True, "node:publish_overlay"),
        ParamSpec("process_every_frame", False, "true: queue every frame (bag replay); false: "
                  "latest frame only, stale frames dropped (live)", True,
                  "node:process_every_frame"),
        ParamSpec("max_input_pixels", DEFAULT_MAX_INPUT_PIXELS, "reject larger images (bad "
                  "input 'too_large') before decoding", True, "node:max_input_pixels",
                  int_range=(1, 1 << 31)),
        ParamSpec("watchdog_timeout", 5.0, "warn (with topic names and QoS) when no image "
                  "arrived for this many seconds; 0 = off", True, "node:watchdog_timeout",
                  float_range=(0.0, 3600.0)),
        ParamSpec("diagnostic_period", 1.0, "seconds between /diagnostics messages", False,
                  "node:diagnostic_period", float_range=(0.05, 60.0)),
    ]


#: Prefix of the place-recognition parameters (keyframe database, ``~/loop_candidates``).
PLACE_RECOGNITION_PREFIX = "place_recognition."


def place_recognition_specs() -> list[ParamSpec]:
    """Keyframe database parameters (``place_recognition.py``); off by default. Restart-only:
    ``enable``, ``max_keyframes``, ``database``; the rest apply to the next keyframe."""
    p = PLACE_RECOGNITION_PREFIX
    return [
        ParamSpec(p + "enable", False, "keep a keyframe database of this node's features and "
                  "publish RANSAC-verified loop candidates on ~/loop_candidates", False,
                  "node:" + p + "enable"),
        ParamSpec(p + "keyframe_every", 10, "every N-th processed frame queries the database "
                  "(then becomes a keyframe)", True, "node:" + p + "keyframe_every",
                  int_range=(1, 1_000_000)),
        ParamSpec(p + "exclude_recent", 5, "the N most recent keyframes are never candidates "
                  "(temporal neighbours are not loops)", True, "node:" + p + "exclude_recent",
                  int_range=(0, 1_000_000)),
        ParamSpec(p + "min_inliers", 60, "publish a candidate only with at least this many "
                  "RANSAC inliers (fundamental-matrix RANSAC finds 25-55 on views that do not "
                  "overlap)", True, "node:" + p + "min_inliers",
                  int_range=(0, 100_000)),
        ParamSpec(p + "top_k", 3, "at most this many candidates per query", True,
                  "node:" + p + "top_k", int_range=(1, 1000)),
        ParamSpec(p + "max_keyframes", 2000, "database size; the oldest keyframes are evicted "
                  "first", False, "node:" + p + "max_keyframes", int_range=(1, 10_000_000)),
        ParamSpec(p + "database", "", "keyframe database file (.npz): loaded at start when it "
                  "exists, saved at shutdown; empty = in memory only", False,
                  "node:" + p + "database"),
    ]


def shared_extractor_specs(defaults: Mapping[str, Any], runtime_keys: Iterable[str]
                           ) -> list[ParamSpec]:
    """Shared config keys (docs/ARCHITECTURE.md, "Contracts"); defaults are the method's own."""
    rk = set(runtime_keys)
    return [
        ParamSpec("max_keypoints", int(defaults["max_keypoints"]),
                  "keep the N best keypoints (-1 = all)", "max_keypoints" in rk,
                  "extractor:max_keypoints", int_range=(-1, 1_000_000)),
        ParamSpec("detection_threshold", float(defaults["detection_threshold"]),
                  "detector score threshold (method units; the method validates the range)",
                  "detection_threshold" in rk, "extractor:detection_threshold"),
        ParamSpec("nms_radius", int(defaults["nms_radius"]), "non-maximum suppression radius "
                  "(pixels)", "nms_radius" in rk, "extractor:nms_radius", int_range=(0, 256)),
        ParamSpec("remove_borders", int(defaults["remove_borders"]), "drop keypoints this close "
                  "to the border (pixels)", "remove_borders" in rk, "extractor:remove_borders",
                  int_range=(0, 4096)),
        ParamSpec(RENAMED_KEYS["resize_max_edge"], int(defaults["resize_max_edge"]), "resize so "
                  "the long edge is at most this before inference (0 = native); keypoints are "
                  "always published in original pixels", "resize_max_edge" in rk,
                  "extractor:resize_max_edge", int_range=(0, 16384)),
        ParamSpec("backend", str(defaults.get("backend", "torch")), "what runs the network "
                  "part: torch | onnxruntime | openvino | tensorrt (exported to ONNX on first use, "
                  "cached in $LFR_CACHE_DIR or ~/.cache/local_features_ros/onnx; post-processing "
                  "stays in torch)", "backend" in rk, "extractor:backend", choices=BACKENDS),
    ]


def method_specs(default_conf: Mapping[str, Any], runtime_keys: Iterable[str]) -> list[ParamSpec]:
    """Method-specific keys as ``extractor.<key>`` (values that ROS cannot type are skipped)."""
    rk = set(runtime_keys)
    out = []
    for key, value in default_conf.items():
        if key in SHARED_DEFAULTS:
            continue
        if isinstance(value, tuple):
            value = list(value)
        if ros_type(value) == ParameterType.PARAMETER_NOT_SET:
            continue
        out.append(ParamSpec(EXTRACTOR_PREFIX + key, value, f"method-specific key '{key}'",
                             key in rk, f"extractor:{key}"))
    return out


def matcher_specs(matcher_conf: Any) -> list[ParamSpec]:
    """``matcher.*`` from the core ``MatcherConfig`` defaults (0 means 'off' for ratio/max_distance
    when the core uses None)."""
    d = dataclasses.asdict(matcher_conf)
    return [
        ParamSpec("matcher.mutual", bool(d["mutual"]), "keep mutual nearest neighbours only",
                  True, "matcher:mutual"),
        ParamSpec("matcher.ratio", _num(d["ratio"]), "Lowe ratio test threshold (1 = off)",
                  True, "matcher:ratio", float_range=(0.0, 1.0)),
        ParamSpec("matcher.max_distance", _num(d["max_distance"]), "reject matches with a larger "
                  "descriptor L2 distance (0 = off)", True, "matcher:max_distance",
                  float_range=(0.0, 1.0e6)),
    ]


#: Prefix of the LightGlue matcher's parameters (``matcher.lightglue.depth_confidence`` ...).
LIGHTGLUE_PREFIX = "matcher.lightglue."


def matcher_type_specs() -> list[ParamSpec]:
    """``matcher.type`` (restart-only): which ``matchers`` registry entry the frontend uses."""
    from ..matchers.base import available_matchers
    from ..matchers.lightglue import RELEASED_WEIGHTS

    return [ParamSpec("matcher.type", "nn", "frame-to-frame matcher: nn (mutual NN / ratio / "
                      "max distance on L2, the matcher.* keys) | lightglue (LightGlue with released "
                      f"weights for {'/'.join(sorted(RELEASED_WEIGHTS))}, else "
                      "matcher.lightglue.weights; the matcher.lightglue.* keys)", False,
                      "node:matcher.type",
                      choices=tuple(available_matchers()))]


def lightglue_specs(lightglue_conf: Any = None) -> list[ParamSpec]:
    """``matcher.lightglue.*`` from the core ``LightGlueConfig`` defaults (``features`` is not a
    parameter: the node passes its ``method``). Used only with ``matcher.type: lightglue``."""
    from ..matchers.lightglue import RELEASED_WEIGHTS

    if lightglue_conf is None:
        from ..matchers.lightglue import LightGlueConfig

        lightglue_conf = LightGlueConfig()
    d = dataclasses.asdict(lightglue_conf)
    p = LIGHTGLUE_PREFIX
    return [
        ParamSpec(p + "weights", str(d["weights"]), "local LightGlue weights file; empty = the "
                  f"released file for the method ({', '.join(sorted(RELEASED_WEIGHTS))}); "
                  "superpoint needs one", False,
                  "lightglue:weights"),
        ParamSpec(p + "depth_confidence", float(d["depth_confidence"]), "adaptive depth: stop "
                  "early when this fraction of points is confident (<= 0 = off)", True,
                  "lightglue:depth_confidence", float_range=(-1.0, 1.0)),
        ParamSpec(p + "width_confidence", float(d["width_confidence"]), "adaptive width: prune "
                  "points confidently unmatchable (<= 0 = off)", True,
                  "lightglue:width_confidence", float_range=(-1.0, 1.0)),
        ParamSpec(p + "filter_threshold", float(d["filter_threshold"]), "minimum match "
                  "confidence", True, "lightglue:filter_threshold", float_range=(0.0, 0.999)),
        ParamSpec(p + "n_layers", int(d["n_layers"]), "transformer layers to run (<= the weights' "
                  "layers; 9 = all layers of a released file: LightGlue 9, LighterGlue 6)", False, "lightglue:n_layers",
                  int_range=(1, 64)),
        ParamSpec(p + "backend", str(d["backend"]), "what runs the LightGlue network: torch, or "
                  "its ONNX export (cached) in onnxruntime | openvino | tensorrt (full depth: "
                  "depth/width_confidence are ignored there)", False, "lightglue:backend",
                  choices=BACKENDS),
    ]


def method_lightglue_conf(cls: Any) -> Any:
    """The node's ``LightGlueConfig`` defaults for extractor class ``cls`` (``None``: LightGlue's
    own): the settings that belong to the method's released LightGlue file."""
    from ..matchers.lightglue import lightglue_defaults

    return lightglue_defaults(cls.name if cls is not None else "")


def method_verify_conf(cls: Any) -> Any:
    """The node's ``VerifyConfig`` defaults for extractor class ``cls`` (``None``: the
    method-independent defaults): ``VerifyConfig()`` with the method's ``node_verify``."""
    from ..geometry import VerifyConfig

    return VerifyConfig(**(getattr(cls, "node_verify", {}) if cls is not None else {}))


def verify_specs(verify_conf: Any) -> list[ParamSpec]:
    from ..geometry import _METHODS, MODELS

    d = dataclasses.asdict(verify_conf)
    specs = [
        ParamSpec("verify.model", str(d["model"]), "geometric verification model; auto = "
                  "essential when camera_info is known (needed for ~/relative_motion), else "
                  "fundamental", True, "verify:model", choices=tuple(MODELS)),
        ParamSpec("verify.ransac_threshold", float(d["threshold_px"]), "RANSAC inlier "
                  "threshold (pixels)", True, "verify:threshold_px", float_range=(0.01, 100.0)),
        ParamSpec("verify.confidence", float(d["confidence"]), "RANSAC confidence", True,
                  "verify:confidence", float_range=(0.5, 0.999999)),
    ]
    if "method" in d:
        specs.append(ParamSpec("verify.method", str(d["method"]), "robust estimator", True,
                               "verify:method", choices=tuple(sorted(_METHODS))))
    if "max_iters" in d:
        specs.append(ParamSpec("verify.max_iters", int(d["max_iters"]), "RANSAC iterations "
                               "limit", True, "verify:max_iters", int_range=(1, 1_000_000)))
    if "min_inliers" in d:
        specs.append(ParamSpec("verify.min_inliers", int(d["min_inliers"]), "fewer inliers = "
                               "no relative motion", True, "verify:min_inliers",
                               int_range=(0, 100_000)))
    return specs


def _num(value: Any) -> float:
    return 0.0 if value is None else float(value)


def from_ros_value(spec: ParamSpec, value: Any, core_default: Any = "unset") -> Any:
    """ROS value -> core value (0 -> None for optional matcher thresholds, arrays -> lists)."""
    if spec.target in ("matcher:ratio", "matcher:max_distance") and core_default is None:
        return None if float(value) <= 0.0 or (spec.target == "matcher:ratio"
                                                and float(value) >= 1.0) else float(value)
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return list(value)
    return value


# ----------------------------------------------------------------------------------- changes
@dataclass
class ChangeSet:
    """A validated group of parameter changes, split by where they apply."""

    extractor: dict[str, Any] = dataclasses.field(default_factory=dict)
    matcher: dict[str, Any] = dataclasses.field(default_factory=dict)
    verify: dict[str, Any] = dataclasses.field(default_factory=dict)
    node: dict[str, Any] = dataclasses.field(default_factory=dict)
    lightglue: dict[str, Any] = dataclasses.field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.extractor or self.matcher or self.verify or self.node or self.lightglue)


def split_changes(specs: Mapping[str, ParamSpec], values: Mapping[str, Any],
                  matcher_defaults: Mapping[str, Any]) -> tuple[ChangeSet, str | None]:
    """Sort ``{param name: value}`` by target; the second item is a rejection reason (or None).

    Parameters not in the table (``use_sim_time``, ``qos_overrides.*``) are ignored here.
    """
    cs = ChangeSet()
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:
            continue
        if not spec.runtime:
            return cs, f"'{name}' is restart-only"
        if spec.choices and value not in spec.choices:
            return cs, f"'{name}' must be one of {', '.join(spec.choices)} (got '{value}')"
        kind, _, field = spec.target.partition(":")
        core = from_ros_value(spec, value, matcher_defaults.get(field, "unset")
                              if kind == "matcher" else "unset")
        getattr(cs, kind)[field] = core
    return cs, None


#: The core's trial-config checks, under the names this module's callers use.
validate_extractor_changes = check_extractor_changes
validate_dataclass_changes = replace_fields
