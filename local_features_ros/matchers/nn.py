"""``nn``: mutual nearest neighbour / Lowe ratio / max distance on L2 (``matching.py``).

The matcher object around ``match_descriptors`` so the frontend, CLI and evaluation can hold any
matcher; ``matching.match_descriptors`` stays the implementation (and its callers keep working).
``distances`` are exact L2 descriptor distances.
"""

from __future__ import annotations

from ..matching import MatcherConfig, match_descriptors
from ..types import Features, MatchResult
from .base import Matcher


class NNMatcher(Matcher):
    name = "nn"
    summary = "nearest neighbour on L2 descriptor distance (mutual / ratio / max distance)"
    config_class = MatcherConfig

    def match(self, feats0: Features, feats1: Features) -> MatchResult:
        return match_descriptors(feats0.descriptors, feats1.descriptors, self.conf)

    def describe(self) -> str:
        c = self.conf
        text = ("mutual nearest neighbour" if c.mutual else "nearest neighbour") + ", L2"
        if c.ratio < 1.0:
            text += f", ratio {c.ratio:g}"
        if c.max_distance > 0:
            text += f", max distance {c.max_distance:g}"
        return text
