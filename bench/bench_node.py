"""Benchmark of the feature_extractor node: per-frame ROS overhead and end-to-end latency.

    python bench/bench_node.py                       # defaults: 200 iterations, 50 e2e frames
    python bench/bench_node.py --iters 3 --frames 3  # smoke run

1. Overhead (in this process, no network): what the node adds around the extractor for one
   frame -- decode of an rgb8 ``Image``, packing ``~/features`` (``--keypoints`` x ``--dim``
   float32 descriptors) and ``~/matches``, the overlay drawing + ``Image`` packing, and
   ``publish`` of the features cloud to a subscribed topic.
2. End-to-end (node in its own process, DDS on loopback, own domain): time from ``publish`` of an
   image here to the ``~/features`` message arriving back here, one frame in flight at a time
   (``process_every_frame``), so it is latency, not throughput. Includes extraction by
   ``--method``.

Numbers depend on the machine and its load; print the device with them.
"""

from __future__ import annotations

import argparse
import array
import os
import random
import subprocess
import sys
import time

import numpy as np


def _stats(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"median {np.median(a):8.2f} ms   p90 {np.percentile(a, 90):8.2f} ms   (n={len(a)})"


def _image_msg(rgb: np.ndarray, stamp_ns: int):
    from sensor_msgs.msg import Image

    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = "cam"
    msg.data = array.array("B", rgb.tobytes())
    return msg


def bench_overhead(iters: int, n_kpts: int, dim: int, width: int, height: int) -> None:
    import rclpy
    import torch
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from local_features_ros.overlay import draw_overlay
    from local_features_ros.ros.messages import (features_to_pointcloud2, image_msg_to_numpy,
                                                 matches_to_pointcloud2, numpy_to_image_msg)
    from local_features_ros.types import Features, MatchResult

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    msg = _image_msg(rgb, 0)
    kpts = torch.from_numpy(rng.random((n_kpts, 2), np.float32) * [width - 1, height - 1])
    desc = torch.nn.functional.normalize(torch.randn(n_kpts, dim), dim=1)
    feats = Features(kpts.float(), torch.rand(n_kpts), desc)
    tracks = np.arange(n_kpts, dtype=np.uint32)
    m = np.stack([np.arange(n_kpts), rng.permutation(n_kpts)], 1).astype(np.int64)
    result = MatchResult(m, rng.random(n_kpts).astype(np.float32), rng.random(n_kpts) > 0.3)
    header = Header(frame_id="cam")

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=random.randint(100, 199))
    node = rclpy.create_node("bench_overhead", context=ctx)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(PointCloud2, "bench_features", qos)
    node.create_subscription(PointCloud2, "bench_features", lambda _m: None, qos)
    times: dict[str, list[float]] = {k: [] for k in ("decode", "pack features", "pack matches",
                                                     "overlay", "publish features")}
    try:
        for _ in range(iters):
            t0 = time.perf_counter()
            image_msg_to_numpy(msg)
            t1 = time.perf_counter()
            cloud = features_to_pointcloud2(header, feats, tracks)
            t2 = time.perf_counter()
            matches_to_pointcloud2(header, (0, 0), kpts, kpts, result, tracks)
            t3 = time.perf_counter()
            numpy_to_image_msg(draw_overlay(rgb, kpts.numpy(), feats.scores.numpy(), kpts.numpy(),
                                            m, result.inliers), "bgr8", header)
            t4 = time.perf_counter()
            pub.publish(cloud)
            t5 = time.perf_counter()
            for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                times[k].append(dt * 1e3)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    print(f"\nnode overhead per frame ({width}x{height} rgb8, {n_kpts} keypoints x {dim}-D, "
          f"features cloud {cloud.point_step * cloud.width / 2**20:.2f} MiB)")
    for k, v in times.items():
        print(f"  {k:17s} {_stats(v)}")
    total = np.sum([np.asarray(v) for v in times.values()], axis=0)
    print(f"  {'total':17s} {_stats(list(total))}")


def bench_end_to_end(frames: int, method: str, weights: str, width: int, height: int) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    from local_features_ros.ros.runner import ros_env
    from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene

    domain = random.randint(100, 199)
    env = ros_env(domain)
    args = [sys.executable, "-m", "local_features_ros.ros.extractor_node", "--ros-args",
            "-p", f"method:={method}", "-p", "process_every_frame:=true",
            "-p", "publish_overlay:=false", "-p", "qos.depth:=10",
            # Reliable input: with DDS on loopback UDP only, best-effort samples of ~1 MB
            # (640x480 rgb8) lose fragments and never arrive; reliable retransmits them.
            "-p", "qos_overrides./image.subscription.reliability:=reliable"]
    if weights:
        args += ["-p", f"weights:={weights}"]
    proc = subprocess.Popen(args, env=env)
    scene = SyntheticScene(0, PinholeCamera.default(width, height))
    images = [f.image for f in scene.frames(min(frames, 30), "orbit")]
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("bench_e2e", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Image, "/image", qos)
    arrived: dict[int, tuple[float, int]] = {}
    node.create_subscription(
        PointCloud2, "/feature_extractor/features",
        lambda m: arrived.setdefault(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
                                     (time.perf_counter(), m.width)), qos)
    lat, kpts = [], []
    try:
        end = time.monotonic() + 120
        while pub.get_subscription_count() == 0 and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        # Prime (discovery is asymmetric), then measure one frame in flight at a time.
        k = 0
        while time.monotonic() < end and not arrived:
            pub.publish(_image_msg(images[0], 10**9 + k))
            t_wait = time.monotonic() + 0.5
            while time.monotonic() < t_wait and not arrived:
                ex.spin_once(timeout_sec=0.02)
            k += 1
        for i in range(frames):
            stamp = 2 * 10**9 + i
            t0 = time.perf_counter()
            pub.publish(_image_msg(images[i % len(images)], stamp))
            t_wait = time.monotonic() + 30
            while stamp not in arrived and time.monotonic() < t_wait:
                ex.spin_once(timeout_sec=0.005)
            if stamp in arrived:
                lat.append((arrived[stamp][0] - t0) * 1e3)
                kpts.append(arrived[stamp][1])
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        proc.terminate()
        proc.wait(timeout=20)
    print(f"\nend-to-end publish -> ~/features received ({method}, {width}x{height}, "
          f"mean {np.mean(kpts) if kpts else 0:.0f} keypoints, {len(lat)}/{frames} frames)")
    if lat:
        print(f"  latency {_stats(lat)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=200, help="overhead iterations")
    p.add_argument("--frames", type=int, default=50, help="end-to-end frames")
    p.add_argument("--keypoints", type=int, default=1000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--method", default="orb")
    p.add_argument("--weights", default="")
    p.add_argument("--skip-e2e", action="store_true")
    a = p.parse_args()
    os.environ["ROS_LOCALHOST_ONLY"] = "1"
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    print(f"machine: {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    bench_overhead(a.iters, a.keypoints, a.dim, a.width, a.height)
    if not a.skip_e2e:
        bench_end_to_end(a.frames, a.method, a.weights, a.width, a.height)
    return 0


if __name__ == "__main__":
    sys.exit(main())
