"""What ``visual_odometry`` publishes for each frame: ``nav_msgs/Odometry``, ``nav_msgs/Path``
and (with a ROS 2 install) the TF ``odom -> camera``; and, through ``feature_extractor``'s own
builders (``ros/frame_output.py``), the left/colour image's ``~/features``, the frame-to-frame
``~/matches`` and the ``~/overlay`` (``OdometryFeatureOutputs``).

Conventions (REP 103/105 as far as a camera-only odometry can follow them): the pose is that of
the left/colour camera's optical frame in ``odom_frame`` (= the first camera's pose, so the first
message is the identity); ``child_frame_id`` is ``child_frame`` or the image's ``frame_id``. The
pose covariance comes from the bundle adjustment's marginal of the newest keyframe (reordered to
ROS's [x y z rx ry rz] and rotated into ``odom_frame``); frames between keyframes carry the last
one, and before the first adjustment the covariance is unknown (``-1`` in its first element, as
REP 105 tools expect). The twist is the finite difference of consecutive poses, in the child frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from scipy.spatial.transform import Rotation

from ..frontend import FrameResult
from ..tracking import TrackManager
from ..types import Features, MatchResult
from .frame_output import FrameOutputs
from .messages import stamp_to_sec

__all__ = ["OdometryPublisher", "OdometryFeatureOutputs", "landmark_matches",
           "pose_covariance_ros", "odometry_msg"]

#: Poses kept in ``~/path`` (a long drive at 10 Hz: 3 hours).
PATH_LIMIT = 100_000


def pose_covariance_ros(cov_tangent: np.ndarray, R_world_cam: np.ndarray) -> np.ndarray:
    """gtsam Pose3 marginal (6x6, [rotation, translation] in the camera frame) -> ROS pose
    covariance (6x6, [translation, rotation] in the world frame)."""
    c = np.asarray(cov_tangent, np.float64).reshape(6, 6)
    order = [3, 4, 5, 0, 1, 2]
    c = c[np.ix_(order, order)]
    R = np.asarray(R_world_cam, np.float64)
    A = np.zeros((6, 6))
    A[:3, :3] = R
    A[3:, 3:] = R
    return A @ c @ A.T


def odometry_msg(header: Any, child: str, T: np.ndarray, covariance: np.ndarray | None,
                 twist: tuple[np.ndarray, np.ndarray] | None) -> Odometry:
    msg = Odometry()
    msg.header = header
    msg.child_frame_id = child
    p = msg.pose.pose
    p.position.x, p.position.y, p.position.z = (float(v) for v in T[:3, 3])
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in q)
    cov = np.full(36, 0.0)
    if covariance is None:
        cov[0] = -1.0
    else:
        cov[:] = np.asarray(covariance, np.float64).reshape(36)
    msg.pose.covariance = [float(v) for v in cov]
    tw = np.zeros(36)
    tw[0] = -1.0  # no twist covariance from a finite difference
    msg.twist.covariance = [float(v) for v in tw]
    if twist is not None:
        v, w = twist
        msg.twist.twist.linear.x, msg.twist.twist.linear.y, msg.twist.twist.linear.z = (
            float(x) for x in v)
        msg.twist.twist.angular.x, msg.twist.twist.angular.y, msg.twist.twist.angular.z = (
            float(x) for x in w)
    return msg


class OdometryPublisher:
    """``~/odometry``, ``~/path`` and the TF broadcaster of ``node``."""

    def __init__(self, node: Any, odom_frame: str, child_frame: str, publish_tf: bool,
                 qos: Any) -> None:
        self.odom_frame = odom_frame
        self.child_frame = child_frame
        self.pub_odom = node.create_publisher(Odometry, "~/odometry", qos)
        self.pub_path = node.create_publisher(Path, "~/path", qos)
        self.path = Path()
        self.path.header.frame_id = odom_frame
        self._prev: tuple[float, np.ndarray] | None = None
        self._cov: np.ndarray | None = None
        self._tf = None
        if publish_tf:
            try:
                from tf2_ros import TransformBroadcaster  # a ROS 2 install; not on PyPI

                self._tf = TransformBroadcaster(node)
            except ImportError:
                self._tf = None

    @property
    def tf_enabled(self) -> bool:
        return self._tf is not None

    def publish(self, image_header: Any, res: Any) -> None:
        T = np.asarray(res.T_world_cam, np.float64)
        stamp = stamp_to_sec(image_header.stamp)
        child = self.child_frame or image_header.frame_id or "camera"
        if res.covariance is not None:
            self._cov = pose_covariance_ros(res.covariance, T[:3, :3])
        twist = None
        if self._prev is not None and stamp > self._prev[0]:
            dt = stamp - self._prev[0]
            T_rel = np.linalg.inv(self._prev[1]) @ T  # previous camera -> current, child frame
            twist = (T_rel[:3, 3] / dt, Rotation.from_matrix(T_rel[:3, :3]).as_rotvec() / dt)
        self._prev = (stamp, T)
        header = type(image_header)()
        header.stamp = image_header.stamp
        header.frame_id = self.odom_frame
        msg = odometry_msg(header, child, T, self._cov, twist)
        self.pub_odom.publish(msg)
        pose = PoseStamped()
        pose.header = header
        pose.pose = msg.pose.pose
        self.path.header.stamp = image_header.stamp
        self.path.poses.append(pose)
        if len(self.path.poses) > PATH_LIMIT:
            del self.path.poses[: len(self.path.poses) - PATH_LIMIT]
        self.pub_path.publish(self.path)
        if self._tf is not None:
            tf = TransformStamped()
            tf.header = header
            tf.child_frame_id = child
            tf.transform.translation.x, tf.transform.translation.y, \
                tf.transform.translation.z = (float(v) for v in T[:3, 3])
            o = msg.pose.pose.orientation
            tf.transform.rotation.x, tf.transform.rotation.y = o.x, o.y
            tf.transform.rotation.z, tf.transform.rotation.w = o.z, o.w
            self._tf.sendTransform(tf)


def landmark_matches(prev_ids: np.ndarray | None, cur_ids: np.ndarray, prev_desc: Any,
                     cur_desc: Any) -> MatchResult | None:
    """Frame-to-frame matches of the odometry: keypoints of the previous and the current frame
    that observe the same landmark (``-1`` = none), with their descriptor distance. All are
    inliers - each side passed PnP RANSAC (or is a keyframe's own landmark). None without a
    previous frame."""
    if prev_ids is None:
        return None
    prev_ids = np.asarray(prev_ids, np.int64).reshape(-1)
    cur_ids = np.asarray(cur_ids, np.int64).reshape(-1)
    prev_idx = np.flatnonzero(prev_ids >= 0)
    cur_idx = np.flatnonzero(cur_ids >= 0)
    _, a, b = np.intersect1d(prev_ids[prev_idx], cur_ids[cur_idx], assume_unique=True,
                             return_indices=True)
    m = np.stack([prev_idx[a], cur_idx[b]], 1).astype(np.int64)
    order = np.argsort(m[:, 1], kind="stable")
    m = m[order]
    dist = np.zeros(len(m), np.float32)
    if len(m):
        d0 = np.asarray(prev_desc, np.float32)[m[:, 0]]
        d1 = np.asarray(cur_desc, np.float32)[m[:, 1]]
        dist = np.linalg.norm(d0 - d1, axis=1).astype(np.float32)
    return MatchResult(m, dist, np.ones(len(m), bool))


class OdometryFeatureOutputs:
    """``~/features``, ``~/matches`` and ``~/overlay`` of the odometry's left/colour image, in
    the layouts ``feature_extractor`` publishes, so the same consumers (rviz, recorders, a
    back-end) read either node. Track ids persist while a keypoint keeps observing the same
    landmark from frame to frame (``tracking.TrackManager`` fed with the landmark matches).
    Clouds are built only while someone subscribes to one of them, the overlay only while
    someone subscribes to it; the previous frame is always remembered, so a late subscriber's
    first matches are right."""

    def __init__(self, node: Any, depth: int, method: str) -> None:
        self.frames = FrameOutputs(node, depth, loops=False, method=method,
                                   child_suffix="_current", matcher="odometry")
        self.tracks = TrackManager()
        self._prev_ids: np.ndarray | None = None
        self._prev_desc: Any = None
        self._prev_stamp: float | None = None

    def reset(self) -> None:
        """A new trajectory (the odometry restarted): no matches to the frame before."""
        self.tracks.reset()
        self._prev_ids = self._prev_desc = self._prev_stamp = None

    def publish(self, header: Any, image: np.ndarray, feats: Features,
                landmark_ids: np.ndarray, frame_index: int, t0: float) -> int:
        """One processed frame (``t0``: ``perf_counter`` when its processing began, for the
        overlay's latency); returns the number of matches to the previous frame."""
        stamp = stamp_to_sec(header.stamp)
        desc = feats.descriptors.detach().cpu().numpy()
        match = landmark_matches(self._prev_ids, landmark_ids, self._prev_desc, desc)
        track_ids = self.tracks.update(len(feats), None if match is None else match.matches)
        result = FrameResult(features=feats, track_ids=track_ids, matches=match, motion=None,
                             prev_stamp=self._prev_stamp, stamp=stamp, frame_index=frame_index)
        f = self.frames
        if f.features.get_subscription_count() or f.matches.get_subscription_count():
            f.publish(header, feats, result, None)
        f.finish(header, image, feats, result, True, t0)
        self._prev_ids = np.asarray(landmark_ids, np.int64).copy()
        self._prev_desc, self._prev_stamp = desc, stamp
        return 0 if match is None else len(match)

    def publishers(self) -> list[Any]:
        return self.frames.publishers()
