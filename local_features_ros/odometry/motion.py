"""Constant-velocity motion prior between frames.

Why: the prior only has to place map points within the tracking window (15 px by default), and
a vehicle or a hand-held camera changes velocity little in 0.1 s. The velocity is the last
frame-to-frame motion, scaled to the time between frames when stamps are irregular (a dropped
frame doubles the step instead of breaking the prediction).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ConstantVelocity", "scale_motion"]


def scale_motion(T: np.ndarray, factor: float) -> np.ndarray:
    """The rigid motion ``T`` applied ``factor`` times (axis-angle and translation scaled;
    exact for factor 1, a first-order screw approximation otherwise)."""
    if abs(factor - 1.0) < 1e-9:
        return np.array(T, float)
    rvec, _ = cv2.Rodrigues(np.asarray(T, float)[:3, :3])
    out = np.eye(4)
    out[:3, :3] = cv2.Rodrigues(rvec * factor)[0]
    out[:3, 3] = np.asarray(T, float)[:3, 3] * factor
    return out


class ConstantVelocity:
    """Remembers the last pose and per-frame motion; ``predict`` extrapolates to a stamp."""

    def __init__(self) -> None:
        self.pose: np.ndarray | None = None
        self.stamp: float | None = None
        self.motion: np.ndarray | None = None  # T_prev_cur: previous camera -> current camera
        self.dt: float | None = None

    def reset(self) -> None:
        self.__init__()

    def update(self, T_world_cam: np.ndarray, stamp: float) -> None:
        T = np.array(T_world_cam, float)
        if self.pose is not None and self.stamp is not None:
            self.motion = np.linalg.inv(self.pose) @ T
            self.dt = stamp - self.stamp
        self.pose, self.stamp = T, float(stamp)

    @property
    def has_velocity(self) -> bool:
        """Whether a motion is known (two poses seen since the last reset)."""
        return self.motion is not None

    def predict(self, stamp: float) -> np.ndarray | None:
        """Pose expected at ``stamp`` (None before the first pose)."""
        if self.pose is None:
            return None
        if self.motion is None:
            return self.pose.copy()
        factor = 1.0
        if self.dt and self.dt > 0 and self.stamp is not None and stamp > self.stamp:
            factor = float(np.clip((stamp - self.stamp) / self.dt, 0.0, 5.0))
        return self.pose @ scale_motion(self.motion, factor)
