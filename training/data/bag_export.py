"""rosbag2 (sqlite3 / MCAP) -> image-folder dataset with a manifest.

Why subsample: a 30 Hz camera gives near-duplicate consecutive frames; training wants views that
differ. Frames are kept when at least ``min_dt`` seconds *and* at least ``min_motion`` of image
motion (mean absolute difference in gray levels, or mean optical-flow magnitude in pixels)
separate them from the last kept frame of the same topic. Bad messages are skipped and counted
(the reader never raises on a message), so one corrupt frame never stops an export.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from local_features_ros.bags import CAMERA_INFO_MSGTYPE, BagReport, iter_images, list_topics, \
    read_camera_info

logger = logging.getLogger(__name__)

MOTION_METRICS = ("diff", "flow")
#: motion is measured on frames shrunk to this width (fast, and robust to pixel noise)
MOTION_WIDTH = 160


@dataclass
class ExportResult:
    """What an export did; ``report`` has the reader's read/skipped counts by reason."""

    out_dir: str
    frames: int
    read: int
    skipped: int
    reasons: dict[str, int]
    dropped_time: int = 0
    dropped_motion: int = 0
    topics: list[str] = field(default_factory=list)
    camera_info: dict[str, Any] = field(default_factory=dict)


def _small_gray(image: np.ndarray) -> np.ndarray:
    g = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if g.dtype != np.uint8:
        g = np.clip(g.astype(np.float32) * (255.0 if g.dtype.kind == "f" else 1.0 / 257.0), 0,
                    255).astype(np.uint8)
    h, w = g.shape
    if w > MOTION_WIDTH:
        g = cv2.resize(g, (MOTION_WIDTH, max(int(round(h * MOTION_WIDTH / w)), 1)),
                       interpolation=cv2.INTER_AREA)
    return g


def image_motion(a: np.ndarray, b: np.ndarray, metric: str = "diff", full_width: int | None = None
                 ) -> float:
    """Motion between two shrunk gray frames: ``diff`` = mean |a - b| (gray levels);
    ``flow`` = mean Farneback flow magnitude, in pixels of the full-size image."""
    if a.shape != b.shape:
        return float("inf")
    if metric == "diff":
        return float(np.mean(np.abs(a.astype(np.float32) - b.astype(np.float32))))
    if metric == "flow":
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        mag = float(np.mean(np.linalg.norm(flow, axis=2)))
        return mag * (full_width / a.shape[1] if full_width else 1.0)
    raise ValueError(f"motion metric must be one of {MOTION_METRICS}, got '{metric}'")


def _topic_dir(topic: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", topic.strip("/")) or "root"


def bag_start_time(path: str | Path) -> float:
    """First record time of the bag, seconds (for relative time ranges)."""
    from rosbags.rosbag2 import Reader

    p = Path(path)
    if p.is_file():
        p = p.parent
    with Reader(p) as r:
        return r.start_time * 1e-9


def export_bag(bag: str | Path, out_dir: str | Path, topics: Iterable[str] | None = None,
               start: float | None = None, end: float | None = None, relative: bool = False,
               min_dt: float = 0.0, min_motion: float = 0.0, motion_metric: str = "diff",
               image_format: str = "png", max_frames: int = 0) -> ExportResult:
    """Write ``out_dir/images/<topic>/<n>.<fmt>`` + ``manifest.json`` and ``manifest.csv``
    (file, stamp, topic, ...) + every CameraInfo in the bag; returns counts."""
    if motion_metric not in MOTION_METRICS:
        raise ValueError(f"motion metric must be one of {MOTION_METRICS}, got '{motion_metric}'")
    out = Path(out_dir)
    topics = list(topics) if topics else None
    all_topics = list_topics(bag)  # raises BagError on a bad bag
    if relative and (start is not None or end is not None):
        t0 = bag_start_time(bag)
        start = None if start is None else t0 + start
        end = None if end is None else t0 + end
    report = BagReport()
    last: dict[str, tuple[float, np.ndarray]] = {}
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    dropped_time = dropped_motion = 0
    (out / "images").mkdir(parents=True, exist_ok=True)
    for frame in iter_images(bag, topics, start, end, report):
        small = _small_gray(frame.image)
        prev = last.get(frame.topic)
        if prev is not None:
            if frame.stamp - prev[0] < min_dt:
                dropped_time += 1
                continue
            if min_motion > 0 and image_motion(prev[1], small, motion_metric,
                                               frame.image.shape[1]) < min_motion:
                dropped_motion += 1
                continue
        n = counts.get(frame.topic, 0)
        rel = Path("images") / _topic_dir(frame.topic) / f"{n:06d}.{image_format}"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        img = frame.image
        if img.dtype != np.uint8:  # depth-like float in [0, 1] -> 16-bit PNG keeps precision
            img = np.clip(img * 65535.0, 0, 65535).astype(np.uint16)
        elif img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(out / rel), img):
            raise RuntimeError(f"cannot write {out / rel}")
        counts[frame.topic] = n + 1
        last[frame.topic] = (frame.stamp, small)
        rows.append({"file": rel.as_posix(), "stamp": frame.stamp, "topic": frame.topic,
                     "bag_time_ns": frame.bag_time_ns, "encoding": frame.encoding,
                     "frame_id": frame.frame_id, "width": int(frame.image.shape[1]),
                     "height": int(frame.image.shape[0])})
        if max_frames and len(rows) >= max_frames:
            break
    infos: dict[str, Any] = {}
    for t, typ in all_topics.items():
        if typ == CAMERA_INFO_MSGTYPE:
            ci = read_camera_info(bag, t)
            if ci is not None:
                infos[t] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in ci.items()}
    result = ExportResult(out_dir=str(out), frames=len(rows), read=report.read,
                          skipped=report.skipped, reasons=dict(report.reasons),
                          dropped_time=dropped_time, dropped_motion=dropped_motion,
                          topics=sorted(counts), camera_info=infos)
    with open(out / "manifest.json", "w") as f:
        json.dump({"bag": str(bag), "selection": {"topics": topics, "start": start, "end": end,
                                                  "min_dt": min_dt, "min_motion": min_motion,
                                                  "motion_metric": motion_metric},
                   "result": asdict(result), "frames": rows}, f, indent=1)
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "stamp", "topic", "bag_time_ns", "encoding",
                                          "frame_id", "width", "height"])
        w.writeheader()
        w.writerows(rows)
    logger.info("exported %d frames (%d read, %d bad skipped %s, %d dropped by time, %d by "
                "motion) to %s", len(rows), report.read, report.skipped, report.reasons,
                dropped_time, dropped_motion, out)
    return result
