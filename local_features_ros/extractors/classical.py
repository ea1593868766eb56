"""Classical baselines through OpenCV: ORB, SIFT and (evaluation only) AKAZE, behind the same
``Extractor`` interface.

Why here: evaluation tables and the node compare learned methods against these, so they must
produce the same ``Features`` contract (original pixels, radians, float32 descriptors).

Conventions:
- Input: the base class prepares a gray ``[0, 1]`` tensor (``resize_max_edge`` included); it is
  turned back into 8-bit (exact for uint8 input), since OpenCV's ORB and SIFT need ``CV_8U``.
- Keypoints: OpenCV coordinates already put the centre of the top-left pixel at (0, 0).
- ``scales``: ``KeyPoint.size`` divided by the size at the native scale (ORB: ``patch_size``;
  SIFT: ``2 * sigma`` = 3.2, the size OpenCV gives a keypoint at the base scale).
- ``orientations``: ``KeyPoint.angle`` in radians (OpenCV measures it in image coordinates, y
  down, so a positive angle turns clockwise on screen).
- ``scores``: ``KeyPoint.response`` (ORB: Harris or FAST score, SIFT: DoG contrast).
- ORB descriptors: the 256 bits unpacked to float 0/1, so squared L2 distance == Hamming distance.
- SIFT descriptors: L2-normalised 128-D; ``root_sift`` (Arandjelovic & Zisserman 2012) applies
  L1 normalisation + square root first (the result is already unit L2 norm).
- ``detection_threshold``: ORB -> FAST threshold (intensity levels, OpenCV default 20);
  SIFT -> ``contrastThreshold`` (OpenCV default 0.04).
- ``nms_radius`` is unused (both detectors do their own scale-space/FAST NMS);
  ``remove_borders`` drops keypoints closer than that many pixels to the image border (network
  pixels, like the learned methods).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Mapping

import cv2
import numpy as np
import torch

from ..types import Features
from .base import SHARED_DEFAULTS, ConfigError, Extractor

logger = logging.getLogger(__name__)

#: nfeatures passed to ORB when max_keypoints = -1 (ORB needs a finite budget per level).
ORB_UNLIMITED = 100_000
#: OpenCV SIFT's keypoint size at the base scale: 2 * sigma with sigma = 1.6.
SIFT_BASE_SIZE = 2.0 * 1.6
#: OpenCV AKAZE's keypoint size at the finest level: derivative factor 1.5 x base sigma 1.6.
AKAZE_BASE_SIZE = 1.5 * 1.6


class _OpenCVExtractor(Extractor):
    """Shared plumbing: tensor -> uint8, detector cache, OpenCV keypoints -> Features."""

    is_learned: ClassVar[bool] = False
    input_channels: ClassVar[int] = 1

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **conf: Any):
        super().__init__(device=device, precision=precision, **conf)
        self._cv: Any = None
        self._cv_key: tuple | None = None

    def _create(self) -> Any:
        raise NotImplementedError

    def _descriptors(self, raw: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reference_size(self) -> float:
        """``KeyPoint.size`` of a keypoint at the native scale (scale 1)."""
        raise NotImplementedError

    def detector(self) -> Any:
        """OpenCV object for the current config (rebuilt after a runtime config change)."""
        key = tuple(sorted((k, str(v)) for k, v in self.conf.items()))
        if key != self._cv_key:
            self._cv = self._create()
            self._cv_key = key
        return self._cv

    def _extract(self, image: torch.Tensor) -> Features:
        gray = image[0, 0].detach().float().cpu().numpy()
        img8 = np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
        h, w = img8.shape
        kps, raw = self.detector().detectAndCompute(img8, None)
        dev = image.device
        if raw is None or len(kps) == 0:
            return Features.empty(self.descriptor_dim, (w, h), device=dev)
        xy = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
        b = int(self.conf["remove_borders"])
        keep = ((xy[:, 0] >= b) & (xy[:, 0] <= w - 1 - b) & (xy[:, 1] >= b) & (xy[:, 1] <= h - 1 - b))
        if not keep.any():
            return Features.empty(self.descriptor_dim, (w, h), device=dev)
        idx = np.nonzero(keep)[0]
        sel = [kps[i] for i in idx]
        desc = self._descriptors(raw[idx])

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(dev)

        return Features(
            keypoints=t(xy[idx]),
            scores=t(np.array([k.response for k in sel])),
            descriptors=t(desc),
            scales=t(np.array([k.size for k in sel]) / self.reference_size()),
            orientations=t(np.deg2rad(np.array([k.angle for k in sel]))),
            image_size=(w, h),
        )


class ORB(_OpenCVExtractor):
    """OpenCV ORB (oriented FAST + rotated BRIEF), 256-bit descriptors as 0/1 floats."""

    name: ClassVar[str] = "orb"
    summary: ClassVar[str] = ("ORB (OpenCV): oriented FAST + rotated BRIEF; 256 bits published as "
                              "0/1 floats.")
    weights_note: ClassVar[str] = "unused (classical method)"
    licence: ClassVar[str] = "OpenCV: Apache-2.0."
    default_conf: ClassVar[dict[str, Any]] = {
        "max_keypoints": 1000,
        "detection_threshold": 20.0,  # FAST threshold (intensity levels)
        "scale_factor": 1.2,
        "n_levels": 8,
        "patch_size": 31,
        "score_type": "harris",
    }
    runtime_keys: ClassVar[frozenset[str]] = frozenset(SHARED_DEFAULTS) | {"scale_factor", "n_levels"}

    def reference_size(self) -> float:
        return float(self.conf["patch_size"])

    @property
    def descriptor_dim(self) -> int:
        return 256

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if not 0 <= float(conf["detection_threshold"]) <= 255:
            raise ConfigError("ORB detection_threshold is the FAST threshold, in [0, 255]")
        if float(conf["scale_factor"]) <= 1.0:
            raise ConfigError("scale_factor must be > 1")
        if int(conf["n_levels"]) < 1 or int(conf["patch_size"]) < 3:
            raise ConfigError("n_levels must be >= 1 and patch_size >= 3")
        if conf["score_type"] not in ("harris", "fast"):
            raise ConfigError("score_type must be 'harris' or 'fast'")

    def _create(self) -> Any:
        k = int(self.conf["max_keypoints"])
        patch = int(self.conf["patch_size"])
        return cv2.ORB_create(
            nfeatures=k if k > 0 else ORB_UNLIMITED,
            scaleFactor=float(self.conf["scale_factor"]),
            nlevels=int(self.conf["n_levels"]),
            edgeThreshold=patch,
            patchSize=patch,
            fastThreshold=int(round(float(self.conf["detection_threshold"]))),
            scoreType=cv2.ORB_HARRIS_SCORE if self.conf["score_type"] == "harris" else cv2.ORB_FAST_SCORE,
        )

    def _descriptors(self, raw: np.ndarray) -> np.ndarray:
        return np.unpackbits(raw.astype(np.uint8), axis=1).astype(np.float32)


class SIFT(_OpenCVExtractor):
    """OpenCV SIFT, L2-normalised 128-D descriptors (optionally RootSIFT)."""

    name: ClassVar[str] = "sift"
    summary: ClassVar[str] = ("SIFT (OpenCV): DoG detector, 128-D L2-normalised descriptors "
                              "(optionally RootSIFT).")
    weights_note: ClassVar[str] = "unused (classical method)"
    licence: ClassVar[str] = "OpenCV: Apache-2.0 (SIFT patent expired 2020)."
    default_conf: ClassVar[dict[str, Any]] = {
        "max_keypoints": -1,
        "detection_threshold": 0.04,  # contrastThreshold
        "edge_threshold": 10.0,
        "n_octave_layers": 3,
        "sigma": 1.6,
        "root_sift": False,
    }
    runtime_keys: ClassVar[frozenset[str]] = frozenset(SHARED_DEFAULTS) | {"edge_threshold", "root_sift"}

    @property
    def descriptor_dim(self) -> int:
        return 128

    def reference_size(self) -> float:
        return SIFT_BASE_SIZE

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if float(conf["detection_threshold"]) < 0:
            raise ConfigError("SIFT detection_threshold (contrastThreshold) must be >= 0")
        if float(conf["edge_threshold"]) <= 0 or float(conf["sigma"]) <= 0:
            raise ConfigError("edge_threshold and sigma must be > 0")
        if int(conf["n_octave_layers"]) < 1:
            raise ConfigError("n_octave_layers must be >= 1")

    def _create(self) -> Any:
        k = int(self.conf["max_keypoints"])
        return cv2.SIFT_create(
            nfeatures=max(k, 0),
            nOctaveLayers=int(self.conf["n_octave_layers"]),
            contrastThreshold=float(self.conf["detection_threshold"]),
            edgeThreshold=float(self.conf["edge_threshold"]),
            sigma=float(self.conf["sigma"]),
        )

    def _descriptors(self, raw: np.ndarray) -> np.ndarray:
        d = raw.astype(np.float32)
        if self.conf["root_sift"]:
            d = np.sqrt(d / np.maximum(d.sum(axis=1, keepdims=True), 1e-12))
        return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


class AKAZE(_OpenCVExtractor):
    """OpenCV AKAZE (nonlinear scale space, 486-bit M-LDB), an evaluation-only peer.

    Why evaluation only: it is a reference point in accuracy tables, not a method we support on a
    robot (ORB is the binary baseline of the node). Descriptors: the 61 bytes unpacked to 488 0/1
    floats (the last 2 bits are always 0), so squared L2 = Hamming as for ORB. ``max_keypoints``
    is the base class's top-k by response (AKAZE has no feature budget of its own).
    """

    name: ClassVar[str] = "akaze"
    summary: ClassVar[str] = "AKAZE (OpenCV): nonlinear scale space, binary M-LDB (evaluation only)."
    weights_note: ClassVar[str] = "unused (classical method)"
    licence: ClassVar[str] = "OpenCV: Apache-2.0."
    evaluation_only: ClassVar[bool] = True
    default_conf: ClassVar[dict[str, Any]] = {
        "detection_threshold": 0.001,  # detector response threshold (OpenCV default)
        "remove_borders": 0,
        "n_octaves": 4,
        "n_octave_layers": 4,
    }

    @property
    def descriptor_dim(self) -> int:
        return 488

    def reference_size(self) -> float:
        return AKAZE_BASE_SIZE

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if float(conf["detection_threshold"]) <= 0:
            raise ConfigError("AKAZE detection_threshold must be > 0")
        if int(conf["n_octaves"]) < 1 or int(conf["n_octave_layers"]) < 1:
            raise ConfigError("n_octaves and n_octave_layers must be >= 1")

    def _create(self) -> Any:
        return cv2.AKAZE_create(threshold=float(self.conf["detection_threshold"]),
                                nOctaves=int(self.conf["n_octaves"]),
                                nOctaveLayers=int(self.conf["n_octave_layers"]))

    def _descriptors(self, raw: np.ndarray) -> np.ndarray:
        return np.unpackbits(raw.astype(np.uint8), axis=1).astype(np.float32)
