"""Options every extractor-driven command shares (extract, match, evaluate, bench).

Why one place: the design contract says the same ``--method/--weights/--set key=value`` mean the
same thing in every command and as node parameters; one parser keeps them from drifting.
"""

from __future__ import annotations

import argparse


def add_extractor_arguments(parser: argparse.ArgumentParser, method: bool = True,
                            method_help: str = "extractor name (see `local-features methods`)",
                            weights_help: str = "local checkpoint (official layout or project "
                                                "format); 'random' = untrained; default: shipped"
                            ) -> None:
    """``--method`` (optional to add), ``--weights``, ``--device``, ``--precision``, ``--set``."""
    if method:
        parser.add_argument("--method", required=True, help=method_help)
    parser.add_argument("--weights", default=None, help=weights_help)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--precision", default="fp32", help="fp32 | fp16 | bf16 | auto")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="extractor config override (repeatable), e.g. --set max_keypoints=1000")


def split_setting(item: str) -> tuple[str, str]:
    """One ``--set KEY=VALUE`` -> ``(KEY, VALUE)``, both stripped; the value stays a string.

    The one definition of ``--set`` parsing: the extractor commands and the offline trainer
    (``training/config.py``, dotted keys, values then read as YAML) both split with it."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"bad --set '{item}': expected KEY=VALUE")
    return key, value.strip()


def parse_settings(items: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{k: v}`` (values stay strings; the extractor casts them)."""
    return dict(split_setting(item) for item in items or [])
