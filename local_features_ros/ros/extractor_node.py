"""``feature_extractor``: images in, keypoints + descriptors + frame-to-frame matches out.

Processing model: the subscription callback only stores the message (``ros/inbox.py``: a
latest-frame slot while live, a bounded FIFO when ``process_every_frame`` is true, e.g. for bag
replay). Three worker threads, joined on shutdown, form a pipeline so the node's rate is that of
its slowest stage, not the sum of all: the *extract* stage decodes (``ros/frame_input.py``) and
extracts (``FeaturePipeline.extract``) frame N+1 while the *publish* stage matches, verifies,
tracks and steps loop closure for frame N (``FeaturePipeline.process_features``) and publishes it
(``ros/frame_output.py``, ``ros/loop_closure.py``), and the *output* stage draws frame N-1's
overlay (only while someone subscribes to ``~/overlay``) and acknowledges it.
One frame waits between two stages at most, and all take frames in order. OpenCV runs
single-threaded here (its work is small per call), and so does torch in the publish stage
(``FeaturePipeline.enter_frontend_thread``); the extract stage gets all cores but one
(``hardware.extraction_threads``; ``OMP_NUM_THREADS`` wins), so that the stages do not preempt
each other's threads. Live, a frame that is overwritten before the extract stage takes it is
counted as dropped, so outputs never lag behind the camera by a queue of stale frames. Every
input image, whatever became of it, is acknowledged on ``~/frame_done`` once its outputs,
overlay included, are published (``ros/flow_control.py``): a replaying source waits for these,
so a recording is processed whole however slow the method.

Robustness contract:
- Bad input never kills the node: every decode error (unknown encoding, size/step mismatch,
  empty, too large, corrupt JPEG, depth without a valid pixel) and every per-frame extractor
  failure is logged (throttled per reason), counted in ``/diagnostics`` as ``bad_input.<reason>``,
  and the next good frame is processed normally. An image too small for the network (e.g. 1x1)
  yields an empty feature set instead of an error.
- Startup configuration errors (unknown method, missing/unfitting weights file, bad value of a
  restart-only parameter) are different: the node cannot do anything useful, so it logs one
  clear error line and exits with status 2 (the CLI's convention for a usage/config error), which
  ``ros2 launch`` reports as a failed process.

Outputs: ``~/features``, ``~/matches``, ``~/relative_motion``, ``~/overlay`` (see
``ros/frame_output.py``), ``~/loop_candidates`` (only with ``place_recognition.enable``: every
``place_recognition.keyframe_every`` processed frames the frame's features query the keyframe
database -- ``loop_closure.py: LoopClosure``, the ``place_recognition.exclude_recent``
newest keyframes excluded -- then the frame is added as a keyframe, and the verified candidates
with at least ``place_recognition.min_inliers`` inliers are published with the query image's
header; a failure there is logged and counted as ``loop_errors``, never fatal), and
``/diagnostics``.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..extractors.base import ConfigError
from ..hardware import extraction_threads
from ..image.encodings import ImageDecodeError
from ..types import Features
from ..weights import WeightsError
from . import params as P
from .diagnostics import FrameRecord, NodeStats, build_diagnostics
from .flow_control import (BAD_INPUT_PREFIX, DONE_TOPIC, DROPPED, PROCESSED, done_message,
                           done_qos)
from .frame_input import CameraModel, decode_image, intrinsics_for
from .frame_output import FrameOutputs
from .inbox import FrameInbox
from .loop_closure import NodeLoops
from .messages import stamp_to_sec
from .names import NODE_NAME
from .node_main import run_node
from .node_params import NodeParameters, StartupError
from .qos import diagnostics_qos, input_qos, overridable, qos_text

#: Seconds between two log lines for the same bad-input reason.
BAD_INPUT_LOG_PERIOD_S = 2.0


@dataclass
class _Extracted:
    """A frame between stages 1 and 2: its features, or the outcome that ended it early."""

    msg: Any
    t0: float  # perf_counter when stage 1 took it
    outcome: str | None = None  # set = bad input: stage 2 only acknowledges it
    image: np.ndarray | None = None
    feats: Features | None = None
    K: np.ndarray | None = None


@dataclass
class _Done:
    """A frame between stages 2 and 3: its outcome and its overlay job (None: no overlay)."""

    msg: Any
    outcome: str
    overlay: Callable[[], None] | None = None


class FeatureExtractorNode(Node):
    """See the module docstring. ``node_kwargs`` go to ``rclpy.node.Node`` (tests pass
    ``parameter_overrides`` / ``context``)."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.stats = NodeStats()
        self.params = NodeParameters(self)
        self._build_pipeline(self.params.declare_all())
        try:
            self._loops = NodeLoops.open(self._node_conf, self.pipeline, self.get_logger(),
                                         self.stats)
        except ConfigError as exc:
            raise StartupError(str(exc)) from exc
        self._warm_up()
        # State shared by the executor thread and the stages.
        self._extract_lock = threading.Lock()  # the extractor and its config
        self._frontend_lock = threading.Lock()  # matcher, verification, tracks, node config
        self._handoff: queue.Queue[_Extracted | None] = queue.Queue(maxsize=1)
        self._outbox: queue.Queue[_Done | None] = queue.Queue(maxsize=1)
        self._inbox = FrameInbox(self._on_dropped)
        self._camera: CameraModel | None = None
        self._bad_log_time: dict[str, float] = {}
        self._start_time = time.monotonic()
        self._last_watchdog_warn = 0.0
        self._create_publishers()
        self._create_subscriptions()
        self._watch_parameters()
        self._start_worker()
        self.get_logger().info(
            f"method={self.method} weights={self.extractor.weights_source} "
            f"device={self.device_name} D={self._descriptor_dim} input="
            f"{self.sub_image.topic_name} ({self._transport}, {qos_text(self._in_qos)}) "
            f"camera_info={self.sub_info.topic_name}")

    # ------------------------------------------------------------------ construction
    def _build_pipeline(self, initial: P.ChangeSet) -> None:
        """Extractor, matcher and frontend from the start values (``pipeline.py``)."""
        from ..pipeline import FeaturePipeline, PipelineConfig

        self.method = self.params.method  # ``auto`` resolved for the hardware found
        if self.params.method_reason:
            self.get_logger().info(f"method auto -> {self.method}: {self.params.method_reason}")
        self._transport = str(self._value("input_transport"))
        # every node-only value: the table's defaults under the start values (ros/params.py)
        self._node_conf: dict[str, Any] = {**P.node_defaults(), **initial.node}
        threads = extraction_threads()
        self.get_logger().info(f"extraction threads: {threads}")
        try:
            self.pipeline = FeaturePipeline(PipelineConfig(
                self.method, str(self._value("weights")) or None, str(self._value("device")),
                str(self._value("precision")), initial.extractor,
                str(self._node_conf["matcher.type"]), initial.matcher,
                initial.lightglue, initial.verify, extract_threads=threads.threads))
        except (ConfigError, WeightsError, FileNotFoundError, ValueError, ImportError,
                RuntimeError) as exc:
            raise StartupError(f"cannot build method '{self.method}': {exc}") from exc
        self.extractor = self.pipeline.extractor
        self.device_name = str(self.extractor.device)
        self._descriptor_dim = self.pipeline.descriptor_dim

    def _create_publishers(self) -> None:
        self.outputs = FrameOutputs(self, int(self._value("qos.output_depth")),
                                    self._loops is not None, self.method,
                                    str(self._value("relative_motion.child_frame_suffix")),
                                    matcher=self.pipeline.matcher_type)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", diagnostics_qos())
        self.pub_done = self.create_publisher(Header, DONE_TOPIC, done_qos())

    def _create_subscriptions(self) -> None:
        depth = int(self._value("qos.depth"))
        self._in_qos = input_qos(depth)  # after overrides: what the image subscription uses
        msg_type, topic = ((CompressedImage, "image/compressed") if self._transport == "compressed"
                           else (Image, "image"))
        self.sub_image = self.create_subscription(msg_type, topic, self._on_image, self._in_qos,
                                                  qos_overriding_options=overridable())
        self.sub_info = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                                 input_qos(depth),
                                                 qos_overriding_options=overridable())

    def _watch_parameters(self) -> None:
        """Runtime parameter changes: validated first, applied after (Humble: both at once)."""
        self._post_set_supported = hasattr(self, "add_post_set_parameters_callback")
        self.add_on_set_parameters_callback(self._validate_parameters)
        if self._post_set_supported:
            self.add_post_set_parameters_callback(self._apply_parameters)

    def _start_worker(self) -> None:
        self._workers = [
            threading.Thread(target=self._extract_loop, name="feature_extract", daemon=False),
            threading.Thread(target=self._publish_loop, name="feature_publish", daemon=False),
            threading.Thread(target=self._output_loop, name="feature_output", daemon=False)]
        for worker in self._workers:
            worker.start()
        # Wall-clock timers: with use_sim_time a replay's /clock stops at the end of the bag (or
        # jumps), and diagnostics must still report the frames still being processed.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(float(self._value("diagnostic_period")), self._publish_diagnostics,
                          clock=steady)
        self.create_timer(1.0, self._watchdog, clock=steady)

    def _warm_up(self) -> None:
        try:
            self.pipeline.warm_up()
        except Exception as exc:  # warm-up failure is not fatal; real frames will report it
            self.get_logger().warning(f"warm-up inference failed: {exc}")

    # ------------------------------------------------------------------ parameters
    def _value(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _validate_parameters(self, parameters: list) -> SetParametersResult:
        """Validate only (no side effects): build trial configs and run the core's checks."""
        reason = self.params.check(parameters, self.pipeline)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
        if not self._post_set_supported:  # Humble: no post-set hook, apply after validating
            self._apply_parameters(parameters)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list) -> None:
        cs, reason = self.params.split(parameters)
        if reason is not None or cs.empty():
            return
        with self._extract_lock, self._frontend_lock:  # the frontend keeps its tracks
            self.pipeline.apply(cs.extractor, cs.matcher, cs.verify, cs.lightglue)
            self._node_conf.update(cs.node)
        if "process_every_frame" in cs.node:
            self._inbox.wake()
        self.get_logger().info("parameters applied: " + ", ".join(
            f"{k}={v}" for k, v in {p.name: p.value for p in parameters}.items()))

    # ------------------------------------------------------------------ input and worker
    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera = CameraModel.from_msg(msg)

    def _on_image(self, msg: Any) -> None:
        self.stats.on_received()
        self._inbox.put(msg, bool(self._node_conf["process_every_frame"]),
                        int(self._value("queue_size")))

    def _on_dropped(self, msg: Any) -> None:
        self.stats.on_dropped()
        self._acknowledge(msg, DROPPED)

    def _acknowledge(self, msg: Any, outcome: str) -> None:
        """One ``~/frame_done`` per input image (after its outputs): replay flow control."""
        try:
            self.pub_done.publish(done_message(msg.header, outcome))
        except Exception:  # shutting down, or a message without a header (counted already)
            pass

    def _stopping(self) -> bool:
        return self._inbox.stopped or not self.context.ok()

    def _extract_loop(self) -> None:
        """Stage 1: decode + extract, in arrival order; every frame goes on to stage 2 (bad
        input too, so that acknowledgements keep the frames' order)."""
        self.pipeline.enter_extract_thread()
        while (msg := self._inbox.get()) is not None:
            try:
                item = self._extract(msg)
            except Exception as exc:  # last line of defence: the stage must survive any frame
                if self._stopping():
                    break
                item = _Extracted(msg, time.perf_counter(), outcome=self._bad_input(
                    "internal_error", f"{type(exc).__name__}: {exc}"))
            if not self._hand_over(self._handoff, item):
                break
        self._hand_over(self._handoff, None, wait=False)

    def _hand_over(self, to: queue.Queue, item: Any, wait: bool = True) -> bool:
        """Queue ``item`` for the next stage; False once the node is stopping."""
        while True:
            try:
                to.put(item, timeout=0.2 if wait else 0.0)
                return True
            except queue.Full:
                if not wait or self._stopping():
                    return False

    def _take(self, source: queue.Queue, upstream: threading.Thread) -> Any:
        """The next item the upstream stage queued in ``source``; None when that stage has
        finished (its end marker, or it exited while the node stops)."""
        while True:
            try:
                return source.get(timeout=0.2)
            except queue.Empty:
                if self._inbox.stopped and not upstream.is_alive():
                    return None

    def _publish_loop(self) -> None:
        """Stage 2: match, verify, track, publish -- in frame order; the overlay and the
        acknowledgement go on to stage 3."""
        self.pipeline.enter_frontend_thread()
        while (item := self._take(self._handoff, self._workers[0])) is not None:
            outcome, overlay = item.outcome, None
            if outcome is None:
                try:
                    outcome, overlay = self._publish(item)
                except Exception as exc:  # the stage must survive any frame
                    if self._stopping():
                        break  # shutting down: publishers are gone, nothing to report
                    outcome = self._bad_input("internal_error", f"{type(exc).__name__}: {exc}")
            if not self._hand_over(self._outbox, _Done(item.msg, outcome, overlay)):
                break
        self._hand_over(self._outbox, None, wait=False)

    def _output_loop(self) -> None:
        """Stage 3: draw and publish the overlay (only while someone subscribes), then
        acknowledge -- in frame order, every frame. Drawing overlaps the next frame's matching
        instead of adding to it."""
        while (done := self._take(self._outbox, self._workers[1])) is not None:
            if done.overlay is not None:
                try:
                    done.overlay()
                except Exception as exc:  # a display failure never stops the node
                    if self._stopping():
                        return
                    self.get_logger().warning(f"overlay failed: {type(exc).__name__}: {exc}",
                                              throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)
            self._acknowledge(done.msg, done.outcome)

    def stop_worker(self) -> None:
        self._inbox.stop()
        for worker in self._workers:
            if worker.is_alive():
                worker.join(timeout=10.0)
        # Reliable subscribers (a replay's collector, a recorder) get the last outputs before
        # the process exits.
        for pub in self.outputs.publishers() + [self.pub_done]:
            try:
                pub.wait_for_all_acked(Duration(seconds=2.0))
            except Exception:  # an rmw without the call: nothing better to do
                break
        if self._loops is not None:
            self._loops.save(any(w.is_alive() for w in self._workers))

    def log_totals(self) -> None:
        snap = self.stats.snapshot()
        bad = ", ".join(f"{k} {v}" for k, v in sorted(snap["bad_input"].items())) or "none"
        self.get_logger().info(
            f"totals: received {snap['received']}, processed {snap['processed']}, dropped "
            f"{snap['dropped']}, bad input {snap['bad_input_total']} ({bad})")

    def _bad_input(self, reason: str, text: str) -> str:
        """Count, log (throttled per reason) and return the frame's outcome."""
        self.stats.on_bad_input(reason)
        now = time.monotonic()
        if now - self._bad_log_time.get(reason, -1e9) >= BAD_INPUT_LOG_PERIOD_S:
            self._bad_log_time[reason] = now
            n = self.stats.bad_input[reason]
            self.get_logger().warning(f"bad input ({reason}, {n} so far): {text}")
        return BAD_INPUT_PREFIX + reason

    def _extract(self, msg: Any) -> _Extracted:
        """Stage 1 for one frame: decode and extract (or the bad-input outcome)."""
        t0 = time.perf_counter()
        try:
            image = decode_image(msg, self._node_conf["max_input_pixels"])
        except ImageDecodeError as exc:
            return _Extracted(msg, t0, outcome=self._bad_input(exc.reason, str(exc)))
        except (ValueError, TypeError, MemoryError) as exc:
            return _Extracted(msg, t0, outcome=self._bad_input(
                "decode_error", f"{type(exc).__name__}: {exc}"))
        h, w = image.shape[:2]
        K, why_no_k = intrinsics_for(self._camera, w, h)
        if why_no_k is not None:
            self._bad_input("camera_info_size", why_no_k)
        with self._extract_lock:
            try:
                feats = self.pipeline.extract(image)
            except Exception as exc:
                return _Extracted(msg, t0, outcome=self._bad_input(
                    "extractor_error", f"{w}x{h} image: {type(exc).__name__}: {exc}"))
        return _Extracted(msg, t0, image=image, feats=feats, K=K)

    def _publish(self, item: _Extracted) -> tuple[str, Callable[[], None] | None]:
        """Stage 2 for one frame: the pipeline's per-frame work (frontend, loop closure), then
        outputs and statistics; returns the outcome and the overlay job for stage 3."""
        header, feats, K, t0 = item.msg.header, item.feats, item.K, item.t0
        with self._frontend_lock:
            conf = dict(self._node_conf)
            result = self.pipeline.process_features(
                feats, stamp_to_sec(header.stamp), K,
                loop_stamp=(header.stamp.sec, header.stamp.nanosec),
                loop_settings=None if self._loops is None else NodeLoops.settings(conf))
        counts = self.outputs.publish(header, feats, result, K)
        stamp_ns = header.stamp.sec * 10**9 + header.stamp.nanosec
        latency_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        overlay = self.outputs.overlay_job(header, item.image, feats, result,
                                           conf["publish_overlay"], t0)
        if self._loops is not None:
            self._loops.report(result, header, self.outputs.publish_loops, self._stopping)
        self.stats.on_processed(FrameRecord(time.monotonic(), latency_ms,
                                            (time.perf_counter() - t0) * 1e3, len(feats),
                                            counts.matches, counts.inliers))
        return PROCESSED, overlay

    # ------------------------------------------------------------------ timers
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        self.pub_diag.publish(build_diagnostics(
            self.get_clock().now().to_msg(), f"{self.get_fully_qualified_name()}: {NODE_NAME}",
            f"{self.method}@{self.device_name}", snap, self.method, self.device_name,
            float(self._node_conf["watchdog_timeout"])))

    def _watchdog(self) -> None:
        timeout = float(self._node_conf["watchdog_timeout"])
        if timeout <= 0:
            return
        now = time.monotonic()
        last = self.stats.last_image_time
        idle = now - (last if last is not None else self._start_time)
        if idle >= timeout and now - self._last_watchdog_warn >= timeout:
            self._last_watchdog_warn = now
            what = "no image received yet" if last is None else f"no image for {idle:.1f} s"
            self.get_logger().warning(
                f"{what}: subscribed to {self.sub_image.topic_name} "
                f"({self.sub_image.msg_type.__name__}, {qos_text(self._in_qos)}) and "
                f"{self.sub_info.topic_name}; publishers: "
                f"{self.count_publishers(self.sub_image.topic_name)} (check remapping, "
                f"input_transport and the publisher's QoS)")


def main(args: list[str] | None = None) -> int:
    """The worker finishes its frame and the node logs its totals before shutdown
    (``ros/node_main.py``)."""
    # The stages share the cores with the network: OpenCV's calls (RANSAC, drawing, JPEG
    # decoding) are short, and its own thread pool would only compete with torch's.
    cv2.setNumThreads(1)

    def finish(node: FeatureExtractorNode) -> None:
        node.stop_worker()
        node.log_totals()

    return run_node(FeatureExtractorNode, NODE_NAME, finish, args)


if __name__ == "__main__":
    sys.exit(main())
