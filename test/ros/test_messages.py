"""PointCloud2 layouts byte by byte, round trips, image/CameraInfo/TF helpers, and the bag player
(run in its own process; the test process subscribes over loopback DDS in a private domain)."""

from __future__ import annotations

import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy")
import rclpy  # noqa: E402

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import (  # noqa: E402
    CameraInfo,
    CompressedImage,
    Image,
    PointCloud2,
    PointField,
)
from std_msgs.msg import Header  # noqa: E402

from local_features_ros.bags import BagError, write_synthetic_bag  # noqa: E402

from local_features_ros.image.encodings import ImageDecodeError, encode_compressed  # noqa: E402
from local_features_ros.ros.bag_player import BagPlayer, PlayerArgs  # noqa: E402
from local_features_ros.ros.messages import (  # noqa: E402
    camera_info_to_K,
    compressed_msg_to_numpy,
    features_to_pointcloud2,
    image_msg_to_numpy,
    matches_to_pointcloud2,
    motion_to_transform,
    numpy_to_image_msg,
    pointcloud2_to_features,
    pointcloud2_to_matches,
)
from local_features_ros.types import Features, MatchResult, RelativeMotion  # noqa: E402


def make_features(n: int, d: int, seed: int = 0) -> Features:
    g = torch.Generator().manual_seed(seed)
    desc = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    return Features(
        keypoints=torch.rand(n, 2, generator=g) * torch.tensor([640.0, 480.0]),
        scores=torch.rand(n, generator=g),
        descriptors=desc,
        scales=torch.rand(n, generator=g) * 4,
        orientations=(torch.rand(n, generator=g) - 0.5) * 6.28,
        image_size=(640, 480),
    )


def header(sec: int = 12, nsec: int = 345) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id="cam0")


def test_features_layout_and_round_trip() -> None:
    n, d = 1000, 256
    f = make_features(n, d)
    tids = (np.arange(n, dtype=np.uint64) * 4_000_007 + 3_000_000_000) % 2**32  # > 2^31 too
    msg = features_to_pointcloud2(header(), f, tids)
    assert (msg.height, msg.width, msg.point_step) == (1, n, 24 + 4 * d)
    assert msg.row_step == msg.point_step * n and len(msg.data) == msg.row_step
    assert msg.is_dense and not msg.is_bigendian
    assert msg.header.stamp.sec == 12 and msg.header.frame_id == "cam0"
    spec = [("u", 0, PointField.FLOAT32, 1), ("v", 4, PointField.FLOAT32, 1),
            ("score", 8, PointField.FLOAT32, 1), ("scale", 12, PointField.FLOAT32, 1),
            ("orientation", 16, PointField.FLOAT32, 1), ("track_id", 20, PointField.UINT32, 1),
            ("descriptor", 24, PointField.FLOAT32, d)]
    assert [(x.name, x.offset, x.datatype, x.count) for x in msg.fields] == spec
    # independent byte-level reading of a few points with struct
    data = bytes(msg.data)
    for k in (0, 1, 517, n - 1):
        u, v, s, sc, o, tid = struct.unpack_from("<5fI", data, k * msg.point_step)
        assert (u, v) == pytest.approx(tuple(f.keypoints[k].tolist()))
        assert s == pytest.approx(float(f.scores[k])) and sc == pytest.approx(float(f.scales[k]))
        assert o == pytest.approx(float(f.orientations[k])) and tid == int(tids[k])
        desc = struct.unpack_from(f"<{d}f", data, k * msg.point_step + 24)
        assert np.allclose(desc, f.descriptors[k].numpy())
    # through CDR and back: what a subscriber receives
    msg2 = deserialize_message(serialize_message(msg), PointCloud2)
    g, tids2 = pointcloud2_to_features(msg2)
    assert len(g) == n and g.descriptor_dim == d
    for name in ("keypoints", "scores", "scales", "orientations", "descriptors"):
        assert torch.equal(getattr(g, name), getattr(f, name).float()), name
    assert tids2.dtype == np.uint32 and np.array_equal(tids2, tids.astype(np.uint32))


def test_features_empty_and_no_track_ids() -> None:
    msg = features_to_pointcloud2(header(), Features.empty(128), np.zeros(0, np.uint32))
    assert msg.width == 0 and len(msg.data) == 0 and msg.point_step == 24 + 512
    g, t = pointcloud2_to_features(msg)
    assert len(g) == 0 and g.descriptor_dim == 128 and t.shape == (0,)
    f = make_features(5, 8)
    g, t = pointcloud2_to_features(features_to_pointcloud2(header(), f, None))
    assert np.array_equal(t, np.zeros(5, np.uint32))
    with pytest.raises(ValueError):
        features_to_pointcloud2(header(), f, np.zeros(4, np.uint32))


def test_pack_time_1000x256() -> None:
    f = make_features(1000, 256)
    tids = np.arange(1000, dtype=np.uint32)
    features_to_pointcloud2(header(), f, tids)  # warm-up
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        features_to_pointcloud2(header(), f, tids)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    pointcloud2_to_features(features_to_pointcloud2(header(), f, tids))
    rt = time.perf_counter() - t0
    print(f"\npack 1000x256: median {np.median(times) * 1e3:.2f} ms, pack+unpack {rt * 1e3:.2f} ms")


def test_matches_layout_and_round_trip() -> None:
    f0, f1 = make_features(50, 4, 0), make_features(40, 4, 1)
    m = np.array([[0, 39], [7, 3], [49, 0], [12, 12]], np.int64)
    res = MatchResult(m, np.array([0.1, 0.2, 0.3, 0.4], np.float32),
                      np.array([True, False, True, True]))
    tids = np.arange(40, dtype=np.uint32) + 100
    prev = Time(sec=11, nanosec=999_999_999)
    msg = matches_to_pointcloud2(header(), prev, f0.keypoints, f1.keypoints, res, tids)
    assert msg.point_step == 44 and msg.width == 4 and msg.row_step == 176
    offs = {x.name: (x.offset, x.datatype) for x in msg.fields}
    assert offs == {"prev_index": (0, 6), "cur_index": (4, 6), "prev_u": (8, 7), "prev_v": (12, 7),
                    "cur_u": (16, 7), "cur_v": (20, 7), "distance": (24, 7), "inlier": (28, 2),
                    "track_id": (32, 6), "prev_stamp_sec": (36, 5), "prev_stamp_nanosec": (40, 6)}
    data = bytes(msg.data)
    for k, (i0, i1) in enumerate(m):
        vals = struct.unpack_from("<IIfffffB3xIiI", data, 44 * k)
        assert vals[0:2] == (i0, i1)
        assert np.allclose(vals[2:4], f0.keypoints[i0].numpy())
        assert np.allclose(vals[4:6], f1.keypoints[i1].numpy())
        assert vals[6] == pytest.approx(res.distances[k]) and vals[7] == int(res.inliers[k])
        assert vals[8] == 100 + i1 and vals[9:] == (11, 999_999_999)
    out = pointcloud2_to_matches(deserialize_message(serialize_message(msg), PointCloud2))
    assert np.array_equal(out["matches"], m) and np.array_equal(out["inlier"], res.inliers)
    # float seconds are accepted for the previous stamp
    msg = matches_to_pointcloud2(header(), 11.5, f0.keypoints.numpy(), f1.keypoints.numpy(), res,
                                 None)
    out = pointcloud2_to_matches(msg)
    assert out["prev_stamp_sec"][0] == 11 and out["prev_stamp_nanosec"][0] == 500_000_000
    assert np.array_equal(out["track_id"], np.zeros(4, np.uint32))


def test_matches_empty() -> None:
    msg = matches_to_pointcloud2(header(), Time(sec=1), np.zeros((0, 2)), np.zeros((0, 2)),
                                 MatchResult.empty(), np.zeros(0, np.uint32))
    assert msg.width == 0 and len(msg.data) == 0
    out = pointcloud2_to_matches(msg)
    assert out["matches"].shape == (0, 2)


def test_image_msgs(rng) -> None:
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    msg = numpy_to_image_msg(np.ascontiguousarray(rgb[..., ::-1]), "bgr8", header())
    assert (msg.height, msg.width, msg.step, msg.encoding) == (12, 16, 48, "bgr8")
    assert np.array_equal(image_msg_to_numpy(msg), rgb)
    msg2 = deserialize_message(serialize_message(msg), Image)
    assert np.array_equal(image_msg_to_numpy(msg2), rgb)
    msg.step = 47
    with pytest.raises(ImageDecodeError):
        image_msg_to_numpy(msg)
    c = CompressedImage(format="png")
    c.data = encode_compressed(rgb, "png")
    assert np.array_equal(compressed_msg_to_numpy(c), rgb)


def test_camera_info_to_K() -> None:
    info = CameraInfo()
    assert camera_info_to_K(info) is None  # all zero: uncalibrated
    info.k = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    K = camera_info_to_K(info)
    assert K is not None and K[0, 0] == 500 and K[1, 2] == 240 and K.shape == (3, 3)
    info.k = [float("nan"), 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    assert camera_info_to_K(info) is None


def test_motion_to_transform_inverts_x1_eq_Rx0_plus_t() -> None:
    a = np.deg2rad(30)
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    t = np.array([0.6, 0.0, 0.8])
    msg = motion_to_transform(header(), "cam1", RelativeMotion(R, t, 42))
    assert msg.header.frame_id == "cam0" and msg.child_frame_id == "cam1"
    q = msg.transform.rotation
    x, y, z, w = q.x, q.y, q.z, q.w
    # quaternion -> matrix by hand
    Rq = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                   [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                   [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    tl = msg.transform.translation
    tr = np.array([tl.x, tl.y, tl.z])
    x0 = np.array([1.0, 2.0, 3.0])
    x1 = R @ x0 + t
    assert np.allclose(Rq @ x1 + tr, x0)  # child (cam1) point -> parent (cam0) frame


# ---------------------------------------------------------------------------------------------
# bag player

T0 = 1_700_000_100.0
N = 5


def synthetic_frames() -> list[tuple[float, np.ndarray]]:
    out = []
    for i in range(N):
        img = np.zeros((24, 32, 3), np.uint8)
        img[..., 0] = 40 * i
        img[..., 1] = np.arange(32, dtype=np.uint8)[None] * 5
        out.append((T0 + 0.05 * i, img))
    return out


@pytest.fixture
def ros_context(ros_env):
    ctx = Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    yield ctx
    rclpy.shutdown(context=ctx)


def test_player_process_delivers_every_frame(tmp_path, ros_env, ros_context) -> None:
    fr = synthetic_frames()
    bag = write_synthetic_bag(tmp_path / "bag", fr, storage="mcap")
    node = Node("player_test_listener", context=ros_context)
    got: dict[str, list] = {"img": [], "comp": [], "info": [], "clock": []}
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "/replay/camera/image_raw", got["img"].append, qos)
    node.create_subscription(CompressedImage, "/replay/camera/image_raw/compressed",
                             got["comp"].append, qos)
    node.create_subscription(CameraInfo, "/replay/camera/camera_info", got["info"].append, qos)
    node.create_subscription(Clock, "/clock", got["clock"].append, qos)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    proc = subprocess.Popen(
        [sys.executable, "-m", "local_features_ros.ros.bag_player", str(bag), "--rate", "4",
         "--prefix", "/replay", "--clock", "--wait-subscribers", "1", "--wait-timeout", "20"],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 40
        # /clock is its own writer (one tick per played message, no ordering w.r.t. the camera
        # topics): wait for the ticks of all N bag times too
        def ticks() -> int:
            return len({(c.clock.sec, c.clock.nanosec) for c in got["clock"]})

        while time.monotonic() < deadline and min(len(got["img"]), len(got["comp"]),
                                                  len(got["info"]), ticks()) < N:
            ex.spin_once(timeout_sec=0.1)
        out = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        ex.shutdown()
        node.destroy_node()
    assert proc.returncode == 0, out
    assert (len(got["img"]), len(got["comp"]), len(got["info"])) == (N, N, N), out
    for (stamp, rgb), msg in zip(fr, got["img"]):
        st = msg.header.stamp
        assert st.sec + st.nanosec * 1e-9 == pytest.approx(stamp, abs=1e-6)
        assert np.array_equal(image_msg_to_numpy(msg), rgb)
    for (_, rgb), msg in zip(fr, got["comp"]):
        assert np.abs(compressed_msg_to_numpy(msg).astype(int) - rgb).mean() < 6
    clocks = sorted({c.clock.sec * 10**9 + c.clock.nanosec for c in got["clock"]})
    assert clocks == [round(s * 1e9) for s, _ in fr]  # bag time = stamps in the synthetic bag


def test_player_rejects_bad_bag_and_topic(tmp_path, ros_context) -> None:
    node = Node("player_test_errors", context=ros_context)
    try:
        with pytest.raises(BagError, match="does not exist"):
            BagPlayer(node, PlayerArgs(bag=str(tmp_path / "missing")))
        bag = write_synthetic_bag(tmp_path / "bag", synthetic_frames()[:1])
        with pytest.raises(BagError, match="/nope"):
            BagPlayer(node, PlayerArgs(bag=str(bag), topics=["/nope"]))
        with pytest.raises(ValueError):
            BagPlayer(node, PlayerArgs(bag=str(bag), rate=-1))
        player = BagPlayer(node, PlayerArgs(bag=str(bag), rate=0, prefix="/x"))
        played = ("/camera/image_raw", "/camera/image_raw/compressed", "/camera/camera_info")
        assert player.topics == {t: "/x" + t for t in played}
        stats = player.play()  # nobody listens: publishing still succeeds
        assert stats.published == 3 and stats.loops == 1
        looping = BagPlayer(node, PlayerArgs(bag=str(bag), rate=0, loop=True))
        looping.start()
        deadline = time.monotonic() + 20
        while looping.stats.loops < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        looping.stop()
        assert looping.stats.loops >= 3 and looping._thread is not None
        assert not looping._thread.is_alive()
        assert looping.stats.per_topic["/camera/image_raw"] >= 3
    finally:
        node.destroy_node()
