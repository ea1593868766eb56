"""The one registry of methods, built from the methods' own declarations, and ``build_extractor``.

Why discovery instead of a table: a method declares itself once, as class attributes of its
``Extractor`` subclass (``name``, ``summary``, ``weights_note``, ``licence``, ``evaluation_only``,
``shipped_weights``). The registry imports every module or subpackage of
``local_features_ros.extractors`` and every module named by an entry point of the group
``local_features_ros.methods`` (a plugin package adds a method without touching this one), and
collects those classes. The node's parameter list, the runner's generated YAML, ``methods``,
``extract``, ``evaluate`` and ``bench`` all read the result, so nothing else has to be edited when
a method is added.
"""

from __future__ import annotations

import os

import functools
import importlib
import importlib.metadata
import logging
import pkgutil
from types import ModuleType
from typing import Any, Mapping

from .extractors.base import ConfigError, Extractor
from .weights import (PACKAGE_WEIGHTS_DIR, WeightsError, is_project_checkpoint, load_checkpoint,
                      unwrap_state_dict)

logger = logging.getLogger(__name__)

__all__ = [
    "ENTRY_POINT_GROUP", "PACKAGE_WEIGHTS_DIR", "RANDOM_WEIGHTS", "attach_backend",
    "available_methods", "build_extractor", "collect_declarations", "declared_classes",
    "default_weights", "exportable_methods", "get_extractor_class", "method_classes", "refresh",
    "weights_method",
]

#: Entry-point group of plugin methods: ``name = "package.module"`` (the module is scanned).
ENTRY_POINT_GROUP = "local_features_ros.methods"

#: ``weights: random`` builds an untrained network (tests, training from scratch).
RANDOM_WEIGHTS = "random"


def declared_classes(module: ModuleType, base: type) -> list[type]:
    """Subclasses of ``base`` defined in ``module`` that set their own public ``name``.

    Shared by the method and matcher registries: helper base classes (``_OpenCVExtractor``) and
    names imported from elsewhere are skipped, so a module may hold several declarations and
    private plumbing. A package (``extractors/lift/``) declares what its ``__init__`` imports
    from its own submodules: a method split into several modules stays one scanned name.
    """
    subpackage = module.__name__ + "." if hasattr(module, "__path__") else None

    def defined_here(cls: type) -> bool:
        return cls.__module__ == module.__name__ or (
            subpackage is not None and cls.__module__.startswith(subpackage))

    out = []
    for obj in vars(module).values():
        if (isinstance(obj, type) and issubclass(obj, base) and obj is not base
                and defined_here(obj) and "name" in obj.__dict__
                and not str(obj.__dict__["name"]).startswith("_")):
            out.append(obj)
    return out


def scan_modules(package: ModuleType, group: str) -> list[ModuleType]:
    """Import every module of ``package`` and every module named by entry points of ``group``."""
    names = [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]
    for ep in importlib.metadata.entry_points(group=group):
        names.append(ep.value.split(":")[0].strip())
    modules = []
    for name in dict.fromkeys(names):
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:  # a broken plugin must not take the built-in methods down
            logger.warning("cannot import method module '%s': %s", name, exc)
    return modules


def collect_declarations(package: ModuleType, group: str, base: type, kind: str
                         ) -> dict[str, type]:
    """name -> class of every ``base`` declaration in ``package`` and the ``group`` plugins
    (``kind`` names them in the error for a name declared twice). Methods and matchers."""
    found: dict[str, type] = {}
    for module in scan_modules(package, group):
        for cls in declared_classes(module, base):
            other = found.get(cls.name)
            if other is not None and other is not cls:
                raise ConfigError(f"{kind} '{cls.name}' is declared twice: "
                                  f"{other.__module__}.{other.__name__} and "
                                  f"{cls.__module__}.{cls.__name__}")
            found[cls.name] = cls
    return dict(sorted(found.items()))


@functools.cache
def method_classes() -> dict[str, type[Extractor]]:
    """Every declared method, name -> class (cached; ``refresh()`` rescans)."""
    from . import extractors

    return collect_declarations(extractors, ENTRY_POINT_GROUP, Extractor, "method")


def refresh() -> None:
    """Forget the scan (tests that add a plugin module at run time)."""
    method_classes.cache_clear()


def available_methods(include_evaluation_only: bool = True) -> list[str]:
    """Sorted method names; the node passes ``include_evaluation_only=False``."""
    return [n for n, c in method_classes().items()
            if include_evaluation_only or not c.evaluation_only]


def exportable_methods() -> list[str]:
    """Sorted names of the methods that declare network parts (``export``, ``backend:``)."""
    return [n for n, c in method_classes().items() if c.networks]


def get_extractor_class(method: str, runtime: bool = False) -> type[Extractor]:
    """The class of ``method``; ``runtime=True`` refuses evaluation-only peers (the node)."""
    classes = method_classes()
    cls = classes.get(method)
    if cls is None or (runtime and cls.evaluation_only):
        names = available_methods(include_evaluation_only=not runtime)
        hint = (f" ('{method}' is an evaluation-only peer)" if cls is not None else "")
        raise ConfigError(f"unknown method '{method}'{hint} (available: {', '.join(names)})")
    return cls


def default_weights(method: str, conf: dict[str, Any] | None = None) -> Any:
    """The weights file ``method`` loads when ``weights`` is empty, or None when it ships none."""
    return get_extractor_class(method).default_weights(conf or {})


def build_extractor(method: str, weights: str | None = None, device: str = "cpu",
                    precision: str = "fp32", **conf: Any) -> Extractor:
    """Build, load weights, move to device, eval mode.

    ``weights``: a local path (official layout or project checkpoint); ``None``/``""`` = the
    method's default weights (shipped with the package or another installed package; error if
    there are none); ``"random"`` = untrained.
    """
    cls = get_extractor_class(method)
    if cls.is_learned and weights in (None, ""):
        shipped = cls.default_weights(conf)
        if shipped is None:
            raise FileNotFoundError(
                f"method '{method}' needs weights: pass weights=PATH to a local checkpoint "
                f"(or weights={RANDOM_WEIGHTS} for an untrained network)"
            )
        weights = str(shipped)
    if not cls.is_learned or weights == RANDOM_WEIGHTS:
        if cls.is_learned:
            logger.warning("method '%s' runs with RANDOM weights (testing only)", method)
        return attach_backend(cls(device=device, precision=precision, **conf).setup())
    ckpt = load_checkpoint(weights)
    if is_project_checkpoint(ckpt) and ckpt.get("method") not in (None, method):
        raise WeightsError(f"{weights} is a '{ckpt.get('method')}' checkpoint, not '{method}'")
    # Our own checkpoints carry the architecture/input keys they were trained with
    # (``extractor_conf``); they are defaults here, explicit user settings win.
    stored = dict(ckpt.get("extractor_conf") or {}) if is_project_checkpoint(ckpt) else {}
    known = cls.full_default_conf()
    extractor = cls(device=device, precision=precision,
                    **{**{k: v for k, v in stored.items() if k in known and k != "backend"},
                       **conf})
    try:
        extractor.load_weights(weights, checkpoint=ckpt)
    except WeightsError as exc:
        owner = weights_method(ckpt)
        if owner is None or owner == method:
            raise
        raise WeightsError(f"weights file {weights} holds {owner} weights, not {method} weights: "
                           f"load it with method '{owner}', or pass {method} weights") from exc
    return attach_backend(extractor.setup())


def attach_backend(extractor: Extractor) -> Extractor:
    """Run ``extractor``'s network parts in its configured ``backend`` (exported to the cache on
    first use); ``backend: torch`` leaves it as it is.

    Why here and not in ``Extractor.setup``: the backends export the extractors' networks, so
    the extractor package must not import them (an import cycle); the registry already sits
    above both."""
    if extractor.conf.get("backend", "torch") == "torch":
        return extractor
    from .backends import create_runners

    return extractor.attach_network_runners(create_runners(extractor))


def weights_file_problem(method: str, weights: str | os.PathLike,
                         conf: Mapping[str, Any] | None = None) -> str | None:
    """Why a local weights file cannot load for ``method`` (None = its tensor names fit).

    Why: ``run``/``demo``/the launch file check parameters before any process starts; a corrupt
    file or another method's weights must fail there with the reason, not in the node's log.
    The file is read (``weights_only``) and its names compared on torch's ``meta`` device; no
    network is built."""
    import torch

    cls = get_extractor_class(method)
    try:
        ckpt = load_checkpoint(weights)
    except WeightsError as exc:
        return str(exc)
    if is_project_checkpoint(ckpt) and ckpt.get("method") not in (None, method):
        return f"{weights} is a '{ckpt.get('method')}' checkpoint, not '{method}'"
    known = cls.full_default_conf()
    arch = {k: v for k, v in dict(conf or {}).items() if k in known and k != "backend"}
    try:
        with torch.device("meta"):
            model = cls(device="cpu", **arch)
        own = set(model.state_dict())
        state = model.adapt_state_dict(unwrap_state_dict(ckpt, cls.checkpoint_wrapper_keys))
    except Exception:  # noqa: BLE001 - cannot check here: the node's strict loading reports it
        return None
    if not own or set(state) == own:
        return None
    owner = weights_method(ckpt)
    if owner is not None and owner != method:
        return (f"weights file {weights} holds {owner} weights, not {method} weights: load it "
                f"with method '{owner}', or pass {method} weights")
    return None  # the node's strict loading names the missing/unexpected keys


def weights_method(ckpt: Mapping[str, Any]) -> str | None:
    """The registered method whose network has exactly the tensor names of ``ckpt`` (after that
    method's own checkpoint wrapper and official-layout renaming), or None when no single one does.

    Why: a key mismatch alone (``missing key 'conv1a.weight'``) does not tell a user that the
    file belongs to another method; naming that method says what to change. Each candidate is
    built on torch's ``meta`` device (no memory, no initialisation), so this costs milliseconds
    per method and runs only after a load failed."""
    import torch

    if is_project_checkpoint(ckpt) and ckpt.get("method") in method_classes():
        return str(ckpt["method"])
    found = []
    for name, cls in method_classes().items():
        if not cls.is_learned:
            continue
        try:
            with torch.device("meta"):
                model = cls(device="cpu")
            own = set(model.state_dict())
            state = model.adapt_state_dict(unwrap_state_dict(ckpt, cls.checkpoint_wrapper_keys))
        except Exception:  # noqa: BLE001 - a method that cannot build on 'meta' is no candidate
            continue
        if own and set(state) == own:
            found.append(name)
    return found[0] if len(found) == 1 else None
