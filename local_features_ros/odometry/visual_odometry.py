"""Metric visual odometry: stereo pairs or RGB-D frames in, camera poses out, one call per frame.

Why a sensor-agnostic core (``VisualOdometry``) under thin sensor front-ends (``StereoOdometry``,
``RGBDOdometry``): after the left/right matching or the depth lookup, a frame is a
``FrameMeasurement`` and everything that follows - tracking against the local map, keyframe
selection, gtsam bundle adjustment, recovery - is the same. A ROS node holds one front-end and
calls ``process`` per frame on its worker thread; nothing here imports rclpy.

Per frame (``VisualOdometry.process_measurement``):

1. No map yet: a frame with at least ``recovery.min_init_points`` 3D points becomes the first
   keyframe at the anchor pose (identity: world = first camera).
2. Otherwise track against the map (``tracking.track_frame``) from the constant-velocity
   prediction. A tracked frame may become a keyframe (``keyframes.decide_keyframe``): it joins
   the map, adds landmarks for its unmatched 3D points, and the window is bundle-adjusted; its
   reported pose is the optimised one.
3. Tracking failed: if the frame itself has enough 3D points, a new map starts on it, anchored
   at the last good pose (``reinitialised``); otherwise the frame is ``lost`` and reports the
   last good pose. Each run of failures counts as one loss. While lost, every frame is first
   tracked against the old map with a wide search from the last good pose (``relocalised`` on
   success, keeping the map and the metric trajectory), when ``recovery.relocalise``.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..matchers.base import Matcher
from ..types import Features
from .bundle_adjustment import LocalBundleAdjuster
from .camera import RectifiedCamera
from .config import OdometryConfig
from .keyframes import decide_keyframe
from .local_map import LocalMap
from .motion import ConstantVelocity
from .rgbd import depth_in_metres, rgbd_measurement
from .stereo import left_measurement, stereo_measurement, to_gray_float
from .tracking import track_frame
from .types import FrameMeasurement, OdometryResult, TrackingState

logger = logging.getLogger(__name__)

__all__ = ["VisualOdometry", "StereoOdometry", "RGBDOdometry", "MeasuredFrame"]


class VisualOdometry:
    """The sensor-agnostic core (module docstring). ``max_landmark_depth`` (m, 0 = no limit):
    3D points farther than this do not become landmarks."""

    def __init__(self, camera: RectifiedCamera, config: OdometryConfig | None = None,
                 max_landmark_depth: float = 0.0) -> None:
        self.camera = camera
        self.config = config or OdometryConfig()
        self.max_landmark_depth = float(max_landmark_depth)
        self.bundle = (LocalBundleAdjuster(camera, self.config.bundle)
                       if self.config.bundle.enabled else None)
        self.map = LocalMap(retain=self.config.bundle.window)
        self.motion = ConstantVelocity()
        #: Per keypoint of the last frame, the landmark it observes (-1 none): its PnP inliers,
        #: or every landmark of a keyframe. Landmark ids are never reused, so two frames share
        #: a landmark id exactly when their keypoints see the same map point.
        self.last_landmark_ids = np.zeros(0, np.int64)
        self.frame_index = 0
        self.losses = 0
        self.lost = False
        self.last_good_pose = np.eye(4)
        self.last_bundle: Any = None
        self.maps_started = 0

    def reset(self) -> None:
        """Forget everything: the next frame starts a new trajectory at the identity."""
        next_id = self.map.next_landmark_id
        self.__init__(self.camera, self.config, self.max_landmark_depth)
        self.map = LocalMap(retain=self.config.bundle.window, first_landmark_id=next_id)

    # ------------------------------------------------------------------ per frame
    def process_measurement(self, meas: FrameMeasurement) -> OdometryResult:
        """One frame's measurement -> its pose and state (module docstring). A stamp older
        than the previous frame's (a replayed bag looping) starts a new trajectory."""
        if self.motion.stamp is not None and meas.stamp < self.motion.stamp:
            logger.warning("stamp went backwards (%.6f -> %.6f): starting a new trajectory",
                           self.motion.stamp, meas.stamp)
            self.reset()
        idx = self.frame_index
        self.frame_index += 1
        timings: dict[str, float] = {}
        if not self.map.keyframes:
            if meas.num_depth >= self.config.recovery.min_init_points:
                return self._start_map(meas, idx, timings)
            return self._lost_frame(meas, idx, timings)
        t0 = time.perf_counter()
        track = None
        if not self.lost:
            track = track_frame(meas, self.map, self.camera, self.motion.predict(meas.stamp),
                                self.config.tracking, narrow=self.motion.has_velocity)
        elif self.config.recovery.relocalise:
            track = track_frame(meas, self.map, self.camera, self.last_good_pose,
                                self.config.tracking, narrow=False)
        timings["track"] = 1000.0 * (time.perf_counter() - t0)
        if track is None:
            if meas.num_depth >= self.config.recovery.min_init_points:
                if not self.lost:
                    self.losses += 1
                logger.info("frame %d: tracking failed, new map anchored at the last good pose",
                            idx)
                self.map = LocalMap(retain=self.config.bundle.window,
                                    first_landmark_id=self.map.next_landmark_id)
                return self._start_map(meas, idx, timings)
            return self._lost_frame(meas, idx, timings)
        relocalised = self.lost
        if relocalised:
            logger.info("frame %d: relocalised against the map (%d inliers)", idx,
                        track.num_inliers)
            self.motion.reset()
        self.lost = False
        pose = track.T_world_cam
        last = self.map.last_keyframe
        decision = decide_keyframe(self.config.keyframes, last, idx, track.num_inliers, pose) \
            if last is not None else None
        is_kf = decision is None or decision.insert or relocalised
        covariance = None
        if is_kf:
            meas.resolve_depth()  # a keyframe's own 3D points become landmarks
            t1 = time.perf_counter()
            kf = self.map.add_keyframe(meas, pose, idx, track.associations, track.num_inliers,
                                       self.max_landmark_depth)
            timings["map"] = 1000.0 * (time.perf_counter() - t1)
            report = self._adjust()
            if report is not None:
                timings["bundle"] = report.milliseconds
                covariance = report.covariance
            pose = kf.T_world_cam
            self.map.cull()
            self.last_landmark_ids = kf.landmark_ids.copy()
        else:
            ids = np.full(len(meas), -1, np.int64)
            ids[track.associations[:, 0]] = track.associations[:, 1]
            self.last_landmark_ids = ids
        self._good(pose, meas.stamp)
        state = TrackingState.RELOCALISED if relocalised else TrackingState.TRACKING
        return self._result(meas, idx, pose, state, is_kf, timings, covariance,
                            track.num_matches, track.num_inliers)

    def _adjust(self) -> Any:
        if self.bundle is None:
            return None
        self.last_bundle = self.bundle.optimise(self.map)
        return self.last_bundle

    def _start_map(self, meas: FrameMeasurement, idx: int, timings: dict[str, float]
                   ) -> OdometryResult:
        state = TrackingState.INITIALISED if self.maps_started == 0 \
            else TrackingState.REINITIALISED
        self.maps_started += 1
        pose = self.last_good_pose.copy()
        meas.resolve_depth()
        t1 = time.perf_counter()
        kf = self.map.add_keyframe(meas, pose, idx, np.zeros((0, 2), np.int64), 0,
                                   self.max_landmark_depth)
        kf.tracked = len(self.map.landmarks)
        self.last_landmark_ids = kf.landmark_ids.copy()
        timings["map"] = 1000.0 * (time.perf_counter() - t1)
        self.lost = False
        self.motion.reset()
        self._good(pose, meas.stamp)
        return self._result(meas, idx, pose, state, True, timings, None, 0, 0)

    def _lost_frame(self, meas: FrameMeasurement, idx: int, timings: dict[str, float]
                    ) -> OdometryResult:
        """No pose from this frame: report the last good one. Frames before the first map
        are not losses (there was nothing to lose)."""
        if self.maps_started and not self.lost:
            self.losses += 1
            self.lost = True
        self.last_landmark_ids = np.full(len(meas), -1, np.int64)
        return self._result(meas, idx, self.last_good_pose.copy(), TrackingState.LOST, False,
                            timings, None, 0, 0)

    def _good(self, pose: np.ndarray, stamp: float) -> None:
        self.last_good_pose = np.array(pose, float)
        self.motion.update(pose, stamp)

    def _result(self, meas: FrameMeasurement, idx: int, pose: np.ndarray,
                state: TrackingState, is_kf: bool, timings: dict[str, float],
                covariance: np.ndarray | None, matches: int, inliers: int) -> OdometryResult:
        return OdometryResult(
            frame_index=idx, stamp=meas.stamp, T_world_cam=np.array(pose, float), state=state,
            is_keyframe=is_kf, covariance=covariance, num_features=len(meas),
            num_depth=meas.num_depth if meas.depth_known else -1, num_matches=int(matches),
            num_inliers=int(inliers),
            num_keyframes=len(self.map.keyframes), num_map_points=len(self.map.landmarks),
            losses=self.losses, timings_ms=timings)


def _extract(extractor: Any, image: np.ndarray) -> Features:
    return extractor.extract(image).float().to("cpu")


@dataclass
class MeasuredFrame:
    """A frame after the per-image work (features, stereo or depth lookup), before the
    odometry state: what ``measure`` hands ``update``. ``timings_ms``: extract and depth."""

    measurement: FrameMeasurement
    timings_ms: dict[str, float]
    #: Filled by ``update``: ``VisualOdometry.last_landmark_ids`` of this frame.
    landmark_ids: np.ndarray | None = None


class _FrontEnd:
    """What the stereo and RGB-D front-ends share: ``process`` = ``update(measure(...))``.

    Why two halves: ``measure`` reads only the extractor, the camera and the settings, never
    the odometry state, so frame N+1 can be measured on another thread while frame N updates
    the map (``runner.run_frames``, the ``visual_odometry`` node); ``update`` must see the
    frames one at a time, in stamp order."""

    core: VisualOdometry

    def measure(self, first: np.ndarray, second: np.ndarray, stamp: float) -> MeasuredFrame:
        raise NotImplementedError

    def update(self, frame: MeasuredFrame) -> OdometryResult:
        """The odometry state advanced by one measured frame (frames in stamp order)."""
        res = self.core.process_measurement(frame.measurement)
        res.timings_ms = {**res.timings_ms, **frame.timings_ms}
        frame.landmark_ids = self.core.last_landmark_ids
        return res

    def process(self, first: np.ndarray, second: np.ndarray, stamp: float) -> OdometryResult:
        """One frame, measured and tracked on the calling thread."""
        return self.update(self.measure(first, second, stamp))

    def reset(self) -> None:
        self.core.reset()


class StereoOdometry(_FrontEnd):
    """Rectified stereo front-end: ``process(left, right, stamp) -> OdometryResult``.

    ``extractor`` is any registry extractor (``registry.build_extractor`` or a
    ``FeaturePipeline``'s); ``matcher`` the method's matcher (None or ``nn``: gated mutual
    nearest neighbour on the row band; e.g. LightGlue: its matches held to the row rules).
    ``camera.baseline`` is the stereo baseline (m).

    ``right_on_demand`` (default): ``measure`` extracts the left image only, and the right
    image is extracted and matched when the frame's depths are first needed (a keyframe, the
    first frame of a map, a frame that cannot be tracked; ``FrameMeasurement.depth_pending``):
    the poses are the same, and a frame tracked against the map costs one extraction instead
    of two. Otherwise both images are measured at once, the right one on a second thread with
    ``parallel_images`` (the extractor must allow concurrent calls, as the registry's do)."""

    def __init__(self, extractor: Any, camera: RectifiedCamera,
                 config: OdometryConfig | None = None, matcher: Matcher | None = None,
                 right_on_demand: bool = True, parallel_images: bool = True) -> None:
        self.extractor = extractor
        self.matcher = matcher
        self.camera = camera
        self.config = config or OdometryConfig()
        self.right_on_demand = bool(right_on_demand)
        max_depth = self.config.tracking.max_depth_baselines * camera.baseline
        self.core = VisualOdometry(camera, self.config, max_landmark_depth=max_depth)
        self._right_pool = (ThreadPoolExecutor(1, thread_name_prefix="odometry-right")
                            if parallel_images and not self.right_on_demand else None)

    def measure(self, left: np.ndarray, right: np.ndarray, stamp: float) -> MeasuredFrame:
        """Features of the left image, and of the right one with the stereo matches now or
        when first needed (``right_on_demand``); safe on another thread."""
        t0 = time.perf_counter()
        if self.right_on_demand:
            fl = _extract(self.extractor, left)
            timings = {"extract": 1000.0 * (time.perf_counter() - t0)}
            meas = left_measurement(fl, stamp)
            meas.depth_pending = lambda: self._stereo_depth(fl, left, right, stamp, timings)
            return MeasuredFrame(meas, timings)
        if self._right_pool is not None:
            pending = self._right_pool.submit(_extract, self.extractor, right)
            fl = _extract(self.extractor, left)
            fr = pending.result()
        else:
            fl = _extract(self.extractor, left)
            fr = _extract(self.extractor, right)
        t1 = time.perf_counter()
        meas, _ = stereo_measurement(fl, fr, to_gray_float(left), to_gray_float(right),
                                     self.camera, self.config.stereo, stamp, self.matcher)
        t2 = time.perf_counter()
        return MeasuredFrame(meas, {"extract": 1000.0 * (t1 - t0), "depth": 1000.0 * (t2 - t1)})

    def _stereo_depth(self, fl: Features, left: np.ndarray, right: np.ndarray, stamp: float,
                      timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """The right image's features and the stereo matches of a frame measured earlier;
        its timings join the frame's (extract: both images, depth: the stereo step)."""
        t0 = time.perf_counter()
        fr = _extract(self.extractor, right)
        t1 = time.perf_counter()
        meas, _ = stereo_measurement(fl, fr, to_gray_float(left), to_gray_float(right),
                                     self.camera, self.config.stereo, stamp, self.matcher)
        timings["extract"] = timings.get("extract", 0.0) + 1000.0 * (t1 - t0)
        timings["depth"] = 1000.0 * (time.perf_counter() - t1)
        return meas.u_right, meas.points_cam

    def close(self) -> None:
        """Stop the right-image thread (also done when the object is collected)."""
        if self._right_pool is not None:
            self._right_pool.shutdown(wait=True)
            self._right_pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_right_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)


class RGBDOdometry(_FrontEnd):
    """RGB-D front-end: ``process(rgb, depth, stamp) -> OdometryResult``.

    ``depth`` is aligned to the colour image: integer images are divided by ``depth_factor``
    (TUM 5000, ROS 16UC1 millimetres 1000), float images are metres. ``camera`` is the colour
    camera; its ``baseline`` is ignored in favour of ``config.depth.virtual_baseline``.
    ``distortion`` (k1, k2, p1, p2[, k3]): keypoints are undistorted before the geometry."""

    def __init__(self, extractor: Any, camera: RectifiedCamera,
                 config: OdometryConfig | None = None, depth_factor: float = 5000.0,
                 distortion: np.ndarray | None = None) -> None:
        self.extractor = extractor
        self.config = config or OdometryConfig()
        self.camera = RectifiedCamera(camera.fx, camera.fy, camera.cx, camera.cy,
                                      self.config.depth.virtual_baseline, camera.width,
                                      camera.height)
        if not depth_factor > 0:
            raise ValueError(f"depth_factor must be > 0, got {depth_factor}")
        self.depth_factor = float(depth_factor)
        self.distortion = None if distortion is None else np.asarray(distortion, float)
        self.core = VisualOdometry(self.camera, self.config)

    def measure(self, rgb: np.ndarray, depth: np.ndarray, stamp: float) -> MeasuredFrame:
        """Features of the colour image and their depths (safe on another thread)."""
        if depth.shape[:2] != rgb.shape[:2]:
            raise ValueError(f"depth {depth.shape[:2]} and colour {rgb.shape[:2]} images must "
                             "have the same size (depth aligned to colour)")
        t0 = time.perf_counter()
        feats = _extract(self.extractor, rgb)
        t1 = time.perf_counter()
        meas = rgbd_measurement(feats, depth_in_metres(depth, self.depth_factor), self.camera,
                                self.config.depth, stamp, distortion=self.distortion)
        t2 = time.perf_counter()
        return MeasuredFrame(meas, {"extract": 1000.0 * (t1 - t0), "depth": 1000.0 * (t2 - t1)})

    def close(self) -> None:
        """Nothing to stop (the same interface as ``StereoOdometry``)."""
