"""The ``visual_odometry`` node: pairing, an end-to-end stereo replay with exact ground truth,
and bad input that is counted and survived."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from local_features_ros.ros.pairing import PairQueue

REPO = Path(__file__).resolve().parents[2]


def _spin_until(ex, pred, timeout: float) -> bool:
    """Spin ``ex`` until ``pred()`` holds or ``timeout`` seconds pass; the last ``pred()``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and not pred():
        ex.spin_once(timeout_sec=0.05)
    return pred()


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


# ------------------------------------------------------------------------------ parameters
def test_config_file_is_the_generated_file():
    """``config/odometry.yaml`` is exactly what ``param_files.odometry_params_yaml`` writes from
    ``OdometryNodeConfig``, so its defaults and comments follow the node's."""
    from local_features_ros.ros.param_files import odometry_params_yaml

    assert (REPO / "config" / "odometry.yaml").read_text() == odometry_params_yaml(), (
        "config/odometry.yaml is out of date: regenerate it with `python -c 'from "
        "local_features_ros.ros.param_files import odometry_params_yaml; "
        "print(odometry_params_yaml(), end=\"\")' > config/odometry.yaml`")


def test_node_declares_the_config_keys_with_their_defaults():
    """The parameters a started node has (its rows, the shipped file and the live node) are
    ``OdometryNodeConfig``'s keys with its defaults, all read-only."""
    import rclpy
    from rclpy.parameter import Parameter

    from local_features_ros.ros import runner
    from local_features_ros.ros.odometry_node import VisualOdometryNode
    from local_features_ros.ros.odometry_params import OdometryNodeConfig
    from local_features_ros.ros.params import config_specs

    defaults = OdometryNodeConfig.defaults()
    specs = config_specs(OdometryNodeConfig, "node")
    assert {s.name: s.default for s in specs} == defaults
    assert not any(s.runtime for s in specs)
    assert runner.flatten(runner.load_node_params(REPO / "config" / "odometry.yaml",
                                                  node="visual_odometry")) == defaults
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=199)
    try:
        node = VisualOdometryNode(context=ctx, parameter_overrides=[
            Parameter("method", value="orb"), Parameter("publish_features", value=False)])
        try:
            live = {n: node.get_parameter(n).value for n in defaults}
            assert live == {**defaults, "method": "orb", "publish_features": False}
            assert all(node.describe_parameter(n).read_only for n in defaults)
        finally:
            node.stop()
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("value, reason", [
    ("mode:=mono", "mode must be one of stereo, rgbd, got 'mono'"),
    ("sync_slop:=-0.5", "sync_slop must be >= 0 s"),
    ("queue_size:=0", "queue_size must be >= 1"),
    ("input_depth:=deep", "parameter 'input_depth'"),
])
def test_bad_start_values_exit_2_naming_the_parameter(ros_env, value, reason):
    proc = subprocess.run(
        [sys.executable, "-m", "local_features_ros.ros.odometry_node", "--ros-args", "-p",
         value, "-p", "method:=orb"],
        env=ros_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and reason in proc.stdout + proc.stderr, proc.stderr[-2000:]


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
         "reliable_input:=true", "-p", "input_depth:=50"],  # no QoS loss on a busy CPU
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

    spin_until = functools.partial(_spin_until, ex)

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


@pytest.mark.ros
def test_stereo_replay_publishes_features_matches_and_overlay(tmp_path, ros_env):
    """Synthetic stereo bag -> bag player -> visual_odometry, with a subscriber on
    ``~/features``, ``~/matches`` and ``~/overlay`` beside ``~/odometry``: one features and one
    matches cloud per pair with the left image's header, matches that point at the right rows
    of the previous and current clouds (same coordinates, same track ids on both sides, the
    previous stamp named), and bgr8 overlays of the image's size."""
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    from local_features_ros.cli import main as cli
    from local_features_ros.odometry.synthetic import stereo_sequence, write_kitti_stereo
    from local_features_ros.ros.messages import (pointcloud2_to_features, pointcloud2_to_matches,
                                                 stamp_to_sec)

    n = 10
    seq = stereo_sequence(n=n, width=320, height=240)
    bag = tmp_path / "bag"
    assert cli(["images-to-bag", str(write_kitti_stereo(seq, tmp_path / "seq")), str(bag),
                "--overwrite", "--layout", "kitti"]) == 0
    inputs = {"left/image_rect": "/stereo/left/image_raw",
              "right/image_rect": "/stereo/right/image_raw",
              "left/camera_info": "/stereo/left/camera_info",
              "right/camera_info": "/stereo/right/camera_info"}
    remaps = [a for name, topic in inputs.items() for a in ("-r", f"{name}:={topic}")]
    node = subprocess.Popen(
        [sys.executable, "-m", "local_features_ros.ros.odometry_node", "--ros-args", "-p",
         "mode:=stereo", "-p", "method:=orb", "-p", "process_every_frame:=true", "-p",
         "reliable_input:=true", *remaps],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    me = rclpy.create_node("vo_listener", context=ctx)
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    got: dict[str, list] = {"odometry": [], "features": [], "matches": [], "overlay": []}
    for topic, kind in (("odometry", Odometry), ("features", PointCloud2),
                        ("matches", PointCloud2), ("overlay", Image)):
        me.create_subscription(kind, f"/visual_odometry/{topic}", got[topic].append, qos)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(me)

    spin_until = functools.partial(_spin_until, ex)

    player = None
    try:
        assert spin_until(lambda: all(me.count_publishers(f"/visual_odometry/{t}")
                                      for t in got), 120)
        spin_until(lambda: False, 1.0)  # the node sees our subscriptions
        player = subprocess.Popen(
            [sys.executable, "-m", "local_features_ros.ros.bag_player", str(bag), "--rate", "0",
             "--topics", *inputs.values(), "--wait-subscribers", "1", "--wait-timeout", "60",
             "--start-delay", "1", "--done-topic", "/visual_odometry/frame_done", "--window",
             "4"], env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert spin_until(lambda: len(got["matches"]) >= n and len(got["odometry"]) >= n, 180), \
            {k: len(v) for k, v in got.items()}
        spin_until(lambda: False, 0.5)
    finally:
        for proc in (player, node):
            if proc is None:
                continue
            proc.send_signal(2)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        ex.shutdown()
        me.destroy_node()
        rclpy.try_shutdown(context=ctx)
    assert node.returncode == 0
    odom, feats, matches = got["odometry"], got["features"], got["matches"]
    assert len(odom) == len(feats) == len(matches) == n
    stamps = [stamp_to_sec(m.header.stamp) for m in odom]
    assert stamps == sorted(stamps) and len(set(stamps)) == n
    assert [stamp_to_sec(m.header.stamp) for m in feats] == stamps
    assert [stamp_to_sec(m.header.stamp) for m in matches] == stamps
    camera = odom[0].child_frame_id  # the left image's frame_id
    assert camera and all(m.header.frame_id == camera for m in feats + matches)
    clouds = [pointcloud2_to_features(m) for m in feats]
    assert all(len(f) > 50 and f.descriptors.shape[1] > 0 for f, _ in clouds)
    assert matches[0].width == 0  # nothing before the first frame
    tracked = 0
    for k in range(1, n):
        m = pointcloud2_to_matches(matches[k])
        (prev, prev_ids), (cur, cur_ids) = clouds[k - 1], clouds[k]
        tracked += len(m["matches"])
        assert len(m["matches"]) >= 20, k  # the landmarks seen from one frame to the next
        i0, i1 = m["matches"][:, 0], m["matches"][:, 1]
        assert i0.max() < len(prev) and i1.max() < len(cur)
        assert np.allclose(np.stack([m["prev_u"], m["prev_v"]], 1), prev.keypoints[i0].numpy())
        assert np.allclose(np.stack([m["cur_u"], m["cur_v"]], 1), cur.keypoints[i1].numpy())
        assert np.all(m["inlier"]) and np.array_equal(m["track_id"], cur_ids[i1])
        assert np.array_equal(prev_ids[i0], cur_ids[i1])  # a track keeps its id
        assert len(np.unique(cur_ids)) == len(cur_ids)
        assert np.allclose(m["prev_stamp_sec"] + 1e-9 * m["prev_stamp_nanosec"], stamps[k - 1])
    assert tracked > 20 * (n - 1)
    overlays = got["overlay"]
    assert overlays and all(o.encoding == "bgr8" and (o.width, o.height) == (320, 240)
                            for o in overlays)
    assert {stamp_to_sec(o.header.stamp) for o in overlays} <= set(stamps)


class _FakePublisher:
    def __init__(self, topic: str, subscribers: dict[str, int]) -> None:
        self.topic, self.subscribers, self.sent = topic, subscribers, []

    def get_subscription_count(self) -> int:
        return self.subscribers.get(self.topic, 0)

    def publish(self, msg) -> None:
        self.sent.append(msg)


class _FakeNode:
    def __init__(self, subscribers: dict[str, int]) -> None:
        self.subscribers, self.pubs = subscribers, {}

    def create_publisher(self, msg_type, topic, qos, **kwargs):
        self.pubs[topic] = _FakePublisher(topic, self.subscribers)
        return self.pubs[topic]


@pytest.mark.ros
def test_feature_outputs_are_built_only_while_subscribed():
    """Landmark ids -> matches and persistent track ids; nothing is built for topics no one
    subscribes to, yet the previous frame is remembered for a late subscriber."""
    import torch

    from local_features_ros.ros.odometry_output import OdometryFeatureOutputs, landmark_matches
    from local_features_ros.types import Features

    assert landmark_matches(None, np.array([1, 2]), None, None) is None
    m = landmark_matches(np.array([5, -1, 7, 9]), np.array([9, 7, -1, 4]),
                         np.eye(4, 3), np.eye(4, 3))
    assert m.matches.tolist() == [[3, 0], [2, 1]] and m.inliers.all()

    def frame(k: int, ids: list[int]):
        n = len(ids)
        feats = Features(keypoints=torch.rand(n, 2) * 50, scores=torch.rand(n),
                         descriptors=torch.rand(n, 8), image_size=(64, 48))
        header = SimpleNamespace(stamp=SimpleNamespace(sec=k, nanosec=0), frame_id="cam")
        return header, np.zeros((48, 64, 3), np.uint8), feats, np.array(ids, np.int64)

    subs: dict[str, int] = {}
    node = _FakeNode(subs)
    out = OdometryFeatureOutputs(node, 10, "orb")
    f0, f1, f2 = frame(0, [3, 4, -1]), frame(1, [4, 3, 8, -1]), frame(2, [8, 4])
    assert out.publish(*f0, 0, 0.0) == 0
    assert out.publish(*f1, 1, 0.0) == 2
    assert not any(p.sent for p in node.pubs.values())  # no subscriber: nothing built
    subs.update({"~/matches": 1, "~/overlay": 1})
    assert out.publish(*f2, 2, 0.0) == 2
    features, matches = node.pubs["~/features"].sent, node.pubs["~/matches"].sent
    assert len(features) == len(matches) == 1 and len(node.pubs["~/overlay"].sent) == 1
    assert matches[0].width == 2 and features[0].width == 2
    assert not node.pubs["~/relative_motion"].sent
    from local_features_ros.ros.messages import pointcloud2_to_features, pointcloud2_to_matches

    got = pointcloud2_to_matches(matches[0])
    assert got["matches"].tolist() == [[2, 0], [0, 1]]
    assert got["prev_stamp_sec"].tolist() == [1, 1]
    _, ids = pointcloud2_to_features(features[0])
    # landmark 4: keypoint 1 of frame 0 -> 0 of frame 1 -> 1 of frame 2 keeps frame 0's id 1;
    # landmark 8 first seen in frame 1 (its keypoint 2, new id 3 after 0, 1, 2)
    assert ids.tolist() == [3, 1]
