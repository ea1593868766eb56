"""The rectified camera model every odometry module shares: pinhole K plus a stereo baseline.

Why one small type: stereo triangulation, RGB-D back-projection, PnP, the gtsam factors and the
map's visibility test must all agree on K and on how depth maps to a right-image column. A
depth camera is treated like a stereo rig with a *virtual* baseline (``u_right = u - fx b / z``),
so one bundle adjustment with stereo factors serves both sensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RectifiedCamera", "transform_points", "invert_pose"]


@dataclass(frozen=True)
class RectifiedCamera:
    """Pinhole intrinsics of the left (or colour) image, its size, and the baseline in metres
    (the real one of a rectified stereo pair, or the virtual one of a depth camera)."""

    fx: float
    fy: float
    cx: float
    cy: float
    baseline: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"fx and fy must be positive, got {self.fx}, {self.fy}")
        if not self.baseline > 0:
            raise ValueError(f"baseline must be a positive number of metres, got {self.baseline}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_projections(cls, P_left: np.ndarray, P_right: np.ndarray, width: int,
                         height: int) -> "RectifiedCamera":
        """From the 3x4 projection matrices of a rectified pair (ROS ``CameraInfo.P`` of the
        left and right camera, KITTI ``P0``/``P1``): baseline = (P_left[0,3] - P_right[0,3]) /
        fx."""
        Pl = np.asarray(P_left, np.float64).reshape(3, 4)
        Pr = np.asarray(P_right, np.float64).reshape(3, 4)
        baseline = (Pl[0, 3] - Pr[0, 3]) / Pr[0, 0]
        return cls(float(Pl[0, 0]), float(Pl[1, 1]), float(Pl[0, 2]), float(Pl[1, 2]),
                   float(baseline), int(width), int(height))

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int,  # noqa: N802
               baseline: float = 1.0) -> "RectifiedCamera":
        """From a 3x3 K (an RGB-D colour camera: the baseline is replaced by the odometry's
        virtual one)."""
        K = np.asarray(K, np.float64).reshape(3, 3)
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                   float(baseline), int(width), int(height))

    @property
    def K(self) -> np.ndarray:  # noqa: N802 (the usual name)
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def bf(self) -> float:
        """Baseline times focal length: disparity (px) = bf / depth (m)."""
        return self.baseline * self.fx

    def project(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 3)`` camera-frame points -> ``(N, 2)`` pixels and a mask of points in front of
        the camera (pixels of the others are NaN)."""
        p = np.asarray(points_cam, np.float64).reshape(-1, 3)
        front = p[:, 2] > 1e-6
        z = np.where(front, p[:, 2], 1.0)
        uv = np.stack([self.fx * p[:, 0] / z + self.cx, self.fy * p[:, 1] / z + self.cy], 1)
        uv[~front] = np.nan
        return uv, front

    def inside(self, uv: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Which pixels lie in the image, at least ``margin`` px from the border."""
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        with np.errstate(invalid="ignore"):
            return ((uv[:, 0] >= margin) & (uv[:, 0] <= self.width - 1 - margin)
                    & (uv[:, 1] >= margin) & (uv[:, 1] <= self.height - 1 - margin))

    def back_project(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Pixels ``(N, 2)`` and z-depths ``(N,)`` -> camera-frame points ``(N, 3)``."""
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        z = np.asarray(depth, np.float64).reshape(-1)
        return np.stack([(uv[:, 0] - self.cx) / self.fx * z, (uv[:, 1] - self.cy) / self.fy * z,
                         z], 1)

    def right_u(self, u: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Column in the (real or virtual) right image of a left pixel at ``depth``."""
        return np.asarray(u, np.float64) - self.bf / np.asarray(depth, np.float64)


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to ``(N, 3)`` points."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    return p @ T[:3, :3].T + T[:3, 3]


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform without a general matrix inverse."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out
