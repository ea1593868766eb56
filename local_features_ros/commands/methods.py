"""``local-features methods``: list the registry with each method's settings and defaults.

The settings are printed as ``--set`` and the node name them (``resize.max_edge``,
``extractor.<method key>``; ``local_features_ros/settings.py``), so what is listed can be pasted.
"""

from __future__ import annotations

import argparse

from ._common import run_command

HELP = "list available methods (declared by their own modules) and their settings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", nargs="?", help="show one method's defaults")


def describe(name: str) -> str:
    """One method's entry: summary, licence and ``name=default`` per setting (node spelling)."""
    from ..extractors.base import ExtractorConfig
    from ..registry import get_extractor_class
    from ..settings import node_name

    cls = get_extractor_class(name)
    shared = ExtractorConfig.known_keys()
    conf = ", ".join(f"{node_name(k, shared)}={v}" for k, v in cls.full_default_conf().items())
    tag = " [evaluation only]" if cls.evaluation_only else ""
    return f"{name}{tag}: {cls.summary}\n    licence: {cls.licence}\n    keys: {conf}"


def main(args: argparse.Namespace) -> int:
    from ..registry import available_methods, get_extractor_class

    def entries() -> list[str]:
        names = [args.method] if args.method else available_methods()
        for name in names:
            get_extractor_class(name)  # unknown method: the registry's message, status 2
        return names

    def show(names: list[str]) -> int:
        for name in names:
            print(describe(name))
        return 0

    return run_command("methods", entries, show)
