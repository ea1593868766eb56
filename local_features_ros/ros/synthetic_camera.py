"""``synthetic_camera``: a camera driver stand-in that publishes rendered frames with exact poses.

Why: the demo, ``local-features run --synthetic`` and the tests need a live image source with
known intrinsics and ground-truth motion on a machine without cameras or bags. Frames come from
``SyntheticScene`` (or, with ``image_dir``, from image files, without camera_info).

Publishes ``image`` (sensor_msgs/Image, ``encoding``), ``image/compressed`` (JPEG/PNG) per
``transport``, ``camera_info`` (same header as the image) and, with ``publish_pose``, ``pose``
(geometry_msgs/PoseStamped, ``T_world_cam`` of the frame in ``world_frame``). Image stamps are the
node clock at publication (so latency = receive time - stamp). With ``frames > 0`` it exits after
publishing that many frames.

With ``done_topic`` (the extractor's ``~/frame_done``) it replays losslessly like the bag player:
at most ``window`` frames unacknowledged (``ros/flow_control.py``), ``rate`` 0 = as fast as the
node takes them, and ``report_file`` receives the replay report (JSON). The exit status is 1 when
the node stopped acknowledging.
"""

from __future__ import annotations

import array
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..image.encodings import encode_compressed
from .flow_control import DEFAULT_ACK_TIMEOUT_S, DEFAULT_WINDOW, FrameCredits
from .messages import numpy_to_image_msg

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff")


def camera_info_msg(header: Header, K: np.ndarray, width: int, height: int) -> CameraInfo:
    """Pinhole CameraInfo without distortion (P = [K | 0], R = I)."""
    info = CameraInfo(header=header, width=int(width), height=int(height))
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [float(v) for v in np.asarray(K, np.float64).reshape(-1)]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:, :3] = K
    info.p = [float(v) for v in P.reshape(-1)]
    return info


def pose_msg(header: Header, T_world_cam: np.ndarray) -> PoseStamped:
    msg = PoseStamped(header=header)
    T = np.asarray(T_world_cam, np.float64)
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in T[:3, 3])
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    (msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z,
     msg.pose.orientation.w) = (float(v) for v in q)
    return msg


def convert_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """RGB uint8 -> the array layout of ``encoding`` (rgb8, bgr8, mono8)."""
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    if encoding == "mono8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"encoding must be rgb8, bgr8 or mono8, got '{encoding}'")


class SyntheticCamera(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("synthetic_camera", **node_kwargs)
        d = self.declare_parameter
        self.rate = float(d("rate", 10.0, ParameterDescriptor(
            description="frames per second (0 = no pacing: with done_topic, as fast as the "
            "node takes them)")).value)
        self.n_frames = int(d("frames", 0, ParameterDescriptor(
            description="frames to publish, then exit (0 = run forever, looping)")).value)
        self.trajectory = str(d("trajectory", "orbit", ParameterDescriptor(
            description="orbit | forward | revisit")).value)
        self.seed = int(d("seed", 0).value)
        self.width = int(d("width", 320).value)
        self.height = int(d("height", 240).value)
        self.transport = str(d("transport", "raw", ParameterDescriptor(
            description="raw | compressed | both")).value)
        self.format = str(d("format", "jpeg", ParameterDescriptor(
            description="compressed format: jpeg | png")).value)
        self.encoding = str(d("encoding", "rgb8", ParameterDescriptor(
            description="raw encoding: rgb8 | bgr8 | mono8")).value)
        self.frame_id = str(d("frame_id", "camera_optical_frame").value)
        self.world_frame = str(d("world_frame", "world").value)
        self.publish_pose = bool(d("publish_pose", True).value)
        self.image_dir = str(d("image_dir", "", ParameterDescriptor(
            description="publish these image files instead of rendering (sorted by name, each "
            "once unless loop is true; no camera_info; width/height do not apply)")).value)
        self.loop = bool(d("loop", False, ParameterDescriptor(
            description="image_dir: start over after the last image")).value)
        self.wait_for_subscribers = bool(d("wait_for_subscribers", False, ParameterDescriptor(
            description="hold the first frame until the image topic has a subscriber")).value)
        self.wait_timeout = float(d("wait_timeout", 60.0).value)
        self.start_delay = float(d("start_delay", 0.0, ParameterDescriptor(
            description="seconds to wait after a subscriber appeared (its reader may match "
            "our writer a little later)")).value)
        self.done_topic = str(d("done_topic", "", ParameterDescriptor(
            description="the extractor's ~/frame_done: lossless flow control (empty = a live "
            "camera)")).value)
        self.window = int(d("window", DEFAULT_WINDOW, ParameterDescriptor(
            description="frames in flight without acknowledgement (done_topic)")).value)
        self.ack_timeout = float(d("ack_timeout", DEFAULT_ACK_TIMEOUT_S, ParameterDescriptor(
            description="seconds without an acknowledgement before giving up")).value)
        self.report_file = str(d("report_file", "", ParameterDescriptor(
            description="write the replay report (JSON) here (done_topic)")).value)
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0, got {self.rate:g}")
        if self.transport not in ("raw", "compressed", "both"):
            raise ValueError(f"transport must be raw, compressed or both, got '{self.transport}'")
        convert_rgb(np.zeros((2, 2, 3), np.uint8), self.encoding)  # validate early

        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_raw = (self.create_publisher(Image, "image", qos)
                        if self.transport in ("raw", "both") else None)
        self.pub_comp = (self.create_publisher(CompressedImage, "image/compressed", qos)
                         if self.transport in ("compressed", "both") else None)
        self.pub_info = self.create_publisher(CameraInfo, "camera_info", qos)
        self.pub_pose = (self.create_publisher(PoseStamped, "pose", qos)
                         if self.publish_pose else None)
        self.published = 0
        self.unreadable: list[Path] = []
        self.credits = (FrameCredits(self, self.done_topic, self.window, self.ack_timeout,
                                     spin=lambda: rclpy.spin_once(self, timeout_sec=0.02))
                        if self.done_topic else None)
        self._frames = self._frame_source()

    # ------------------------------------------------------------------ sources
    def _frame_source(self) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """Yields (RGB image, K or None, T_world_cam or None) forever or ``frames`` times."""
        if self.image_dir:
            files = sorted(p for p in Path(self.image_dir).iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"no images in {self.image_dir}")
            while True:
                good = 0
                for path in files:
                    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                    if bgr is None:
                        if path not in self.unreadable:
                            self.unreadable.append(path)
                            self.get_logger().warning(f"cannot read {path} (skipped)")
                        continue
                    good += 1
                    yield bgr[..., ::-1].copy(), None, None
                if not self.loop or good == 0:
                    return
        from ..synthetic.scene import PinholeCamera, SyntheticScene

        scene = SyntheticScene(self.seed, PinholeCamera.default(self.width, self.height))
        period = self.n_frames if self.n_frames > 0 else 120
        while True:
            for frame in scene.frames(period, self.trajectory, fps=self.rate):
                yield frame.image, frame.K, frame.T_world_cam

    def wait_for_subscriber(self) -> bool:
        pubs = [p for p in (self.pub_raw, self.pub_comp) if p is not None]
        deadline = time.monotonic() + self.wait_timeout
        while time.monotonic() < deadline:
            if any(p.get_subscription_count() > 0 for p in pubs) and (
                    self.credits is None or self.credits.connected()):
                return True
            rclpy.spin_once(self, timeout_sec=0.05)
        self.get_logger().warning("no subscriber appeared; publishing anyway")
        return False

    def publish_next(self) -> bool:
        """Render and publish one frame; False when ``frames`` are done."""
        if self.n_frames > 0 and self.published >= self.n_frames:
            return False
        if self.credits is not None and not self.credits.acquire():
            return False  # the node stopped acknowledging (credits.report says so)
        try:
            rgb, K, T = next(self._frames)
        except StopIteration:  # image_dir without loop: every image was published once
            return False
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        if self.pub_raw is not None:
            self.pub_raw.publish(numpy_to_image_msg(convert_rgb(rgb, self.encoding),
                                                    self.encoding, header))
        if self.pub_comp is not None:
            msg = CompressedImage(header=header, format=self.format)
            buf = array.array("B")
            buf.frombytes(encode_compressed(rgb, self.format))
            msg.data = buf
            self.pub_comp.publish(msg)
        if K is not None:
            self.pub_info.publish(camera_info_msg(header, K, rgb.shape[1], rgb.shape[0]))
        if self.pub_pose is not None and T is not None:
            pose_header = Header(stamp=header.stamp, frame_id=self.world_frame)
            self.pub_pose.publish(pose_msg(pose_header, T))
        if self.credits is not None:
            self.credits.sent()
        self.published += 1
        return True

    def run(self) -> int:
        """Publish at ``rate`` (wall clock; 0 = unpaced), spinning in between. Returns the exit
        status: 1 when the node stopped acknowledging (flow control), else 0."""
        if self.wait_for_subscribers:
            self.wait_for_subscriber()
        end = time.monotonic() + self.start_delay
        while rclpy.ok() and time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)
        period = 1.0 / self.rate if self.rate > 0 else 0.0
        t0 = next_t = time.monotonic()
        while rclpy.ok():
            if not self.publish_next():
                break
            next_t += period
            while True:
                left = next_t - time.monotonic()
                if left <= 0:
                    break
                rclpy.spin_once(self, timeout_sec=min(left, 0.05))
            if next_t < time.monotonic() - period:  # fell behind: do not burst to catch up
                next_t = time.monotonic()
        report = self.credits.report if self.credits is not None else None
        if report is not None and not report.stalled:
            self.credits.drain()
        # Give reliable subscribers a moment to take the last messages before exiting.
        end = time.monotonic() + 0.5
        while rclpy.ok() and time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)
        skipped = (f"; {len(self.unreadable)} unreadable file(s) skipped: "
                   + ", ".join(p.name for p in self.unreadable)) if self.unreadable else ""
        self.get_logger().info(f"published {self.published} frames{skipped}")
        if report is None:
            return 0
        report.elapsed_s = time.monotonic() - t0
        if self.report_file:
            report.write(self.report_file)
        self.get_logger().info(
            f"node acknowledged {report.acknowledged} of {report.published} frames: "
            f"{report.processed} processed, {report.bad_input} bad input, {report.dropped} "
            f"dropped" + (f"; {report.reason}" if report.reason else ""))
        return 1 if report.stalled else 0


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = SyntheticCamera()
        return node.run()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as exc:
        rclpy.logging.get_logger("synthetic_camera").error(f"configuration error: {exc}")
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
