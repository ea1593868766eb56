"""The ``feature_extractor`` parameter table: names, defaults, descriptors, where values go.

Why one table: declaration (with ``ParameterDescriptor`` ranges), validation of a runtime change,
and applying it all read the same ``ParamSpec`` rows, so a parameter cannot be declared with one
range and validated against another. Restart-only parameters are declared ``read_only`` (rclpy
then refuses ``SetParameters`` on them with its own reason); YAML/``--params-file`` still sets
them at startup.

The extractor, matcher, LightGlue and verification rows are generated from their configs
(``config.Config``: defaults, types, ``runtime_keys`` and the ``key_info`` descriptions and ranges
declared next to each config; ``config_specs``), and so are the node-only rows: ``NodeConfig``
(the node's own parameters) and ``loop_closure.LoopSettings`` (``place_recognition.*``). This
module adds the names of ``settings.py`` and the ``matcher.type`` row.

Targets: ``extractor:<key>`` (an extractor config key, applied with ``Extractor.update_conf``),
``matcher:<field>`` / ``verify:<field>`` (fields of ``MatcherConfig`` / ``VerifyConfig``),
``lightglue:<field>`` (fields of ``matchers.lightglue.LightGlueConfig``, applied with
``Matcher.update_conf``), and ``node:<name>`` (read by the node itself; ``matcher.type`` is one).
"""

from __future__ import annotations

import dataclasses
import functools
import types
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)

from ..config import Config, KeyInfo
from ..conventions import DEFAULT_MAX_INPUT_PIXELS, DEFAULT_METHOD, PRECISIONS, ConfigError
from ..extractors.base import ExtractorConfig
from ..pipeline import check_extractor_changes, replace_fields
from ..registry import available_methods
# The one vocabulary of node names <-> config keys, shared with the command line: RENAMED_KEYS
# (config key -> node name), EXTRACTOR_PREFIX (``extractor.nms`` -> ``nms``), the matcher and
# verification prefixes, VERIFY_FIELDS (``verify.ransac_threshold`` -> ``threshold_px``).
from ..settings import (EXTRACTOR_PREFIX, LIGHTGLUE_PREFIX, MATCHER_PREFIX, RENAMED_KEYS,
                        VERIFY_FIELDS, VERIFY_PREFIX)

DEVICES_HELP = "auto | cpu | cuda | cuda:N"
TRANSPORTS = ("raw", "compressed")



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
class NodeConfig(Config):
    """The ``feature_extractor`` node's own parameters, those that do not depend on the method
    (read before the extractor is built). Keys are identifiers; ``NODE_NAMES`` gives the
    dotted parameter names of the nested ones."""

    owner: ClassVar[str] = "feature_extractor"
    runtime_keys: ClassVar[frozenset[str]] = frozenset(
        {"publish_overlay", "process_every_frame", "max_input_pixels", "watchdog_timeout"})
    key_info: ClassVar[Mapping[str, KeyInfo]] = {
        "method": KeyInfo("feature method (registry name)"),  # + the names (``node_specs``)
        "weights": KeyInfo("local weights file (official or project checkpoint); empty = the "
                           "package's shipped weights; 'random' = untrained (tests)"),
        "device": KeyInfo(f"inference device ({DEVICES_HELP})"),
        "precision": KeyInfo("inference precision (auto: fp16 on CUDA, bf16 on CPUs with "
                             "native bf16, else fp32)", choices=PRECISIONS),
        "input_transport": KeyInfo("raw: subscribe 'image' (sensor_msgs/Image); compressed: "
                                   "subscribe 'image/compressed' (CompressedImage)",
                                   choices=TRANSPORTS),
        "qos_depth": KeyInfo("input subscription depth (KEEP_LAST); best effort by default, "
                             "both overridable with qos_overrides", int_range=(1, 1000)),
        "qos_output_depth": KeyInfo("output publisher depth (reliable, KEEP_LAST)",
                                    int_range=(1, 1000)),
        "queue_size": KeyInfo("bounded frame queue used when process_every_frame is true; a "
                              "full queue drops the newest frame and counts it",
                              int_range=(1, 100000)),
        "relative_motion_child_frame_suffix": KeyInfo(
            "~/relative_motion: header.frame_id = camera frame of the previous processed "
            "image, child_frame_id = current image frame_id + this suffix"),
        "publish_overlay": KeyInfo("draw ~/overlay (only while someone subscribes)"),
        "process_every_frame": KeyInfo("true: queue every frame (bag replay); false: latest "
                                       "frame only, stale frames dropped (live)"),
        "max_input_pixels": KeyInfo("reject larger images (bad input 'too_large') before "
                                    "decoding", int_range=(1, 1 << 31)),
        "watchdog_timeout": KeyInfo("warn (with topic names and QoS) when no image arrived "
                                    "for this many seconds; 0 = off",
                                    float_range=(0.0, 3600.0)),
        "diagnostic_period": KeyInfo("seconds between /diagnostics messages",
                                     float_range=(0.05, 60.0)),
    }

    method: str = DEFAULT_METHOD
    weights: str = ""
    device: str = "auto"
    precision: str = "auto"
    input_transport: str = "raw"
    qos_depth: int = 1
    qos_output_depth: int = 5
    queue_size: int = 100
    relative_motion_child_frame_suffix: str = "_current"
    publish_overlay: bool = True
    process_every_frame: bool = False
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS
    watchdog_timeout: float = 5.0
    diagnostic_period: float = 1.0


#: ``NodeConfig`` key -> parameter name, where they differ (nested YAML sections).
NODE_NAMES = {"qos_depth": "qos.depth", "qos_output_depth": "qos.output_depth",
              "relative_motion_child_frame_suffix": "relative_motion.child_frame_suffix"}


def node_specs() -> list[ParamSpec]:
    """One row per ``NodeConfig`` key (target ``node:<parameter name>``); the ``method`` row
    lists the registry's node methods."""
    methods = ", ".join(available_methods(include_evaluation_only=False))
    out = []
    for spec in config_specs(NodeConfig, "node", names=NODE_NAMES):
        extra = {"description": f"{spec.description}: {methods}"} if spec.name == "method" else {}
        out.append(dataclasses.replace(spec, target="node:" + spec.name, **extra))
    return out


#: Prefix of the place-recognition parameters (keyframe database, ``~/loop_candidates``).
PLACE_RECOGNITION_PREFIX = "place_recognition."


def place_recognition_specs() -> list[ParamSpec]:
    """Keyframe database parameters, one per key of ``loop_closure.LoopSettings`` (its
    defaults, descriptions, ranges and runtime keys); off by default. The node reads them
    itself (target ``node:place_recognition.<key>``)."""
    from ..loop_closure import LoopSettings

    return [dataclasses.replace(s, target="node:" + s.name)
            for s in config_specs(LoopSettings, "node", PLACE_RECOGNITION_PREFIX)]


def config_specs(config: Config | type[Config], kind: str, prefix: str = "",
                 names: Mapping[str, str] | None = None, keys: Iterable[str] | None = None,
                 values: Mapping[str, Any] | None = None,
                 runtime_keys: Iterable[str] | None = None) -> list[ParamSpec]:
    """One row per key of ``config`` (a ``Config`` class or instance): name ``prefix`` + the
    key (or its ``names`` spelling), the default (``values``, else the instance's values or the
    class's defaults), the key's ``KeyInfo`` (description, range, choices), runtime when the key
    is in ``runtime_keys`` (default: the config's), target ``kind:key``. Keys marked
    ``parameter=False`` and values ROS cannot type (None, empty lists) are left out."""
    cls = config if isinstance(config, type) else type(config)
    if values is None:
        values = config.to_dict() if isinstance(config, Config) else cls.defaults()
    rk = set(cls.runtime_keys if runtime_keys is None else runtime_keys)
    out = []
    for key in (cls.key_names() if keys is None else keys):
        info = cls.key_info.get(key, KeyInfo())
        value = values[key]
        if isinstance(value, tuple):
            value = list(value)
        if not info.parameter or ros_type(value) == ParameterType.PARAMETER_NOT_SET:
            continue
        out.append(ParamSpec(prefix + (names or {}).get(key, key), value,
                             info.description or f"method-specific key '{key}'", key in rk,
                             f"{kind}:{key}", info.int_range, info.float_range, info.choices))
    return out


def shared_extractor_specs(defaults: Mapping[str, Any], runtime_keys: Iterable[str]
                           ) -> list[ParamSpec]:
    """Keys every method has (``ExtractorConfig``; docs/ARCHITECTURE.md, "Contracts") with the
    method's own ``defaults`` and ``runtime_keys``."""
    return config_specs(ExtractorConfig, "extractor", names=RENAMED_KEYS,
                        values={k: defaults.get(k, v)
                                for k, v in ExtractorConfig.defaults().items()},
                        runtime_keys=runtime_keys)


def method_specs(default_conf: Mapping[str, Any], runtime_keys: Iterable[str],
                 config_class: type[Config] | None = None) -> list[ParamSpec]:
    """Method-specific keys of ``default_conf`` as ``extractor.<key>`` (described by
    ``config_class``'s ``key_info`` when given; values ROS cannot type are skipped)."""
    keys = [k for k in default_conf if k not in ExtractorConfig.key_names()]
    cls = config_class
    if cls is None:  # no config class given: the keys as they are, undescribed
        from ..config import make_config

        cls = make_config("MethodKeys", {k: default_conf[k] for k in keys}, Config)
    return config_specs(cls, "extractor", EXTRACTOR_PREFIX, keys=keys, values=default_conf,
                        runtime_keys=runtime_keys)


def extractor_specs(cls: Any) -> list[ParamSpec]:
    """Every extractor row of method class ``cls``, with its node defaults
    (``Extractor.node_default_conf``)."""
    node_conf = cls.node_default_conf()
    return (shared_extractor_specs(node_conf, cls.runtime_keys)
            + method_specs(node_conf, cls.runtime_keys, cls.config_class))


def matcher_specs(matcher_conf: Any) -> list[ParamSpec]:
    """``matcher.*`` from a ``MatcherConfig`` (its defaults and descriptions)."""
    return config_specs(matcher_conf, "matcher", MATCHER_PREFIX)


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
    """``matcher.lightglue.*`` from a ``LightGlueConfig`` (``features`` is not a parameter: the
    node passes its ``method``). Used only with ``matcher.type: lightglue``."""
    from ..matchers.lightglue import LightGlueConfig

    return config_specs(LightGlueConfig() if lightglue_conf is None else lightglue_conf,
                        "lightglue", LIGHTGLUE_PREFIX)


def method_lightglue_conf(cls: Any) -> Any:
    """The node's ``LightGlueConfig`` defaults for extractor class ``cls`` (``None``: LightGlue's
    own): the settings that belong to the method's released LightGlue file."""
    from ..matchers.lightglue import lightglue_defaults

    return lightglue_defaults(cls.name if cls is not None else "")


def method_verify_conf(cls: Any) -> Any:
    """The node's ``VerifyConfig`` defaults for extractor class ``cls`` (``None``: the
    method-independent defaults): the defaults with the method's ``node_verify``."""
    from ..geometry import VerifyConfig

    return VerifyConfig.create(getattr(cls, "node_verify", {}) if cls is not None else {})


def verify_specs(verify_conf: Any) -> list[ParamSpec]:
    """``verify.*`` from a ``VerifyConfig`` (``threshold_px`` is ``verify.ransac_threshold``)."""
    return config_specs(verify_conf, "verify", VERIFY_PREFIX,
                        names={f: n for n, f in VERIFY_FIELDS.items()})


def all_specs(cls: Any) -> list[ParamSpec]:
    """Every parameter the node declares for method class ``cls``, in declaration order."""
    from ..matching import MatcherConfig

    return (node_specs() + place_recognition_specs() + extractor_specs(cls)
            + matcher_specs(MatcherConfig()) + matcher_type_specs()
            + lightglue_specs(method_lightglue_conf(cls)) + verify_specs(method_verify_conf(cls)))


@functools.cache
def node_defaults() -> Mapping[str, Any]:
    """Node-only parameter -> default, read-only (what the node reads itself: the ``node:``
    targets); the one place these defaults are written is the rows above."""
    specs = node_specs() + place_recognition_specs() + matcher_type_specs()
    return types.MappingProxyType({s.target.partition(":")[2]: s.default for s in specs})


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
