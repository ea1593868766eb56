"""``local-features``: every user-facing command, one subcommand each.

Command modules are imported lazily (``extract`` must not pay for training imports). Training
commands (``train``, ``bag-to-dataset``, ...) live in ``training/`` and are found through the
``local_features_ros.commands`` entry-point group, so runtime code never imports ``training``.
Each command module defines ``HELP``, ``add_arguments(parser)`` and ``main(args) -> int``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import logging
import sys
from importlib.metadata import entry_points

COMMANDS: dict[str, str] = {
    "extract": "local_features_ros.commands.extract",
    "match": "local_features_ros.commands.match",
    "run": "local_features_ros.ros.commands.run",  # ROS commands: by path, never imported
    "demo": "local_features_ros.ros.commands.demo",  # from outside ros/ (test_core_contracts)
    "evaluate": "local_features_ros.commands.evaluate",
    "bench": "local_features_ros.commands.bench",
    "export": "local_features_ros.commands.export",
    "methods": "local_features_ros.commands.methods",
    "images-to-bag": "local_features_ros.commands.images_to_bag",
    "odometry": "local_features_ros.ros.commands.odometry",  # ROS: by path, like run/demo
}


def _plugin_commands() -> dict[str, str]:
    found = {}
    for ep in entry_points(group="local_features_ros.commands"):
        found[ep.name] = ep.value
    return found


def static_help(module: str) -> str:
    """A command module's ``HELP`` string read from its source, without importing it (the
    top-level ``--help`` lists every command; importing them all would cost seconds)."""
    try:
        spec = importlib.util.find_spec(module)
        origin = spec.origin if spec is not None else None
        if not origin or not origin.endswith(".py"):
            return ""
        with open(origin, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (ImportError, OSError, SyntaxError, ValueError):
        return ""
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HELP"
                                                 for t in node.targets)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {**COMMANDS, **_plugin_commands()}
    parser = argparse.ArgumentParser(
        prog="local-features", description="Learned local features: extraction, matching, "
        "evaluation, the ROS 2 node and its demo, training.",
        epilog="`local-features COMMAND --help` lists a command's options.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported; the others show by name in --help.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name in sorted(commands):
        if name == chosen:
            module = importlib.import_module(commands[name])
            p = sub.add_parser(name, help=getattr(module, "HELP", ""),
                               description=getattr(module, "HELP", ""))
            module.add_arguments(p)
            p.set_defaults(_module=module)
        else:
            sub.add_parser(name, help=(static_help(commands[name]) if chosen is None else "")
                           or f"(see: local-features {name} --help)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.main(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        # One-line reason and a non-zero status on bad input (docs/ARCHITECTURE.md#contracts).
        print(f"local-features {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
