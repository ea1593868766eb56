"""When a tracked frame becomes a keyframe.

Why these rules: a keyframe is needed when the map stops explaining the view - few map points
tracked, or clearly fewer than when the last keyframe was made (new parts of the scene are not
in the map yet, and the map thins out at the image border). A frame budget bounds how stale the
map may get when the camera barely moves, and a rotation budget adds keyframes in turns, where
points leave the image fastest. Each keyframe costs one bundle adjustment, so the thresholds
trade accuracy against frame rate (``docs/odometry.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import KeyframeConfig
from .local_map import Keyframe

__all__ = ["KeyframeDecision", "decide_keyframe", "rotation_angle_deg"]


@dataclass(frozen=True)
class KeyframeDecision:
    insert: bool
    reason: str  # "" when not inserting


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix, degrees."""
    c = (np.trace(np.asarray(R)[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def decide_keyframe(cfg: KeyframeConfig, last: Keyframe, frame_index: int, tracked: int,
                    T_world_cam: np.ndarray) -> KeyframeDecision:
    """Whether the frame tracked with ``tracked`` map points at ``T_world_cam`` is a keyframe."""
    if tracked < cfg.min_tracked:
        return KeyframeDecision(True, "few map points tracked")
    if tracked < cfg.tracked_ratio * last.tracked:
        return KeyframeDecision(True, "tracked fewer than the last keyframe")
    if frame_index - last.frame_index >= cfg.max_frames:
        return KeyframeDecision(True, "frame budget")
    R_rel = last.T_world_cam[:3, :3].T @ np.asarray(T_world_cam)[:3, :3]
    if rotation_angle_deg(R_rel) > cfg.max_rotation_deg:
        return KeyframeDecision(True, "rotation budget")
    return KeyframeDecision(False, "")
