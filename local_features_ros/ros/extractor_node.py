"""``feature_extractor``: images in, keypoints + descriptors + frame-to-frame matches out.

Processing model: the subscription callback only stores the message (a latest-frame slot while
live, a bounded FIFO when ``process_every_frame`` is true, e.g. for bag replay); ONE worker
thread, joined on shutdown, decodes, extracts, matches and publishes. Live, a frame that is
overwritten before the worker takes it is counted as dropped, so outputs never lag behind the
camera by a queue of stale frames.

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

Outputs (topic layouts in ``ros/messages.py``): ``~/features``, ``~/matches`` (one per processed
frame, empty for the first), ``~/overlay`` (bgr8, drawn only while subscribed and
``publish_overlay``), ``~/relative_motion`` (TransformStamped, when camera_info is known and the
essential matrix was verified; ``header`` = current image header with ``frame_id`` replaced by the
previous processed image's frame_id, ``child_frame_id`` = current frame_id +
``relative_motion.child_frame_suffix`` (default ``_current``); the transform is
``T_prev_current``: it maps points from the current camera into the previous one),
``~/loop_candidates`` (only with ``place_recognition.enable``: every
``place_recognition.keyframe_every`` processed frames the frame's features query the keyframe
database -- the ``place_recognition.exclude_recent`` newest keyframes excluded -- the verified
candidates with at least ``place_recognition.min_inliers`` inliers are published with the query
image's header, then the frame is added as a keyframe; a failure there is logged and counted as
``loop_errors``, never fatal), and ``/diagnostics``.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import signal
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from ..extractors.base import ConfigError
from ..geometry import preload as preload_geometry
from ..image.encodings import DecodeLimits, ImageDecodeError
from ..overlay import OverlayInfo, draw_overlay
from ..types import Features
from ..weights import WeightsError
from . import params as P
from .diagnostics import FrameRecord, NodeStats, build_diagnostics
from .messages import (camera_info_to_K, compressed_msg_to_numpy, features_to_pointcloud2,
                       image_msg_to_numpy, loop_candidates_to_pointcloud2, matches_to_pointcloud2,
                       motion_to_transform, numpy_to_image_msg, stamp_to_sec)

NODE_NAME = "feature_extractor"
#: Exit status for startup configuration errors (see module docstring).
EXIT_CONFIG_ERROR = 2
#: Images whose short edge is below this get an empty feature set if the extractor fails on them.
TINY_EDGE = 32
#: Seconds between two log lines for the same bad-input reason.
BAD_INPUT_LOG_PERIOD_S = 2.0
#: How long the callback waits for queue space (process_every_frame) before dropping the frame.
QUEUE_PUT_TIMEOUT_S = 1.0


class StartupError(RuntimeError):
    """Restart-only configuration that cannot work (exit status 2)."""


class _PlaceRecognition:
    """The node's keyframe database and its bookkeeping. Used by the worker thread only (and by
    ``stop_worker`` once the worker has been joined), so it needs no lock."""

    def __init__(self, db: Any, path: str) -> None:
        self.db = db
        self.path = path
        #: keyframe id -> (sec, nanosec) of its image's header stamp; ids of evicted keyframes
        #: are pruned (ids grow, eviction is FIFO).
        self.stamps: dict[int, tuple[int, int]] = {}
        self.next_id = 0
        self.since_keyframe: int | None = None  # processed frames since the last keyframe
        self.saved = False
        frames = getattr(db, "_frames", {})  # no public meta accessor in KeyframeDatabase
        for kf_id in db.keyframe_ids:
            meta = frames[kf_id].meta if kf_id in frames else {}
            self.stamps[kf_id] = (int(meta.get("stamp_sec", 0)),
                                  int(meta.get("stamp_nanosec", 0)))
            self.next_id = max(self.next_id, kf_id + 1)

    def due(self, every: int) -> bool:
        """Count one processed frame; True when it is a keyframe (the first one always is)."""
        due = self.since_keyframe is None or self.since_keyframe + 1 >= every
        self.since_keyframe = 0 if due else self.since_keyframe + 1
        return due

    def add(self, feats: Features, stamp: Any) -> None:
        kf_id = self.next_id
        self.next_id += 1
        st = (int(stamp.sec), int(stamp.nanosec))
        self.db.add(kf_id, feats, {"stamp_sec": st[0], "stamp_nanosec": st[1]})
        self.stamps[kf_id] = st
        while self.stamps:
            oldest = next(iter(self.stamps))
            if oldest in self.db:
                break
            del self.stamps[oldest]


@dataclasses.dataclass
class _CameraModel:
    K: np.ndarray
    width: int
    height: int


class FeatureExtractorNode(Node):
    """See the module docstring. ``node_kwargs`` go to ``rclpy.node.Node`` (tests pass
    ``parameter_overrides`` / ``context``)."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        from ..frontend import FrameToFrameFrontend
        from ..geometry import VerifyConfig
        from ..matching import MatcherConfig
        from ..registry import build_extractor, get_extractor_class

        self.stats = NodeStats()
        self._specs: dict[str, P.ParamSpec] = {}
        for spec in P.node_specs() + P.place_recognition_specs():
            self._declare(spec)
        g = self._value
        self.method = str(g("method"))
        self.device_name = str(g("device"))
        self._transport = str(g("input_transport"))
        if self._transport not in P.TRANSPORTS:
            raise StartupError(f"input_transport must be one of {P.TRANSPORTS}, got "
                               f"'{self._transport}'")
        if str(g("precision")) not in P.PRECISIONS:
            raise StartupError(f"precision must be one of {P.PRECISIONS}, got '{g('precision')}'")

        # Extractor parameters take the method's own defaults (then YAML overrides them).
        try:
            cls = get_extractor_class(self.method)
        except (ConfigError, ImportError) as exc:
            raise StartupError(str(exc)) from exc
        defaults = cls.full_default_conf()
        for spec in (P.shared_extractor_specs(defaults, cls.runtime_keys)
                     + P.method_specs(cls.default_conf, cls.runtime_keys)):
            self._declare(spec)
        self._matcher_core_defaults = dataclasses.asdict(MatcherConfig())
        for spec in P.matcher_specs(MatcherConfig()) + P.verify_specs(VerifyConfig()):
            self._declare(spec)

        initial, reason = P.split_changes(
            {k: dataclasses.replace(s, runtime=True) for k, s in self._specs.items()},
            {name: self._value(name) for name in self._specs}, self._matcher_core_defaults)
        if reason:
            raise StartupError(reason)
        try:
            self.extractor = build_extractor(self.method, weights=str(g("weights")) or None,
                                             device=self.device_name,
                                             precision=str(g("precision")), **initial.extractor)
            self._matcher_conf = P.validate_dataclass_changes(MatcherConfig(), initial.matcher)
            self._verify_conf = P.validate_dataclass_changes(VerifyConfig(), initial.verify)
        except (ConfigError, WeightsError, FileNotFoundError, ValueError, ImportError,
                RuntimeError) as exc:
            raise StartupError(f"cannot build method '{self.method}': {exc}") from exc
        self.device_name = str(self.extractor.device)
        self.frontend = FrameToFrameFrontend(matcher=self._matcher_conf, verify=self._verify_conf)
        self._node_conf: dict[str, Any] = dict(initial.node)
        self._descriptor_dim = int(self.extractor.descriptor_dim)
        self._loops = self._open_place_recognition()
        self._loop_log_time = -1e9
        self._warm_up()

        # Shared state between the executor thread and the worker.
        self._work_lock = threading.Lock()  # extractor/frontend/config
        self._cv = threading.Condition()
        self._slot: Any = None
        self._queue: collections.deque = collections.deque()
        self._stop = False
        self._camera: _CameraModel | None = None
        self._prev_header: Any = None
        self._prev_kpts: np.ndarray | None = None
        self._bad_log_time: dict[str, float] = {}
        self._start_time = time.monotonic()
        self._last_watchdog_warn = 0.0

        # A fresh profile per entity: rclpy writes qos_overrides into the profile object it is
        # given, so a shared one would carry one topic's override to the next.
        def out_qos() -> QoSProfile:
            return QoSProfile(depth=int(g("qos.output_depth")),
                              reliability=ReliabilityPolicy.RELIABLE,
                              history=HistoryPolicy.KEEP_LAST)

        def in_qos() -> QoSProfile:
            return QoSProfile(depth=int(g("qos.depth")), reliability=ReliabilityPolicy.BEST_EFFORT,
                              history=HistoryPolicy.KEEP_LAST)

        overrides = QoSOverridingOptions.with_default_policies
        self.pub_features = self.create_publisher(PointCloud2, "~/features", out_qos(),
                                                  qos_overriding_options=overrides())
        self.pub_matches = self.create_publisher(PointCloud2, "~/matches", out_qos(),
                                                 qos_overriding_options=overrides())
        self.pub_overlay = self.create_publisher(Image, "~/overlay", out_qos(),
                                                 qos_overriding_options=overrides())
        self.pub_motion = self.create_publisher(TransformStamped, "~/relative_motion", out_qos(),
                                                qos_overriding_options=overrides())
        if self._loops is not None:
            self.pub_loops = self.create_publisher(PointCloud2, "~/loop_candidates", out_qos(),
                                                   qos_overriding_options=overrides())
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics",
                                              QoSProfile(depth=10,
                                                         reliability=ReliabilityPolicy.RELIABLE))

        self._in_qos = in_qos()  # after overrides: what the image subscription really uses
        if self._transport == "compressed":
            self.sub_image = self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, self._in_qos,
                qos_overriding_options=overrides())
        else:
            self.sub_image = self.create_subscription(Image, "image", self._on_image,
                                                      self._in_qos,
                                                      qos_overriding_options=overrides())
        self.sub_info = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                                 in_qos(), qos_overriding_options=overrides())

        self._post_set_supported = hasattr(self, "add_post_set_parameters_callback")
        self.add_on_set_parameters_callback(self._validate_parameters)
        if self._post_set_supported:
            self.add_post_set_parameters_callback(self._apply_parameters)

        self._worker = threading.Thread(target=self._worker_loop, name="feature_worker",
                                        daemon=False)
        self._worker.start()
        self.create_timer(float(g("diagnostic_period")), self._publish_diagnostics)
        self.create_timer(1.0, self._watchdog)
        self.get_logger().info(
            f"method={self.method} weights={self.extractor.weights_source} "
            f"device={self.device_name} D={self._descriptor_dim} input="
            f"{self.sub_image.topic_name} ({self._transport}, {_qos_text(self._in_qos)}) "
            f"camera_info={self.sub_info.topic_name}")

    # ------------------------------------------------------------------ place recognition
    def _open_place_recognition(self) -> _PlaceRecognition | None:
        """Restart-only setup: a new database, or the ``place_recognition.database`` file when it
        exists (it must hold this method's descriptors and integer keyframe ids)."""
        from pathlib import Path

        from ..place_recognition import KeyframeDatabase

        conf = self._node_conf
        pre = P.PLACE_RECOGNITION_PREFIX
        if not conf.get(pre + "enable", False):
            return None
        max_kf = int(conf[pre + "max_keyframes"])
        if max_kf < 1:  # rclpy checks the descriptor range; keep the guard for direct callers
            raise StartupError(f"{pre}max_keyframes must be >= 1, got {max_kf}")
        path = str(conf.get(pre + "database", "") or "")
        log = self.get_logger()
        if path:
            path = str(Path(path).expanduser())
        if path and Path(path).is_file():
            try:
                db = KeyframeDatabase.load(path)
            except Exception as exc:  # corrupt/foreign file: a configuration error
                raise StartupError(f"{pre}database '{path}' cannot be loaded: "
                                   f"{type(exc).__name__}: {exc}") from exc
            bad = [k for k in db.keyframe_ids if isinstance(k, bool) or not isinstance(k, int)
                   or not 0 <= k < 2**32 - 1]
            if bad:
                raise StartupError(f"{pre}database '{path}': keyframe ids must be integers in "
                                   f"[0, 2^32 - 1), got {bad[:5]}")
            dim = getattr(db, "_dim", None)
            if dim is not None and int(dim) != self._descriptor_dim:
                raise StartupError(f"{pre}database '{path}' holds {dim}-D descriptors but "
                                   f"method '{self.method}' gives {self._descriptor_dim}-D")
            db.config.max_keyframes = max_kf
            while len(db) > max_kf:  # oldest first, as the database itself evicts
                db.remove(db.keyframe_ids[0])
            log.info(f"place recognition: loaded {len(db)} keyframes from {path}")
        else:
            db = KeyframeDatabase(max_keyframes=max_kf)
            if path:
                log.info(f"place recognition: {path} does not exist yet; it is written at "
                         "shutdown")
        loops = _PlaceRecognition(db, path)
        self.stats.set_keyframes(len(db))
        return loops

    def _loop_step(self, feats: Features, header: Any, conf: dict[str, Any]) -> None:
        """Query the keyframe database with this frame, publish the candidates, add the frame
        as a keyframe (only on keyframe frames). Never raises: a failure is logged (throttled)
        and counted as ``loop_errors``."""
        loops = self._loops
        pre = P.PLACE_RECOGNITION_PREFIX
        try:
            if not loops.due(int(conf.get(pre + "keyframe_every", 10))):
                return
            t0 = time.perf_counter()
            cands = loops.db.query(feats, top_k=int(conf.get(pre + "top_k", 3)),
                                   exclude_recent=int(conf.get(pre + "exclude_recent", 5)))
            query_ms = (time.perf_counter() - t0) * 1e3
            need = int(conf.get(pre + "min_inliers", 15))
            good = [c for c in cands if c.inliers >= need]
            self.pub_loops.publish(loop_candidates_to_pointcloud2(header, good, loops.stamps))
            loops.add(feats, header.stamp)
            self.stats.on_loop_query(query_ms, len(loops.db), len(good))
        except Exception as exc:
            if self._stop or not self.context.ok():
                return
            self.stats.on_loop_error()
            now = time.monotonic()
            if now - self._loop_log_time >= BAD_INPUT_LOG_PERIOD_S:
                self._loop_log_time = now
                self.get_logger().warning(f"place recognition failed on this frame "
                                          f"({self.stats.loop_errors} so far): "
                                          f"{type(exc).__name__}: {exc}")

    def save_keyframes(self) -> None:
        """Write the keyframe database to ``place_recognition.database`` (once; after the
        worker stopped). A write error is logged, not raised: shutdown must complete."""
        loops = self._loops
        if loops is None or not loops.path or loops.saved:
            return
        if self._worker.is_alive():
            self.get_logger().error(f"place recognition: {loops.path} not saved, the worker "
                                    "is still running")
            return
        try:
            loops.db.save(loops.path)
            loops.saved = True
            self.get_logger().info(f"place recognition: saved {len(loops.db)} keyframes to "
                                   f"{loops.path}")
        except Exception as exc:
            self.get_logger().error(f"place recognition: cannot save {loops.path}: "
                                    f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ parameters
    def _declare(self, spec: P.ParamSpec) -> None:
        """Declare with the descriptor; a YAML/``-p`` value of the wrong type or out of range
        is a startup configuration error (exit 2), not a traceback."""
        try:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        except Exception as exc:  # rclpy's InvalidParameterType/ValueException and kin
            raise StartupError(f"parameter '{spec.name}': {exc}") from exc
        self._specs[spec.name] = spec

    def _value(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _validate_parameters(self, parameters: list) -> SetParametersResult:
        """Validate only (no side effects): build trial configs and run the core's checks."""
        values = {p.name: p.value for p in parameters}
        cs, reason = P.split_changes(self._specs, values, self._matcher_core_defaults)
        if reason is None:
            try:  # read-only checks on config snapshots: no lock, the executor stays responsive
                P.validate_extractor_changes(self.extractor, cs.extractor)
                P.validate_dataclass_changes(self._matcher_conf, cs.matcher)
                P.validate_dataclass_changes(self._verify_conf, cs.verify)
            except (ConfigError, ValueError, TypeError) as exc:
                reason = str(exc)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
        if not self._post_set_supported:  # Humble: no post-set hook, apply after validating
            self._apply_parameters(parameters)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list) -> None:
        values = {p.name: p.value for p in parameters}
        cs, reason = P.split_changes(self._specs, values, self._matcher_core_defaults)
        if reason is not None or cs.empty():
            return
        with self._work_lock:
            if cs.extractor:
                self.extractor.update_conf(**cs.extractor)
            if cs.matcher or cs.verify:
                self._matcher_conf = P.validate_dataclass_changes(self._matcher_conf, cs.matcher)
                self._verify_conf = P.validate_dataclass_changes(self._verify_conf, cs.verify)
                self._set_frontend_config()
            self._node_conf.update(cs.node)
        if "process_every_frame" in cs.node:
            with self._cv:
                self._cv.notify_all()
        self.get_logger().info("parameters applied: " + ", ".join(
            f"{k}={v}" for k, v in values.items()))

    def _set_frontend_config(self) -> None:
        """Hand new matcher/verify configs to the frontend without losing its tracks."""
        fe = self.frontend
        if hasattr(fe, "update_config"):
            fe.update_config(matcher=self._matcher_conf, verify=self._verify_conf)
            return
        for attr, value in (("matcher", self._matcher_conf), ("verify", self._verify_conf)):
            for name in (attr, f"{attr}_conf", f"_{attr}"):
                if hasattr(fe, name):
                    setattr(fe, name, value)
                    break

    # ------------------------------------------------------------------ input
    def _on_camera_info(self, msg: CameraInfo) -> None:
        K = camera_info_to_K(msg)
        self._camera = None if K is None else _CameraModel(K, int(msg.width), int(msg.height))

    def _on_image(self, msg: Any) -> None:
        self.stats.on_received()
        with self._cv:
            if self._node_conf.get("process_every_frame", False):
                limit = int(self._value("queue_size"))
                deadline = time.monotonic() + QUEUE_PUT_TIMEOUT_S
                while len(self._queue) >= limit and not self._stop:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                if len(self._queue) >= limit:
                    self.stats.on_dropped()
                else:
                    self._queue.append(msg)
            else:
                if self._slot is not None:
                    self.stats.on_dropped()
                self._slot = msg
            self._cv.notify_all()

    # ------------------------------------------------------------------ worker
    def _worker_loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._queue and self._slot is None:
                    self._cv.wait(0.5)
                if self._stop:
                    return
                if self._queue:
                    msg = self._queue.popleft()
                else:
                    msg, self._slot = self._slot, None
                self._cv.notify_all()  # queue space for a waiting callback
            try:
                self._process(msg)
            except Exception as exc:  # last line of defence: the worker must survive any frame
                if self._stop or not self.context.ok():
                    return  # shutting down: publishers are gone, nothing to report
                self._bad_input("internal_error", f"{type(exc).__name__}: {exc}")

    def stop_worker(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=10.0)
        self.save_keyframes()

    def log_totals(self) -> None:
        snap = self.stats.snapshot()
        bad = ", ".join(f"{k} {v}" for k, v in sorted(snap["bad_input"].items())) or "none"
        self.get_logger().info(
            f"totals: received {snap['received']}, processed {snap['processed']}, dropped "
            f"{snap['dropped']}, bad input {snap['bad_input_total']} ({bad})")

    def _decode(self, msg: Any) -> np.ndarray:
        limits = DecodeLimits(max_pixels=int(self._node_conf.get(
            "max_input_pixels", P.DEFAULT_MAX_INPUT_PIXELS)))
        if isinstance(msg, CompressedImage):
            return compressed_msg_to_numpy(msg, limits)
        return image_msg_to_numpy(msg, limits)

    def _bad_input(self, reason: str, text: str) -> None:
        self.stats.on_bad_input(reason)
        now = time.monotonic()
        if now - self._bad_log_time.get(reason, -1e9) >= BAD_INPUT_LOG_PERIOD_S:
            self._bad_log_time[reason] = now
            n = self.stats.bad_input[reason]
            self.get_logger().warning(f"bad input ({reason}, {n} so far): {text}")

    def _process(self, msg: Any) -> None:
        t0 = time.perf_counter()
        try:
            image = self._decode(msg)
        except ImageDecodeError as exc:
            self._bad_input(exc.reason, str(exc))
            return
        except (ValueError, TypeError, MemoryError) as exc:
            self._bad_input("decode_error", f"{type(exc).__name__}: {exc}")
            return
        h, w = image.shape[:2]
        camera = self._camera
        K = None
        if camera is not None:
            if (camera.width, camera.height) in ((w, h), (0, 0)):
                K = camera.K
            else:
                self._bad_input("camera_info_size", f"camera_info is {camera.width}x"
                                f"{camera.height} but the image is {w}x{h}; matching without K")
        stamp = msg.header.stamp
        with self._work_lock:
            try:
                feats = self.extractor.extract(image)
            except Exception as exc:
                if min(h, w) < TINY_EDGE:
                    feats = Features.empty(self._descriptor_dim, (w, h))
                else:
                    self._bad_input("extractor_error", f"{w}x{h} image: "
                                    f"{type(exc).__name__}: {exc}")
                    return
            feats = feats.float().to("cpu")
            result = self.frontend.process(feats, stamp_to_sec(stamp), K)
            conf = dict(self._node_conf)
        track_ids = np.asarray(result.track_ids, np.int64).reshape(-1)
        kpts = feats.keypoints.numpy().reshape(-1, 2)
        header = msg.header
        self.pub_features.publish(features_to_pointcloud2(header, feats, track_ids))
        match = result.matches
        prev_header = self._prev_header
        if match is not None and prev_header is not None and self._prev_kpts is not None:
            self.pub_matches.publish(matches_to_pointcloud2(
                header, prev_header.stamp, self._prev_kpts, kpts, match, track_ids))
        else:
            from ..types import MatchResult

            self.pub_matches.publish(matches_to_pointcloud2(
                header, None, np.zeros((0, 2)), kpts, MatchResult.empty(), track_ids))
        if result.motion is not None and K is not None and prev_header is not None:
            mheader = copy.copy(header)
            mheader.frame_id = prev_header.frame_id
            child = header.frame_id + str(self._value("relative_motion.child_frame_suffix"))
            self.pub_motion.publish(motion_to_transform(mheader, child, result.motion))
        n_matches = 0 if match is None else len(match)
        n_inliers = 0 if match is None else int(match.num_inliers)
        stamp_ns = stamp.sec * 10**9 + stamp.nanosec
        latency_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        if conf.get("publish_overlay", True) and self.pub_overlay.get_subscription_count() > 0:
            canvas = draw_overlay(
                image, kpts, feats.scores.numpy(), self._prev_kpts,
                None if match is None else match.matches,
                None if match is None else match.inliers,
                OverlayInfo(self.method, (time.perf_counter() - t0) * 1e3,
                            n_matches if match is not None else None,
                            n_inliers if match is not None else None))
            self.pub_overlay.publish(numpy_to_image_msg(canvas, "bgr8", header))
        self._prev_header, self._prev_kpts = header, kpts
        if self._loops is not None:
            self._loop_step(feats, header, conf)
        self.stats.on_processed(FrameRecord(time.monotonic(), latency_ms,
                                            (time.perf_counter() - t0) * 1e3, len(feats),
                                            n_matches, n_inliers))

    def _warm_up(self) -> None:
        """One inference at startup so the first real frame does not pay allocator/JIT cost."""
        rng = np.random.default_rng(0)
        preload_geometry()
        try:
            self.extractor.extract((rng.random((64, 64)) * 255).astype(np.uint8))
        except Exception as exc:  # warm-up failure is not fatal; real frames will report it
            self.get_logger().warning(f"warm-up inference failed: {exc}")

    # ------------------------------------------------------------------ timers
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        self.pub_diag.publish(build_diagnostics(
            self.get_clock().now().to_msg(), f"{self.get_fully_qualified_name()}: {NODE_NAME}",
            f"{self.method}@{self.device_name}", snap, self.method, self.device_name,
            float(self._node_conf.get("watchdog_timeout", 5.0))))

    def _watchdog(self) -> None:
        timeout = float(self._node_conf.get("watchdog_timeout", 5.0))
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
                f"({self.sub_image.msg_type.__name__}, {_qos_text(self._in_qos)}) and "
                f"{self.sub_info.topic_name}; publishers: "
                f"{self.count_publishers(self.sub_image.topic_name)} (check remapping, "
                f"input_transport and the publisher's QoS)")


def _qos_text(qos: QoSProfile) -> str:
    rel = "best_effort" if qos.reliability == ReliabilityPolicy.BEST_EFFORT else "reliable"
    return f"{rel}, keep_last {qos.depth}"


def main(args: list[str] | None = None) -> int:
    """Own SIGINT/SIGTERM handling: the context stays valid while the worker finishes its frame
    and the node logs its totals, then everything is destroyed in order."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        node = FeatureExtractorNode()
    except StartupError as exc:
        rclpy.logging.get_logger(NODE_NAME).error(f"configuration error: {exc}")
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        return EXIT_CONFIG_ERROR
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop_worker()
        node.log_totals()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
