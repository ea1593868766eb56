"""The one configuration system (``local_features_ros/config.py``): typed frozen configs that
merge their defaults down a class hierarchy, one coercion, one ``--set`` parser, validation
without an instance, and builtin round trips for checkpoints."""

from __future__ import annotations

import dataclasses
import io
from typing import Any, ClassVar, Mapping

import pytest
import torch

from local_features_ros.config import (Config, ConfigError, FrozenMapping, KeyInfo, coerce,
                                       freeze, make_config, merge_nested, parse_dotlist,
                                       parse_settings, parse_value, split_setting, thaw,
                                       to_builtin)


class Base(Config):
    """A two-level hierarchy: ``Base`` declares two keys, ``Child`` adds some and changes one."""

    size: int = 4
    gain: float = 1.0

    owner: ClassVar[str] = "thing 'base'"
    runtime_keys: ClassVar[frozenset[str]] = frozenset({"gain"})
    key_info: ClassVar[Mapping[str, KeyInfo]] = {"size": KeyInfo("cells", int_range=(1, 64))}

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        super().validate(conf)
        if conf["size"] < 1:
            raise ConfigError(f"size must be >= 1, got {conf['size']}")


class Child(Base):
    size: int = 8  # same key, new default
    name: str = "a"
    flip: bool = False
    scales: tuple[float, ...] = (1.0, 2.0)

    owner: ClassVar[str] = "thing 'child'"
    key_info: ClassVar[Mapping[str, KeyInfo]] = {"flip": KeyInfo("mirror first")}

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        super().validate(conf)
        if conf["name"] not in ("a", "b"):
            raise ConfigError(f"name must be a or b, got '{conf['name']}'")


def test_defaults_merge_down_the_hierarchy():
    assert Base.defaults() == {"size": 4, "gain": 1.0}
    assert Child.defaults() == {"size": 8, "gain": 1.0, "name": "a", "flip": False,
                                "scales": [1.0, 2.0]}
    assert list(Child.defaults()) == ["size", "gain", "name", "flip", "scales"]  # bases first
    assert set(Child.key_info) == {"size", "flip"}  # descriptions merge too
    assert Child.runtime_keys == {"gain"}  # inherited unless redeclared
    # a config declared as a dict (the extractors' ``default_conf``) on top of a class
    Made = make_config("MadeConfig", {"extra": [0.5], "gain": 3.0, "free": None}, Child,
                       owner="thing 'made'")
    assert issubclass(Made, Child)
    assert Made.defaults() == {**Child.defaults(), "gain": 3.0, "extra": [0.5], "free": None}
    with pytest.raises(ConfigError, match="name must be a or b"):  # the bases' checks still run
        Made.check({"name": "z"})
    with pytest.raises(ConfigError, match="config key 'items' of thing 'bad' is not usable"):
        make_config("BadConfig", {"items": 1}, Config, owner="thing 'bad'")


def test_reads_like_a_mapping_and_like_attributes():
    c = Child()
    assert c["size"] == c.size == 8 and c.get("nope", 5) == 5 and "flip" in c
    assert dict(c) == {**c} == Child.field_defaults()
    assert len(c) == 5 and list(c) == list(Child.defaults())
    with pytest.raises(KeyError, match=r"no config key 'sise'.*known: flip, gain, name"):
        c["sise"]
    assert dataclasses.asdict(c)["scales"] == (1.0, 2.0)
    assert dataclasses.replace(c, size=2).size == 2  # still a dataclass for every caller


def test_frozen():
    c = Child()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.size = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        c["size"] = 3  # type: ignore[index]
    assert isinstance(c.scales, tuple)  # list values are stored as tuples
    assert Child.create(scales=[3, 4]).scales == (3.0, 4.0)
    assert hash(c) == hash(Child())


@pytest.mark.parametrize("value, default, expected", [
    ("5", 1, 5), ("1e3", 1, 1000), (4.0, 1, 4), ("0.5", 0.1, 0.5), (2, 0.1, 2.0),
    ("inf", 0.1, float("inf")), ("true", False, True), ("Off", True, False), ("1", False, True),
    (0, True, False), ("[1, 2]", [0.5], [1.0, 2.0]), ("1,2", [0.5], [1.0, 2.0]),
    ([3], [0.5], [3.0]), ("[4]", [1], [4]), ((1, 2), (0.5,), (1.0, 2.0)), ("text", "", "text"),
    (None, 1, None), ("x", None, "x"),
])
def test_coercion_of_each_type(value, default, expected):
    got = coerce("k", value, default)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value, default", [
    ("abc", 1), ("1.5", 1), (1.5, 1), (True, 1), ("nan", 0.1), ("x", 0.1), ("maybe", True),
    (2, True), ("[a]", [0.5]), (5, [0.5]), (float("nan"), 0.1),
])
def test_bad_value_is_named(value, default):
    with pytest.raises(ConfigError, match=r"bad value .* for 'the.key' \(expected"):
        coerce("the.key", value, default)


def test_unknown_key_and_bad_values_are_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'sise' for thing 'child' "
                                          r"\(known: flip, gain, name, scales, size\)"):
        Child.create(sise=3)
    with pytest.raises(ConfigError, match="bad value 'big' for 'size'"):
        Child.create(size="big")
    with pytest.raises(ConfigError, match="size must be >= 1, got 0"):
        Child(size=0)  # direct construction validates too
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        Child.create(name="c")


def test_validation_is_a_classmethod_without_an_instance():
    made: list[Any] = []

    class Counted(Child):
        def __post_init__(self) -> None:
            made.append(self)
            super().__post_init__()

    merged = Counted.check({"size": "16", "flip": "yes"})
    assert merged["size"] == 16 and merged["flip"] is True and not made
    with pytest.raises(ConfigError, match="name must be a or b"):
        Counted.check({"name": "q"})
    assert not made
    assert Counted.cast("size", "3", name="grid.size") == 3
    with pytest.raises(ConfigError, match="bad value 'x' for 'grid.size'"):
        Counted.cast("size", "x", name="grid.size")


def test_replace_and_runtime_update_are_validated():
    c = Child()
    d = c.replace(gain="2.5", size=3)
    assert (d.gain, d.size, c.gain) == (2.5, 3, 1.0) and c.replace() is c
    with pytest.raises(ConfigError, match="size must be >= 1"):
        c.replace(size=-1)
    assert c.update_runtime({"gain": 0.5}).gain == 0.5
    with pytest.raises(ConfigError, match="'size' cannot change at runtime for thing 'child'"):
        c.update_runtime({"gain": 0.5, "size": 2})


def test_builtin_round_trip_for_checkpoints():
    c = Child.create(scales=[0.5, 1.0], name="b")
    data = c.to_dict()
    assert data == {"size": 8, "gain": 1.0, "name": "b", "flip": False, "scales": [0.5, 1.0]}
    buf = io.BytesIO()
    torch.save({"config": data}, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)["config"]
    assert Child.create(back) == c
    assert to_builtin({"a": (1, {"b": (2,)}), "c": c}) == {"a": [1, {"b": [2]}], "c": data}


def test_dotlist_parsing():
    assert split_setting(" a.b = c d ") == ("a.b", "c d")
    for bad in ("novalue", "=x", ""):
        with pytest.raises(ConfigError, match="expected KEY=VALUE"):
            split_setting(bad)
    assert parse_settings(["a=1", "b=x", "a=2"]) == {"a": "2", "b": "x"}
    assert parse_dotlist(["train.lr=1e-3", "data.dirs=[a, b]", "x.on=true", "n=3", "s=hello",
                          "e="]) == {"train.lr": 0.001, "data.dirs": ["a", "b"], "x.on": True,
                                     "n": 3, "s": "hello", "e": None}
    assert parse_value("1.5") == 1.5 and parse_value("a: [") == "a: ["


def test_nested_merge_and_frozen_view():
    defaults = {"model": {"width": 8, "depth": 2}, "lr": 1e-3, "data": {}}
    merged = merge_nested(defaults, {"model": {"width": "16"}, "lr": 1, "data": {"any": 1}},
                          owner="'toy training'")
    assert merged == {"model": {"width": 16, "depth": 2}, "lr": 1.0, "data": {"any": 1}}
    with pytest.raises(ConfigError, match=r"unknown config key 'model.widht' for 'toy "
                                          r"training' \(known: depth, width\)"):
        merge_nested(defaults, {"model": {"widht": 1}}, owner="'toy training'")
    frozen = freeze(merged)
    assert isinstance(frozen, FrozenMapping) and frozen["model"]["width"] == 16
    with pytest.raises(TypeError):
        frozen["lr"] = 2  # type: ignore[index]
    with pytest.raises(KeyError, match="no config key 'model.deep'"):
        frozen["model"]["deep"]
    assert thaw(frozen) == merged


def test_runtime_configs_use_it():
    """Extractors, matchers and verification are ``Config``s: one rule set everywhere."""
    from local_features_ros.extractors.base import ExtractorConfig
    from local_features_ros.geometry import VerifyConfig
    from local_features_ros.matchers.lightglue import LightGlueConfig, lightglue_defaults
    from local_features_ros.matching import MatcherConfig
    from local_features_ros.registry import get_extractor_class

    sift = get_extractor_class("sift")
    assert issubclass(sift.config_class, ExtractorConfig)
    assert sift.checked_conf({"max_keypoints": "500"})["max_keypoints"] == 500  # no instance
    with pytest.raises(ConfigError, match=r"unknown config key 'nope' for method 'sift'"):
        sift.checked_conf({"nope": 1})
    for cls in (MatcherConfig, VerifyConfig, LightGlueConfig):
        assert issubclass(cls, Config)
    assert VerifyConfig.create(threshold_px="2").threshold_px == 2.0
    with pytest.raises(ConfigError, match="verify model must be one of"):
        VerifyConfig(model="similarity")
    assert lightglue_defaults("xfeat").filter_threshold == 0.2
    assert MatcherConfig(mutual=False).ratio == 1.0
