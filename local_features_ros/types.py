"""Data contracts passed between layers (written down once, here).

Conventions (every module follows them):
- Keypoints are ``(N, 2)`` float32 ``[x, y]`` in pixels of the *original* input image, OpenCV
  convention: the centre of the top-left pixel is ``(0, 0)``.
- ``scores`` ``(N,)``: higher is better. ``scales`` ``(N,)``: keypoint scale relative to the
  network's native scale (1.0 when a method has no scale). ``orientations`` ``(N,)`` radians
  (0 when a method has no orientation).
- ``descriptors`` ``(N, D)`` float32, L2-normalised for the learned methods (ORB is the exception:
  bits unpacked to 0/1 floats, matched with Hamming = squared L2 on those bits).
- Matches ``(M, 2)`` int64 index pairs ``[i0, i1]`` into the two feature sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Features:
    """Sparse local features of one image, in original-image pixels."""

    keypoints: torch.Tensor  # (N, 2) float32 [x, y]
    scores: torch.Tensor  # (N,)
    descriptors: torch.Tensor  # (N, D)
    scales: torch.Tensor | None = None  # (N,)
    orientations: torch.Tensor | None = None  # (N,) radians
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the original image
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.keypoints.shape[0]
        if self.keypoints.ndim != 2 or self.keypoints.shape[1] != 2:
            raise ValueError(f"keypoints must be (N, 2), got {tuple(self.keypoints.shape)}")
        if self.scales is None:
            self.scales = torch.ones(n, dtype=torch.float32, device=self.keypoints.device)
        if self.orientations is None:
            self.orientations = torch.zeros(n, dtype=torch.float32, device=self.keypoints.device)
        for name in ("scores", "scales", "orientations"):
            t = getattr(self, name)
            if t.shape != (n,):
                raise ValueError(f"{name} must be ({n},), got {tuple(t.shape)}")
        if self.descriptors.ndim != 2 or self.descriptors.shape[0] != n:
            raise ValueError(f"descriptors must be ({n}, D), got {tuple(self.descriptors.shape)}")

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def descriptor_dim(self) -> int:
        return int(self.descriptors.shape[1])

    def to(self, device: torch.device | str) -> "Features":
        return Features(
            keypoints=self.keypoints.to(device),
            scores=self.scores.to(device),
            descriptors=self.descriptors.to(device),
            scales=self.scales.to(device),
            orientations=self.orientations.to(device),
            image_size=self.image_size,
            extra=dict(self.extra),
        )

    def float(self) -> "Features":
        """fp32 copy (reduced-precision runs are published as float32)."""
        return Features(
            keypoints=self.keypoints.float(),
            scores=self.scores.float(),
            descriptors=self.descriptors.float(),
            scales=self.scales.float(),
            orientations=self.orientations.float(),
            image_size=self.image_size,
            extra=dict(self.extra),
        )

    def select(self, index: torch.Tensor) -> "Features":
        """Subset by an index or boolean mask (e.g. top-k)."""
        return Features(
            keypoints=self.keypoints[index],
            scores=self.scores[index],
            descriptors=self.descriptors[index],
            scales=self.scales[index],
            orientations=self.orientations[index],
            image_size=self.image_size,
            extra=dict(self.extra),
        )

    def numpy(self) -> dict[str, np.ndarray]:
        """The ``extract`` file contract (docs/ARCHITECTURE.md#contracts): float32 arrays +
        image_size [w, h]."""
        f = self.float().to("cpu")
        return {
            "keypoints": f.keypoints.numpy().astype(np.float32),
            "scores": f.scores.numpy().astype(np.float32),
            "scales": f.scales.numpy().astype(np.float32),
            "orientations": f.orientations.numpy().astype(np.float32),
            "descriptors": f.descriptors.numpy().astype(np.float32),
            "image_size": np.asarray(self.image_size, dtype=np.int64),
        }

    @classmethod
    def from_numpy(cls, data: dict) -> "Features":
        w, h = (int(v) for v in np.asarray(data["image_size"]).reshape(-1)[:2])
        return cls(
            keypoints=torch.from_numpy(np.asarray(data["keypoints"], np.float32).reshape(-1, 2)),
            scores=torch.from_numpy(np.asarray(data["scores"], np.float32).reshape(-1)),
            descriptors=torch.from_numpy(
                np.asarray(data["descriptors"], np.float32).reshape(len(data["keypoints"]), -1)
            ),
            scales=torch.from_numpy(np.asarray(data["scales"], np.float32).reshape(-1)),
            orientations=torch.from_numpy(np.asarray(data["orientations"], np.float32).reshape(-1)),
            image_size=(w, h),
        )

    @classmethod
    def empty(cls, descriptor_dim: int, image_size: tuple[int, int] = (0, 0),
              device: torch.device | str = "cpu") -> "Features":
        z = torch.zeros(0, dtype=torch.float32, device=device)
        return cls(
            keypoints=torch.zeros(0, 2, device=device),
            scores=z,
            descriptors=torch.zeros(0, descriptor_dim, device=device),
            scales=z.clone(),
            orientations=z.clone(),
            image_size=image_size,
        )


@dataclass
class MatchResult:
    """Correspondences between two feature sets (and their verification)."""

    matches: np.ndarray  # (M, 2) int64 [i0, i1]
    distances: np.ndarray  # (M,) float32 descriptor distance
    inliers: np.ndarray  # (M,) bool, all True until verified
    model: np.ndarray | None = None  # 3x3 H / F / E of the verification, if any
    model_type: str = "none"  # none | homography | fundamental | essential

    def __len__(self) -> int:
        return int(self.matches.shape[0])

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())

    @classmethod
    def empty(cls) -> "MatchResult":
        return cls(np.zeros((0, 2), np.int64), np.zeros(0, np.float32), np.zeros(0, bool))


@dataclass
class RelativeMotion:
    """Rotation + unit translation of camera 1 w.r.t. camera 0 (x1 = R x0 + t)."""

    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,) unit norm (monocular: scale unknown)
    num_inliers: int
