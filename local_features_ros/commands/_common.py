"""Options every extractor-driven command shares (extract, match, evaluate, bench, export), their
translation to ``build_extractor``, and the exit statuses of every command.

Why one place: the same ``--method/--weights/--set key=value`` mean the same thing in every command
and as node parameters. ``--set`` names are the node's (``local_features_ros/settings.py`` is the
one table); ``--weights``/``--device``/``--precision`` are shorthands for ``--set weights=...``
and so on, so a value given both ways must agree.

Exit statuses: 0 done; 2 nothing was done because the command line, a setting, an input file or
the weights are wrong (argparse uses 2 for its own usage errors too); 1 the work started and then
failed (a file corrupt past its header, a disk full, ...). Each failure is one line on stderr,
``local-features COMMAND: error: REASON``, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

# split_setting / parse_settings: the one ``--set`` parser (``config.py``), re-exported for the
# commands that read ``--matcher-set`` and friends.
from ..config import parse_settings, split_setting  # noqa: F401
from ..conventions import PRECISIONS, ConfigError
from ..settings import (BUILD_ARGUMENTS, EXTRACTOR_PREFIX, Settings, in_node_terms, node_name,
                        parse_set_items)

T = TypeVar("T")

#: Exit status of a command that refused its command line, settings, inputs or weights.
USAGE_ERROR = 2
#: Exit status of a command whose work started and then failed.
RUN_FAILED = 1

#: What the command line uses when neither the flag nor ``--set`` gives a build argument. The
#: node's defaults are ``auto``; a one-off command stays on the CPU in fp32 unless asked.
BUILD_DEFAULTS: dict[str, str | None] = {"weights": None, "device": "cpu", "precision": "fp32"}


def add_extractor_arguments(parser: argparse.ArgumentParser, method: bool = True,
                            method_help: str = "extractor name (see `local-features methods`)",
                            weights_help: str = "local checkpoint (official layout or project "
                                                "format); 'random' = untrained; default: shipped",
                            precision: bool = True) -> None:
    """``--method`` (optional to add), ``--weights``, ``--device``, ``--precision``, ``--set``."""
    if method:
        parser.add_argument("--method", required=True, help=method_help)
    parser.add_argument("--weights", default=None, help=weights_help + " (= --set weights=...)")
    parser.add_argument("--device", default=None,
                        help="cpu | cuda | cuda:N | auto (default cpu; = --set device=...)")
    if precision:
        parser.add_argument("--precision", default=None,
                            help="fp32 | fp16 | bf16 | auto (default fp32; = --set precision=...)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="setting (repeatable), named as the node's parameter: max_keypoints, "
                        "detection_threshold, nms_radius, remove_borders, resize.max_edge, "
                        "backend, weights, device, precision, extractor.<method key> (a bare "
                        "method key works too); where a command matches also matcher.type, "
                        "matcher.<key>, matcher.lightglue.<key>, verify.<key>; "
                        "e.g. --set max_keypoints=1000")


# ---------------------------------------------------------------------------- extractor options
@dataclass
class ExtractorOptions:
    """Everything ``build_extractor`` needs for one method, checked: known keys, values cast to
    the key's type and inside the method's ranges, weights file present."""

    method: str
    weights: str | None
    device: str
    precision: str
    conf: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        """The extractor (weights loaded, on its device); config errors in the node's names."""
        from ..registry import build_extractor

        try:
            return build_extractor(self.method, weights=self.weights or None, device=self.device,
                                   precision=self.precision, **self.conf)
        except ConfigError as exc:
            raise ConfigError(in_node_terms(str(exc))) from exc


def _build_arguments(args: argparse.Namespace, given: dict[str, str],
                     spelled: dict[str, str]) -> dict[str, str | None]:
    """``weights``/``device``/``precision`` from ``--set`` or the flag (both: they must agree)."""
    out: dict[str, str | None] = {}
    for name in BUILD_ARGUMENTS:
        flag = getattr(args, name, None)
        if name in given:
            if flag is not None and str(flag) != given[name]:
                raise ConfigError(f"{name} given twice: --{name} {flag} and --set "
                                  f"{spelled[name]}={given[name]}")
            out[name] = given[name]
        else:
            out[name] = flag if flag is not None else BUILD_DEFAULTS[name]
    precision = out["precision"]
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    return out


def known_settings(cls: Any) -> list[str]:
    """Every ``--set`` name of a method, in the node's spelling (for 'unknown setting' errors
    and ``local-features methods``)."""
    from ..extractors.base import ExtractorConfig

    shared = ExtractorConfig.known_keys()
    return sorted({*BUILD_ARGUMENTS, *(node_name(k, shared) for k in cls.full_default_conf())})


def command_settings(args: argparse.Namespace) -> Settings:
    """The command's ``--set`` items, split and sorted by where they go (``settings.py``)."""
    return parse_set_items(getattr(args, "settings", []))


def extractor_options(args: argparse.Namespace, method: str,
                      matching: bool = False) -> ExtractorOptions:
    """``--set`` (node names or aliases) and the build flags of ``args`` -> ``ExtractorOptions``
    for ``method``, or ``ConfigError`` / ``FileNotFoundError`` naming the first problem.

    Everything is checked before a network is built or an input read, so a typo costs a second.
    ``matching``: the command matches, so ``matcher.*``/``verify.*`` are its business (read
    with ``command_settings``); elsewhere they are refused."""
    from ..extractors.base import ExtractorConfig
    from ..registry import RANDOM_WEIGHTS, get_extractor_class

    cls = get_extractor_class(method)
    given = command_settings(args)
    if not matching and given.matching_names():
        raise ConfigError(f"'{given.matching_names()[0]}' is a matcher setting; this command "
                          "does not match (match, evaluate and the node do)")
    build = _build_arguments(args, given.build, given.spelled)
    defaults = cls.full_default_conf()
    shared = ExtractorConfig.known_keys()
    conf: dict[str, Any] = {}
    for key, text in given.conf.items():
        name = given.spelled[key]
        if key not in defaults:
            raise ConfigError(f"unknown setting '{name}' for method '{method}' (known: "
                              f"{', '.join(known_settings(cls))})")
        if name.startswith(EXTRACTOR_PREFIX) and key in shared:
            raise ConfigError(f"'{name}': {node_name(key, shared)} is shared by every method, "
                              f"set it as '{node_name(key, shared)}'")
        conf[key] = cls.config_class.cast(key, text, name)
    try:
        cls.checked_conf(conf)
    except ConfigError as exc:
        raise ConfigError(in_node_terms(str(exc))) from exc
    weights = build["weights"]
    if cls.is_learned and weights != RANDOM_WEIGHTS:
        if weights in (None, ""):
            if cls.default_weights(conf) is None:
                raise FileNotFoundError(f"method '{method}' needs weights: pass --weights PATH "
                                        f"(or --set weights=PATH) to a local checkpoint, or "
                                        f"weights={RANDOM_WEIGHTS} for an untrained network")
        elif not Path(str(weights)).expanduser().is_file():
            raise FileNotFoundError(f"weights file not found: {weights} (weights are never "
                                    "downloaded; pass a local path)")
    return ExtractorOptions(method, weights, str(build["device"]), str(build["precision"]), conf)


def warn_ignored_weights(command: str, options: ExtractorOptions) -> None:
    """A weights file given to a classical method is ignored: say so instead of pretending."""
    from ..registry import RANDOM_WEIGHTS, get_extractor_class

    if options.weights not in (None, "", RANDOM_WEIGHTS) \
            and not get_extractor_class(options.method).is_learned:
        warn(command, f"method '{options.method}' has no weights; weights={options.weights} "
                      "is ignored")


# ---------------------------------------------------------------------------- exit statuses
def one_line(exc: BaseException) -> str:
    """An exception's message on one line (the contract: one line per failure on stderr)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def fail(command: str, reason: str, status: int) -> int:
    """Print ``local-features COMMAND: error: REASON`` on stderr and return ``status``."""
    print(f"local-features {command}: error: {reason}", file=sys.stderr)
    return status


def warn(command: str, text: str) -> None:
    """Print ``local-features COMMAND: warning: TEXT`` on stderr (the run goes on)."""
    print(f"local-features {command}: warning: {text}", file=sys.stderr)


def run_command(command: str, setup: Callable[[], T], work: Callable[[T], int | None]) -> int:
    """Run ``setup`` (read and check the command line, settings, inputs, weights; build the
    model), then ``work`` with its result, and map failures to exit statuses (module docstring).

    Configuration errors (``ConfigError``, ``WeightsError``) are status 2 even when ``work``
    raises them (``bench`` builds one method after another)."""
    from ..weights import WeightsError

    try:
        state = setup()
    except (ValueError, OSError, WeightsError) as exc:  # ConfigError is a ValueError
        return fail(command, one_line(exc), USAGE_ERROR)
    try:
        return int(work(state) or 0)
    except (ConfigError, WeightsError) as exc:
        return fail(command, one_line(exc), USAGE_ERROR)
    except (ValueError, OSError, RuntimeError) as exc:
        return fail(command, one_line(exc), RUN_FAILED)
