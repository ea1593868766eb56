"""Frame-to-frame front-end: match to the previous frame, verify, track ids, relative motion.

Why one class: the ROS node (``~/matches``, ``track_id``, ``~/relative_motion``), the sequence
evaluation (VO errors) and the demo must do exactly the same thing per frame, and none of it
needs rclpy. The node owns threading; this class is not thread-safe by itself.

Per frame: ``matcher.match`` (previous -> current; a ``matchers`` object, ``nn`` = mutual NN on
L2 via ``match_descriptors`` by default, or ``lightglue``) -> ``verify_matches`` (model per
``verify``; ``auto`` = essential when both frames have K, else fundamental) -> track ids
inherited along *inlier* matches -> ``relative_motion`` from the essential matrix when both
frames have K. A frame whose descriptor size differs from the previous one (method switched) or
whose stamp goes backwards (bag looped) starts a new sequence, like ``reset()``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .geometry import VerifyConfig, relative_motion, verify_matches
from .matchers.base import Matcher
from .matching import MatcherConfig
from .tracking import TrackManager
from .types import Features, MatchResult, RelativeMotion

if TYPE_CHECKING:
    from .loop_closure import LoopResult

logger = logging.getLogger(__name__)

__all__ = ["FrameResult", "FrameToFrameFrontend", "as_matcher"]


@dataclass
class FrameResult:
    """What one processed frame produced. ``matches`` index ``[previous frame, this frame]``
    (None on the first frame of a sequence); ``prev_stamp`` names the previous frame.
    ``loops`` / ``loop_error``: the loop-closure step of ``FeaturePipeline`` when it is on (None
    on a frame that is not a keyframe) and the exception that ended it, if one did -- a failed
    loop query never costs the frame its matches and motion."""

    features: Features
    track_ids: np.ndarray  # (N,) uint32
    matches: MatchResult | None
    motion: RelativeMotion | None
    prev_stamp: float | None
    stamp: float
    frame_index: int
    loops: LoopResult | None = None
    loop_error: Exception | None = None


@dataclass
class _Previous:
    features: Features
    keypoints: np.ndarray  # (N, 2) float64 pixels
    K: np.ndarray | None
    stamp: float


def as_matcher(matcher: Matcher | MatcherConfig | None) -> Matcher:
    """A ``Matcher`` as it is; a ``MatcherConfig`` (or None) = the ``nn`` matcher with it."""
    if isinstance(matcher, Matcher):
        return matcher
    if matcher is None or isinstance(matcher, MatcherConfig):
        from .matchers.nn import NNMatcher

        return NNMatcher(matcher if matcher is not None else MatcherConfig())
    raise TypeError(f"matcher must be a Matcher or a MatcherConfig, got {type(matcher).__name__}")


class FrameToFrameFrontend:
    """``matcher`` (a ``Matcher``; a ``MatcherConfig`` assigned or passed means the ``nn`` matcher
    with that config) and ``verify`` are attributes: assign new ones at runtime (node parameter
    changes) and the next ``process`` uses them; tracks are kept."""

    def __init__(self, matcher: Matcher | MatcherConfig | None = None,
                 verify: VerifyConfig = VerifyConfig()):
        self.matcher = matcher
        self.verify = verify
        self.tracks = TrackManager()
        self._prev: _Previous | None = None
        self._frame_index = 0

    @property
    def matcher(self) -> Matcher:
        return self._matcher

    @matcher.setter
    def matcher(self, value: Matcher | MatcherConfig | None) -> None:
        self._matcher = as_matcher(value)

    def update_config(self, matcher: Matcher | MatcherConfig | None = None,
                      verify: VerifyConfig | None = None) -> None:
        if matcher is not None:
            self.matcher = matcher
        if verify is not None:
            self.verify = verify

    def reset(self) -> None:
        """Start a new sequence: no previous frame, ``frame_index`` from 0. Track ids keep
        increasing (never reused)."""
        self._prev = None
        self._frame_index = 0
        self.tracks.reset()

    def process(self, features: Features, stamp: float, K: np.ndarray | None = None) -> FrameResult:
        """Match ``features`` against the previous processed frame and update tracks.

        ``K`` (3x3, pixels of this frame's ``features``) enables the essential matrix and
        ``motion`` (x_cur = R x_prev + t, unit t).
        """
        stamp = float(stamp)
        K = None if K is None else np.asarray(K, np.float64).reshape(3, 3)
        prev = self._prev
        if prev is not None and features.descriptor_dim != prev.features.descriptor_dim:
            logger.warning("descriptor size changed (%d -> %d): starting a new sequence",
                           prev.features.descriptor_dim, features.descriptor_dim)
            self.reset()
            prev = None
        elif prev is not None and stamp < prev.stamp:
            logger.warning("stamp went backwards (%.6f -> %.6f): starting a new sequence",
                           prev.stamp, stamp)
            self.reset()
            prev = None
        kpts = features.keypoints.detach().float().cpu().numpy().astype(np.float64).reshape(-1, 2)
        matches: MatchResult | None = None
        motion: RelativeMotion | None = None
        if prev is None:
            ids = self.tracks.update(len(features))
        else:
            matches = self._matcher.match(prev.features, features)
            have_k = prev.K is not None and K is not None
            verify = self.verify
            if verify.model == "essential" and not have_k:
                logger.debug("essential verification needs K on both frames: using fundamental")
                verify = dataclasses.replace(verify, model="fundamental")
            matches = verify_matches(prev.keypoints, kpts, matches, verify,
                                     prev.K if have_k else None, K if have_k else None)
            ids = self.tracks.update(len(features), matches.matches[matches.inliers])
            if have_k and len(matches) > 0:
                motion = relative_motion(prev.keypoints, kpts, matches, prev.K, K,
                                         cfg=dataclasses.replace(self.verify, model="essential"))
        result = FrameResult(features=features, track_ids=ids, matches=matches, motion=motion,
                             prev_stamp=None if prev is None else prev.stamp, stamp=stamp,
                             frame_index=self._frame_index)
        self._prev = _Previous(features, kpts, K, stamp)
        self._frame_index += 1
        return result
