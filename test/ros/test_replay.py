"""Recordings processed whole: bag and image-folder replay with flow control, and exit statuses
that say what happened.

The bags here are recorded at 100 Hz while the node needs several times longer per frame, so a
source that followed the recorded timing without waiting for the node would lose most frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from local_features_ros.bags import write_synthetic_bag
from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


def make_bag(path: Path, n: int, size: tuple[int, int] = (320, 240), period: float = 0.01,
             **kwargs) -> tuple[Path, list[int]]:
    """A bag of ``n`` rendered frames ``period`` seconds apart; returns it and the stamps (ns)."""
    frames = list(SyntheticScene(3, PinholeCamera.default(*size)).frames(n, "orbit"))
    stamps = [T0 + period * i for i in range(n)]
    bag = write_synthetic_bag(path, [(s, f.image) for s, f in zip(stamps, frames)],
                              K=frames[0].K, **kwargs)
    return bag, [int(round(s * 1e9)) for s in stamps]


def cli(env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "local_features_ros.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


class FeatureListener:
    """An independent rclpy subscriber on the node's ``~/features`` (as a user's VO node)."""

    def __init__(self, domain: int, topic: str = "/feature_extractor/features") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("replay_listener", context=self.ctx)
        self.stamps: list[int] = []
        self.node.create_subscription(
            PointCloud2, topic,
            lambda m: self.stamps.append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec),
            QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def spin_while(self, proc: subprocess.Popen, timeout: float) -> None:
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
        for _ in range(20):
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


@pytest.mark.parametrize("rate", ["0", "1"], ids=["as-fast-as-the-node", "recorded-speed"])
def test_run_bag_delivers_every_frame_in_order_to_a_subscriber(tmp_path, ros_env, rate):
    """`run --bag` with a learned method much slower than the recording: every stamp reaches an
    independent subscriber, in order, and the run says so with exit status 0."""
    n = 24
    bag, stamps = make_bag(tmp_path / "bag", n)
    listener = FeatureListener(int(ros_env["ROS_DOMAIN_ID"]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "local_features_ros.cli", "run", "--method", "superpoint",
         "--bag", str(bag), "--rate", rate, "--log-dir", str(tmp_path / "logs")],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        listener.spin_while(proc, 240)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        listener.close()
    logs = {p.name: p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log")}
    assert proc.returncode == 0, (out, logs)
    assert f"ok: {n} processed, 0 bad input, 0 dropped, 0 unanswered of {n} images sent" in out
    assert listener.stamps == stamps, (out, logs)
    assert f"received {n}, processed {n}, dropped 0" in logs["feature_extractor.log"]
    assert "--clock" in out  # the bag's clock by default


def test_run_bag_refuses_what_cannot_be_replayed(tmp_path, ros_env):
    """A missing bag, a topic that is not in the bag, a topic of another type: exit 2 with one
    line naming the problem, before any process starts."""
    bag, _ = make_bag(tmp_path / "bag", 2, size=(64, 48), compressed_topic=None)
    cases = [
        (["--bag", str(tmp_path / "nope")], "does not exist"),
        (["--bag", str(bag), "--image", "/wrong/topic"],
         "image topic /wrong/topic is not in bag"),
        (["--bag", str(bag), "--camera-info", "/camera/image_raw"],
         "is not a CameraInfo topic"),
        (["--bag", str(bag), "--set", "input_transport=compressed"],
         "has no compressed image topic"),
        (["--bag", str(bag), "--rate", "-1"], "--rate must be >= 0"),
    ]
    for args, needle in cases:
        proc = cli(ros_env, "run", "--method", "orb", *args, timeout=60)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("local-features run: error: "), err
        assert needle in err[0], (args, err)
        assert "Traceback" not in proc.stdout + proc.stderr
        assert "starting feature_extractor" not in proc.stdout + proc.stderr


def test_compressed_only_bag_replays_without_flags(tmp_path, ros_env):
    bag, _ = make_bag(tmp_path / "bag", 6, size=(160, 120), image_topic=None)
    proc = cli(ros_env, "run", "--method", "orb", "--bag", str(bag))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "input_transport=compressed" in proc.stdout
    assert "ok: 6 processed, 0 bad input, 0 dropped" in proc.stdout


def test_run_bag_with_corrupt_frames_reports_them_and_keeps_order(tmp_path, ros_env):
    """Bad frames are answered as bad input (the replay neither stalls nor counts them lost)."""
    bag, _ = make_bag(tmp_path / "bag", 9, size=(160, 120), compressed_topic=None,
                      corrupt_every=3)
    proc = cli(ros_env, "run", "--method", "orb", "--bag", str(bag))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: 6 processed, 3 bad input, 0 dropped, 0 unanswered of 9 images sent" in proc.stdout


def test_demo_bag_processes_and_collects_every_frame(tmp_path, ros_env):
    """`demo --bag` with a learned method: every frame processed, collected, none dropped,
    latency on the bag's clock (not wall time against a recorded stamp)."""
    n = 16
    bag, _ = make_bag(tmp_path / "bag", n, compressed_topic=None)
    out = tmp_path / "out"
    proc = cli(ros_env, "demo", "--method", "superpoint", "--bag", str(bag), "--out", str(out),
               "--domain-id", ros_env["ROS_DOMAIN_ID"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == n
    assert summary["replay"] == {"published": n, "processed": n, "bad_input": 0, "dropped": 0,
                                 "unacknowledged": 0, "stalled": False}
    assert 0 <= summary["latency_median_ms"] < 60_000
    assert len(list(out.glob("overlay_*.png"))) == n
    assert proc.stdout.strip().splitlines()[-1].startswith(f"ok: all {n} frames sent")


def test_frame_credits_wait_for_acknowledgements_and_report_a_stall(ros_env):
    """The source's side of the handshake, in one process: the window holds, an acknowledgement
    frees a slot, and silence beyond the timeout is reported instead of waiting forever."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Header

    from local_features_ros.ros.flow_control import (PROCESSED, FrameCredits, done_qos,
                                                     done_topic)

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    try:
        src = rclpy.create_node("credits_source", context=ctx)
        sink = rclpy.create_node("feature_extractor", context=ctx)
        pub = sink.create_publisher(Header, "~/frame_done", done_qos())
        assert pub.topic_name == done_topic()

        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(src)
        executor.add_node(sink)

        def spin() -> None:
            executor.spin_once(timeout_sec=0.01)

        credits = FrameCredits(src, done_topic(), window=1, ack_timeout_s=1.0, spin=spin)
        end = time.monotonic() + 10
        while not (credits.connected() and pub.get_subscription_count()) \
                and time.monotonic() < end:
            spin()
        assert credits.acquire()
        credits.sent()
        t0 = time.monotonic()
        assert not credits.acquire()  # nobody answers: the window stays full until the timeout
        assert 0.9 <= time.monotonic() - t0 < 5 and credits.report.stalled
        assert "acknowledged nothing for 1 s (0 of 1 images)" in credits.report.reason
        credits.report.stalled = False
        credits.ack_timeout_s = 10.0
        msg = Header(frame_id=PROCESSED)
        msg.stamp.sec = 5
        pub.publish(msg)
        assert credits.drain() and credits.acquire()
        assert (credits.report.acknowledged, credits.report.processed) == (1, 1)
        executor.shutdown()
        src.destroy_node()
        sink.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)

