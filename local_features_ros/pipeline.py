"""Extractor + matcher + frame-to-frame frontend, built and reconfigured as one unit.

Why here (no rclpy): the node only translates parameters and messages; what a frame goes through
(extract -> match to the previous frame -> verify -> tracks/motion) and which settings may change
while running are core behaviour, shared with anything else that processes a live stream.
``apply`` is the one way to change settings: every change is validated on trial copies first
(``check``), so a rejected request leaves everything as it was.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .config import Config
from .extractors.base import ConfigError, Extractor
from .frontend import FrameResult, FrameToFrameFrontend
from .geometry import VerifyConfig
from .loop_closure import LoopClosure, LoopSettings
from .matchers import Matcher, build_matcher
from .matching import MatcherConfig
from .types import Features

__all__ = ["MATCHER_TYPES", "TINY_EDGE", "PipelineConfig", "FeaturePipeline", "replace_fields",
           "check_extractor_changes"]

#: ``matcher.type`` values: ``nn`` (``MatcherConfig``) or ``lightglue`` (``LightGlueConfig``).
MATCHER_TYPES = ("nn", "lightglue")
#: Images whose short edge is below this get an empty feature set when the extractor fails on
#: them (a 1x1 frame is a valid, useless message: no network has a receptive field that small).
TINY_EDGE = 32


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _set_torch_threads(n: int) -> None:
    """Torch's CPU thread count for the calling thread (OpenMP's count is per thread; threads
    started later begin with it too)."""
    import torch

    if int(torch.get_num_threads()) != int(n):
        torch.set_num_threads(int(n))


def replace_fields(conf: Config, changes: Mapping[str, Any]) -> Config:
    """``conf`` with ``changes`` applied (``Config.replace``: cast and validated); an unknown
    key is a ``ConfigError`` naming the known ones. Used on trial copies before anything
    running changes."""
    return conf.replace(**changes) if changes else conf


def check_extractor_changes(extractor: Extractor, changes: dict[str, Any]) -> None:
    """Run the method's validation on the config an ``update_conf`` would produce, without
    touching the running extractor. Raises ``ConfigError`` with the reason."""
    if not changes:
        return
    bad = [k for k in changes if k not in extractor.runtime_keys]
    if bad:
        raise ConfigError(f"'{bad[0]}' cannot change at runtime for method "
                          f"'{extractor.name}' (restart the node)")
    extractor.config_class.check(changes, base=extractor.conf)


@dataclass
class PipelineConfig:
    """Everything needed to build a pipeline (restart-only values and start values)."""

    method: str
    weights: str | None = None
    device: str = "auto"
    precision: str = "auto"
    extractor: dict[str, Any] = field(default_factory=dict)
    matcher_type: str = "nn"
    matcher: dict[str, Any] = field(default_factory=dict)  # MatcherConfig fields
    lightglue: dict[str, Any] = field(default_factory=dict)  # LightGlueConfig fields
    verify: dict[str, Any] = field(default_factory=dict)  # VerifyConfig fields
    #: Torch CPU threads of the thread that extracts (``enter_extract_thread``); 0 = the
    #: process's count. Set before the extractor is built: a backend sizes its pool from it.
    extract_threads: int = 0


class FeaturePipeline:
    """Build with ``FeaturePipeline(PipelineConfig(...))``; errors are ``ConfigError`` /
    ``WeightsError`` / ``FileNotFoundError`` with a one-line reason. Not thread-safe."""

    def __init__(self, cfg: PipelineConfig) -> None:
        from .registry import build_extractor

        if cfg.matcher_type not in MATCHER_TYPES:
            raise ConfigError(f"matcher.type must be one of {MATCHER_TYPES}, got "
                              f"'{cfg.matcher_type}'")
        self.matcher_type = cfg.matcher_type
        if cfg.extract_threads > 0:
            _set_torch_threads(cfg.extract_threads)
        self.matcher_conf = replace_fields(MatcherConfig(), cfg.matcher)
        self.verify_conf = replace_fields(VerifyConfig(), cfg.verify)
        self.extractor: Extractor = build_extractor(cfg.method, weights=cfg.weights or None,
                                                    device=cfg.device, precision=cfg.precision,
                                                    **cfg.extractor)
        try:
            self.matcher: Matcher = (
                build_matcher("lightglue", device=str(self.extractor.device),
                              precision=cfg.precision, features=cfg.method, **cfg.lightglue)
                if cfg.matcher_type == "lightglue"
                else build_matcher("nn", **dataclasses.asdict(self.matcher_conf)))
        except (ConfigError, FileNotFoundError, ValueError) as exc:
            raise type(exc)(f"matcher '{cfg.matcher_type}': {exc}") from exc
        self.frontend = FrameToFrameFrontend(matcher=self.matcher, verify=self.verify_conf)
        self.method = cfg.method
        #: Loop closure (``open_loops``); None = off.
        self.loops: LoopClosure | None = None
        self._extract_threads = _torch_threads()

    def open_loops(self, path: str | None, max_keyframes: int) -> LoopClosure:
        """Turn loop closure on, with the keyframe database in ``path`` when that file exists
        (empty: in memory only). ``ConfigError`` naming the setting when the file cannot serve
        this method."""
        self.loops = LoopClosure.open(path or "", max_keyframes, self.descriptor_dim, self.method)
        return self.loops

    def enter_extract_thread(self) -> None:
        """Call first in a thread that runs ``extract``: it gets the torch CPU threads the
        process had when the pipeline was built (the network's convolutions use them all)."""
        _set_torch_threads(self._extract_threads)

    def enter_frontend_thread(self) -> None:
        """Call first in a thread that runs ``process_features`` beside a thread that extracts.
        With the ``nn`` matcher: one torch CPU thread -- its matrix products are small, and more
        threads would only take cores from the extraction running at the same time (on two
        cores the two stages then slow each other down instead of overlapping). A LightGlue
        matcher is a network of its own and keeps the process's count."""
        _set_torch_threads(1 if self.matcher_type == "nn" else self._extract_threads)

    @property
    def descriptor_dim(self) -> int:
        return int(self.extractor.descriptor_dim)

    @property
    def lightglue_conf(self) -> Any:
        return self.matcher.conf if self.matcher_type == "lightglue" else None

    def check(self, extractor: dict[str, Any] | None = None, matcher: dict[str, Any] | None = None,
              verify: dict[str, Any] | None = None, lightglue: dict[str, Any] | None = None
              ) -> None:
        """Raise the reason a change set cannot apply; changes nothing."""
        check_extractor_changes(self.extractor, extractor or {})
        replace_fields(self.matcher_conf, matcher or {})
        replace_fields(self.verify_conf, verify or {})
        if lightglue:
            if self.matcher_type != "lightglue":
                raise ConfigError("matcher.lightglue.* apply only with matcher.type: lightglue")
            bad = [k for k in lightglue if k not in self.matcher.runtime_keys]
            if bad:
                raise ConfigError(f"'{bad[0]}' cannot change at runtime for matcher 'lightglue' "
                                  "(restart the node)")
            replace_fields(self.matcher.conf, lightglue)

    def apply(self, extractor: dict[str, Any] | None = None, matcher: dict[str, Any] | None = None,
              verify: dict[str, Any] | None = None, lightglue: dict[str, Any] | None = None
              ) -> None:
        """Check, then apply; the frontend keeps its tracks."""
        self.check(extractor, matcher, verify, lightglue)
        if extractor:
            self.extractor.update_conf(**extractor)
        if lightglue:
            self.matcher.update_conf(**lightglue)
        if matcher or verify:
            self.matcher_conf = replace_fields(self.matcher_conf, matcher or {})
            self.verify_conf = replace_fields(self.verify_conf, verify or {})
            if self.matcher_type == "nn" and matcher:
                self.matcher.update_conf(**matcher)
            self.frontend.update_config(verify=self.verify_conf)

    def warm_up(self) -> None:
        """One extraction (and one match) so the first real frame pays no allocator/JIT cost."""
        img = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
        feats = self.extractor.extract(img)
        if len(feats) > 1:
            self.matcher.match(feats.float().to("cpu"), feats.float().to("cpu"))

    def extract(self, image: np.ndarray) -> Features:
        """Features of one image as float32 on the CPU (what matching and messages use).

        An image whose short edge is below ``TINY_EDGE`` yields an empty set when the extractor
        cannot handle it; any other failure propagates (the caller counts it as bad input)."""
        h, w = image.shape[:2]
        try:
            feats = self.extractor.extract(image)
        except Exception:
            if min(h, w) >= TINY_EDGE:
                raise
            return Features.empty(self.descriptor_dim, (w, h))
        return feats.float().to("cpu")

    def process(self, image: np.ndarray, stamp: float, K: np.ndarray | None, *,
                loop_stamp: tuple[int, int] | None = None,
                loop_settings: LoopSettings | None = None) -> tuple[Features, FrameResult]:
        """One frame, both halves: ``extract`` then ``process_features``. A caller that
        overlaps frames (the node) runs the halves in two threads, in frame order."""
        feats = self.extract(image)
        return feats, self.process_features(feats, stamp, K, loop_stamp=loop_stamp,
                                            loop_settings=loop_settings)

    def process_features(self, feats: Features, stamp: float, K: np.ndarray | None, *,
                         loop_stamp: tuple[int, int] | None = None,
                         loop_settings: LoopSettings | None = None) -> FrameResult:
        """Match to the previous frame, verify, track, motion (frames in stamp order), then the
        loop-closure step when it is on (``loop_stamp``: the image stamp ``(sec, nanosec)``
        stored with a keyframe, default ``stamp`` split; ``loop_settings`` default
        ``LoopSettings()``). A loop-closure failure is returned in ``loop_error``."""
        result = self.frontend.process(feats, stamp, K)
        if self.loops is not None:
            try:
                result.loops = self.loops.step(feats, loop_stamp or _split_stamp(stamp),
                                               loop_settings or LoopSettings())
            except Exception as exc:  # the frame's other outputs stand
                result.loop_error = exc
        return result


def _split_stamp(stamp: float) -> tuple[int, int]:
    """Seconds as ``(sec, nanosec)``."""
    ns = int(round(float(stamp) * 1e9))
    return ns // 10**9, ns % 10**9
