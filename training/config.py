"""YAML experiment configs with dotted ``--set a.b=c`` overrides.

The rules are the runtime's (``local_features_ros/config.py``): the same ``--set`` parser and
YAML-scalar values, the same coercion to each default's type, the same frozen view of a resolved
config and the same "unknown config key ... (known: ...)" refusal. This module adds what is the
trainer's own: YAML files with ``base:`` inheritance, the engine's ``train:`` defaults, and dotted
overrides of nested sections. Why plain dicts underneath (no OmegaConf): the resolved config is
saved next to the run and inside every checkpoint, and checkpoints are read with
``weights_only=True``, which only accepts builtin types (``thaw``).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from local_features_ros.config import FrozenMapping, freeze, merge_nested, parse_value, \
    split_setting, thaw
from local_features_ros.conventions import ConfigError

__all__ = ["CONFIG_DIR", "ConfigError", "DEFAULT_TRAIN", "FrozenConf", "apply_overrides",
           "freeze", "get", "load_config", "load_yaml", "merge", "merge_conf", "parse_value",
           "save_config", "set_dotted", "thaw"]

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: The engine's ``train:`` section (``training/engine.py`` fills every stage's ``train`` with
#: these). Kept here, not in the engine, so the config layer needs nothing above it: the engine
#: imports the config module, never the reverse.
DEFAULT_TRAIN: dict[str, Any] = {
    "seed": 0,
    "batch_size": 8,
    "num_workers": 0,
    "max_steps": 1000,
    "optimizer": "adam",  # adam | sgd
    "lr": 1e-3,
    "betas": [0.9, 0.999],
    "weight_decay": 0.0,
    "grad_clip": 0.0,  # 0 = off
    "log_every": 10,
    "val_every": 500,
    "val_batches": 4,
    "val_batch_size": 8,
    "checkpoint_every": 200,
    "max_time_s": 0,  # stop cleanly (with a checkpoint) after this wall time; 0 = off
    "device": "auto",
    # fp32 | bf16: bf16 autocasts the task's forward + loss (weights, gradients and optimizer stay
    # fp32). Why: ~2x faster convolutions on CPUs with native bf16 (AVX512-BF16/AMX) and on
    # recent GPUs, with no loss scaling needed (bf16 has fp32's exponent range).
    "precision": "fp32",
}


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
        # next to this file, else in training/configs (a recipe kept elsewhere, e.g. experiments/)
        bp = p.parent / base
        parent = load_yaml(bp if bp.is_file() else CONFIG_DIR / base)
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


#: A resolved training config: read-only, nested, a ``KeyError`` naming the known keys on a typo.
FrozenConf = FrozenMapping


def merge_conf(defaults: Mapping[str, Any], conf: Mapping[str, Any] | None, where: str = "config",
               prefix: str = "") -> dict[str, Any]:
    """``defaults`` updated with ``conf`` by the runtime's rules (``config.merge_nested``): a
    key ``defaults`` does not have is an error naming the known keys, values are cast to their
    default's type; a section whose default is an empty mapping is free-form (its keys belong to
    something else that checks them, e.g. a dataset's ``data`` or the runtime extractor's
    ``model.lift``); ``None`` for a section keeps its defaults."""
    return merge_nested(defaults, conf, owner=f"'{where}'", prefix=prefix)


def _engine_key(parts: list[str]) -> bool:
    """``train.<key>`` of the engine's defaults is valid even when a config file omits it (every
    stage's ``train:`` section takes the engine defaults, e.g. ``train.precision``)."""
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
        try:
            key, text = split_setting(item)
        except ConfigError:
            raise ConfigError(f"override '{item}' must look like key.path=value") from None
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
