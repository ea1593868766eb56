"""``place_recognition.*`` of the ``feature_extractor`` node: ``~/loop_candidates`` per keyframe.

The database logic is the core's ``place_recognition.PlaceRecognizer``; this is the node side:
opening it from the parameters (errors name the parameter), one step per processed frame on the
worker thread (query, publish the verified candidates with the query image's header, add the
frame as a keyframe -- a failure is logged, throttled, and counted as ``loop_errors``, never
fatal), and the save at shutdown. Used by the worker thread only (and by ``save`` once the
worker has been joined), so it needs no lock.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..extractors.base import ConfigError
from ..types import Features
from .params import PLACE_RECOGNITION_PREFIX as PRE

#: Seconds between two "place recognition failed" log lines.
ERROR_LOG_PERIOD_S = 2.0


class NodeLoops:
    def __init__(self, recognizer: Any, logger: Any, stats: Any) -> None:
        self.recognizer = recognizer
        self._logger = logger
        self._stats = stats
        self._log_time = -1e9

    @classmethod
    def open(cls, conf: dict[str, Any], descriptor_dim: int, method: str, logger: Any,
             stats: Any) -> "NodeLoops | None":
        """None unless ``place_recognition.enable``; ``ConfigError`` naming the parameter when
        the database file cannot serve this method."""
        from ..place_recognition import PlaceRecognizer

        if not conf.get(PRE + "enable", False):
            return None
        try:
            rec = PlaceRecognizer.open(str(conf.get(PRE + "database", "") or ""),
                                       conf[PRE + "max_keyframes"], descriptor_dim, method)
        except ConfigError as exc:
            raise ConfigError(PRE + str(exc)) from exc
        if rec.loaded:
            logger.info(f"place recognition: loaded {len(rec)} keyframes from {rec.path}")
        elif rec.path:
            logger.info(f"place recognition: {rec.path} does not exist yet; it is written at "
                        "shutdown")
        stats.set_keyframes(len(rec))
        return cls(rec, logger, stats)

    def step(self, feats: Features, header: Any, conf: dict[str, Any],
             publish: Callable[[Any, list, dict], None], stopping: Callable[[], bool]) -> None:
        """One processed frame (``conf``: the node's runtime values for this frame)."""
        rec = self.recognizer
        try:
            if not rec.due(int(conf.get(PRE + "keyframe_every", 10))):
                return
            t0 = time.perf_counter()
            good = rec.query(feats, conf.get(PRE + "top_k", 3), conf.get(PRE + "exclude_recent", 5),
                             conf.get(PRE + "min_inliers", 15))
            query_ms = (time.perf_counter() - t0) * 1e3
            publish(header, good, rec.stamps)
            rec.add(feats, (header.stamp.sec, header.stamp.nanosec))
            self._stats.on_loop_query(query_ms, len(rec), len(good))
        except Exception as exc:
            if stopping():
                return
            self._stats.on_loop_error()
            now = time.monotonic()
            if now - self._log_time >= ERROR_LOG_PERIOD_S:
                self._log_time = now
                self._logger.warning(f"place recognition failed on this frame "
                                     f"({self._stats.loop_errors} so far): "
                                     f"{type(exc).__name__}: {exc}")

    def save(self, worker_alive: bool) -> None:
        """Write the database to ``place_recognition.database`` (once, after the worker
        stopped). A write error is logged, not raised: shutdown must complete."""
        rec = self.recognizer
        if not rec.path or rec.saved:
            return
        if worker_alive:
            self._logger.error(f"place recognition: {rec.path} not saved, the worker is still "
                               "running")
            return
        try:
            rec.save()
            self._logger.info(f"place recognition: saved {len(rec)} keyframes to {rec.path}")
        except Exception as exc:
            self._logger.error(f"place recognition: cannot save {rec.path}: "
                               f"{type(exc).__name__}: {exc}")
