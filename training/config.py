"""YAML experiment configs with dotted ``--set a.b=c`` overrides.

Why plain dicts (no OmegaConf): the resolved config is saved next to the run and inside every
checkpoint, and checkpoints are read with ``weights_only=True``, which only accepts builtin types.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config file or an override is malformed."""


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file() and not p.is_absolute() and (CONFIG_DIR / p.name).is_file():
        p = CONFIG_DIR / p.name  # `--config magicpoint_shapes.yaml` works from anywhere
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(p) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base:  # `base: other.yaml` -> inherit, then override (tiny CI configs reuse the real ones)
        parent = load_yaml(p.parent / base)
        data = merge(parent, data)
    return data


def merge(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``new`` wins, nested mappings are merged rather than replaced."""
    out = copy.deepcopy(dict(base))
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_value(text: str) -> Any:
    """``--set`` values are parsed as YAML scalars/lists: ``1e-3`` -> float, ``[1,2]`` -> list."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, str):
        # YAML 1.1 reads "1e-3" as a string; numbers in exponent form are common in configs.
        try:
            return float(v) if any(c in v for c in "eE.") else int(v)
        except ValueError:
            return v
    return v


def _engine_key(parts: list[str]) -> bool:
    """``train.<key>`` of the engine's defaults is valid even when a config file omits it (every
    stage's ``train:`` section takes the engine defaults, e.g. ``train.precision``)."""
    from .engine import DEFAULT_TRAIN

    return len(parts) == 2 and parts[0] == "train" and parts[1] in DEFAULT_TRAIN


def set_dotted(conf: dict[str, Any], key: str, value: Any, source: str | None = None) -> None:
    """Set ``a.b.c`` in ``conf`` in place. Unknown paths are an error (typos must not pass),
    except below a section named ``set``: it holds overrides of *another* config (the SuperPoint
    pipeline's stages), which are checked when that config is loaded."""
    what = source or key
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{what}' has an empty key")
    node: dict[str, Any] = conf
    open_section = False
    for i, p in enumerate(parts[:-1]):
        open_section = open_section or (i > 0 and parts[i - 1] == "set")
        if p not in node and open_section:
            node[p] = {}
        if p not in node:
            raise ConfigError(f"override '{what}': unknown key '{'.'.join(parts[:i + 1])}'")
        if not isinstance(node[p], dict):
            raise ConfigError(f"override '{what}': '{'.'.join(parts[:i + 1])}' is not a section")
        node = node[p]
    open_section = open_section or (len(parts) > 1 and parts[-2] == "set")
    if parts[-1] not in node and not _engine_key(parts) and not open_section:
        raise ConfigError(f"override '{what}': unknown key '{key}'")
    node[parts[-1]] = value


def apply_overrides(conf: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a copy of ``conf``."""
    out = copy.deepcopy(dict(conf))
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.path=value")
        key, text = item.split("=", 1)
        set_dotted(out, key, parse_value(text), source=item)
    return out


def get(conf: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = conf
    for p in dotted.split("."):
        if not isinstance(node, Mapping) or p not in node:
            return default
        node = node[p]
    return node


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict[str, Any]:
    return apply_overrides(load_yaml(path), overrides)


def save_config(conf: Mapping[str, Any], path: str | os.PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(dict(conf), f, sort_keys=False)
    os.replace(tmp, p)
    return p
