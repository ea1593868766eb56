"""The ``feature_extractor`` parameter table on a live node: declaration, start values, and
``SetParameters`` requests turned into validated ``ChangeSet``s (the rows are ``ros/params.py``).

Declaration order matters: the node-level parameters first (they name the method), then the
method's extractor keys with the method's own defaults (YAML / ``-p`` values override them), then
the frame-to-frame matcher and verification keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..conventions import PRECISIONS, ConfigError
from . import params as P


class StartupError(RuntimeError):
    """Restart-only configuration that cannot work (the node exits with status 2)."""


class NodeParameters:
    """``node``'s declared parameters: ``specs`` (name -> ``ParamSpec``) and their values."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.specs: dict[str, P.ParamSpec] = {}
        self.matcher_core_defaults: dict[str, Any] = {}
        self.method = ""  # the method that runs (``auto`` resolved)
        self.method_reason = ""  # why, when ``auto`` chose it

    def declare(self, spec: P.ParamSpec) -> None:
        """Declare with the descriptor; a YAML/``-p`` value of the wrong type or out of range
        is a startup configuration error (exit 2), not a traceback."""
        try:
            self.node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except Exception as exc:  # rclpy's InvalidParameterType/ValueException and kin
            raise StartupError(f"parameter '{spec.name}': {exc}") from exc
        self.specs[spec.name] = spec

    def value(self, name: str) -> Any:
        return self.node.get_parameter(name).value

    def declare_all(self) -> P.ChangeSet:
        """Declare the whole table, check the restart-only choices, and return every start
        value sorted by target (restart-only ones included)."""
        from ..hardware import AUTO_METHOD, choose_method
        from ..matching import MatcherConfig
        from ..registry import get_extractor_class

        for spec in P.node_specs() + P.place_recognition_specs():
            self.declare(spec)
        transport = str(self.value("input_transport"))
        if transport not in P.TRANSPORTS:
            raise StartupError(f"input_transport must be one of {P.TRANSPORTS}, got "
                               f"'{transport}'")
        if str(self.value("precision")) not in PRECISIONS:
            raise StartupError(f"precision must be one of {PRECISIONS}, got "
                               f"'{self.value('precision')}'")
        self.method = str(self.value("method"))
        if self.method == AUTO_METHOD:
            choice = choose_method(str(self.value("device")))
            self.method, self.method_reason = choice.method, choice.reason
        try:
            cls = get_extractor_class(self.method, runtime=True)
        except (ConfigError, ImportError) as exc:
            raise StartupError(str(exc)) from exc
        # The method's extractor keys with its node defaults, then matching and verification
        # (every row generated from the configs: ``params.all_specs``).
        for spec in P.all_specs(cls):
            if spec.name not in self.specs:  # the node-level rows are declared above
                self.declare(spec)
        self.matcher_core_defaults = MatcherConfig.defaults()
        # A key the table does not have (a typo in the YAML, a -p of another method) is refused
        # with the known names -- the same check `run`/`demo`/the launch file make beforehand.
        from .validate import unknown_parameters_error

        overrides = getattr(self.node, "_parameter_overrides", None) or {}
        unknown = unknown_parameters_error(cls.name, overrides, self.specs)
        if unknown:
            raise StartupError(unknown)
        mtype = str(self.value("matcher.type"))
        if mtype not in ("nn", "lightglue"):
            raise StartupError(f"matcher.type must be nn or lightglue, got '{mtype}'")
        initial, reason = P.split_changes(
            {k: dataclasses.replace(s, runtime=True) for k, s in self.specs.items()},
            {name: self.value(name) for name in self.specs}, self.matcher_core_defaults)
        if reason:
            raise StartupError(reason)
        return initial

    def split(self, parameters: list) -> tuple[P.ChangeSet, str | None]:
        """A ``SetParameters`` request by target; the second item is a rejection reason."""
        return P.split_changes(self.specs, {p.name: p.value for p in parameters},
                               self.matcher_core_defaults)

    def check(self, parameters: list, pipeline: Any) -> str | None:
        """Why the request cannot apply (None = it can): ``FeaturePipeline.check`` runs the
        core's validation on trial configs and changes nothing (no lock needed)."""
        cs, reason = self.split(parameters)
        if reason is None:
            try:
                pipeline.check(cs.extractor, cs.matcher, cs.verify, cs.lightglue)
            except (ConfigError, ValueError, TypeError) as exc:
                reason = str(exc)
        return reason
