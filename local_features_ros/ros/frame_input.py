"""The node's inputs as numpy: image messages decoded, camera_info turned into intrinsics.

``decode_image`` accepts ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` and raises
``ImageDecodeError`` (with a ``reason`` for ``/diagnostics``) on bad input; ``CameraModel`` is what
a ``CameraInfo`` tells the frontend, and ``intrinsics_for`` refuses it for an image of another size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage

from ..image.encodings import DecodeLimits
from .messages import camera_info_to_K, compressed_msg_to_numpy, image_msg_to_numpy


def decode_image(msg: Any, max_pixels: int) -> np.ndarray:
    """``Image`` / ``CompressedImage`` -> numpy image (images over ``max_pixels`` refused)."""
    limits = DecodeLimits(max_pixels=int(max_pixels))
    if isinstance(msg, CompressedImage):
        return compressed_msg_to_numpy(msg, limits)
    return image_msg_to_numpy(msg, limits)


@dataclasses.dataclass
class CameraModel:
    K: np.ndarray
    width: int
    height: int

    @classmethod
    def from_msg(cls, msg: CameraInfo) -> "CameraModel | None":
        """None when the message has no usable K."""
        K = camera_info_to_K(msg)
        return None if K is None else cls(K, int(msg.width), int(msg.height))


def intrinsics_for(camera: CameraModel | None, width: int, height: int
                   ) -> tuple[np.ndarray | None, str | None]:
    """(K for a ``width`` x ``height`` image or None, why K is not used or None). A camera_info
    of size 0x0 fits any image."""
    if camera is None:
        return None, None
    if (camera.width, camera.height) in ((width, height), (0, 0)):
        return camera.K, None
    return None, (f"camera_info is {camera.width}x{camera.height} but the image is "
                  f"{width}x{height}; matching without K")
