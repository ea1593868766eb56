"""The node's per-frame outputs: one ``FrameOutputs`` owns the publishers and the previous frame.

Per processed frame (layouts in ``ros/messages.py``): ``~/features``; ``~/matches`` (empty, with no
previous stamp, on the first frame of a sequence); ``~/relative_motion`` when the frame had K and
the frontend gave a motion: ``header`` = the current image header with ``frame_id`` replaced by the
previous processed image's frame_id, ``child_frame_id`` = current frame_id + ``child_suffix``
(``relative_motion.child_frame_suffix``, default ``_current``), the transform ``T_prev_current``
(it maps points from the current camera into the previous one); ``~/overlay`` (bgr8) only when
asked for and someone subscribes. ``~/loop_candidates`` (only with place recognition) is
published by ``publish_loops``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import Image, PointCloud2

from ..overlay import OverlayInfo, draw_overlay
from ..types import Features, MatchResult
from .messages import (features_to_pointcloud2, loop_candidates_to_pointcloud2,
                       matches_to_pointcloud2, motion_to_transform, numpy_to_image_msg)
from .qos import output_qos, overridable

if TYPE_CHECKING:
    from ..frontend import FrameResult


@dataclass
class FrameCounts:
    """What ``/diagnostics`` counts for one published frame."""

    matches: int
    inliers: int


class FrameOutputs:
    """Publishers of ``node`` (reliable, ``depth``; ``loops``: also ``~/loop_candidates``);
    ``method`` names the overlay, ``child_suffix`` the motion's child frame."""

    def __init__(self, node: Any, depth: int, loops: bool, method: str, child_suffix: str,
                 matcher: str = "") -> None:
        def make(msg_type: Any, topic: str) -> Any:
            return node.create_publisher(msg_type, topic, output_qos(depth),
                                         qos_overriding_options=overridable())

        self.method = method
        self.matcher = matcher  # named in the overlay header beside the method
        self.child_suffix = child_suffix
        self.features = make(PointCloud2, "~/features")
        self.matches = make(PointCloud2, "~/matches")
        self.overlay = make(Image, "~/overlay")
        self.motion = make(TransformStamped, "~/relative_motion")
        self.loops = make(PointCloud2, "~/loop_candidates") if loops else None
        self._prev_header: Any = None
        self._prev_kpts: np.ndarray | None = None

    def publishers(self) -> list[Any]:
        """Every output publisher (the node waits for their acknowledgements at shutdown)."""
        return [p for p in (self.features, self.matches, self.overlay, self.motion, self.loops)
                if p is not None]

    def publish(self, header: Any, feats: Features, result: FrameResult, K: np.ndarray | None
                ) -> FrameCounts:
        """``~/features``, ``~/matches`` and ``~/relative_motion`` of one frame; call ``finish``
        after it (the overlay, and this frame becomes the previous one)."""
        track_ids = np.asarray(result.track_ids, np.int64).reshape(-1)
        kpts = feats.keypoints.numpy().reshape(-1, 2)
        self.features.publish(features_to_pointcloud2(header, feats, track_ids))
        match = result.matches
        prev_header = self._prev_header
        if match is not None and prev_header is not None and self._prev_kpts is not None:
            self.matches.publish(matches_to_pointcloud2(
                header, prev_header.stamp, self._prev_kpts, kpts, match, track_ids))
        else:
            self.matches.publish(matches_to_pointcloud2(
                header, None, np.zeros((0, 2)), kpts, MatchResult.empty(), track_ids))
        if result.motion is not None and K is not None and prev_header is not None:
            mheader = copy.copy(header)
            mheader.frame_id = prev_header.frame_id
            self.motion.publish(motion_to_transform(mheader, header.frame_id + self.child_suffix,
                                                    result.motion))
        return FrameCounts(0 if match is None else len(match),
                           0 if match is None else int(match.num_inliers))

    def finish(self, header: Any, image: np.ndarray, feats: Features, result: FrameResult,
               overlay: bool, t0: float) -> None:
        """``~/overlay`` when ``overlay`` and someone subscribes (``t0``: ``perf_counter`` when
        the frame's processing began, for the timing line); remember this frame."""
        job = self.overlay_job(header, image, feats, result, overlay, t0)
        if job is not None:
            job()

    def overlay_job(self, header: Any, image: np.ndarray, feats: Features, result: FrameResult,
                    overlay: bool, t0: float) -> Callable[[], None] | None:
        """As ``finish``, but the drawing and publishing are returned as a job for another
        thread (None: no overlay this frame); this frame becomes the previous one now.

        Why: drawing a 640x480 overlay takes ~5 ms, which a node that draws it in the thread
        that matches frames adds to every frame while rviz shows it. The job holds everything
        it needs (this frame's image, keypoints and matches, the previous keypoints, the
        latency so far), so later frames do not change it."""
        kpts = feats.keypoints.numpy().reshape(-1, 2)
        prev_kpts = self._prev_kpts
        self._prev_header, self._prev_kpts = header, kpts
        if not overlay or self.overlay.get_subscription_count() == 0:
            return None
        match = result.matches
        scores = feats.scores.numpy()
        info = OverlayInfo(self.method, (time.perf_counter() - t0) * 1e3,
                           len(match) if match is not None else None,
                           int(match.num_inliers) if match is not None else None,
                           matcher=self.matcher)

        def job() -> None:
            canvas = draw_overlay(image, kpts, scores, prev_kpts,
                                  None if match is None else match.matches,
                                  None if match is None else match.inliers, info)
            self.overlay.publish(numpy_to_image_msg(canvas, "bgr8", header))

        return job

    def publish_loops(self, header: Any, candidates: list, stamps: dict) -> None:
        self.loops.publish(loop_candidates_to_pointcloud2(header, candidates, stamps))
