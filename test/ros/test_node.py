"""``feature_extractor`` as a separate process on real DDS (loopback, one domain per test).

The test process plays camera (rendered frames with exact poses) and consumer. Expectations are
independent of the node's code: keypoints equal a direct ``extract`` call on the same image, the
cloud layout is parsed here from the field table, relative motion is compared with the rendered
ground-truth poses, bad inputs are hand-made messages.
"""

from __future__ import annotations

import array
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import TransformStamped  # noqa: E402
from sensor_msgs.msg import (CameraInfo, CompressedImage, Image, PointCloud2,  # noqa: E402
                             PointField)

pytestmark = [pytest.mark.ros]

W, H = 320, 240
NODE = "/feature_extractor"


# ----------------------------------------------------------------------------------- helpers
def scene_frames(n: int, size: tuple[int, int] = (W, H)):
    from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene

    scene = SyntheticScene(0, PinholeCamera.default(*size))
    return list(scene.frames(n, "orbit"))


def image_msg(arr: np.ndarray, encoding: str, stamp: tuple[int, int], frame_id: str = "cam",
              step: int | None = None, height: int | None = None, width: int | None = None,
              data: bytes | None = None) -> Image:
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    msg.height = arr.shape[0] if height is None else height
    msg.width = arr.shape[1] if width is None else width
    msg.encoding = encoding
    raw = np.ascontiguousarray(arr).tobytes() if data is None else data
    msg.step = (len(raw) // max(msg.height, 1) if step is None else step)
    msg.data = array.array("B", raw)
    return msg


def jpeg_msg(rgb: np.ndarray, stamp: tuple[int, int], data: bytes | None = None) -> CompressedImage:
    msg = CompressedImage(format="jpeg")
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = "cam"
    if data is None:
        ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        data = buf.tobytes()
    msg.data = array.array("B", data)
    return msg


def info_msg(K: np.ndarray, stamp: tuple[int, int], size=(W, H)) -> CameraInfo:
    msg = CameraInfo(width=size[0], height=size[1], distortion_model="plumb_bob")
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = "cam"
    msg.k = [float(v) for v in K.reshape(-1)]
    msg.d = [0.0] * 5
    return msg


_PF = {PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "<i2",
       PointField.UINT16: "<u2", PointField.INT32: "<i4", PointField.UINT32: "<u4",
       PointField.FLOAT32: "<f4", PointField.FLOAT64: "<f8"}


def parse_cloud(msg: PointCloud2) -> dict[str, np.ndarray]:
    """Columns of a PointCloud2, read only from its field table (what any consumer does)."""
    n = msg.width * msg.height
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(n, msg.point_step)
    out = {}
    for f in msg.fields:
        dt = np.dtype(_PF[f.datatype])
        cols = raw[:, f.offset:f.offset + dt.itemsize * f.count].copy().view(dt)
        out[f.name] = cols.reshape(n, f.count) if f.count > 1 else cols.reshape(n)
    return out


def stamp_of(msg: Any) -> tuple[int, int]:
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


def diag_values(msg: DiagnosticArray) -> dict[str, str] | None:
    for st in msg.status:
        if "feature_extractor" in st.name:
            return {kv.key: kv.value for kv in st.values}
    return None


class Harness:
    """Test-side ROS client: publishes input, records every output, calls parameter services."""

    def __init__(self, domain: int, compressed: bool = False) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("test_harness", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        rel = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        if compressed:
            self.pub_image = self.node.create_publisher(CompressedImage, "/image/compressed", rel)
        else:
            self.pub_image = self.node.create_publisher(Image, "/image", rel)
        self.pub_info = self.node.create_publisher(CameraInfo, "/camera_info", rel)
        self.got: dict[str, list] = {k: [] for k in ("features", "matches", "overlay", "motion",
                                                     "diag")}
        for key, typ, topic in (("features", PointCloud2, f"{NODE}/features"),
                                ("matches", PointCloud2, f"{NODE}/matches"),
                                ("overlay", Image, f"{NODE}/overlay"),
                                ("motion", TransformStamped, f"{NODE}/relative_motion"),
                                ("diag", DiagnosticArray, "/diagnostics")):
            self.node.create_subscription(typ, topic, lambda m, k=key: self.got[k].append(m), rel)
        self.param_client = self.node.create_client(SetParameters, f"{NODE}/set_parameters")

    def spin_until(self, pred: Callable[[], Any], timeout: float) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = pred()
            if r:
                return r
            self.executor.spin_once(timeout_sec=0.05)
        return pred()

    def wait_ready(self, proc: subprocess.Popen, timeout: float = 90.0) -> None:
        ok = self.spin_until(lambda: proc.poll() is not None or (
            self.pub_image.get_subscription_count() > 0
            and self.pub_info.get_subscription_count() > 0
            and self.param_client.service_is_ready()), timeout)
        assert proc.poll() is None, "node exited during startup"
        assert ok, "node did not subscribe in time"

    def prime(self, make_msg: Callable[[tuple[int, int]], Any], sec: int = 1,
              timeout: float = 30.0) -> None:
        """Publish throw-away frames (stamps (sec, k)) until one comes back: discovery is
        asymmetric, so our publisher can see the node before the node's reader matched it."""
        end = time.monotonic() + timeout
        k = 0
        while time.monotonic() < end:
            self.pub_image.publish(make_msg((sec, k)))
            if self.features_for((sec, k), timeout=0.5) is not None:
                return
            k += 1
        raise AssertionError("node never answered a priming frame")

    def features_for(self, stamp: tuple[int, int], timeout: float = 20.0) -> PointCloud2 | None:
        return self.spin_until(lambda: next((m for m in self.got["features"]
                                             if stamp_of(m) == stamp), None), timeout)

    def matches_for(self, stamp: tuple[int, int], timeout: float = 5.0) -> PointCloud2 | None:
        return self.spin_until(lambda: next((m for m in self.got["matches"]
                                             if stamp_of(m) == stamp), None), timeout)

    def last_diag(self, pred: Callable[[dict], bool], timeout: float = 10.0) -> dict | None:
        def check():
            for m in reversed(self.got["diag"]):
                v = diag_values(m)
                if v is not None and pred(v):
                    return v
            return None
        return self.spin_until(check, timeout)

    def set_params(self, **values: Any):
        req = SetParameters.Request()
        req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        fut = self.param_client.call_async(req)
        self.spin_until(fut.done, 10.0)
        assert fut.done(), "set_parameters timed out"
        return fut.result().results

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def start_node(env: dict, log: Path, **params: Any) -> subprocess.Popen:
    args = [sys.executable, "-m", "local_features_ros.ros.extractor_node", "--ros-args"]
    for k, v in params.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        args += ["-p", f"{k}:={v}"]
    return subprocess.Popen(args, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.fixture
def node_run(ros_env, tmp_path):
    """Yields start(compressed=False, **params) -> (Harness, proc, log path); cleans up."""
    made: list = []

    def start(compressed: bool = False, **params: Any):
        log = tmp_path / f"node{len(made)}.log"
        proc = start_node(ros_env, log, **params)
        harness = Harness(int(ros_env["ROS_DOMAIN_ID"]), compressed)
        made.append((harness, proc))
        harness.wait_ready(proc)
        return harness, proc, log

    yield start
    for harness, proc in made:
        stop_node(proc)
        harness.close()


def _rot_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def _quat_to_R(q) -> np.ndarray:
    x, y, z, w = q.x, q.y, q.z, q.w
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


# ----------------------------------------------------------------------------------- tests
def test_raw_pipeline_outputs_and_parameters(node_run):
    from local_features_ros.registry import build_extractor

    frames = scene_frames(4)
    h, proc, log = node_run(method="orb", diagnostic_period=0.25)
    reference = build_extractor("orb")
    prev = None
    # Priming stamps are later than the test's: frame 0 then starts a new sequence (the
    # front-end resets when time goes backwards), so it has no matches.
    h.prime(lambda st: image_msg(frames[0].image, "rgb8", st), sec=1000)
    for _ in range(5):  # discovery is asymmetric: make sure the node has a camera_info
        h.pub_info.publish(info_msg(frames[0].K, (99, 0)))
        h.spin_until(lambda: False, 0.1)
    for i, fr in enumerate(frames):
        stamp = (100 + i, 123456789)
        h.pub_info.publish(info_msg(fr.K, stamp))
        h.spin_until(lambda: False, 0.2)  # camera_info first
        h.pub_image.publish(image_msg(fr.image, "rgb8", stamp))
        feat = h.features_for(stamp)
        assert feat is not None, f"no features for frame {i}"
        # Layout: fixed fields then the descriptor; D readable from the fields alone.
        names = [(f.name, f.offset, f.datatype, f.count) for f in feat.fields]
        assert names[:6] == [("u", 0, 7, 1), ("v", 4, 7, 1), ("score", 8, 7, 1),
                             ("scale", 12, 7, 1), ("orientation", 16, 7, 1),
                             ("track_id", 20, 6, 1)]
        assert names[6][:3] == ("descriptor", 24, 7) and names[6][3] == 256  # ORB: 256 bits
        assert feat.point_step == 24 + 4 * 256 and feat.header.frame_id == "cam"
        cols = parse_cloud(feat)
        expected = reference.extract(fr.image)
        np.testing.assert_allclose(np.stack([cols["u"], cols["v"]], 1),
                                   expected.keypoints.numpy(), atol=1e-4)
        np.testing.assert_array_equal(cols["descriptor"], expected.descriptors.numpy())
        mt = h.matches_for(stamp)
        assert mt is not None and stamp_of(mt) == stamp
        m = parse_cloud(mt)
        if prev is None:
            assert mt.width == 0
        else:
            pcols, pstamp = prev
            assert mt.width > 20
            assert np.all(m["prev_stamp_sec"] == pstamp[0])
            assert np.all(m["prev_stamp_nanosec"] == pstamp[1])
            # Both ends agree with the two features clouds the matches connect.
            np.testing.assert_allclose(m["prev_u"], pcols["u"][m["prev_index"]])
            np.testing.assert_allclose(m["cur_v"], cols["v"][m["cur_index"]])
            inl = m["inlier"].astype(bool)
            assert inl.sum() >= 20
            # Track ids persist along inlier matches, and the matches carry the current id.
            np.testing.assert_array_equal(cols["track_id"][m["cur_index"][inl]],
                                          pcols["track_id"][m["prev_index"][inl]])
            np.testing.assert_array_equal(m["track_id"], cols["track_id"][m["cur_index"]])
            # Relative motion vs ground truth: T_prev_cur = inv(T_world_prev) @ T_world_cur.
            tf = h.spin_until(lambda: next((t for t in h.got["motion"]
                                            if stamp_of(t) == stamp), None), 5.0)
            assert tf is not None, (i, [stamp_of(t) for t in h.got["motion"]])
            assert tf.header.frame_id == "cam" and tf.child_frame_id == "cam_current"
            T_gt = np.linalg.inv(frames[i - 1].T_world_cam) @ fr.T_world_cam
            R = _quat_to_R(tf.transform.rotation)
            assert _rot_angle_deg(R.T @ T_gt[:3, :3]) < 2.0
            t = np.array([tf.transform.translation.x, tf.transform.translation.y,
                          tf.transform.translation.z])
            t_gt = T_gt[:3, 3] / np.linalg.norm(T_gt[:3, 3])
            assert abs(np.linalg.norm(t) - 1.0) < 1e-6
            assert np.degrees(np.arccos(np.clip(t @ t_gt, -1, 1))) < 15.0
        prev = (cols, stamp)
        prev_matches = int(mt.width)

    # The overlay (we subscribe) is the input image with keypoints drawn on it.
    ov = h.spin_until(lambda: next((o for o in h.got["overlay"]
                                    if stamp_of(o) == (103, 123456789)), None), 5.0)
    assert ov is not None and ov.encoding == "bgr8" and (ov.width, ov.height) == (W, H)
    img = np.frombuffer(bytes(ov.data), np.uint8).reshape(H, W, 3)
    changed = np.any(img != frames[3].image[..., ::-1], axis=2)
    ys, xs = np.nonzero(changed)
    for x, y in np.stack([prev[0]["u"], prev[0]["v"]], 1)[:50]:
        assert np.min((xs - x) ** 2 + (ys - y) ** 2) <= 9.0

    n_prime = sum(1 for m in h.got["features"] if m.header.stamp.sec == 1000)
    d = h.last_diag(lambda v: int(v["frames_processed"]) == 4 + n_prime)
    assert d is not None and d["method"] == "orb" and d["device"] == "cpu"
    assert int(d["keypoints"]) == len(prev[0]["u"]) and int(d["bad_input_total"]) == 0
    assert int(d["matches"]) == prev_matches and int(d["frames_dropped"]) == 0

    # Runtime parameters: valid change applies to the next frame, bad values are rejected.
    (res,) = h.set_params(max_keypoints=50)
    assert res.successful
    (res,) = h.set_params(max_keypoints=0)
    assert not res.successful and "max_keypoints" in res.reason
    (res,) = h.set_params(**{"verify.confidence": 0.3})
    assert not res.successful
    (res,) = h.set_params(**{"verify.model": "bogus"})
    assert not res.successful and "verify.model" in res.reason
    (res,) = h.set_params(method="sift")
    assert not res.successful
    (res,) = h.set_params(**{"extractor.patch_size": 15})  # ORB: restart-only key
    assert not res.successful
    h.pub_image.publish(image_msg(frames[0].image, "rgb8", (200, 0)))
    feat = h.features_for((200, 0))
    assert feat is not None and feat.width == 50

    # Live mode (latest-frame slot): a burst is thinned out, never queued; the newest frame is
    # always processed and every received frame is either processed or counted as dropped.
    burst = [(300, k) for k in range(15)]
    for st in burst:
        h.pub_image.publish(image_msg(frames[1].image, "rgb8", st))
    assert h.features_for(burst[-1], timeout=30.0) is not None
    h.spin_until(lambda: False, 0.5)
    done = [st for st in burst if any(stamp_of(m) == st for m in h.got["features"])]
    # One features message per processed frame (reliable output, all arrived by now).
    d = h.last_diag(lambda v: int(v["frames_processed"]) == len(h.got["features"]))
    assert d is not None, len(h.got["features"])
    assert int(d["frames_received"]) == int(d["frames_processed"]) + int(d["frames_dropped"])
    assert 1 <= len(done) <= len(burst)
    assert proc.poll() is None


def test_bad_inputs_are_counted_and_next_frame_processed(node_run):
    frames = scene_frames(1, (160, 120))
    good = frames[0].image
    h, proc, log = node_run(method="orb", diagnostic_period=0.25, process_every_frame=True,
                            **{"qos.depth": 50})
    h.prime(lambda st: image_msg(good, "rgb8", st))
    rng = np.random.default_rng(0)
    depth_nan = np.full((48, 64), np.nan, np.float32)
    depth_partial = rng.random((120, 160)).astype(np.float32) * 5.0
    depth_partial[:10] = np.nan
    bad = [
        ("unknown_encoding", image_msg(good, "weird8", (0, 0))),
        ("size_mismatch", image_msg(good, "rgb8", (0, 0), data=good.tobytes()[:1000],
                                    step=160 * 3)),  # data shorter than height * step
        ("size_mismatch", image_msg(good[..., 0], "mono8", (0, 0), step=100)),  # step < width
        ("empty", image_msg(np.zeros((0, 0), np.uint8), "mono8", (0, 0), step=0)),
        ("too_large", image_msg(np.zeros((1, 1), np.uint8), "mono8", (0, 0), height=4320,
                                width=7680, step=7680, data=b"\0" * 64)),  # 8k header
        ("bad_depth", image_msg(depth_nan, "32FC1", (0, 0))),
    ]
    sec = 10
    for reason, msg in bad:
        msg.header.stamp.sec = sec
        h.pub_image.publish(msg)
        h.pub_image.publish(image_msg(good, "rgb8", (sec, 1)))
        feat = h.features_for((sec, 1))
        assert feat is not None and feat.width > 0, f"good frame after {reason} not processed"
        assert h.features_for((sec, 0), timeout=0.01) is None, reason
        sec += 1
    # A 1x1 image and a partly-NaN depth image are valid input (0 or some keypoints, no error).
    h.pub_image.publish(image_msg(np.full((1, 1), 7, np.uint8), "mono8", (50, 0)))
    feat = h.features_for((50, 0))
    assert feat is not None and feat.width == 0
    h.pub_image.publish(image_msg(depth_partial, "32FC1", (51, 0)))
    assert h.features_for((51, 0)) is not None
    # Message storm of garbage, then a good frame.
    for k in range(200):
        h.pub_image.publish(image_msg(good, "weird8", (60, k)))
    # (best-effort input: a burst of 200 frames can overflow the loopback socket and lose the
    # good frame itself on a loaded machine, so it is re-sent until one copy comes through)
    got = None
    for k in range(15):
        h.pub_image.publish(image_msg(good, "rgb8", (61, k)))
        got = h.features_for((61, k), timeout=2.0)
        if got is not None:
            break
    assert got is not None and got.width > 0

    d = h.last_diag(lambda v: int(v.get("frames_processed", 0)) >= 9)
    assert d is not None
    assert int(d["bad_input.unknown_encoding"]) >= 2
    assert int(d["bad_input.size_mismatch"]) == 2
    assert int(d["bad_input.empty"]) == 1
    assert int(d["bad_input.too_large"]) == 1
    assert int(d["bad_input.bad_depth"]) == 1
    assert proc.poll() is None
    text = log.read_bytes().decode(errors="replace")
    assert "bad input (unknown_encoding" in text and "weird8" in text
    # Throttled: 201 unknown-encoding frames do not give 201 log lines.
    assert text.count("bad input (unknown_encoding") < 20
    # SIGTERM: clean exit (worker joined) with the totals logged.
    assert stop_node(proc) == 0
    text = log.read_bytes().decode(errors="replace")
    assert "totals: received" in text and "too_large 1" in text
    assert "Failed to publish" not in text and "Traceback" not in text


def test_compressed_every_frame_and_watchdog(node_run):
    frames = scene_frames(10, (160, 120))
    h, proc, log = node_run(compressed=True, method="orb", input_transport="compressed",
                            process_every_frame=True, watchdog_timeout=1.0,
                            diagnostic_period=0.25, **{
                                "qos.depth": 50,
                                "qos_overrides./image/compressed.subscription.reliability":
                                    "reliable"})
    # Input QoS: best effort by default (camera_info), overridable per topic (image).
    from rclpy.qos import ReliabilityPolicy as Rel

    # (the harness only publishes on these topics: every subscription there is the node's)
    ours = {t: h.node.get_subscriptions_info_by_topic(t)
            for t in ("/image/compressed", "/camera_info")}
    assert ours["/image/compressed"][0].qos_profile.reliability == Rel.RELIABLE
    assert ours["/camera_info"][0].qos_profile.reliability == Rel.BEST_EFFORT
    h.spin_until(lambda: "no image received yet" in log.read_bytes().decode(errors="replace"),
                 10.0)
    text = log.read_bytes().decode(errors="replace")
    assert "no image received yet" in text and "/image/compressed" in text
    h.prime(lambda st: jpeg_msg(frames[0].image, st))
    stamps = [(300 + i, 5) for i in range(len(frames))]
    for fr, st in zip(frames, stamps):  # no waiting: the node must queue, not drop
        h.pub_image.publish(jpeg_msg(fr.image, st))
    h.pub_image.publish(jpeg_msg(frames[0].image, (400, 0), data=b"\xff\xd8\xff\xe0garbage"))
    h.pub_image.publish(jpeg_msg(frames[1].image, (401, 0)))
    for st in stamps + [(401, 0)]:
        assert h.features_for(st, timeout=30.0) is not None, st
    n_prime = sum(1 for m in h.got["features"] if m.header.stamp.sec == 1)
    d = h.last_diag(lambda v: int(v["frames_processed"]) == len(frames) + 1 + n_prime)
    assert d is not None and int(d["frames_dropped"]) == 0
    assert int(d["bad_input.corrupt"]) == 1
    # Matches connect consecutive frames in publication order.
    m = parse_cloud(h.matches_for(stamps[5]))
    assert np.all(m["prev_stamp_sec"] == stamps[4][0])


def test_startup_config_errors_exit_2(ros_env, tmp_path):
    for params, needle in (({"method": "no_such_method"}, "unknown method"),
                           ({"method": "superpoint", "weights": str(tmp_path / "missing.pth")},
                            "not found"),
                           ({"method": "akaze"}, "evaluation-only"),
                           ({"method": "orb", "matcher.type": "lightglue"},
                            "matcher.lightglue.weights"),
                           ({"method": "orb", "matcher.type": "superglue"}, "matcher.type")):
        log = tmp_path / "startup.log"
        proc = start_node(ros_env, log, **params)
        try:
            rc = proc.wait(timeout=90)
        finally:
            stop_node(proc)
        text = log.read_bytes().decode(errors="replace")
        assert rc == 2, text
        assert "configuration error" in text and needle in text


def test_superpoint_official_layout_weights(node_run, tmp_path):
    """A learned method from an official-layout state dict (random values, saved here)."""
    import torch

    from local_features_ros.extractors.superpoint import SuperPoint
    from local_features_ros.registry import build_extractor

    torch.manual_seed(0)
    weights = tmp_path / "superpoint_v1.pth"
    torch.save(SuperPoint().state_dict(), weights)  # keys conv1a.weight ... convDb.bias
    frames = scene_frames(2, (160, 120))
    # fp32 explicitly: the default 'auto' runs bf16 on CPUs that have it (checked separately
    # against fp32 in test_superpoint.py); here the node must equal the extractor exactly.
    h, proc, log = node_run(method="superpoint", weights=str(weights), max_keypoints=100,
                            precision="fp32")
    h.prime(lambda st: image_msg(frames[0].image, "rgb8", st), sec=1000)
    h.pub_image.publish(image_msg(frames[1].image, "rgb8", (5, 0)))
    feat = h.features_for((5, 0))
    assert feat is not None
    desc = [f for f in feat.fields if f.name == "descriptor"]
    assert len(desc) == 1 and desc[0].count == 256
    # Random weights give near-uniform scores (here ~0.01655 +- 1e-8), so which keypoints make
    # the top 100 is float noise between two processes (thread counts, kernels): compare with the
    # reference's full set instead of its own top-100 cut.
    reference = build_extractor("superpoint", weights=str(weights), max_keypoints=-1)
    expected = reference.extract(frames[1].image)
    cols = parse_cloud(feat)
    assert feat.width == 100 and len(expected) > 100
    uv = np.stack([cols["u"], cols["v"]], 1)
    dist = np.linalg.norm(uv[:, None] - expected.keypoints.numpy()[None], axis=2)
    j = dist.argmin(1)
    assert dist.min(1).max() < 1e-3 and len(set(j.tolist())) == 100  # every one is a reference kp
    np.testing.assert_allclose(cols["score"], expected.scores.numpy()[j], atol=1e-6)
    np.testing.assert_allclose(cols["descriptor"], expected.descriptors.numpy()[j], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(cols["descriptor"], axis=1), 1.0, atol=1e-4)
    cutoff = np.sort(expected.scores.numpy())[::-1][99]  # ... and among the 100 best
    assert (cols["score"] >= cutoff - 1e-5).all()


def test_aliked_with_lightglue_tracks_and_motion(node_run):
    """The licence-clean pair end to end: released ALIKED + LightGlue weights, matches with track
    ids along inliers, and a relative motion close to the rendered ground truth."""
    frames = scene_frames(3, (320, 240))
    h, proc, log = node_run(method="aliked", **{"matcher.type": "lightglue"},
                            max_keypoints=512, precision="fp32", process_every_frame=True)
    h.prime(lambda st: image_msg(frames[0].image, "rgb8", st), sec=1000)
    for _ in range(5):
        h.pub_info.publish(info_msg(frames[0].K, (99, 0)))
        h.spin_until(lambda: False, 0.1)
    prev = None
    for i, fr in enumerate(frames):
        stamp = (100 + i, 0)
        h.pub_info.publish(info_msg(fr.K, stamp))
        h.spin_until(lambda: False, 0.2)
        h.pub_image.publish(image_msg(fr.image, "rgb8", stamp))
        feat = h.features_for(stamp, timeout=60)
        assert feat is not None, log.read_text(errors="replace")[-2000:]
        assert [f.count for f in feat.fields if f.name == "descriptor"] == [128]
        cols = parse_cloud(feat)
        mt = h.matches_for(stamp, timeout=10)
        assert mt is not None
        if prev is not None:
            m = parse_cloud(mt)
            inl = m["inlier"].astype(bool)
            assert mt.width > 50 and inl.sum() > 0.7 * mt.width, (mt.width, inl.sum())
            np.testing.assert_array_equal(cols["track_id"][m["cur_index"][inl]],
                                          prev["track_id"][m["prev_index"][inl]])
            tf = h.spin_until(lambda: next((t for t in h.got["motion"]
                                            if stamp_of(t) == stamp), None), 10.0)
            assert tf is not None, "no relative motion"
            T = np.linalg.inv(frames[i - 1].T_world_cam) @ fr.T_world_cam
            R = _quat_to_R(tf.transform.rotation)
            assert _rot_angle_deg(R.T @ T[:3, :3]) < 1.0
        prev = cols


def test_onnxruntime_backend_in_the_node(node_run, ros_env, tmp_path):
    """``backend: onnxruntime``: the node exports SuperPoint's network on startup (cache in
    LFR_CACHE_DIR) and publishes the torch fp32 keypoints and descriptors."""
    pytest.importorskip("onnxruntime")
    from local_features_ros.registry import build_extractor

    ros_env["LFR_CACHE_DIR"] = str(tmp_path / "cache")
    frames = scene_frames(2, (160, 120))
    h, proc, log = node_run(method="superpoint", backend="onnxruntime", precision="fp32",
                            max_keypoints=200)
    h.prime(lambda st: image_msg(frames[0].image, "rgb8", st), sec=1000)
    h.pub_image.publish(image_msg(frames[1].image, "rgb8", (9, 0)))
    feat = h.features_for((9, 0))
    assert feat is not None, log.read_text(errors="replace")[-2000:]
    assert list((tmp_path / "cache").rglob("*.onnx")), "no exported network in the cache"
    expected = build_extractor("superpoint", precision="fp32", max_keypoints=200).extract(
        frames[1].image)
    cols = parse_cloud(feat)
    uv = np.stack([cols["u"], cols["v"]], 1)
    d = np.linalg.norm(uv[:, None] - expected.keypoints.numpy()[None], axis=2)
    assert feat.width == len(expected) > 20
    assert (d.min(1) < 0.05).mean() >= 0.99
    j = d.argmin(1)
    cos = (cols["descriptor"] * expected.descriptors.numpy()[j]).sum(1)
    assert np.median(cos) > 0.999


@pytest.mark.parametrize("method,dim,extra", [
    ("d2net", 512, {}),
    ("delf", 1024, {}),  # no PCA fitted in random weights: raw 1024-D block3 features
    ("lfnet", 256, {}),
    ("lift", 128, {"extractor.min_scale_log2": 2.0}),  # skip the 2x-upsampled levels (CI time)
])
def test_every_learned_method_runs_in_the_node(node_run, method, dim, extra):
    """Each registry method runs end to end in the node (random weights: the output layout,
    stamp, count limit and pixel bounds are checked, not accuracy)."""
    frames = scene_frames(2, (128, 96))
    h, proc, log = node_run(method=method, weights="random", max_keypoints=64, precision="fp32",
                            **extra)
    h.prime(lambda st: image_msg(frames[0].image, "rgb8", st), sec=1000)
    h.pub_image.publish(image_msg(frames[1].image, "rgb8", (7, 0)))
    feat = h.features_for((7, 0))
    assert feat is not None, log.read_text(errors="replace")[-2000:]
    desc = [f for f in feat.fields if f.name == "descriptor"]
    assert len(desc) == 1 and desc[0].count == dim
    cols = parse_cloud(feat)
    assert 0 < feat.width <= 64
    assert (cols["u"] >= -0.5).all() and (cols["u"] <= 127.5).all()
    assert (cols["v"] >= -0.5).all() and (cols["v"] <= 95.5).all()
    assert np.isfinite(cols["descriptor"]).all()


def test_frame_inbox_latest_slot_and_bounded_fifo():
    """The node's callback -> worker hand-over (no ROS types involved)."""
    from local_features_ros.ros.inbox import FrameInbox

    drops = []
    box = FrameInbox(drops.append, put_timeout_s=0.01)
    box.put("a", every_frame=False, limit=1)
    box.put("b", every_frame=False, limit=1)  # overwrites a: a is dropped
    assert box.get() == "b" and drops == ["a"]
    for m in "cde":
        box.put(m, every_frame=True, limit=2)  # e waits 10 ms for space, then is dropped
    assert drops == ["a", "e"] and [box.get(), box.get()] == ["c", "d"]
    box.stop()
    assert box.stopped and box.get() is None
