"""Lossless replay: the node acknowledges every input image, the source waits for credit.

Why: a recording must reach the node whole, however slow the method. A bigger queue only moves
the loss (a slow method on a long bag still overflows it, and a fast source floods DDS). Instead
the node publishes one ``std_msgs/Header`` on ``~/frame_done`` for every image it has finished
with -- ``stamp`` = the image's stamp, ``frame_id`` = the outcome (:data:`PROCESSED`,
``bad_input:<reason>`` or :data:`DROPPED`) -- and a replaying source (bag player, image folder)
keeps at most ``window`` images published but not yet acknowledged. With ``window = 2`` the next
image is already in the node's queue when it finishes one, so the node never waits for the
transport, and its FIFO never holds more than two frames.

Live cameras do not use this: they keep the node's latest-frame behaviour.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from .names import NODE_NAME

#: The node's acknowledgement topic (node-relative).
DONE_TOPIC = "~/frame_done"
#: Outcomes carried in ``Header.frame_id``.
PROCESSED = "processed"
DROPPED = "dropped"
BAD_INPUT_PREFIX = "bad_input:"
#: Images in flight a replaying source allows by default.
DEFAULT_WINDOW = 2
#: Seconds a source waits for the next acknowledgement before it gives up (a stuck or dead node).
DEFAULT_ACK_TIMEOUT_S = 120.0


def done_topic(namespace: str = "") -> str:
    """Absolute ``~/frame_done`` of the node in ``namespace``."""
    ns = namespace.strip("/")
    return f"/{ns}/{NODE_NAME}/frame_done" if ns else f"/{NODE_NAME}/frame_done"


def done_qos() -> QoSProfile:
    """Reliable and deep: an acknowledgement must never be lost (the source would stall)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                      reliability=ReliabilityPolicy.RELIABLE)


def done_message(header: Any, outcome: str) -> Header:
    return Header(stamp=header.stamp, frame_id=outcome)


@dataclass
class ReplayReport:
    """What a replaying source saw: images sent and how the node answered each one."""

    published: int = 0
    acknowledged: int = 0
    processed: int = 0
    bad_input: int = 0
    dropped: int = 0
    out_of_order: int = 0
    stalled: bool = False
    elapsed_s: float = 0.0
    reason: str = ""

    @property
    def unacknowledged(self) -> int:
        return max(0, self.published - self.acknowledged)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({**asdict(self),
                                          "unacknowledged": self.unacknowledged}, indent=2))

    @classmethod
    def read(cls, path: str | Path) -> "ReplayReport | None":
        """The report a source wrote, or None when it wrote none (it failed before playing)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        data.pop("unacknowledged", None)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class FrameCredits:
    """Source side of the handshake, on the source's own rclpy node.

    ``acquire()`` blocks until fewer than ``window`` images are unacknowledged; ``sent()`` counts
    one more in flight; ``drain()`` waits for the last ones. The subscription callback must be
    spun by the caller's executor (``spin`` is called while waiting when given, e.g.
    ``lambda: rclpy.spin_once(node, timeout_sec=0.05)``; else another thread spins).
    """

    def __init__(self, node: Any, topic: str, window: int = DEFAULT_WINDOW,
                 ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
                 spin: Callable[[], None] | None = None) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self.ack_timeout_s = float(ack_timeout_s)
        self.topic = topic
        self.report = ReplayReport()
        self._node = node
        self._spin = spin
        self._cv = threading.Condition()
        self._last_ack = time.monotonic()
        self._last_stamp_ns = -1
        self._sub = node.create_subscription(Header, topic, self._on_done, done_qos())

    def _on_done(self, msg: Header) -> None:
        stamp = msg.stamp.sec * 1_000_000_000 + msg.stamp.nanosec
        outcome = msg.frame_id
        with self._cv:
            r = self.report
            r.acknowledged += 1
            if outcome == PROCESSED:
                r.processed += 1
            elif outcome == DROPPED:
                r.dropped += 1
            else:
                r.bad_input += 1
            if stamp < self._last_stamp_ns:
                r.out_of_order += 1
            self._last_stamp_ns = stamp
            self._last_ack = time.monotonic()
            self._cv.notify_all()

    def connected(self) -> bool:
        """The node's ``~/frame_done`` publisher is discovered."""
        return self._node.count_publishers(self.topic) > 0

    def _wait(self, ready: Callable[[], bool], stop: threading.Event | None) -> bool:
        """Wait until ``ready()`` (True), stop (False) or no acknowledgement for
        ``ack_timeout_s`` (False, ``report.stalled``)."""
        while True:
            with self._cv:
                if ready():
                    return True
                if time.monotonic() - self._last_ack > self.ack_timeout_s:
                    self.report.stalled = True
                    self.report.reason = (
                        f"the node acknowledged nothing for {self.ack_timeout_s:g} s "
                        f"({self.report.acknowledged} of {self.report.published} images)")
                    return False
                if self._spin is None:
                    self._cv.wait(0.05)
            if stop is not None and stop.is_set():
                return False
            if self._spin is not None:
                self._spin()

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Room for one more image (False: stopped or the node stalled)."""
        return self._wait(lambda: self.report.published - self.report.acknowledged
                          < self.window, stop)

    def sent(self) -> None:
        with self._cv:
            if self.report.published == self.report.acknowledged:
                self._last_ack = time.monotonic()  # the timeout counts from the first in flight
            self.report.published += 1

    def drain(self, stop: threading.Event | None = None) -> bool:
        """Every published image acknowledged (False: stopped or stalled)."""
        return self._wait(lambda: self.report.acknowledged >= self.report.published, stop)
