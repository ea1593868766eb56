"""``visual_odometry``: metric stereo or RGB-D odometry from the package's features.

A separate node from ``feature_extractor`` because its input is a synchronised *pair* of images
with their calibration, and its state (a local map, keyframes, bundle adjustment) outlives any
one frame; the per-frame work is the ROS-free core in ``local_features_ros/odometry``
(``StereoOdometry`` / ``RGBDOdometry``), built on the same extractors.

Inputs (node-relative, remap them): ``mode: stereo`` -- ``left/image_rect``, ``right/image_rect``
(rectified ``sensor_msgs/Image``), ``left/camera_info``, ``right/camera_info`` (the right P holds
the baseline as ``Tx = -fx * B``); ``mode: rgbd`` -- ``rgb/image``, ``depth/image`` (aligned to the
colour image: 16UC1 millimetres or 32FC1 metres), ``rgb/camera_info``. Pairs are formed by stamp
(``sync_slop`` seconds, ``ros/pairing.py``); an image left without a partner is counted as
dropped.

Outputs: ``~/odometry`` (``nav_msgs/Odometry``: pose of the left/colour camera in ``odom_frame``,
world = the first camera; covariance from the bundle adjustment's marginals; twist from
consecutive poses), ``~/path`` (``nav_msgs/Path``), TF ``odom_frame -> child frame`` when
``tf2_ros`` is importable (a ROS 2 install), ``~/frame_done`` (one ``std_msgs/Header`` per input
image, for lossless replay, ``ros/flow_control.py``) and ``/diagnostics`` (tracking state,
keyframes, map points, inliers, bundle-adjustment time, losses, dropped and bad input). With
``publish_features`` (default on), also what ``feature_extractor`` publishes for the left/colour
image, in the same layouts and with its header: ``~/features``, ``~/matches`` (keypoints of
consecutive frames that observe the same landmark) and ``~/overlay``; these are built only while
subscribed (``ros/odometry_output.py``).

Processing: two worker threads, joined on shutdown, form a pipeline as in ``feature_extractor``:
one decodes the next pair and measures it (``measure``, which never touches the odometry state:
the left/colour image's features, and the depth lookup of RGB-D) while the other advances the
odometry with the previous pair (``update``: tracking, keyframes - with the right image's
features and the stereo matches, which only a keyframe needs - and bundle adjustment) and
publishes it. Two measured pairs wait between them at most (the
measuring stage keeps going through a keyframe's longer update), and both take pairs in order,
so on two cores the rate is that of the slower stage, not of the sum.

Robustness: bad images (decode errors, size mismatch, NaN-only depth) and pairs out of order are
logged (throttled), counted and skipped; tracking losses re-initialise from the next good frame
with a continuous trajectory (the core's recovery). Startup configuration errors exit with 2.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Any

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..conventions import ConfigError
from ..image.encodings import DecodeLimits, ImageDecodeError, image_to_numpy
from .flow_control import (BAD_INPUT_PREFIX, DONE_TOPIC, DROPPED, PROCESSED, done_message,
                           done_qos)
from .messages import image_msg_to_numpy, stamp_to_sec
from .node_main import run_node
from .node_params import StartupError
from .odometry_output import OdometryFeatureOutputs, OdometryPublisher
from .odometry_params import OdometryNodeConfig
from .params import config_specs
from .pairing import PairQueue
from .qos import diagnostics_qos, input_qos, output_qos

NODE = "visual_odometry"
BAD_INPUT_LOG_PERIOD_S = 2.0


class VisualOdometryNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE, **node_kwargs)
        p = self._declare()
        self.mode = p["mode"]
        self._odometry: Any = None  # built when the calibration is known
        self._build_extractor(p)
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._infos: dict[str, CameraInfo] = {}
        self._pairs = PairQueue(lambda m: stamp_to_sec(m.header.stamp), p["sync_slop"])
        self._work: queue.Queue = queue.Queue(maxsize=max(1, p["queue_size"]))
        self.counts = {"received": 0, "processed": 0, "dropped": 0, "bad_input": 0}
        self._bad_log: dict[str, float] = {}
        self._last: Any = None  # the last OdometryResult
        self._last_stamp = float("-inf")  # the newest pair taken (any outcome)
        self.pub_done = self.create_publisher(Header, DONE_TOPIC, done_qos())
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", diagnostics_qos())
        self.out = OdometryPublisher(self, p["odom_frame"], p["child_frame"], p["publish_tf"],
                                     output_qos(p["output_depth"]))
        self.features_out = (OdometryFeatureOutputs(self, p["output_depth"], self.method)
                             if p["publish_features"] else None)
        names = (("left/image_rect", "right/image_rect") if self.mode == "stereo"
                 else ("rgb/image", "depth/image"))
        qos = input_qos(p["input_depth"])
        if p["reliable_input"]:  # replay from our own player: lossless (best effort drops
            qos.reliability = ReliabilityPolicy.RELIABLE  # fragments of large images)
        for side, topic in enumerate(names):
            self.create_subscription(Image, topic, lambda m, s=side: self._on_image(s, m), qos)
        infos = (("left/camera_info", "right/camera_info") if self.mode == "stereo"
                 else ("rgb/camera_info",))
        for topic in infos:
            self.create_subscription(CameraInfo, topic,
                                     lambda m, t=topic: self._infos.__setitem__(t, m), qos)
        self._stop = threading.Event()
        self._measured: queue.Queue = queue.Queue(maxsize=2)
        self._workers = [threading.Thread(target=self._measure_loop, name="odometry-measure",
                                          daemon=False),
                         threading.Thread(target=self._update_loop, name="odometry-update",
                                          daemon=False)]
        for worker in self._workers:
            worker.start()
        self.create_timer(1.0, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"mode={self.mode} method={self.method} inputs={', '.join(names + infos)} "
            f"tf={'on' if self.out.tf_enabled else 'off (tf2_ros not importable)'}")

    # ------------------------------------------------------------------ set-up
    def _declare(self) -> OdometryNodeConfig:
        """Declare one read-only parameter per ``OdometryNodeConfig`` key (its default and
        description) and check the start values; any bad value is a ``StartupError`` naming
        the parameter."""
        values = {}
        for spec in config_specs(OdometryNodeConfig, "node"):
            try:
                values[spec.name] = self.declare_parameter(spec.name, spec.default,
                                                           spec.descriptor()).value
            except Exception as exc:  # wrong type in the YAML / -p
                raise StartupError(f"parameter '{spec.name}': {exc}") from exc
        try:
            return OdometryNodeConfig.create(values)
        except ConfigError as exc:
            raise StartupError(str(exc)) from exc

    def _build_extractor(self, p: OdometryNodeConfig) -> None:
        from ..hardware import AUTO_METHOD, choose_method, extraction_threads
        from ..registry import build_extractor, get_extractor_class
        from ..weights import WeightsError

        method = p["method"]
        if method == AUTO_METHOD:
            choice = choose_method(p["device"])
            method = choice.method
            self.get_logger().info(f"method auto -> {method}: {choice.reason}")
        threads = extraction_threads()
        self._extract_threads = threads.threads
        self.get_logger().info(f"extraction threads: {threads}")
        torch.set_num_threads(threads.threads)  # before the build: a backend sizes its pool
        try:
            cls = get_extractor_class(method, runtime=True)
            conf = {}
            if p["max_keypoints"]:
                conf["max_keypoints"] = int(p["max_keypoints"])
            elif "max_keypoints" in cls.node_conf:
                conf["max_keypoints"] = cls.node_conf["max_keypoints"]
            self.extractor = build_extractor(method, weights=p["weights"] or None,
                                             device=p["device"], precision=p["precision"],
                                             **conf)
        except (ConfigError, WeightsError, FileNotFoundError, ValueError, ImportError) as exc:
            raise StartupError(f"cannot build method '{method}': {exc}") from exc
        self.method = method
        self.depth_factor = float(p["depth_factor"])
        self.every_frame = bool(p["process_every_frame"])
        self.limits = DecodeLimits(max_pixels=int(p["max_input_pixels"]))

    def _make_odometry(self, width: int, height: int) -> Any:
        """The core for the calibration received so far (None: not enough yet)."""
        from ..odometry import RectifiedCamera, RGBDOdometry, StereoOdometry

        if self.mode == "stereo":
            left = self._infos.get("left/camera_info")
            right = self._infos.get("right/camera_info")
            if left is None or right is None:
                return None
            P0, P1 = np.reshape(left.p, (3, 4)), np.reshape(right.p, (3, 4))
            fx = float(P0[0, 0]) or float(np.reshape(left.k, (3, 3))[0, 0])
            baseline = -float(P1[0, 3]) / float(P1[0, 0]) if P1[0, 0] else 0.0
            cam = RectifiedCamera(fx, float(P0[1, 1]), float(P0[0, 2]), float(P0[1, 2]),
                                  baseline, width, height)
            return StereoOdometry(self.extractor, cam)
        info = self._infos.get("rgb/camera_info")
        if info is None:
            return None
        K = np.reshape(info.k, (3, 3))
        cam = RectifiedCamera(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                              1.0, width, height)
        dist = np.asarray(info.d, float) if len(info.d) >= 4 and np.any(info.d) else None
        return RGBDOdometry(self.extractor, cam, depth_factor=self.depth_factor, distortion=dist)

    # ------------------------------------------------------------------ input
    def _on_image(self, side: int, msg: Image) -> None:
        self.counts["received"] += 1
        with self._lock:
            pairs, orphans = self._pairs.push(side, msg)
        for m in orphans:
            self._drop(m, "no partner image within sync_slop")
        for pair in pairs:
            if self.every_frame:
                self._work.put(pair)  # replay: the source waits for our acknowledgements
                continue
            try:
                self._work.put_nowait(pair)
            except queue.Full:  # live: the newest pair replaces the oldest waiting one
                try:
                    old = self._work.get_nowait()
                    self._drop(old.first, "stale")
                    self._drop(old.second, "stale")
                except queue.Empty:
                    pass
                self._work.put_nowait(pair)

    def _drop(self, msg: Any, why: str) -> None:
        self.counts["dropped"] += 1
        self.pub_done.publish(done_message(msg.header, DROPPED))

    def _bad(self, reason: str, text: str) -> str:
        with self._count_lock:  # both worker stages report bad input
            self.counts["bad_input"] += 1
        now = time.monotonic()
        if now - self._bad_log.get(reason, -1e9) >= BAD_INPUT_LOG_PERIOD_S:
            self._bad_log[reason] = now
            self.get_logger().warning(f"bad input ({reason}): {text}")
        return BAD_INPUT_PREFIX + reason

    # ------------------------------------------------------------------ workers
    def _measure_loop(self) -> None:
        """Stage 1: decode, check and measure the pairs in arrival order (``measure``: features
        and stereo matches / depths), then hand each to stage 2, two waiting at most."""
        torch.set_num_threads(self._extract_threads)
        while not self._stop.is_set():
            try:
                pair = self._work.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                item: Any = self._measure(pair)
            except Exception as exc:  # the worker survives any frame
                if self._stop.is_set() or not self.context.ok():
                    return
                item = self._bad("internal_error", f"{type(exc).__name__}: {exc}")
            while not self._stop.is_set():
                try:
                    self._measured.put((pair, item), timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _update_loop(self) -> None:
        """Stage 2: advance the odometry frame by frame in stamp order, publish, and
        acknowledge both images of every pair (whatever became of it). One torch thread:
        the cores are the extraction's (``hardware.extraction_threads``)."""
        torch.set_num_threads(1)
        while not self._stop.is_set():
            try:
                pair, item = self._measured.get(timeout=0.2)
            except queue.Empty:
                continue
            outcome = item if isinstance(item, str) else None
            if outcome is None:
                try:
                    outcome = self._update(pair, *item)
                except Exception as exc:  # the worker survives any frame
                    if self._stop.is_set() or not self.context.ok():
                        return
                    outcome = self._bad("internal_error", f"{type(exc).__name__}: {exc}")
            for m in (pair.first, pair.second):
                self.pub_done.publish(done_message(m.header, outcome))

    def _decode(self, msg: Image, depth: bool = False) -> np.ndarray:
        """An image as the extractor takes it, or a depth image in its own units (16UC1
        millimetres, 32FC1 metres): the same decoding and limits as ``feature_extractor``."""
        if not depth:
            return image_msg_to_numpy(msg, self.limits)
        h, w = int(msg.height), int(msg.width)
        if h * w > self.limits.max_pixels:
            raise ImageDecodeError("too_large", f"{w}x{h} depth image")
        if h == 0 or w == 0:
            raise ImageDecodeError("empty", "0-pixel depth image")
        if msg.encoding not in ("16UC1", "mono16", "32FC1"):
            raise ImageDecodeError("unsupported_encoding", f"depth encoding '{msg.encoding}' "
                                   "(16UC1 millimetres or 32FC1 metres)")
        return image_to_numpy(msg.encoding, h, w, msg.step, bool(msg.is_bigendian), msg.data)

    def _measure(self, pair: Any) -> tuple[np.ndarray, Any, float] | str:
        """(left image, measured frame, start time), or the bad-input outcome."""
        if pair.stamp <= self._last_stamp:
            return self._bad("out_of_order", f"pair at {pair.stamp:.3f} s is not newer than "
                             f"{self._last_stamp:.3f} s")
        self._last_stamp = pair.stamp
        try:
            a = self._decode(pair.first)
            b = self._decode(pair.second, depth=self.mode == "rgbd")
        except (ImageDecodeError, ValueError) as exc:
            return self._bad(getattr(exc, "reason", "decode_error"), str(exc))
        if a.shape[:2] != b.shape[:2]:
            return self._bad("size_mismatch", f"{pair.first.width}x{pair.first.height} and "
                             f"{pair.second.width}x{pair.second.height} images in one pair")
        if self.mode == "rgbd" and b.dtype.kind == "f" and not np.isfinite(b).any():
            return self._bad("no_depth", "depth image without a finite value")
        if self._odometry is None:
            self._odometry = self._make_odometry(a.shape[1], a.shape[0])
            if self._odometry is None:
                return self._bad("no_camera_info", "waiting for camera_info")
        t0 = time.perf_counter()
        return a, self._odometry.measure(a, b, pair.stamp), t0

    def _update(self, pair: Any, image: np.ndarray, frame: Any, t0: float) -> str:
        res = self._odometry.update(frame)
        self.out.publish(pair.first.header, res)
        if self.features_out is not None:
            if res.frame_index == 0:  # a new trajectory (first frame, or the stamps went back)
                self.features_out.reset()
            self.features_out.publish(pair.first.header, image, frame.measurement.features,
                                      frame.landmark_ids, res.frame_index, t0)
        self._last = res
        self.counts["processed"] += 1
        return PROCESSED

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        res = self._last
        values = {**{k: str(v) for k, v in self.counts.items()},
                  "method": self.method, "mode": self.mode}
        if res is not None:
            values.update(state=res.state.value, keyframes=str(res.num_keyframes),
                          map_points=str(res.num_map_points), inliers=str(res.num_inliers),
                          ba_ms=f"{res.ba_ms:.1f}", losses=str(res.losses))
        ok = res is None or res.state.ok
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN,
            name=f"{self.get_fully_qualified_name()}: {NODE}", hardware_id=self.method,
            message="tracking" if ok else "tracking lost",
            values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            if worker.is_alive():
                worker.join(timeout=10.0)
        self.get_logger().info(
            "totals: " + ", ".join(f"{k} {v}" for k, v in self.counts.items())
            + (f", losses {self._last.losses}" if self._last is not None else ""))


def main(args: list[str] | None = None) -> int:
    return run_node(VisualOdometryNode, NODE, VisualOdometryNode.stop, args)


if __name__ == "__main__":
    sys.exit(main())
