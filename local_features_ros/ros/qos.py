"""QoS profiles of the ``feature_extractor`` node: best-effort inputs, reliable outputs.

Every call returns a fresh profile: rclpy writes ``qos_overrides`` into the profile object it is
given, so a profile shared by two entities would carry one topic's override to the next.
"""

from __future__ import annotations

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

#: Depth of the ``/diagnostics`` publisher (reliable).
DIAGNOSTICS_DEPTH = 10


def input_qos(depth: int) -> QoSProfile:
    """Image and camera_info subscriptions: best effort, keep last ``depth``."""
    return QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.BEST_EFFORT,
                      history=HistoryPolicy.KEEP_LAST)


def output_qos(depth: int) -> QoSProfile:
    """Feature, match, motion, overlay and loop publishers: reliable, keep last ``depth``."""
    return QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE,
                      history=HistoryPolicy.KEEP_LAST)


def diagnostics_qos() -> QoSProfile:
    return QoSProfile(depth=DIAGNOSTICS_DEPTH, reliability=ReliabilityPolicy.RELIABLE)


def overridable() -> QoSOverridingOptions:
    """``qos_overrides.<topic>.<publisher|subscription>.*`` parameters for one entity."""
    return QoSOverridingOptions.with_default_policies()


def qos_text(qos: QoSProfile) -> str:
    """``best_effort, keep_last 1``: how log lines name a profile."""
    rel = "best_effort" if qos.reliability == ReliabilityPolicy.BEST_EFFORT else "reliable"
    return f"{rel}, keep_last {qos.depth}"
