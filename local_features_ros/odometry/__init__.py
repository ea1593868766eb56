"""Metric visual odometry from stereo pairs or RGB-D frames (``docs/odometry.md``).

One module per job, explicit dataclasses between them (``types``, ``config``):
``camera`` (rectified pinhole + baseline), ``stereo`` (row-constrained left/right matching,
sub-pixel disparity, triangulation), ``rgbd`` (depth lookup with invalid/edge rejection),
``association`` (gated mutual nearest neighbour), ``tracking`` + ``pnp`` (frame-to-map PnP
RANSAC + refinement), ``local_map`` (keyframes and landmarks), ``keyframes`` (selection),
``bundle_adjustment`` (gtsam sliding window), ``motion`` (constant-velocity prior),
``visual_odometry`` (the per-frame state machine and the stereo / RGB-D front-ends),
``datasets`` / ``runner`` / ``metrics`` / ``evaluation`` / ``plots`` / ``synthetic``
(sequences, scoring and test data). Nothing here imports rclpy: a node calls
``StereoOdometry.process(left, right, stamp)`` or ``RGBDOdometry.process(rgb, depth, stamp)``
per frame - or its two halves ``measure`` (any thread) and ``update`` (in stamp order) on two
threads - and publishes the returned ``OdometryResult``.
"""

from .camera import RectifiedCamera
from .config import (BundleConfig, DepthConfig, KeyframeConfig, OdometryConfig, RecoveryConfig,
                     StereoConfig, TrackingConfig)
from .types import FrameMeasurement, OdometryResult, TrackingState
from .visual_odometry import MeasuredFrame, RGBDOdometry, StereoOdometry, VisualOdometry

__all__ = ["RectifiedCamera", "OdometryConfig", "StereoConfig", "DepthConfig", "TrackingConfig",
           "KeyframeConfig", "BundleConfig", "RecoveryConfig", "FrameMeasurement",
           "OdometryResult", "TrackingState", "VisualOdometry", "StereoOdometry", "RGBDOdometry",
           "MeasuredFrame"]
