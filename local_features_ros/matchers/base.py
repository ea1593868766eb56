"""One interface for every matcher, and the registry that finds them (``build_matcher``).

Why: the node, ``local-features match``, the evaluation protocols and the demo must match the same
way, and a learned matcher (LightGlue) needs more than descriptors (keypoints, image sizes), so
they all call ``Matcher.match(feats0, feats1) -> MatchResult`` instead of ``match_descriptors``.

A matcher declares itself once, like an extractor: a ``Matcher`` subclass in a module of this
package (or of a module named by an entry point of the group ``local_features_ros.matchers``) that
sets its own ``name`` and ``summary``, and a ``config.Config`` subclass (``config_class``) that
declares its keys, their descriptions and its runtime keys, and validates them in its ``validate``
classmethod (``MatcherConfig`` of ``matching.py`` is the pattern). The registry
scans with the same helpers as the method registry (``registry.declared_classes`` /
``scan_modules``).

``MatchResult`` layout for every matcher: ``matches`` (M, 2) int64 ``[i0, i1]`` sorted by ``i0``,
``distances`` (M,) float32 (what a smaller-is-better number means is per matcher: L2 descriptor
distance for ``nn``, ``1 - match confidence`` for ``lightglue``), ``inliers`` all True (geometric
verification comes later).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from typing import Any, ClassVar, Mapping

import torch

from ..config import Config, ConfigError
from ..device import autocast_context, check_precision, precision_dtype, resolve_device
from ..types import Features, MatchResult

logger = logging.getLogger(__name__)

__all__ = ["ENTRY_POINT_GROUP", "Matcher", "available_matchers", "build_matcher",
           "get_matcher_class", "matcher_classes", "refresh"]

#: Entry-point group of plugin matchers: ``name = "package.module"`` (the module is scanned).
ENTRY_POINT_GROUP = "local_features_ros.matchers"


class Matcher:
    """Base class: subclasses set ``name``, ``summary``, ``config_class`` (a ``Config``) and
    implement ``match``. ``conf`` is the config instance; ``update_conf`` replaces it (runtime
    keys only, validated before anything changes)."""

    #: Registry name; a subclass that sets it in its own body (not starting with '_') is declared.
    name: ClassVar[str] = "base"
    #: One line for ``--help`` texts and parameter files.
    summary: ClassVar[str] = ""
    #: This matcher's settings (``config.Config``: typed, frozen, validated).
    config_class: ClassVar[type[Config]] = Config
    #: Config fields that may change while running (node runtime parameters); by default the
    #: config's ``runtime_keys``.
    runtime_keys: ClassVar[frozenset[str]] = frozenset()
    #: True when ``match`` reads keypoints and image sizes, not only descriptors.
    uses_keypoints: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "runtime_keys" not in cls.__dict__:  # declared once, on the config
            cls.runtime_keys = frozenset(cls.config_class.runtime_keys)

    def __init__(self, conf: Any = None, device: str | torch.device = "cpu",
                 precision: str = "fp32", **overrides: Any) -> None:
        self.precision = check_precision(precision)
        self._device = device if isinstance(device, torch.device) else resolve_device(str(device))
        base = conf if conf is not None else self.config_class()
        if not isinstance(base, self.config_class):
            raise ConfigError(f"matcher '{self.name}' takes a {self.config_class.__name__}, "
                              f"got {type(base).__name__}")
        self.conf = self._replace(base, overrides)

    # ------------------------------------------------------------------ config
    @classmethod
    def default_conf(cls) -> dict[str, Any]:
        return cls.config_class.defaults()

    @classmethod
    def _replace(cls, conf: Config, changes: Mapping[str, Any]) -> Config:
        """A validated copy of ``conf`` with ``changes`` (strings from the CLI are cast to the
        field's type); unknown keys and bad values raise ``ConfigError`` naming them."""
        return conf.replace(**changes)

    def update_conf(self, **changes: Any) -> None:
        """Apply runtime keys atomically (the node's parameter changes)."""
        bad = [k for k in changes if k not in self.runtime_keys]
        if bad:
            raise ConfigError(f"'{bad[0]}' cannot change at runtime for matcher '{self.name}' "
                              "(restart)")
        self.conf = self.conf.replace(**changes)
        self.on_conf_changed()

    def on_conf_changed(self) -> None:
        """Hook: push a new ``conf`` into a wrapped model."""

    # ------------------------------------------------------------------ device / precision
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The extractors' rule (``device.precision_dtype``): fp16 on CUDA / bf16 on CPUs with
        native bf16 for ``auto``, the named dtype otherwise."""
        return precision_dtype(self.precision, self._device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``autocast_dtype`` (fp16 on CPU runs as bf16, as for the extractors)."""
        return autocast_context(self.autocast_dtype, self._device)

    # ------------------------------------------------------------------ matching
    def match(self, feats0: Features, feats1: Features) -> MatchResult:
        """Correspondences ``feats0 -> feats1`` (see the module docstring for the layout)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for evaluation JSON / logs: what ran with which settings."""
        return f"{self.name} {self.conf.to_dict()}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.conf!r}, device={self._device}, " \
               f"precision={self.precision!r})"


# ---------------------------------------------------------------------------------------- registry
@functools.cache
def matcher_classes() -> dict[str, type[Matcher]]:
    """Every declared matcher, name -> class (cached; ``refresh()`` rescans)."""
    from ..registry import collect_declarations

    # The package to scan is this module's parent, always imported before it; importing it here
    # would be an import cycle (its ``__init__`` re-exports this module).
    package = sys.modules[__name__.rpartition(".")[0]]
    return collect_declarations(package, ENTRY_POINT_GROUP, Matcher, "matcher")


def refresh() -> None:
    matcher_classes.cache_clear()


def available_matchers() -> list[str]:
    return list(matcher_classes())


def get_matcher_class(type: str) -> type[Matcher]:
    cls = matcher_classes().get(str(type))
    if cls is None:
        raise ConfigError(f"unknown matcher '{type}' (available: "
                          f"{', '.join(available_matchers())})")
    return cls


def build_matcher(type: str = "nn", device: str | torch.device = "cpu", precision: str = "fp32",
                  **conf: Any) -> Matcher:
    """Build matcher ``type`` with config keys ``conf`` (the fields of its ``config_class``;
    e.g. ``build_matcher("nn", mutual=True, ratio=0.8)``,
    ``build_matcher("lightglue", features="aliked", device="cuda", precision="fp16")``).
    Configuration and weights errors raise ``ConfigError`` / ``WeightsError`` /
    ``FileNotFoundError`` with a one-line reason."""
    return get_matcher_class(type)(None, device=device, precision=precision, **conf)
