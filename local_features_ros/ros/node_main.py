"""The one ``main`` of the package's nodes: own signal handling, ordered shutdown, exit status.

Why: rclpy's default SIGINT handler shuts the context down at once, while a node's worker may be
publishing the frame it is on and its totals are not logged yet. Here SIGINT/SIGTERM only end
the spin loop; ``finish(node)`` then stops the workers and logs, and everything is destroyed in
order. A ``StartupError`` from the node's constructor is a configuration error: one line, exit 2.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from .node_params import StartupError

#: Exit status for startup configuration errors.
EXIT_CONFIG_ERROR = 2


def run_node(make_node: Callable[[], Any], name: str, finish: Callable[[Any], None],
             args: list[str] | None = None) -> int:
    """Build the node with ``make_node()``, spin until a signal, ``finish(node)``, tear down."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    node = None
    executor = None
    try:
        try:
            node = make_node()
        except StartupError as exc:
            rclpy.logging.get_logger(name).error(f"configuration error: {exc}")
            return EXIT_CONFIG_ERROR
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finish(node)
        return 0
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
