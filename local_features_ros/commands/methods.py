"""``local-features methods``: list the registry with each method's config keys."""

from __future__ import annotations

import argparse

HELP = "list available methods and their config keys"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", nargs="?", help="show one method's defaults")


def main(args: argparse.Namespace) -> int:
    from ..registry import available_methods, get_extractor_class

    names = [args.method] if args.method else available_methods()
    for name in names:
        cls = get_extractor_class(name)
        conf = ", ".join(f"{k}={v}" for k, v in cls.full_default_conf().items())
        print(f"{name}: {conf}")
    return 0
