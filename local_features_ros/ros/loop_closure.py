"""``place_recognition.*`` of the ``feature_extractor`` node: ``~/loop_candidates`` per keyframe.

The loop closure itself (keyframe cadence, query, storing the keyframe) is the core's, run by
``FeaturePipeline.process_features`` (``loop_closure.py``, database ``PlaceRecognizer``); this is
the node side: opening it from the parameters (errors name the parameter), the runtime values of
a frame, publishing a keyframe's verified candidates with the query image's header and counting
them (a failure of the step or of the publisher is logged, throttled, and counted as
``loop_errors``, never fatal), and the save at shutdown. Used by the worker thread only (and by
``save`` once the worker has been joined), so it needs no lock.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..extractors.base import ConfigError
from ..loop_closure import LoopClosure, LoopSettings
from .params import PLACE_RECOGNITION_PREFIX as PRE

if TYPE_CHECKING:
    from ..frontend import FrameResult
    from ..pipeline import FeaturePipeline

#: Seconds between two "place recognition failed" log lines.
ERROR_LOG_PERIOD_S = 2.0


class NodeLoops:
    def __init__(self, loops: LoopClosure, logger: Any, stats: Any) -> None:
        self.loops = loops
        self._logger = logger
        self._stats = stats
        self._log_time = -1e9

    @property
    def recognizer(self) -> Any:
        return self.loops.recognizer

    @classmethod
    def open(cls, conf: dict[str, Any], pipeline: FeaturePipeline, logger: Any,
             stats: Any) -> "NodeLoops | None":
        """None unless ``place_recognition.enable``; else turns the pipeline's loop closure on.
        ``ConfigError`` naming the parameter when the database file cannot serve this method."""
        if not conf.get(PRE + "enable", False):
            return None
        try:
            loops = pipeline.open_loops(str(conf.get(PRE + "database", "") or ""),
                                        conf[PRE + "max_keyframes"])
        except ConfigError as exc:
            raise ConfigError(PRE + str(exc)) from exc
        rec = loops.recognizer
        if rec.loaded:
            logger.info(f"place recognition: loaded {len(rec)} keyframes from {rec.path}")
        elif rec.path:
            logger.info(f"place recognition: {rec.path} does not exist yet; it is written at "
                        "shutdown")
        stats.set_keyframes(len(rec))
        return cls(loops, logger, stats)

    @staticmethod
    def settings(conf: Mapping[str, Any]) -> LoopSettings:
        """The loop-closure values of one frame from the node's runtime values ``conf`` (the
        ``place_recognition.*`` ones; a key not given keeps ``LoopSettings``' default)."""
        return LoopSettings.create({k[len(PRE):]: v for k, v in conf.items()
                                    if k.startswith(PRE)})

    def report(self, result: FrameResult, header: Any,
               publish: Callable[[Any, list, dict], None], stopping: Callable[[], bool]) -> None:
        """One processed frame's loop-closure outcome: a keyframe's candidates are published
        with the query image's ``header`` and counted; nothing happens on other frames."""
        try:
            if result.loop_error is not None:
                raise result.loop_error
            found = result.loops
            if found is None:
                return
            publish(header, found.candidates, found.stamps)
            self._stats.on_loop_query(found.query_ms, found.keyframes, len(found.candidates))
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
