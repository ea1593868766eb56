"""The feature_extractor node's end-to-end rate: a live camera stream and lossless replay.

    python bench/bench_node_rate.py                                  # xfeat, orb, aliked
    python bench/bench_node_rate.py --methods xfeat --sizes 640x480 --seconds 20

For every method and frame size, the node runs in its own process (DDS on loopback, own domain)
and this process plays the camera:

1. **Live**: real frames (``../shared/data``: TUM fr2/desk at 640x480, KITTI 07 at 1226x370) are
   published at ``--fps`` for ``--seconds`` (reliable QoS, the node keeps the latest frame as it
   does for a live camera). Reported: frames processed / published, the processed rate, how
   many the node dropped as stale, and the node's resident memory at the start and the end of
   the stream (flat memory = no leak per frame).
2. **Replay**: ``--replay`` frames sent with the node's flow control (``~/frame_done``, two in
   flight), as fast as the node takes them: the node's own throughput, which the two-stage
   pipeline bounds by its slowest stage instead of the sum of all stages. Also reported: the
   node's CPU time (all threads) per replayed frame, which other load on the machine changes
   far less than the rates (with ``n`` cores, ``n * 1000 / CPU ms`` Hz is the most the node
   could reach).

With each image the camera also publishes its ``camera_info`` (the datasets' intrinsics, scaled
to the frame size), as a calibrated camera does, so the node runs its full default path:
essential-matrix verification and ``~/relative_motion``. ``--no-camera-info`` leaves it out
(fundamental-matrix verification, no motion). ``--overlay`` subscribes to ``~/overlay`` as rviz
would, so the node also draws and publishes the overlay image of every frame. ``--set KEY=VALUE``
starts every node with that parameter too (e.g. ``--set backend=openvino``).

Every frame's outcome comes from the node's ``~/frame_done``; numbers are medians of what one run
saw. They depend on the machine and its load: the header names the CPU and the node's
extraction threads (its own choice, ``hardware.extraction_threads``, unless OMP_NUM_THREADS is set).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


def load_frames(size: tuple[int, int], n: int) -> list[np.ndarray]:
    """Real frames at ``size`` (w, h): TUM fr2/desk for VGA, KITTI 07 for KITTI's size, else
    KITTI resized."""
    w, h = size
    folder = DATA / ("tum_fr2desk/rgb" if (w, h) == (640, 480) else "kitti07/image_0")
    files = sorted(folder.glob("*.png"))
    if not files:
        raise SystemExit(f"no frames in {folder} (see ../shared/data/README)")
    out = []
    for p in (files * (n // len(files) + 1))[:n]:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img.shape[1] != w or img.shape[0] != h:
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        out.append(img)
    return out


#: Intrinsics (fx, fy, cx, cy) of the datasets' cameras at their own size (../shared/data/README).
KITTI_K = ((1226, 370), (707.0912, 707.0912, 601.8873, 183.1104))
TUM_K = ((640, 480), (520.9, 521.0, 325.1, 249.7))


def intrinsics(size: tuple[int, int]) -> np.ndarray:
    """K of the camera whose frames ``load_frames`` returns at ``size`` (scaled when resized)."""
    (w0, h0), (fx, fy, cx, cy) = TUM_K if tuple(size) == TUM_K[0] else KITTI_K
    sx, sy = size[0] / w0, size[1] / h0
    return np.array([[fx * sx, 0.0, cx * sx], [0.0, fy * sy, cy * sy], [0.0, 0.0, 1.0]])


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class Camera:
    """This process's side: publishes ``bgr8`` images and counts the node's answers."""

    def __init__(self, domain: int, K: np.ndarray | None = None, overlay: bool = False) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import Header

        from local_features_ros.ros.flow_control import done_qos, done_topic

        self.rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("bench_camera", context=self.ctx)
        self.pub = self.node.create_publisher(
            Image, "/image", QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        self.info_pub = self.node.create_publisher(
            CameraInfo, "/camera_info", QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        self.K = K
        self._CameraInfo = CameraInfo
        self.outcomes: list[tuple[float, str]] = []
        self.node.create_subscription(
            Header, done_topic(), lambda m: self.outcomes.append((time.monotonic(), m.frame_id)),
            done_qos())
        self.overlays = 0
        if overlay:  # as rviz does: the node draws ~/overlay only while someone subscribes
            self.node.create_subscription(
                Image, "/feature_extractor/overlay",
                lambda m: setattr(self, "overlays", self.overlays + 1),
                QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._Image = Image

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.executor.spin_once(timeout_sec=min(left, 0.005))

    def message(self, bgr: np.ndarray, i: int):
        msg = self._Image(height=bgr.shape[0], width=bgr.shape[1], encoding="bgr8",
                          step=bgr.shape[1] * 3)
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1_000 + i, 0
        msg.header.frame_id = "camera"
        msg.data = bgr.tobytes()
        return msg

    def publish(self, msg) -> None:
        """The image, after its ``camera_info`` (when the camera has K)."""
        if self.K is not None:
            info = self._CameraInfo(header=msg.header, height=msg.height, width=msg.width)
            info.k = [float(v) for v in self.K.reshape(-1)]
            info.p = [float(v) for v in np.hstack([self.K, np.zeros((3, 1))]).reshape(-1)]
            self.info_pub.publish(info)
        self.pub.publish(msg)

    def wait_for_node(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.pub.get_subscription_count() > 0 and self.node.count_publishers(
                    "/feature_extractor/frame_done") > 0:
                self.spin(2.0)  # discovery settles both ways
                return
            self.spin(0.1)
        raise SystemExit("the node did not subscribe in time")

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.ctx)


def start_node(method: str, domain: int, log: Path, settings: list[str] | None = None
               ) -> subprocess.Popen:
    """The node as ``local-features run`` starts it, with ``settings`` (``KEY=VALUE``) on top."""
    from local_features_ros.ros.runner import build_plan, ros_env

    plan = build_plan(None, ["qos.depth=2", "qos_overrides./image.subscription.reliability="
                             "reliable", "process_every_frame=false", "watchdog_timeout=0.0",
                             *(settings or [])],
                      method=method, image="/image", synthetic=False)
    spec = next(p for p in plan.processes if p.role == "node")
    env = ros_env(domain)  # threads: the node's own choice unless OMP_NUM_THREADS is set
    return subprocess.Popen(spec.argv, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def live(cam: Camera, frames: list[np.ndarray], fps: float, seconds: float, pid: int) -> dict:
    msgs = [cam.message(f, i) for i, f in enumerate(frames)]
    cam.outcomes.clear()
    period = 1.0 / fps
    n = int(seconds * fps)
    t0 = time.monotonic()
    rss = [rss_mb(pid)]
    for i in range(n):
        msg = msgs[i % len(msgs)]
        msg.header.stamp.sec = 2_000 + i
        cam.publish(msg)
        if i % int(fps) == 0:
            rss.append(rss_mb(pid))
        cam.spin(max(0.0, t0 + (i + 1) * period - time.monotonic()))
    cam.spin(2.0)
    got = [o for _, o in cam.outcomes]
    processed = got.count("processed")
    return {"published": n, "processed": processed, "dropped": got.count("dropped"),
            "rate_hz": processed / seconds, "kept": processed / n,
            "rss_start": rss[1] if len(rss) > 1 else rss[0], "rss_end": rss[-1]}


def replay(cam: Camera, frames: list[np.ndarray], n: int, pid: int) -> dict:
    msgs = [cam.message(f, i) for i, f in enumerate(frames)]
    cam.outcomes.clear()
    sent = 0
    t0 = time.monotonic()
    cpu0 = cpu_s(pid)
    while len(cam.outcomes) < n:
        if sent < n and sent - len(cam.outcomes) < 2:
            msg = msgs[sent % len(msgs)]
            msg.header.stamp.sec = 5_000 + sent
            cam.publish(msg)
            sent += 1
        cam.executor.spin_once(timeout_sec=0.002)
        if time.monotonic() - t0 > 600:
            break
    cpu = cpu_s(pid) - cpu0
    times = [t for t, o in cam.outcomes if o == "processed"]
    gaps = np.diff(times) if len(times) > 1 else np.array([np.nan])
    return {"frames": len(times), "rate_hz": (len(times) - 1) / (times[-1] - times[0])
            if len(times) > 1 else 0.0, "gap_median_ms": float(np.median(gaps) * 1e3),
            "cpu_ms": cpu / max(len(cam.outcomes), 1) * 1e3}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="xfeat,orb,aliked")
    p.add_argument("--sizes", default="640x480,1226x370")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--replay", type=int, default=60, help="frames of the replay measurement")
    p.add_argument("--logs", default="out/bench_node_rate", help="node logs go here")
    p.add_argument("--no-camera-info", action="store_true",
                   help="publish images only (no K: fundamental matrix, no ~/relative_motion)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a node parameter for every method, as `local-features run --set` "
                        "(repeatable), e.g. backend=openvino")
    p.add_argument("--overlay", action="store_true",
                   help="subscribe to ~/overlay as rviz would (the node then draws it per frame)")
    args = p.parse_args()
    os.environ["ROS_LOCALHOST_ONLY"] = "1"
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import torch

    from local_features_ros.hardware import extraction_threads

    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    threads = extraction_threads()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, node extraction threads {threads.threads} ({threads.reason}); "
          f"live: {args.fps:g} fps for "
          f"{args.seconds:g} s; replay: {args.replay} frames, flow control; camera_info: "
          f"{'no' if args.no_camera_info else 'yes'}; ~/overlay subscribed: "
          f"{'yes' if args.overlay else 'no'}"
          + (f"; settings: {' '.join(args.set)}" if args.set else ""))
    print(f"{'method':10} {'size':>9} | {'live Hz':>7} {'kept':>6} {'dropped':>7} "
          f"{'RSS MB start->end':>18} | {'replay Hz':>9} {'ms/frame':>8} {'CPU ms/frame':>12}")
    for size_text in args.sizes.split(","):
        size = tuple(int(v) for v in size_text.lower().split("x"))
        frames = load_frames(size, 20)
        for method in args.methods.split(","):
            domain = random.randint(100, 199)
            cam = Camera(domain, None if args.no_camera_info else intrinsics(size), args.overlay)
            node = start_node(method, domain, logs / f"{method}_{size_text}.log", args.set)
            try:
                cam.wait_for_node()
                cam.spin(1.0)
                lv = live(cam, frames, args.fps, args.seconds, node.pid)
                cam.spin(1.0)
                rp = replay(cam, frames, args.replay, node.pid)
            finally:
                node.send_signal(2)
                try:
                    node.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    node.kill()
                cam.close()
            print(f"{method:10} {size_text:>9} | {lv['rate_hz']:7.1f} {lv['kept']:6.0%} "
                  f"{lv['dropped']:7d} {lv['rss_start']:8.0f} -> {lv['rss_end']:6.0f} | "
                  f"{rp['rate_hz']:9.1f} {rp['gap_median_ms']:8.1f} {rp['cpu_ms']:12.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
