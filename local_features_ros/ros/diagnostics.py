"""Node health numbers -> ``/diagnostics``, and a collector that reads the node's outputs.

Why not ``diagnostic_updater``: it is not in every pip-installed rclpy set (and not here); the
``DiagnosticArray`` message is tiny to fill directly. The counters are written by the subscription
callbacks and the worker thread, so every update takes one lock.

``FeatureCollector`` is the consumer side used by ``local-features demo`` and the bench: it
subscribes to a node's outputs and keeps per-frame rows (latency = receive time - image stamp).
"""

from __future__ import annotations

import collections
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

#: Window (seconds) over which rate and latency percentiles are computed.
WINDOW_S = 5.0


def rss_mb() -> float:
    """Resident set size of this process in MiB (current, from /proc; peak as a fallback)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cuda_memory_mb(device: str) -> tuple[float, float] | None:
    """(allocated, reserved) MiB on a CUDA device, None on CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return (torch.cuda.memory_allocated(device) / 2**20, torch.cuda.memory_reserved(device) / 2**20)


@dataclass
class FrameRecord:
    t_done: float  # monotonic time the outputs were published
    latency_ms: float  # image stamp -> publish (node clock)
    processing_ms: float  # decode + extract + match + publish
    keypoints: int
    matches: int
    inliers: int


class NodeStats:
    """Thread-safe counters of one extractor node."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.bad_input: collections.Counter[str] = collections.Counter()
        self.last_image_time: float | None = None  # monotonic
        self.recent: collections.deque[FrameRecord] = collections.deque(maxlen=1000)
        # Place recognition (None = disabled): keyframes in the database, (monotonic time,
        # query ms) of recent keyframe queries, candidates published, per-frame failures.
        self.keyframes: int | None = None
        self.loop_queries: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=1000)
        self.loop_candidates = 0
        self.loop_errors = 0

    def on_received(self) -> None:
        with self._lock:
            self.received += 1
            self.last_image_time = time.monotonic()

    def on_dropped(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n

    def on_bad_input(self, reason: str) -> None:
        with self._lock:
            self.bad_input[reason] += 1

    def on_processed(self, rec: FrameRecord) -> None:
        with self._lock:
            self.processed += 1
            self.recent.append(rec)

    def set_keyframes(self, n: int) -> None:
        with self._lock:
            self.keyframes = int(n)

    def on_loop_query(self, query_ms: float, keyframes: int, candidates: int) -> None:
        with self._lock:
            self.loop_queries.append((time.monotonic(), float(query_ms)))
            self.keyframes = int(keyframes)
            self.loop_candidates += int(candidates)

    def on_loop_error(self) -> None:
        with self._lock:
            self.loop_errors += 1

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Plain numbers (rate over the last ``WINDOW_S`` seconds, latency percentiles)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            window = [r for r in self.recent if now - r.t_done <= WINDOW_S]
            snap: dict[str, Any] = {
                "received": self.received,
                "processed": self.processed,
                "dropped": self.dropped,
                "bad_input_total": sum(self.bad_input.values()),
                "bad_input": dict(self.bad_input),
                "seconds_since_image": (None if self.last_image_time is None
                                        else now - self.last_image_time),
            }
            last = self.recent[-1] if self.recent else None
            snap["keyframes"] = self.keyframes
            snap["loop_candidates"] = self.loop_candidates
            snap["loop_errors"] = self.loop_errors
            queries = [ms for t, ms in self.loop_queries if now - t <= WINDOW_S]
            if not queries:  # keyframes are sparse: fall back to the last queries
                queries = [ms for _, ms in list(self.loop_queries)[-20:]]
        if len(window) >= 2:
            span = max(window[-1].t_done - window[0].t_done, 1e-6)
            snap["rate_hz"] = (len(window) - 1) / span
        else:
            snap["rate_hz"] = 0.0
        # Percentiles over the window, or over the last frames when the input has stopped.
        with self._lock:
            frames = window if window else list(self.recent)[-100:]
        lat = np.array([r.latency_ms for r in frames]) if frames else np.zeros(0)
        proc = np.array([r.processing_ms for r in frames]) if frames else np.zeros(0)
        snap["latency_ms_median"] = float(np.median(lat)) if len(lat) else float("nan")
        snap["latency_ms_p90"] = float(np.percentile(lat, 90)) if len(lat) else float("nan")
        snap["processing_ms_median"] = float(np.median(proc)) if len(proc) else float("nan")
        # Keyframe query (kNN voting + RANSAC), also part of processing_ms of its frame.
        snap["loop_query_ms"] = float(np.median(queries)) if queries else float("nan")
        snap["keypoints"] = last.keypoints if last else 0
        snap["matches"] = last.matches if last else 0
        snap["inliers"] = last.inliers if last else 0
        return snap


def build_diagnostics(stamp: Any, name: str, hardware_id: str, snap: dict[str, Any],
                      method: str, device: str, watchdog_s: float) -> DiagnosticArray:
    """One ``DiagnosticStatus`` named ``<node fqn>: feature_extractor``.

    Level: ERROR if bad inputs outnumber processed frames in total, WARN when no image arrived
    within the watchdog time (or never) or frames were dropped, OK otherwise.
    """
    st = DiagnosticStatus(name=name, hardware_id=hardware_id)
    since = snap["seconds_since_image"]
    if snap["bad_input_total"] > max(snap["processed"], 0) and snap["bad_input_total"] > 0:
        st.level, st.message = DiagnosticStatus.ERROR, "most input frames are bad (see bad_input.*)"
    elif since is None:
        st.level, st.message = DiagnosticStatus.WARN, "no image received yet"
    elif watchdog_s > 0 and since > watchdog_s:
        st.level, st.message = DiagnosticStatus.WARN, f"no image for {since:.1f} s"
    else:
        st.level, st.message = DiagnosticStatus.OK, "running"
    values = {
        "method": method,
        "device": device,
        "frames_received": snap["received"],
        "frames_processed": snap["processed"],
        "frames_dropped": snap["dropped"],
        "rate_hz": f"{snap['rate_hz']:.2f}",
        "latency_ms_median": f"{snap['latency_ms_median']:.1f}",
        "latency_ms_p90": f"{snap['latency_ms_p90']:.1f}",
        "processing_ms_median": f"{snap['processing_ms_median']:.1f}",
        "keypoints": snap["keypoints"],
        "matches": snap["matches"],
        "inliers": snap["inliers"],
        "bad_input_total": snap["bad_input_total"],
        "memory_rss_mb": f"{rss_mb():.1f}",
    }
    if snap.get("keyframes") is not None:  # place recognition enabled
        values["keyframes"] = snap["keyframes"]
        values["loop_query_ms"] = f"{snap['loop_query_ms']:.1f}"
        values["loop_candidates"] = snap["loop_candidates"]
        values["loop_errors"] = snap["loop_errors"]
    for reason, n in sorted(snap["bad_input"].items()):
        values[f"bad_input.{reason}"] = n
    cuda = cuda_memory_mb(device)
    if cuda is not None:
        values["cuda_allocated_mb"] = f"{cuda[0]:.1f}"
        values["cuda_reserved_mb"] = f"{cuda[1]:.1f}"
    st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    return DiagnosticArray(header=_header(stamp), status=[st])


def _header(stamp: Any) -> Any:
    from std_msgs.msg import Header

    return Header(stamp=stamp)


def diagnostic_values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


# ----------------------------------------------------------------------------------- consumer
@dataclass
class CollectedFrame:
    stamp_ns: int
    receive_time_ns: int
    keypoints: int
    matches: int | None = None
    inliers: int | None = None

    @property
    def latency_ms(self) -> float:
        return (self.receive_time_ns - self.stamp_ns) / 1e6


@dataclass
class CollectorSummary:
    frames: int
    rate_hz: float
    latency_median_ms: float
    latency_p90_ms: float
    keypoints_mean: float
    matches_mean: float
    inliers_mean: float
    overlays_saved: int
    node_diagnostics: dict[str, str] = field(default_factory=dict)


def summarize(frames: list[CollectedFrame], overlays: int = 0,
              diag: dict[str, str] | None = None) -> CollectorSummary:
    if not frames:
        return CollectorSummary(0, 0.0, float("nan"), float("nan"), 0.0, 0.0, 0.0, overlays,
                                dict(diag or {}))
    t = np.array([f.receive_time_ns for f in frames], np.float64) / 1e9
    lat = np.array([f.latency_ms for f in frames])
    span = t.max() - t.min()
    m = [f.matches for f in frames if f.matches is not None]
    i = [f.inliers for f in frames if f.inliers is not None]
    return CollectorSummary(
        frames=len(frames),
        rate_hz=(len(frames) - 1) / span if span > 0 else 0.0,
        latency_median_ms=float(np.median(lat)),
        latency_p90_ms=float(np.percentile(lat, 90)),
        keypoints_mean=float(np.mean([f.keypoints for f in frames])),
        matches_mean=float(np.mean(m)) if m else 0.0,
        inliers_mean=float(np.mean(i)) if i else 0.0,
        overlays_saved=overlays,
        node_diagnostics=dict(diag or {}),
    )


def make_collector(node_name: str, features_topic: str, matches_topic: str,
                   overlay_topic: str | None, overlay_dir: Path | None,
                   on_frame: Callable[[CollectedFrame], None] | None = None,
                   depth: int = 50, **node_kwargs: Any) -> Any:
    """Build an rclpy node that records what ``feature_extractor`` publishes.

    Returns the node; its ``frames`` (list of ``CollectedFrame`` keyed by stamp order),
    ``overlays_saved``, ``last_diagnostics`` and ``diagnostics_time`` (monotonic receive time of
    the last one) are filled while it spins; ``sees_publishers()`` says whether the node's output
    publishers are discovered. Subscriptions are reliable with ``depth`` (the node's outputs are
    reliable too, so nothing published after matching is lost).
    """
    import cv2
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    qos = QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE)

    class FeatureCollector(Node):
        def __init__(self) -> None:
            super().__init__(node_name, **node_kwargs)
            self.frames: dict[int, CollectedFrame] = {}
            self.overlays_saved = 0
            self.last_diagnostics: dict[str, str] = {}
            self.diagnostics_time: float | None = None
            self._topics = [features_topic, matches_topic]
            self._lock = threading.Lock()
            self.create_subscription(PointCloud2, features_topic, self._on_features, qos)
            self.create_subscription(PointCloud2, matches_topic, self._on_matches, qos)
            self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos)
            if overlay_topic and overlay_dir is not None:
                overlay_dir.mkdir(parents=True, exist_ok=True)
                self.create_subscription(Image, overlay_topic, self._on_overlay, qos)
                self._topics.append(overlay_topic)

        def sees_publishers(self) -> bool:
            return all(self.count_publishers(t) > 0 for t in self._topics)

        def _stamp(self, msg: Any) -> int:
            return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

        def _on_features(self, msg: Any) -> None:
            now = self.get_clock().now().nanoseconds
            rec = CollectedFrame(self._stamp(msg), now, int(msg.width * msg.height))
            with self._lock:
                old = self.frames.get(rec.stamp_ns)
                if old is not None:  # matches arrived first
                    rec.matches, rec.inliers = old.matches, old.inliers
                self.frames[rec.stamp_ns] = rec
            if on_frame is not None:
                on_frame(rec)

        def _on_matches(self, msg: Any) -> None:
            n = int(msg.width * msg.height)
            inl = _count_inliers(msg)
            with self._lock:
                rec = self.frames.get(self._stamp(msg))
                if rec is None:
                    rec = CollectedFrame(self._stamp(msg), self.get_clock().now().nanoseconds, 0)
                    self.frames[rec.stamp_ns] = rec
                rec.matches, rec.inliers = n, inl

        def _on_overlay(self, msg: Any) -> None:
            arr = np.frombuffer(bytes(msg.data), np.uint8)
            if msg.height * msg.width * 3 > arr.size or msg.encoding != "bgr8":
                return
            img = arr.reshape(msg.height, msg.step)[:, :msg.width * 3].reshape(
                msg.height, msg.width, 3)
            cv2.imwrite(str(overlay_dir / f"overlay_{self._stamp(msg)}.png"), img)
            self.overlays_saved += 1

        def _on_diag(self, msg: DiagnosticArray) -> None:
            for st in msg.status:
                if "feature_extractor" in st.name:
                    self.last_diagnostics = diagnostic_values(st)
                    self.diagnostics_time = time.monotonic()

        def sorted_frames(self) -> list[CollectedFrame]:
            with self._lock:
                return [self.frames[k] for k in sorted(self.frames)
                        if self.frames[k].keypoints >= 0]

    return FeatureCollector()


def _count_inliers(cloud: Any) -> int:
    """Inlier count from a matches cloud's ``inlier`` field (any integer/float type)."""
    fields = {f.name: f for f in cloud.fields}
    f = fields.get("inlier")
    if f is None:
        return 0
    dtypes = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32, 6: np.uint32,
              7: np.float32, 8: np.float64}
    dt = np.dtype(dtypes[f.datatype]).newbyteorder(">" if cloud.is_bigendian else "<")
    n = int(cloud.width * cloud.height)
    if n == 0:
        return 0
    raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(n, cloud.point_step)
    vals = raw[:, f.offset:f.offset + dt.itemsize].copy().view(dt).reshape(-1)
    return int((vals != 0).sum())
