"""How a training package declares itself: one ``TrainingSpec`` named ``TRAINING``.

Why a declaration and not a table in the ``train`` command: a method's stages and default
configs live next to its trainer, so adding a method (or a plugin trainer outside this repo)
touches one package. ``local-features train`` finds every declaration (``find_specs``) and builds
its choices, ``--stage`` help and default configs from them.

The spec holds strings only ("module:attr" targets, YAML file names), so importing a training
package to read its ``TRAINING`` imports neither torch nor the trainer; a target is imported when
its stage runs (``TrainingSpec.resolve``).

Where declarations are found:

- every package directly under ``training/`` whose ``__init__.py`` defines ``TRAINING``;
- every entry point of the group ``local_features_ros.training`` (value: ``"module:ATTR"`` naming
  a ``TrainingSpec``), so an installed plugin adds a trainer, e.g. in its ``setup.py``:
  ``entry_points={"local_features_ros.training": ["mymethod = my_pkg.training:TRAINING"]}``.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

logger = logging.getLogger(__name__)

#: entry-point group a plugin package declares its ``TrainingSpec`` under.
ENTRY_POINT_GROUP = "local_features_ros.training"


@dataclass(frozen=True)
class TrainingSpec:
    """One method's training stages.

    ``stages``: stage -> ``"module:attr"``; ``attr`` is an engine ``Task`` subclass (trained by
    ``Trainer``) or a procedure ``run(conf, out, resume) -> dict``.
    ``default_configs``: stage -> YAML file used when ``--config`` is not given (a bare file name is
    looked up in ``training/configs/``; a plugin gives an absolute path). A stage without one needs
    ``--config``.
    """

    method: str
    stages: Mapping[str, str]
    default_configs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.method or not self.stages:
            raise ValueError("TrainingSpec needs a method name and at least one stage")
        for stage, target in self.stages.items():
            module, sep, attr = target.partition(":")
            if not sep or not module or not attr:
                raise ValueError(f"training '{self.method}': stage '{stage}' target '{target}' "
                                 "must look like 'package.module:attr'")
        unknown = sorted(set(self.default_configs) - set(self.stages))
        if unknown:
            raise ValueError(f"training '{self.method}': default_configs for unknown stage(s) "
                             f"{unknown} (stages: {', '.join(self.stages)})")
        # read-only copies: a declaration cannot be changed after the fact
        object.__setattr__(self, "stages", MappingProxyType(dict(self.stages)))
        object.__setattr__(self, "default_configs", MappingProxyType(dict(self.default_configs)))

    def resolve(self, stage: str) -> Any:
        """The stage's ``Task`` class or procedure (imports its module)."""
        if stage not in self.stages:
            raise ValueError(f"unknown stage '{stage}' for method '{self.method}' "
                             f"(known: {', '.join(sorted(self.stages))})")
        module, attr = self.stages[stage].split(":")
        return getattr(importlib.import_module(module), attr)


def _package_specs() -> list[TrainingSpec]:
    """``TRAINING`` of every package directly under ``training/`` (sorted by package name).

    Relative to this package's own name: installed it is ``local_features_ros_training``; run from
    a checkout that is not installed (``python -m training.commands.train``) it is ``training``."""
    root = importlib.import_module(__package__)

    out: list[TrainingSpec] = []
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        spec = getattr(importlib.import_module(f"{__package__}.{info.name}"), "TRAINING", None)
        if isinstance(spec, TrainingSpec):
            out.append(spec)
    return out


def _entry_point_specs() -> list[TrainingSpec]:
    from importlib.metadata import entry_points

    out: list[TrainingSpec] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            spec = ep.load()
        except Exception as e:  # a broken plugin must not take the other trainers down
            logger.warning("training plugin '%s' (%s) failed to load: %s", ep.name, ep.value, e)
            continue
        if not isinstance(spec, TrainingSpec):
            logger.warning("training plugin '%s' (%s) is not a TrainingSpec, ignored",
                           ep.name, ep.value)
            continue
        out.append(spec)
    return out


def find_specs() -> dict[str, TrainingSpec]:
    """method -> its declaration: the packages of ``training`` first, then the entry points.

    Why the built-in ones win a name clash: an installed plugin must not silently replace a
    method this repository trains (it is warned about and skipped)."""
    found: dict[str, TrainingSpec] = {}
    for spec in _package_specs() + _entry_point_specs():
        if spec.method in found:
            if found[spec.method] != spec:
                logger.warning("training method '%s' declared twice; keeping the first",
                               spec.method)
            continue
        found[spec.method] = spec
    return found
