"""Replay camera topics from a rosbag2 bag without ``ros2 bag`` (works without a ROS 2 install).

Why: the extractor node is exercised on recorded data the same way it runs live. The bag is read
with ``rosbags`` (:func:`local_features_ros.bags.iter_raw`), each CDR payload becomes an rclpy
message with ``rclpy.serialization.deserialize_message`` and is published on the original topic
(optionally under a prefix), at the recorded pace scaled by ``rate`` or as fast as possible
(``rate = 0``). With ``clock`` the bag time is published on ``/clock`` before each message so
nodes with ``use_sim_time`` follow the bag.

With ``--done-topic`` (the extractor's ``~/frame_done``) the replay is lossless: at most
``--window`` images are published and not yet acknowledged by the node (``ros/flow_control.py``),
so ``rate = 0`` means "as fast as the node takes it" and a positive rate is never faster than the
node either. ``--report`` writes what was sent and how the node answered (JSON); the exit status
is 1 when the node stopped acknowledging, 2 for a bag or topic that cannot be played.

    bag_player BAG [--rate 1.0] [--loop] [--topics T ...] [--prefix /replay] [--clock]
               [--done-topic /feature_extractor/frame_done [--window 2] [--report R.json]]
    ros2 run local_features_ros bag_player BAG ...
"""

from __future__ import annotations

import argparse
import importlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.utilities import remove_ros_args

from local_features_ros.bags import (
    CAMERA_INFO_MSGTYPE,
    COMPRESSED_MSGTYPE,
    IMAGE_MSGTYPE,
    BagError,
    iter_raw,
    list_topics,
)
from local_features_ros.ros.flow_control import (
    DEFAULT_ACK_TIMEOUT_S,
    DEFAULT_WINDOW,
    FrameCredits,
    ReplayReport,
)

__all__ = ["PlayerArgs", "PlayStats", "BagPlayer", "message_class", "main"]

DEFAULT_TYPES = (IMAGE_MSGTYPE, COMPRESSED_MSGTYPE, CAMERA_INFO_MSGTYPE)


@dataclass
class PlayerArgs:
    """What to play and how (mirrors the command line)."""

    bag: str
    rate: float = 1.0  # 1.0 = recorded pace, 2.0 = twice as fast, 0 = as fast as possible
    loop: bool = False
    topics: list[str] | None = None  # None = every Image / CompressedImage / CameraInfo topic
    prefix: str = ""  # published topic = prefix + recorded topic
    clock: bool = False  # publish rosgraph_msgs/Clock on /clock
    qos_depth: int = 10
    wait_subscribers: int = 0  # before playing, wait until each played topic has this many
    wait_timeout: float = 10.0  # seconds to wait for those subscribers
    start_delay: float = 0.0  # seconds to sleep after discovery before the first message
    done_topic: str = ""  # the node's ~/frame_done: lossless flow control (empty = open loop)
    window: int = DEFAULT_WINDOW  # images in flight without acknowledgement
    ack_timeout: float = DEFAULT_ACK_TIMEOUT_S  # give up when the node acknowledges nothing


@dataclass
class PlayStats:
    """Counters of one player (published / skipped messages, loops done)."""

    published: int = 0
    skipped: int = 0
    loops: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)


def message_class(msgtype: str) -> Any:
    """``pkg/msg/Name`` -> the rclpy message class (ImportError/AttributeError if unavailable)."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _join(prefix: str, topic: str) -> str:
    if not prefix:
        return topic
    return "/" + "/".join(p for p in (prefix.strip("/"), topic.strip("/")) if p)


class BagPlayer:
    """Publishes a bag's camera topics on ``node``. ``play()`` blocks; ``start()`` runs it in a
    thread that ``stop()`` ends. Messages that do not deserialize are skipped and counted."""

    def __init__(self, node: Node, args: PlayerArgs) -> None:
        self.node = node
        self.args = args
        if args.rate < 0:
            raise ValueError(f"rate must be >= 0, got {args.rate}")
        available = list_topics(args.bag)  # BagError for a missing / broken bag
        if args.topics:
            missing = [t for t in args.topics if t not in available]
            if missing:
                raise BagError(f"topics {missing} not in bag {args.bag}; "
                               f"it has {sorted(available)}")
            chosen = {t: available[t] for t in args.topics}
        else:
            chosen = {t: m for t, m in available.items() if m in DEFAULT_TYPES}
        if not chosen:
            raise BagError(f"bag {args.bag} has no Image / CompressedImage / CameraInfo topic")
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, args.qos_depth),
                         reliability=ReliabilityPolicy.RELIABLE)
        self._classes: dict[str, Any] = {}
        self._pubs: dict[str, Any] = {}
        for topic, msgtype in chosen.items():
            try:
                cls = message_class(msgtype)
            except (ImportError, AttributeError, ValueError):
                node.get_logger().warning(f"no Python message type {msgtype}: not playing {topic}")
                continue
            self._classes[topic] = cls
            self._pubs[topic] = node.create_publisher(cls, _join(args.prefix, topic), qos)
        if not self._pubs:
            raise BagError(f"none of the bag's topics {sorted(chosen)} has an importable type")
        self._clock_pub = None
        if args.clock:
            from rosgraph_msgs.msg import Clock

            self._clock_cls = Clock
            self._clock_pub = node.create_publisher(Clock, "/clock", 10)
        self.stats = PlayStats()
        #: recorded topics whose messages are images (the ones the node acknowledges)
        self._image_topics = {t for t in self._pubs
                              if chosen[t] in (IMAGE_MSGTYPE, COMPRESSED_MSGTYPE)}
        self.credits = (FrameCredits(node, args.done_topic, args.window, args.ack_timeout)
                        if args.done_topic else None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def topics(self) -> dict[str, str]:
        """recorded topic -> published topic"""
        return {t: p.topic_name for t, p in self._pubs.items()}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.play, name="bag_player", daemon=False)
        self._thread.start()
        return self._thread

    def _wait_for_subscribers(self) -> None:
        if self.args.wait_subscribers <= 0:
            return
        deadline = time.monotonic() + self.args.wait_timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            if all(p.get_subscription_count() >= self.args.wait_subscribers
                   for p in self._pubs.values()) and (self.credits is None
                                                      or self.credits.connected()):
                return
            time.sleep(0.02)
        self.node.get_logger().warning("still waiting for subscribers; playing anyway")

    def _publish_clock(self, t_ns: int) -> None:
        msg = self._clock_cls()
        msg.clock.sec = t_ns // 1_000_000_000
        msg.clock.nanosec = t_ns % 1_000_000_000
        self._clock_pub.publish(msg)

    def play_once(self) -> int:
        """One pass over the bag; returns the number of messages published."""
        published = 0
        wall0 = bag0 = None
        credits = self.credits
        for topic, _msgtype, t_ns, raw in iter_raw(self.args.bag, list(self._pubs)):
            if self._stop.is_set():
                break
            is_image = topic in self._image_topics
            if credits is not None and is_image and not credits.acquire(self._stop):
                self._stop.set()  # stopped, or the node stalled (credits.report says which)
                break
            if self.args.rate > 0:
                if wall0 is None:
                    wall0, bag0 = time.monotonic(), t_ns
                due = wall0 + (t_ns - bag0) * 1e-9 / self.args.rate
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
            try:
                msg = deserialize_message(raw, self._classes[topic])
            except Exception as exc:  # a corrupt record must not end the replay
                self.stats.skipped += 1
                self.node.get_logger().warning(f"skipping undecodable message on {topic}: {exc}")
                continue
            if self._clock_pub is not None:
                self._publish_clock(t_ns)
            self._pubs[topic].publish(msg)
            if credits is not None and is_image:
                credits.sent()
            published += 1
            self.stats.published += 1
            self.stats.per_topic[topic] = self.stats.per_topic.get(topic, 0) + 1
        return published

    def play(self) -> PlayStats:
        """Play (looping if asked) until the bag ends or ``stop()``."""
        self._wait_for_subscribers()
        if self.args.start_delay > 0:
            self._stop.wait(self.args.start_delay)
        t0 = time.monotonic()
        while not self._stop.is_set():
            n = self.play_once()
            self.stats.loops += 1
            if not self.args.loop or n == 0:
                break
        if self.credits is not None and not self.credits.report.stalled:
            self.credits.drain(self._stop)
        self._flush()
        if self.credits is not None:
            self.credits.report.elapsed_s = time.monotonic() - t0
        return self.stats

    @property
    def report(self) -> ReplayReport | None:
        """The node's answers (flow control only)."""
        return self.credits.report if self.credits is not None else None

    def _flush(self, timeout_s: float = 2.0) -> None:
        """Let reliable subscribers acknowledge the tail before the process may exit."""
        pubs = list(self._pubs.values()) + ([self._clock_pub] if self._clock_pub else [])
        for pub in pubs:
            try:
                pub.wait_for_all_acked(Duration(seconds=timeout_s))
            except Exception:  # older rmw without the call: nothing better to do
                break


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bag_player", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap)")
    p.add_argument("--rate", type=float, default=1.0,
                   help="playback speed factor, 0 = as fast as possible")
    p.add_argument("--loop", action="store_true", help="restart at the end")
    p.add_argument("--topics", nargs="+", default=None,
                   help="topics to play (default: Image / CompressedImage / CameraInfo topics)")
    p.add_argument("--prefix", default="", help="publish under this prefix, e.g. /replay")
    p.add_argument("--clock", action="store_true", help="publish bag time on /clock")
    p.add_argument("--qos-depth", type=int, default=10)
    p.add_argument("--wait-subscribers", type=int, default=0,
                   help="wait until every played topic has this many subscribers")
    p.add_argument("--wait-timeout", type=float, default=10.0)
    p.add_argument("--start-delay", type=float, default=0.0)
    p.add_argument("--done-topic", default="", help="the node's ~/frame_done: publish an image "
                   "only while fewer than --window are unacknowledged (lossless replay)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help="images in flight with --done-topic (default: %(default)s)")
    p.add_argument("--ack-timeout", type=float, default=DEFAULT_ACK_TIMEOUT_S,
                   help="give up when the node acknowledges nothing for this long "
                   "(seconds, default: %(default)s)")
    p.add_argument("--report", default="", help="write the replay report (JSON) here")
    return p


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv if argv is None else ["bag_player", *argv])
    ns = build_parser().parse_args(remove_ros_args(argv)[1:])
    args = PlayerArgs(bag=ns.bag, rate=ns.rate, loop=ns.loop, topics=ns.topics, prefix=ns.prefix,
                      clock=ns.clock, qos_depth=ns.qos_depth, wait_subscribers=ns.wait_subscribers,
                      wait_timeout=ns.wait_timeout, start_delay=ns.start_delay,
                      done_topic=ns.done_topic, window=ns.window, ack_timeout=ns.ack_timeout)
    rclpy.init(args=argv)
    node = Node("bag_player")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    # The acknowledgements arrive on this node while play() blocks the main thread.
    spinner = threading.Thread(target=_spin, args=(executor,), name="bag_player_spin",
                               daemon=True)
    spinner.start()
    player = None
    try:
        player = BagPlayer(node, args)
        node.get_logger().info(f"playing {args.bag}: {player.topics} rate={args.rate} "
                               f"loop={args.loop}"
                               + (f" window={args.window}" if args.done_topic else ""))
        stats = player.play()
        node.get_logger().info(f"published {stats.published} messages "
                               f"({stats.skipped} skipped, {stats.loops} pass(es))")
        report = player.report
        if report is None:
            return 0
        node.get_logger().info(
            f"node acknowledged {report.acknowledged} of {report.published} images: "
            f"{report.processed} processed, {report.bad_input} bad input, "
            f"{report.dropped} dropped" + (f"; {report.reason}" if report.reason else ""))
        return 1 if report.stalled else 0
    except BagError as exc:
        node.get_logger().error(str(exc))
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        if player is not None and player.report is not None and ns.report:
            player.report.write(ns.report)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def _spin(executor: SingleThreadedExecutor) -> None:
    try:
        executor.spin()
    except Exception:  # shutdown while spinning
        pass


if __name__ == "__main__":
    raise SystemExit(main())
