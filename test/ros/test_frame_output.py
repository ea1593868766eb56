"""``FrameOutputs.overlay_job``: the node's output stage draws a frame's overlay after the
publish stage has moved on to later frames, so the job must hold that frame's state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy")

from std_msgs.msg import Header  # noqa: E402

from local_features_ros.frontend import FrameResult  # noqa: E402
from local_features_ros.ros.frame_output import FrameOutputs  # noqa: E402
from local_features_ros.types import Features, MatchResult  # noqa: E402


class _Publisher:
    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.sent: list = []

    def get_subscription_count(self) -> int:
        return self.subscribers

    def publish(self, msg) -> None:
        self.sent.append(msg)


class _Node:
    """What ``FrameOutputs`` needs of a node: publishers (here recorders; only ~/overlay has a
    subscriber unless told otherwise)."""

    def __init__(self, overlay_subscribers: int = 1) -> None:
        self.pubs: dict[str, _Publisher] = {}
        self.overlay_subscribers = overlay_subscribers

    def create_publisher(self, msg_type, topic, qos, qos_overriding_options=None):
        pub = _Publisher(self.overlay_subscribers if topic == "~/overlay" else 0)
        self.pubs[topic] = pub
        return pub


def _frame(value: int, kpts: np.ndarray, stamp: int):
    image = np.full((120, 160, 3), value, np.uint8)
    feats = Features(keypoints=torch.as_tensor(kpts, dtype=torch.float32),
                     scores=torch.linspace(0, 1, len(kpts)),
                     descriptors=torch.zeros(len(kpts), 8), image_size=(160, 120))
    header = Header(frame_id="cam")
    header.stamp.sec = stamp
    return header, image, feats


def test_overlay_job_draws_its_own_frame_after_later_frames_moved_on():
    node = _Node()
    out = FrameOutputs(node, 5, False, "xfeat", "_current")
    k1 = np.array([[40.0, 60.0], [120.0, 90.0]])
    k2 = k1 + [8.0, 0.0]
    h1, img1, f1 = _frame(0, k1, 1)
    h2, img2, f2 = _frame(200, k2, 2)
    r1 = FrameResult(f1, np.arange(2), None, None, None, 1.0, 0)
    match = MatchResult(matches=np.array([[0, 0], [1, 1]]), distances=np.zeros(2, np.float32),
                        inliers=np.array([True, False]))
    r2 = FrameResult(f2, np.arange(2), match, None, 1.0, 2.0, 1)
    job1 = out.overlay_job(h1, img1, f1, r1, True, 0.0)
    job2 = out.overlay_job(h2, img2, f2, r2, True, 0.0)
    job2()  # run out of order: each job still draws its own frame
    job1()
    sent = node.pubs["~/overlay"].sent
    assert [m.header.stamp.sec for m in sent] == [2, 1]
    ov2 = np.frombuffer(bytes(sent[0].data), np.uint8).reshape(120, 160, 3)
    ov1 = np.frombuffer(bytes(sent[1].data), np.uint8).reshape(120, 160, 3)
    # frame 1: its dark image, no track line (no previous frame); frame 2: its bright image with
    # the inlier's track from frame 1's keypoint (green) and none for the outlier
    assert np.median(ov1) == 0 and np.median(ov2) == 200
    green1 = (ov1[..., 1] > 150) & (ov1[..., 0] < 100) & (ov1[..., 2] < 100)
    green2 = (ov2[..., 1] > 150) & (ov2[..., 0] < 100) & (ov2[..., 2] < 100)
    assert green2[60, 41:47].all() and not green1.any()
    assert not green2[88:93, 122:126].any()


def test_no_overlay_job_without_a_subscriber_or_when_off():
    """Nobody subscribes (or ``publish_overlay`` is off): no job, but the frame still becomes
    the previous one for the next frame's matches."""
    node = _Node(overlay_subscribers=0)
    out = FrameOutputs(node, 5, False, "xfeat", "_current")
    h, img, f = _frame(0, np.array([[10.0, 10.0]]), 1)
    r = FrameResult(f, np.arange(1), None, None, None, 1.0, 0)
    assert out.overlay_job(h, img, f, r, True, 0.0) is None
    node.pubs["~/overlay"].subscribers = 1
    assert out.overlay_job(h, img, f, r, False, 0.0) is None
    assert out._prev_kpts is not None and out._prev_header is h
