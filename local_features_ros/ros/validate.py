"""One check of a ``feature_extractor`` parameter set, before any process starts.

Why: ``local-features run``/``demo`` and the launch file used to hand a YAML + overrides to the node
and let it fail in its own log (``--method foo`` even failed earlier, on a missing
``config/foo.yaml``). ``validate_node_params`` applies the rules the node applies -- the method
registry (``unknown method 'foo' (available: ...)``), the node's parameter table
(``ros/params.py``: names, types, ranges, choices) and the method's own config validation
(``Extractor.checked_conf``, as ``local-features extract --set`` uses it) -- to a flat
``{dotted name: value}`` dict, and raises ``ConfigError`` with the reason. The node calls
``unknown_parameters_error`` on its own overrides, so a stray key is rejected there too.
No rclpy import (the launch file and the runner call it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from ..conventions import DEFAULT_METHOD, ConfigError

#: Node parameters that are not in the table but are legal (rclpy's own, QoS overrides).
EXTRA_PARAMETERS = ("use_sim_time", "start_type_description_service")
EXTRA_PREFIXES = ("qos_overrides.",)


def node_param_specs(method: str) -> dict[str, Any]:
    """Name -> ``ParamSpec`` of every parameter the node declares for ``method`` (the order of
    ``NodeParameters.declare_all``). Raises ``ConfigError`` for an unknown method."""
    from ..registry import get_extractor_class
    from . import params as P

    return {s.name: s for s in P.all_specs(get_extractor_class(method, runtime=True))}


def is_extra_parameter(name: str) -> bool:
    return name in EXTRA_PARAMETERS or name.startswith(EXTRA_PREFIXES)


def unknown_parameters_error(method: str, names: Iterable[str],
                             known: Iterable[str]) -> str | None:
    """The rejection reason for names outside the table (None when all are known)."""
    known = set(known)
    bad = sorted(n for n in names if n not in known and not is_extra_parameter(n))
    if not bad:
        return None
    return (f"unknown parameter{'s' if len(bad) > 1 else ''} {', '.join(repr(b) for b in bad)} "
            f"for method '{method}' (known: {', '.join(sorted(known))})")


def _type_name(v: Any) -> str:
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number",
            str: "a string"}.get(type(v), "a list")


def _check_value(spec: Any, value: Any) -> Any:
    """The value normalised to the spec's ROS type (int -> float for doubles), or ConfigError."""
    d = spec.default
    bad = ConfigError(f"parameter '{spec.name}' must be {_type_name(d)}, got {value!r}")
    if isinstance(d, bool):
        if not isinstance(value, bool):
            raise bad
    elif isinstance(d, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif isinstance(d, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
    elif isinstance(d, str):
        if not isinstance(value, str):
            raise bad
    elif isinstance(d, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        value = list(value)
    if spec.int_range is not None:
        lo, hi = spec.int_range
        if not lo <= value <= hi:
            raise ConfigError(f"parameter '{spec.name}' must be in [{lo}, {hi}], got {value}")
    if spec.float_range is not None:
        lo, hi = spec.float_range
        if not lo <= value <= hi:
            raise ConfigError(f"parameter '{spec.name}' must be in [{lo}, {hi}], got {value}")
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"parameter '{spec.name}' must be one of {', '.join(spec.choices)}, "
                          f"got {value!r}")
    return value


def check_extractor_conf(method: str, conf: Mapping[str, Any]) -> None:
    """The method's own config check (unknown key, coercion, ranges) without building it: the
    same ``checked_conf`` that ``Extractor.__init__`` (and so ``extract --set``) runs."""
    from ..registry import get_extractor_class

    get_extractor_class(method, runtime=True).checked_conf(dict(conf))


def weights_problem(method: str, weights: str, conf: Mapping[str, Any] | None = None
                    ) -> str | None:
    """Why ``weights`` cannot load for ``method`` (None = looks fine); checks only the file."""
    from ..registry import RANDOM_WEIGHTS, get_extractor_class

    cls = get_extractor_class(method, runtime=True)
    if not cls.is_learned or weights == RANDOM_WEIGHTS:
        return None
    if weights:
        p = Path(weights).expanduser()
        if not p.is_file():
            return f"weights file not found: {weights}"
        from ..registry import weights_file_problem

        return weights_file_problem(method, p, conf)
    if cls.default_weights(dict(conf or {})) is None:
        return (f"method '{method}' ships no weights: pass a local checkpoint "
                f"(--weights PATH / weights:=PATH)")
    return None


def weights_to_load(method: str, weights: str, conf: Mapping[str, Any] | None = None) -> str:
    """What the node will really load, in words (for the demo/run header)."""
    from ..registry import RANDOM_WEIGHTS, get_extractor_class

    cls = get_extractor_class(method, runtime=True)
    if not cls.is_learned:
        return "no weights (classical)"
    if weights == RANDOM_WEIGHTS:
        return "RANDOM weights (testing only)"
    if weights:
        return f"weights {weights}"
    shipped = cls.default_weights(dict(conf or {}))
    return f"default weights {shipped}" if shipped is not None else "no weights found"


def validate_node_params(flat: Mapping[str, Any], check_weights: bool = True) -> dict[str, Any]:
    """Check a flat parameter dict as the node would; returns it with values normalised to the
    declared ROS types. Raises ``ConfigError`` (one-line reason) on the first problem."""
    from . import params as P

    from ..hardware import AUTO_METHOD, choose_method

    method = str(flat.get("method", DEFAULT_METHOD))
    if method == AUTO_METHOD:  # the node makes the same choice at startup
        method = choose_method(str(flat.get("device", "auto"))).method
        flat = {**flat, "method": method}
    specs = node_param_specs(method)  # unknown method -> ConfigError with the available ones
    reason = unknown_parameters_error(method, flat, specs)
    if reason:
        raise ConfigError(reason)
    out: dict[str, Any] = {}
    conf: dict[str, Any] = {}
    for name, value in flat.items():
        spec = specs.get(name)
        if spec is None:
            out[name] = value
            continue
        out[name] = _check_value(spec, value)
        kind, _, key = spec.target.partition(":")
        if kind == "extractor":
            conf[key] = out[name]
    if str(out.get("precision", "auto")) not in P.PRECISIONS:
        raise ConfigError(f"parameter 'precision' must be one of {', '.join(P.PRECISIONS)}")
    from ..device import resolve_device

    resolve_device(str(out.get("device", "auto")))  # ConfigError: unknown name, or no CUDA
    check_extractor_conf(method, conf)
    if check_weights:
        problem = weights_problem(method, str(out.get("weights", "")), conf)
        if problem:
            raise ConfigError(problem)
    return out
