"""The one configuration system: typed frozen configs, one ``--set`` parser, one coercion.

Why one module (standard library, ``yaml`` and ``conventions.py`` only; no torch, no ROS): the
extractors, the matchers, the geometric verification, the node's parameter table, the command
line and the trainer all read settings typed by people (``--set``, YAML files, ROS parameters).
They must accept the same spellings, cast them the same way and refuse the same mistakes with the
same one-line message naming the key, so all of them use what is defined here.

Pieces:

- ``Config``: a frozen dataclass that also reads like a mapping (``conf.ratio`` and
  ``conf["ratio"]``, ``conf.get``, ``dict(conf)``, ``{**conf}``). Subclasses declare only their own
  keys as annotated fields (or as a dict, with ``make_config``) and inherit their bases' keys and
  defaults; ``validate`` is a classmethod hook that checks a plain mapping, so a config can be
  checked (``check``) before anything is built; ``replace`` / ``update_runtime`` give validated
  copies; ``to_dict`` gives builtin types (checkpoints are read with ``weights_only=True``).
  ``key_info`` holds one ``KeyInfo`` per key (description, range, choices): the node's parameter
  table is generated from it (``ros/params.py``).
- ``split_setting`` / ``parse_settings`` / ``parse_value`` / ``parse_dotlist``: ``a.b=c`` items with
  YAML-scalar values.
- ``coerce``: a string, ROS or YAML value cast to the type of the key's default.
- ``FrozenMapping`` / ``freeze`` / ``thaw`` / ``merge_nested``: the same rules for nested sections
  (the trainer's YAML configs).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Iterator, Mapping, TypeVar, get_type_hints

import yaml

from .conventions import ConfigError

try:  # Python >= 3.11; only a hint for type checkers, so older Pythons (ROS 2 Humble) go without
    from typing import dataclass_transform
except ImportError:  # pragma: no cover
    def dataclass_transform(**_: Any) -> Any:
        return lambda cls: cls

__all__ = ["Config", "ConfigError", "FrozenMapping", "KeyInfo", "coerce", "freeze",
           "make_config", "merge_nested", "parse_dotlist", "parse_settings", "parse_value",
           "split_setting", "thaw", "to_builtin"]

C = TypeVar("C", bound="Config")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


# ------------------------------------------------------------------------------- parsing
def split_setting(item: str) -> tuple[str, str]:
    """One ``KEY=VALUE`` item -> ``(KEY, VALUE)``, both stripped; the value stays a string (the
    receiver casts it with ``coerce``, knowing the key's type)."""
    key, sep, value = str(item).partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"bad --set '{item}': expected KEY=VALUE")
    return key, value.strip()


def parse_settings(items: Iterable[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{k: v}``; a later item of the same key wins. Values stay strings."""
    return dict(split_setting(item) for item in items or [])


def parse_value(text: str) -> Any:
    """A value typed by a person, read as a YAML scalar or list: ``1e-3`` -> 0.001, ``[1, 2]`` ->
    a list, ``true`` -> True; text YAML cannot read stays text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; numbers in exponent form are common.
        try:
            return float(value) if any(c in value for c in "eE.") else int(value)
        except ValueError:
            return value
    return value


def parse_dotlist(items: Iterable[str] | None) -> dict[str, Any]:
    """``["a.b=1e-3", "c=[1, 2]"]`` -> ``{"a.b": 0.001, "c": [1, 2]}`` (values via
    ``parse_value``); where the dotted keys go is the receiver's business."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, text = split_setting(item)
        out[key] = parse_value(text)
    return out


# ------------------------------------------------------------------------------- coercion
_SCALARS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}
_PLAIN = (bool, int, str)  # a value of exactly the target type is returned as it is


def coerce(key: str, value: Any, default: Any, kind: type | None = None) -> Any:
    """``value`` cast to the type of ``default`` (or to ``kind`` when given): strings from the
    command line, ROS parameter values and YAML values alike. ``None`` (either side) passes
    unchanged; a string default takes any value as it is (the config's validation decides).
    A value that cannot be cast is a ``ConfigError`` naming ``key``."""
    target = kind if kind is not None else (None if default is None else type(default))
    if target is None or value is None or (type(value) is target and target in _PLAIN) \
            or (type(value) is float is target and not math.isnan(value)):
        return value
    try:
        if issubclass(target, bool):
            if isinstance(value, str):
                low = value.strip().lower()
                if low in _TRUE:
                    return True
                if low in _FALSE:
                    return False
                raise ValueError(value)
            if _is_bool(value) or (isinstance(value, numbers.Real) and value in (0, 1)):
                return bool(value)
            raise ValueError(value)
        if issubclass(target, int):
            if isinstance(value, str):
                value = parse_value(value)
            if _is_bool(value) or not isinstance(value, numbers.Real):
                raise ValueError(value)
            if not float(value).is_integer():
                raise ValueError(value)
            return int(value)
        if issubclass(target, float):
            if isinstance(value, str):
                parsed = parse_value(value)
                value = float(value) if isinstance(parsed, str) else parsed  # inf, nan
            if _is_bool(value) or not isinstance(value, numbers.Real):
                raise ValueError(value)
            v = float(value)
            if math.isnan(v):
                raise ValueError("NaN")
            return v
        if issubclass(target, (list, tuple)):
            return target(_coerce_sequence(value, default))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value {value!r} for '{key}' "
                          f"(expected {target.__name__})") from exc
    return value


def _is_bool(value: Any) -> bool:
    """True for Python and numpy booleans (which are no numbers here: ``True`` is no count)."""
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"


def _coerce_sequence(value: Any, default: Any) -> list[Any]:
    """A list value: a YAML list, ``1,2`` or ``[1, 2]`` text, or a ROS array; items are cast to
    the type of the default's first item (float when the default is empty)."""
    if isinstance(value, str):
        parsed = parse_value(value)
        value = parsed if isinstance(parsed, (list, tuple)) else \
            [parse_value(x.strip()) for x in value.strip().strip("[]").split(",") if x.strip()]
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise TypeError(value)
    item = default[0] if isinstance(default, (list, tuple)) and default else 0.0
    return [coerce("item", v, item) for v in value]


def to_builtin(value: Any) -> Any:
    """Configs and mappings -> dicts, tuples -> lists, recursively (what YAML, JSON and
    ``torch.load(weights_only=True)`` accept)."""
    if isinstance(value, Mapping):
        return {k: to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    return value


# ------------------------------------------------------------------------------- typed configs
@dataclass(frozen=True)
class KeyInfo:
    """What a person needs to know about one key, declared once next to the config: the node's
    parameter table (``ros/params.py``) and the generated parameter files read it.

    ``parameter`` False: the key is set by the code that builds the config, never by a user
    (e.g. LightGlue's ``features``: the node passes its method)."""

    description: str = ""
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    parameter: bool = True


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


@dataclass_transform(frozen_default=True)
class Config(Mapping[str, Any]):
    """Base of every typed config: a frozen dataclass (subclasses become one automatically)
    that reads like a read-only mapping.

    Subclass contract: annotated fields with defaults (the keys; a subclass adds keys and may
    redeclare a base key with another default); ``owner`` names whose keys they are in messages
    (``method 'sift'``, ``matcher 'nn'``); ``runtime_keys`` may change while running;
    ``key_info`` describes the keys (merged with the bases'); ``validate`` (a classmethod,
    extended with ``super().validate(conf)``) raises ``ConfigError`` with the reason. Values are
    cast to each field's type when the config is made."""

    owner: ClassVar[str] = "config"
    runtime_keys: ClassVar[frozenset[str]] = frozenset()
    key_info: ClassVar[Mapping[str, KeyInfo]] = {}
    #: field name -> the type values are cast to (None: taken as given); filled per subclass.
    _kinds: ClassVar[dict[str, type | None]] = {}
    #: the keys in declaration order (base keys first); filled per subclass.
    _keys: ClassVar[tuple[str, ...]] = ()
    #: key -> default as stored; filled per subclass.
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__dataclass_fields__" not in cls.__dict__:
            dataclass(frozen=True)(cls)
        info: dict[str, KeyInfo] = {}
        for base in reversed(cls.__mro__[1:]):
            info.update(getattr(base, "key_info", {}) or {})
        info.update(cls.__dict__.get("key_info", {}))
        cls.key_info = info
        cls._defaults = {f.name: _default_of(f) for f in dataclasses.fields(cls)}
        cls._keys = tuple(cls._defaults)
        cls._kinds = _field_kinds(cls)

    def __post_init__(self) -> None:
        cls = type(self)
        for key, default in cls._defaults.items():
            value = getattr(self, key)
            cast = coerce(key, value, default, cls._kinds[key])
            if isinstance(cast, list):
                cast = tuple(cast)  # frozen all the way down
            if cast is not value:
                object.__setattr__(self, key, cast)
        cls.validate(self)

    # --------------------------------------------------------------- mapping reads
    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(f"no config key '{key}' for {self.owner} "
                           f"(known: {', '.join(self.known_keys())})")
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    # --------------------------------------------------------------- class-level API
    @classmethod
    def key_names(cls) -> tuple[str, ...]:
        """Every key in declaration order (base keys first)."""
        return cls._keys

    @classmethod
    def known_keys(cls) -> list[str]:
        """Every key, sorted (for messages)."""
        return sorted(cls._keys)

    @classmethod
    def field_defaults(cls) -> dict[str, Any]:
        """Key -> default, in declaration order (base keys first), as stored (tuples)."""
        return dict(cls._defaults)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Key -> default in builtin types (lists), in declaration order."""
        return to_builtin(cls.field_defaults())

    @classmethod
    def cast(cls, key: str, value: Any, name: str | None = None) -> Any:
        """``value`` cast to ``key``'s type; ``name``: the spelling to use in the error (the
        node or command-line name the user typed)."""
        if key not in cls._keys:
            raise ConfigError(f"unknown config key '{name or key}' for {cls.owner} "
                              f"(known: {', '.join(cls.known_keys())})")
        value = coerce(name or key, value, cls._defaults[key], cls._kinds[key])
        return tuple(value) if isinstance(value, list) else value

    @classmethod
    def check(cls, values: Mapping[str, Any] | None = None,
              base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``base`` (default: the defaults) updated with ``values``, cast and validated, without
        making a config: unknown keys and bad values raise ``ConfigError`` naming them."""
        merged = dict(base) if base is not None else cls.field_defaults()
        for key, value in (values or {}).items():
            merged[key] = cls.cast(key, value)
        cls.validate(merged)
        return merged

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        """Range and consistency checks on a complete key -> value mapping; raise
        ``ConfigError`` with the reason. Subclasses extend it."""

    @classmethod
    def create(cls: type[C], values: Mapping[str, Any] | None = None, **more: Any) -> C:
        """A config from user values (strings welcome), validated."""
        return cls(**cls.check({**(values or {}), **more}))

    # --------------------------------------------------------------- copies
    def replace(self: C, **changes: Any) -> C:
        """A validated copy with ``changes`` (cast to each key's type)."""
        if not changes:
            return self
        return type(self)(**type(self).check(changes, base=self.values_dict()))

    def update_runtime(self: C, changes: Mapping[str, Any], restart_hint: str = "restart") -> C:
        """``replace`` limited to ``runtime_keys``: any other key is refused by name."""
        bad = [k for k in changes if k not in self.runtime_keys]
        if bad:
            raise ConfigError(f"'{bad[0]}' cannot change at runtime for {self.owner} "
                              f"({restart_hint})")
        return self.replace(**changes)

    def values_dict(self) -> dict[str, Any]:
        """Key -> value as stored (shallow; tuples stay tuples)."""
        return {k: getattr(self, k) for k in self._keys}

    def to_dict(self) -> dict[str, Any]:
        """Key -> value in builtin types (lists, dicts): YAML, JSON and checkpoints."""
        return to_builtin(self.values_dict())


def _field_kinds(cls: type) -> dict[str, type | None]:
    """Per field, the type values are cast to: the default's type, or the annotation when the
    default is None and the annotation is a plain scalar (``int | None`` counts as int)."""
    try:
        hints = get_type_hints(cls)
    except Exception:  # annotations naming types this module cannot resolve
        hints = {}
    out: dict[str, type | None] = {}
    for f in dataclasses.fields(cls):
        default = _default_of(f)
        if default is not None:
            out[f.name] = type(default)
            continue
        hint = hints.get(f.name, f.type)
        if isinstance(hint, str):
            hint = _SCALARS.get(hint.split("|")[0].strip())
        args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
        if len(args) == 1:
            hint = args[0]
        out[f.name] = hint if hint in _SCALARS.values() else None
    return out


def make_config(name: str, defaults: Mapping[str, Any], base: type[C], *,
                owner: str | None = None, runtime_keys: Iterable[str] | None = None,
                key_info: Mapping[str, KeyInfo] | None = None,
                namespace: Mapping[str, Any] | None = None) -> type[C]:
    """A ``Config`` subclass of ``base`` whose own keys are ``defaults`` (a dict declaration, as
    the extractors write theirs): a key ``base`` has keeps its place and takes the new default;
    list defaults are stored as tuples. ``namespace``: further class attributes (hooks)."""
    annotations: dict[str, Any] = {}
    attrs: dict[str, Any] = dict(namespace or {})
    for key, value in defaults.items():
        if not str(key).isidentifier() or hasattr(Config, key):
            raise ConfigError(f"config key '{key}' of {owner or base.owner} is not usable: keys "
                              "must be identifiers and not names of the config's methods "
                              f"({', '.join(k for k in dir(Config) if not k.startswith('_'))})")
        stored = tuple(value) if isinstance(value, list) else value
        annotations[key] = Any if stored is None else type(stored)
        attrs[key] = stored
    attrs["__annotations__"] = annotations
    attrs["__module__"] = getattr(base, "__module__", __name__)
    attrs["__qualname__"] = name
    if owner is not None:
        attrs["owner"] = owner
    if runtime_keys is not None:
        attrs["runtime_keys"] = frozenset(runtime_keys)
    if key_info is not None:
        attrs["key_info"] = dict(key_info)
    return type(name, (base,), attrs)  # Config.__init_subclass__ makes it a frozen dataclass


# ------------------------------------------------------------------------------- nested configs
class FrozenMapping(Mapping[str, Any]):
    """Read-only, recursively frozen view of nested settings: ``conf["loss"]["margin"]`` reads,
    assignment raises, and a missing key is a ``KeyError`` naming the known keys (so a typo in
    the code reading a config fails as loudly as one in the file). ``thaw()`` gives plain dicts
    back."""

    __slots__ = ("_data", "_where")

    def __init__(self, data: Mapping[str, Any], where: str = ""):
        object.__setattr__(self, "_where", where)
        object.__setattr__(self, "_data", {k: freeze(v, f"{where}.{k}" if where else str(k))
                                           for k, v in data.items()})

    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(f"no config key '{self._where + '.' if self._where else ''}{key}' "
                           f"(known: {', '.join(sorted(map(str, self._data)))})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("a resolved config is read-only")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.thaw()!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # copy / deepcopy / pickle
        return (type(self), (self.thaw(), self._where))

    def thaw(self) -> dict[str, Any]:
        return {k: thaw(v) for k, v in self._data.items()}


def freeze(value: Any, where: str = "") -> Any:
    """Mappings -> ``FrozenMapping``, lists -> tuples, recursively; other values unchanged."""
    if isinstance(value, (FrozenMapping, Config)):
        return value
    if isinstance(value, Mapping):
        return FrozenMapping(value, where)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v, where) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of ``freeze`` (tuples come back as lists, as YAML wrote them)."""
    return to_builtin(value)


def merge_nested(defaults: Mapping[str, Any], conf: Mapping[str, Any] | None,
                 owner: str = "config", prefix: str = "") -> dict[str, Any]:
    """``defaults`` updated with ``conf``, recursively, by the ``Config`` rules: a key the
    defaults do not have is an error naming the known keys, and a value is cast to its default's
    type (``coerce``; a fractional number under an integer default stays a number). A section whose default is an empty mapping is free-form (its keys belong
    to something else that checks them); ``None`` for a section keeps its defaults."""
    merged = copy.deepcopy(to_builtin(defaults))
    for k, v in (conf or {}).items():
        path = f"{prefix}{k}"
        if k not in merged:
            raise ConfigError(f"unknown config key '{path}' for {owner} "
                              f"(known: {', '.join(sorted(map(str, merged)))})")
        d = merged[k]
        if isinstance(d, Mapping) and d and (isinstance(v, Mapping) or v is None):
            merged[k] = merge_nested(d, v, owner, f"{path}.")
        elif isinstance(d, int) and not isinstance(d, bool) and isinstance(v, float) \
                and not v.is_integer():
            merged[k] = v  # a file's default of 0 often means "a number" (e.g. seconds): kept
        elif isinstance(d, (bool, int, float)) and not isinstance(v, (Mapping, list, tuple)):
            merged[k] = coerce(path, v, d)
        else:
            merged[k] = copy.deepcopy(to_builtin(v))
    return merged
