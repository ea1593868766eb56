"""The ``visual_odometry`` node's parameters, declared once as a ``Config``.

Why a config (no rclpy here): the node declares its parameters from these keys and defaults,
``param_files.odometry_params_yaml`` writes ``config/odometry.yaml`` from the same keys and
descriptions, and the values a node starts with are cast and checked by the same rules (and
messages naming the parameter) as every other setting of the package. All of them are read at
startup (no ``runtime_keys``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from ..config import Config, KeyInfo
from ..conventions import DEFAULT_MAX_INPUT_PIXELS, DEFAULT_METHOD, PRECISIONS, ConfigError

__all__ = ["MODES", "OdometryNodeConfig"]

#: ``mode`` values: which pair of images the node subscribes to.
MODES = ("stereo", "rgbd")


class OdometryNodeConfig(Config):
    """Startup parameters of ``visual_odometry`` (the order is that of ``config/odometry.yaml``).
    The odometry core's own settings are ``odometry.config.OdometryConfig``."""

    owner: ClassVar[str] = "visual_odometry"
    key_info: ClassVar[Mapping[str, KeyInfo]] = {
        "mode": KeyInfo("stereo: left/image_rect + right/image_rect (+ both camera_info, right P "
                        "holds Tx = -fx*B) | rgbd: rgb/image + depth/image + rgb/camera_info",
                        choices=MODES),
        "method": KeyInfo("feature method; auto = the hardware's choice (XFeat on a CPU, ALIKED "
                          "with CUDA)"),
        "weights": KeyInfo("empty = the method's default weights"),
        "device": KeyInfo("auto | cpu | cuda | cuda:N"),
        "precision": KeyInfo("auto | fp32 | fp16 | bf16", choices=PRECISIONS),
        "max_keypoints": KeyInfo("per image (0 = the method's node default); 2000: see "
                                 "docs/odometry.md"),
        "sync_slop": KeyInfo("seconds two images may differ to form a pair"),
        "queue_size": KeyInfo("pairs waiting for the worker"),
        "process_every_frame": KeyInfo("true: queue every pair (replay); false: latest pair "
                                       "only (live)"),
        "reliable_input": KeyInfo("reliable image subscriptions (replay from a bag); live "
                                  "cameras publish best effort"),
        "input_depth": KeyInfo("input KEEP_LAST depth"),
        "output_depth": KeyInfo("~/odometry, ~/path, ~/features, ~/matches, ~/overlay: "
                                "reliable, KEEP_LAST depth"),
        "odom_frame": KeyInfo("header.frame_id of ~/odometry and ~/path; TF parent"),
        "child_frame": KeyInfo("child_frame_id; empty = the image's frame_id"),
        "publish_tf": KeyInfo("broadcast odom -> camera (needs tf2_ros, a ROS 2 install)"),
        "publish_features": KeyInfo("also ~/features, ~/matches, ~/overlay of the left/colour "
                                    "image (built only while subscribed)"),
        "depth_factor": KeyInfo("integer depth images: units per metre (16UC1 millimetres: "
                                "1000)"),
        "max_input_pixels": KeyInfo("larger images are rejected as bad input"),
    }

    mode: str = "stereo"
    method: str = DEFAULT_METHOD
    weights: str = ""
    device: str = "auto"
    precision: str = "auto"
    max_keypoints: int = 2000
    sync_slop: float = 0.02
    queue_size: int = 4
    process_every_frame: bool = False
    reliable_input: bool = False
    input_depth: int = 5
    output_depth: int = 100
    odom_frame: str = "odom"
    child_frame: str = ""
    publish_tf: bool = True
    publish_features: bool = True
    depth_factor: float = 1000.0
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        """The values the node cannot start with, each named."""
        super().validate(conf)
        for key in ("mode", "precision"):
            choices = cls.key_info[key].choices
            if conf[key] not in choices:
                raise ConfigError(f"{key} must be one of {', '.join(choices)}, got "
                                  f"'{conf[key]}'")
        if conf["sync_slop"] < 0:
            raise ConfigError(f"sync_slop must be >= 0 s, got {conf['sync_slop']}")
        for key in ("queue_size", "input_depth", "output_depth", "max_input_pixels"):
            if conf[key] < 1:
                raise ConfigError(f"{key} must be >= 1, got {conf[key]}")
        if not conf["depth_factor"] > 0:
            raise ConfigError(f"depth_factor must be > 0, got {conf['depth_factor']}")
