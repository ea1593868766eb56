"""Loop closure of a feature stream: every few processed frames, query the keyframe database
for earlier places, then store the frame as a keyframe.

Why here (no rclpy): which frames become keyframes, what a query returns and when the frame is
stored are per-frame core work that ``FeaturePipeline`` runs beside matching and motion; a ROS
node only turns the outcome into ``~/loop_candidates`` and ``/diagnostics``. The database and its
file are ``place_recognition.PlaceRecognizer``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from .place_recognition import Candidate, PlaceRecognizer
from .types import Features

__all__ = ["LoopSettings", "LoopResult", "LoopClosure"]


@dataclass(frozen=True)
class LoopSettings:
    """Runtime values of one step: a keyframe every ``keyframe_every`` processed frames; each
    keyframe queries the database for at most ``top_k`` candidates, the ``exclude_recent``
    newest keyframes left out, and keeps those verified with at least ``min_inliers`` inliers."""

    keyframe_every: int = 10
    top_k: int = 3
    exclude_recent: int = 5
    min_inliers: int = 15


@dataclass
class LoopResult:
    """What a keyframe's step found: the verified candidates (best first), the image stamp
    ``(sec, nanosec)`` of each candidate's keyframe, the query time and the database size
    after the frame was stored."""

    candidates: list[Candidate]
    stamps: dict[Any, tuple[int, int]] = field(default_factory=dict)
    query_ms: float = 0.0
    keyframes: int = 0


class LoopClosure:
    """One stream's loop closure around ``recognizer``. Not thread-safe: one thread steps it."""

    def __init__(self, recognizer: PlaceRecognizer) -> None:
        self.recognizer = recognizer

    @classmethod
    def open(cls, path: str | os.PathLike | None, max_keyframes: int,
             descriptor_dim: int | None = None, method: str = "") -> "LoopClosure":
        """The database in ``path`` when that file exists, else a new one (``PlaceRecognizer.open``:
        its ``ConfigError`` names the setting)."""
        return cls(PlaceRecognizer.open(path, max_keyframes, descriptor_dim, method))

    def __len__(self) -> int:
        return len(self.recognizer)

    def step(self, feats: Features, stamp: tuple[int, int], settings: LoopSettings
             ) -> LoopResult | None:
        """One processed frame (``stamp``: its image's ``(sec, nanosec)``). None when it is not a
        keyframe; else query, then store it. A failing query raises and stores nothing."""
        rec = self.recognizer
        if not rec.due(int(settings.keyframe_every)):
            return None
        t0 = time.perf_counter()
        good = rec.query(feats, settings.top_k, settings.exclude_recent, settings.min_inliers)
        query_ms = (time.perf_counter() - t0) * 1e3
        # Taken before ``add``, which may evict the oldest keyframe (and its stamp).
        stamps = {c.keyframe_id: rec.stamps[c.keyframe_id] for c in good}
        rec.add(feats, stamp)
        return LoopResult(good, stamps, query_ms, len(rec))

    def save(self) -> bool:
        """Write the database to its file once (``PlaceRecognizer.save``)."""
        return self.recognizer.save()
