"""One ``--set KEY=VALUE`` vocabulary for the node and every command (no torch, no ROS here).

Why: a setting must have one name wherever a user types it -- ``--set`` of every command, the
node's parameters, its YAML files -- although the Python API names some differently (the config
key ``resize_max_edge``, and ``weights``/``device``/``precision`` are arguments of
``build_extractor``, not config keys). The node's parameter names are the canonical ones; this
module translates them to what the Python API takes, and is the one table both sides read
(``ros/params.py`` names its parameters with it):

=====================  ========================================================================
node parameter         Python API (``build_extractor``)
=====================  ========================================================================
``weights``            argument ``weights`` (path | ``random`` | empty = the method's default)
``device``             argument ``device`` (auto | cpu | cuda | cuda:N)
``precision``          argument ``precision`` (fp32 | fp16 | bf16 | auto)
``resize.max_edge``    config key ``resize_max_edge``
``max_keypoints`` ...  config key of the same name (``detection_threshold``, ``nms_radius``,
                       ``remove_borders``, ``backend``)
``extractor.<key>``    method config key ``<key>`` (``extractor.model`` -> ``model``)
``matcher.type``       matcher name (``build_matcher``; ``match``/``evaluate``: ``--matcher``)
``matcher.<key>``      ``nn`` matcher config key (``mutual``, ``ratio``, ``max_distance``)
``matcher.lightglue.`` ``lightglue`` matcher config key (``matcher.lightglue.weights`` ...)
``verify.<field>``     ``VerifyConfig`` field (``verify.ransac_threshold`` -> ``threshold_px``)
=====================  ========================================================================

The command line also accepts the Python API's spellings as aliases (``resize_max_edge``, a bare
method key such as ``model``), but prints and documents the node's. Matcher and verification
settings apply where a command matches (``match``; ``evaluate`` takes the matcher ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Container, Iterable

from .config import split_setting
from .conventions import ConfigError

__all__ = ["BUILD_ARGUMENTS", "EXTRACTOR_PREFIX", "LIGHTGLUE_PREFIX", "MATCHER_PREFIX",
           "NODE_ONLY_PREFIXES", "RENAMED_KEYS", "VERIFY_FIELDS", "VERIFY_PREFIX", "Settings",
           "canonical_name", "config_key", "in_node_terms", "node_name", "parse_set_items",
           "translate_settings"]

#: Extractor config keys whose node parameter name differs: config key -> node parameter.
RENAMED_KEYS: dict[str, str] = {"resize_max_edge": "resize.max_edge"}

#: Node parameter -> extractor config key, for the renamed keys.
_CONFIG_KEYS: dict[str, str] = {node: key for key, node in RENAMED_KEYS.items()}

#: Prefix of method-specific extractor keys (node ``extractor.nms`` -> config key ``nms``).
EXTRACTOR_PREFIX = "extractor."

#: Node parameters that are arguments of ``build_extractor``, not extractor config keys.
BUILD_ARGUMENTS: tuple[str, ...] = ("weights", "device", "precision")

#: Node parameters of the frame-to-frame matcher: ``matcher.type``, the ``nn`` matcher's keys
#: (``matcher.ratio`` ...) and the LightGlue matcher's (``matcher.lightglue.filter_threshold``).
MATCHER_PREFIX = "matcher."
LIGHTGLUE_PREFIX = "matcher.lightglue."

#: Node parameters of the geometric verification (``geometry.VerifyConfig`` fields).
VERIFY_PREFIX = "verify."
#: ``verify.<name>`` whose ``VerifyConfig`` field has another name.
VERIFY_FIELDS: dict[str, str] = {"ransac_threshold": "threshold_px"}

#: Prefixes of node parameters that only the node has (its inputs, outputs and keyframe
#: database): no command takes them.
NODE_ONLY_PREFIXES: tuple[str, ...] = ("place_recognition.", "qos.", "relative_motion.")


def config_key(name: str) -> str:
    """A ``--set`` name (node spelling or alias) -> the extractor config key it sets."""
    if name in _CONFIG_KEYS:
        return _CONFIG_KEYS[name]
    if name.startswith(EXTRACTOR_PREFIX):
        return name[len(EXTRACTOR_PREFIX):]
    return name


def node_name(key: str, shared: Container[str]) -> str:
    """An extractor config key -> its node parameter name (the documented spelling).

    ``shared``: the keys every method has (``ExtractorConfig`` of ``extractors/base.py``);
    any other key is method-specific and gets ``extractor.``."""
    if key in RENAMED_KEYS:
        return RENAMED_KEYS[key]
    return key if key in shared or key in BUILD_ARGUMENTS else EXTRACTOR_PREFIX + key


def canonical_name(name: str, shared: Container[str]) -> str:
    """Any accepted spelling -> the node's (``resize_max_edge`` -> ``resize.max_edge``,
    ``model`` -> ``extractor.model``, ``max_keypoints`` stays)."""
    if name in BUILD_ARGUMENTS:
        return name
    return node_name(config_key(name), shared)


def in_node_terms(message: str) -> str:
    """Rewrite the renamed config keys in a message of the extractor's config checks into the
    node's names, so a command-line user reads the name they typed (``resize_max_edge must be
    >= 0`` -> ``resize.max_edge must be >= 0``)."""
    for key, node in RENAMED_KEYS.items():
        message = re.sub(rf"(?<![\w.]){re.escape(key)}(?![\w.])", node, message)
    return message


@dataclass
class Settings:
    """``--set`` items sorted by where they go; values stay strings (the receiver casts them).

    ``build``: ``weights``/``device``/``precision`` (arguments of ``build_extractor``); ``conf``:
    extractor config keys; ``spelled``: per build argument or config key, the name the user
    typed (for messages); ``matcher_type``, ``matcher`` (matcher name -> its config keys) and
    ``verify`` (``VerifyConfig`` fields) for the commands that match."""

    build: dict[str, str] = field(default_factory=dict)
    conf: dict[str, str] = field(default_factory=dict)
    spelled: dict[str, str] = field(default_factory=dict)
    matcher_type: str | None = None
    matcher: dict[str, dict[str, str]] = field(default_factory=dict)
    verify: dict[str, str] = field(default_factory=dict)

    def matching_names(self) -> list[str]:
        """The matcher/verification settings given, in node spelling (for refusals)."""
        names = ["matcher.type"] if self.matcher_type is not None else []
        for kind, keys in self.matcher.items():
            prefix = LIGHTGLUE_PREFIX if kind == "lightglue" else MATCHER_PREFIX
            names += [prefix + k for k in keys]
        fields = {f: n for n, f in VERIFY_FIELDS.items()}
        return names + [VERIFY_PREFIX + fields.get(f, f) for f in self.verify]


def translate_settings(items: Iterable[tuple[str, str]]) -> Settings:
    """``[(name, value), ...]`` in node spelling (or an accepted alias) -> ``Settings``.

    A later item overrides an earlier one of the same name (as repeated node overrides do); the
    same setting under two spellings (``resize.max_edge`` and ``resize_max_edge``) is refused,
    since which one wins would be a guess. Whether a key exists for the method (or matcher) is
    checked by the caller, which knows it."""
    out = Settings()
    for name, value in items:
        if name.startswith(NODE_ONLY_PREFIXES):
            raise ConfigError(f"'{name}' is a parameter of the node only "
                              "(local-features run/demo --set)")
        if name == MATCHER_PREFIX + "type":
            out.matcher_type = value
            continue
        if name.startswith(LIGHTGLUE_PREFIX):
            out.matcher.setdefault("lightglue", {})[name[len(LIGHTGLUE_PREFIX):]] = value
            continue
        if name.startswith(MATCHER_PREFIX):
            out.matcher.setdefault("nn", {})[name[len(MATCHER_PREFIX):]] = value
            continue
        if name.startswith(VERIFY_PREFIX):
            rest = name[len(VERIFY_PREFIX):]
            out.verify[VERIFY_FIELDS.get(rest, rest)] = value
            continue
        if name in BUILD_ARGUMENTS:
            target, key = out.build, name
        else:
            target, key = out.conf, config_key(name)
        before = out.spelled.get(key)
        if before is not None and before != name:
            raise ConfigError(f"'{before}' and '{name}' are the same setting: give it once")
        out.spelled[key] = name
        target[key] = value
    return out


def parse_set_items(items: Iterable[str]) -> Settings:
    """``--set KEY=VALUE`` items, split by the one parser (``config.split_setting``), sorted
    by ``translate_settings``."""
    return translate_settings(split_setting(item) for item in items)
