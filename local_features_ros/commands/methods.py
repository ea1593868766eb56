"""``local-features methods``: list the registry with each method's config keys."""

from __future__ import annotations

import argparse

HELP = "list available methods (declared by their own modules) and their config keys"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", nargs="?", help="show one method's defaults")


def main(args: argparse.Namespace) -> int:
    from ..registry import available_methods, get_extractor_class

    names = [args.method] if args.method else available_methods()
    for name in names:
        cls = get_extractor_class(name)
        conf = ", ".join(f"{k}={v}" for k, v in cls.full_default_conf().items())
        tag = " [evaluation only]" if cls.evaluation_only else ""
        print(f"{name}{tag}: {cls.summary}\n    licence: {cls.licence}\n    keys: {conf}")
    return 0
