"""The ``visual_odometry`` node: pairing, an end-to-end stereo replay with exact ground truth,
and bad input that is counted and survived."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from local_features_ros.ros.pairing import PairQueue

REPO = Path(__file__).resolve().parent.parent


def _msg(t: float, name: str = "") -> SimpleNamespace:
    return SimpleNamespace(t=t, name=name)


def test_pairing_by_stamp_drops_orphans_and_out_of_order():
    q = PairQueue(lambda m: m.t, slop=0.01)
    assert q.push(0, _msg(1.0, "L1")) == ([], [])
    pairs, dropped = q.push(1, _msg(1.004, "R1"))
    assert [(p.first.name, p.second.name) for p in pairs] == [("L1", "R1")] and not dropped
    q.push(0, _msg(2.0, "L2"))  # its partner never comes
    pairs, dropped = q.push(1, _msg(3.0, "R3"))
    assert not pairs and [m.name for m in dropped] == ["L2"]
    pairs, dropped = q.push(0, _msg(3.0, "L3"))
    assert [(p.first.name, p.second.name, p.stamp) for p in pairs] == [("L3", "R3", 3.0)]
    pairs, dropped = q.push(0, _msg(2.5, "late"))  # older than what was already paired
    assert not pairs and [m.name for m in dropped] == ["late"]
    for k in range(12):  # the other side is silent: memory stays bounded
        q.push(1, _msg(10.0 + k, f"R{k}"))
    assert len(q.clear()) <= q.depth


@pytest.mark.ros
def test_stereo_replay_gives_the_true_trajectory(tmp_path, ros_env):
    """KITTI-layout folder -> images-to-bag -> bag player (flow control) -> visual_odometry ->
    ``~/odometry``: one identity-first pose per pair, within centimetres of the rendered truth,
    every pair processed (exit 0)."""
    from local_features_ros.odometry.synthetic import stereo_sequence, write_kitti_stereo

    seq = stereo_sequence(n=16, width=320, height=240)
    folder = write_kitti_stereo(seq, tmp_path / "seq")
    out = tmp_path / "traj.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "local_features_ros.cli", "odometry", "--stereo", str(folder),
         "--method", "orb", "--trajectory", str(out), "--log-dir", str(tmp_path / "logs"),
         "--domain-id", ros_env["ROS_DOMAIN_ID"]],
        env=ros_env, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "logs" / "visual_odometry.log")
    assert proc.returncode == 0, (proc.stdout, proc.stderr,
                                  log.read_text() if log.exists() else "")
    assert "ok: 16 poses from 16 pairs: 16 processed" in proc.stdout
    est = np.loadtxt(out).reshape(-1, 3, 4)
    gt = np.stack([T[:3] for T in seq.poses])
    assert est.shape == gt.shape
    assert np.allclose(est[0], np.eye(4)[:3], atol=1e-9)
    path = np.linalg.norm(np.diff(gt[:, :, 3], axis=0), axis=1).sum()
    err = np.linalg.norm(est[:, :, 3] - gt[:, :, 3], axis=1)
    assert path > 1.0 and err.max() < 0.05 * path, (err, path)


@pytest.mark.ros
def test_bad_pairs_are_counted_and_survived(tmp_path, ros_env):
    """Unpaired, out-of-order, size-mismatched and NaN-depth input in one RGB-D stream: each is
    acknowledged (bad input, or dropped when it cannot be paired in order), logged, and the node
    keeps producing odometry."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    from local_features_ros.odometry.synthetic import rgbd_sequence
    from local_features_ros.ros.messages import numpy_to_image_msg

    seq = rgbd_sequence(n=6, width=160, height=120)
    domain = int(ros_env["ROS_DOMAIN_ID"])
    node = subprocess.Popen(
        [sys.executable, "-m", "local_features_ros.ros.odometry_node", "--ros-args", "-p",
         "mode:=rgbd", "-p", "method:=orb", "-p", "process_every_frame:=true", "-p",
         "reliable_input:=true"],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    me = rclpy.create_node("vo_feeder", context=ctx)
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    from sensor_msgs.msg import Image

    pub_rgb = me.create_publisher(Image, "/rgb/image", qos)
    pub_depth = me.create_publisher(Image, "/depth/image", qos)
    pub_info = me.create_publisher(CameraInfo, "/rgb/camera_info", qos)
    done: list[str] = []
    odom: list = []
    from nav_msgs.msg import Odometry

    me.create_subscription(Header, "/visual_odometry/frame_done",
                           lambda m: done.append(m.frame_id),
                           QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    me.create_subscription(Odometry, "/visual_odometry/odometry", odom.append, qos)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(me)

    def spin_until(pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            ex.spin_once(timeout_sec=0.05)
        return pred()

    def header(k: float) -> Header:
        h = Header(frame_id="camera")
        h.stamp.sec, h.stamp.nanosec = 100 + int(k), int(round((k % 1) * 1e9))
        return h

    try:
        assert spin_until(lambda: pub_rgb.get_subscription_count() > 0
                          and me.count_publishers("/visual_odometry/odometry") > 0, 120)
        spin_until(lambda: False, 1.5)
        c = seq.camera
        info = CameraInfo(header=header(0), width=c.width, height=c.height)
        info.k = [c.fx, 0.0, c.cx, 0.0, c.fy, c.cy, 0.0, 0.0, 1.0]
        pub_info.publish(info)
        spin_until(lambda: False, 0.3)

        def send(k: float, rgb, depth) -> None:
            h = header(k)
            if rgb is not None:
                pub_rgb.publish(numpy_to_image_msg(rgb, "rgb8", h))
            if depth is not None:
                pub_depth.publish(numpy_to_image_msg(depth.astype(np.float32), "32FC1", h))
            spin_until(lambda: False, 0.05)

        for k in range(3):  # good pairs
            send(k, seq.first[k], seq.second[k])
        send(3, seq.first[3], None)  # unpaired colour image
        send(4, seq.first[4], np.full_like(seq.second[4], np.nan))  # no valid depth
        send(5, seq.first[5], seq.second[5][:60])  # size mismatch
        send(2.5, seq.first[2], seq.second[2])  # older than an accepted pair
        send(6, seq.first[5], seq.second[5])  # good again
        assert spin_until(lambda: len(odom) >= 4 and len(done) >= 13, 90), (done, len(odom))
    finally:
        node.send_signal(2)
        try:
            out = node.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            node.kill()
            out = node.communicate()[0]
        ex.shutdown()
        me.destroy_node()
        rclpy.try_shutdown(context=ctx)
    assert node.returncode == 0, out
    assert done.count("processed") == 8, done  # 4 good pairs x 2 images
    assert "bad_input:no_depth" in done and "bad_input:size_mismatch" in done, done
    assert done.count("dropped") == 3, done  # the unpaired image and the late pair
    assert len(odom) == 4 and "bad input (no_depth)" in out and "totals:" in out
    assert odom[0].pose.pose.orientation.w == pytest.approx(1.0)
    assert odom[-1].header.frame_id == "odom" and odom[-1].child_frame_id == "camera"
