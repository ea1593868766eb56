"""Image -> network input, with the resize bookkeeping that maps keypoints back.

Why a module of its own: every extractor resizes differently (max edge, multiples of 8, D2-Net's
edge-sum limit) but all must return keypoints in *original* pixels with the same convention
(pixel centre of the top-left pixel at (0, 0)).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class ResizeInfo:
    """Original and network sizes; ``sx = W_orig / W_net`` (same for y)."""

    orig_size: tuple[int, int]  # (W, H)
    net_size: tuple[int, int]  # (W, H)

    @property
    def scale_xy(self) -> tuple[float, float]:
        return (self.orig_size[0] / self.net_size[0], self.orig_size[1] / self.net_size[1])

    def to_original(self, kpts: torch.Tensor) -> torch.Tensor:
        """Network pixels -> original pixels (centre-aligned: x_o = (x_n + .5) * sx - .5)."""
        if self.orig_size == self.net_size:
            return kpts
        sx, sy = self.scale_xy
        s = kpts.new_tensor([sx, sy])
        return (kpts + 0.5) * s - 0.5

    def to_network(self, kpts: torch.Tensor) -> torch.Tensor:
        if self.orig_size == self.net_size:
            return kpts
        sx, sy = self.scale_xy
        s = kpts.new_tensor([sx, sy])
        return (kpts + 0.5) / s - 0.5

    @property
    def mean_scale(self) -> float:
        sx, sy = self.scale_xy
        return float((sx * sy) ** 0.5)


def target_size(width: int, height: int, max_edge: int = 0, multiple_of: int = 1,
                max_sum_edges: int = 0) -> tuple[int, int]:
    """Network size: shrink so the long edge <= ``max_edge`` (0 = native) and the edge sum <=
    ``max_sum_edges`` (0 = off), then round *down* to ``multiple_of`` (at least one multiple)."""
    w, h = float(width), float(height)
    if max_edge and max(w, h) > max_edge:
        s = max_edge / max(w, h)
        w, h = w * s, h * s
    if max_sum_edges and w + h > max_sum_edges:
        s = max_sum_edges / (w + h)
        w, h = w * s, h * s
    w_i, h_i = max(int(round(w)), 1), max(int(round(h)), 1)
    if multiple_of > 1:
        w_i = max(multiple_of, (w_i // multiple_of) * multiple_of)
        h_i = max(multiple_of, (h_i // multiple_of) * multiple_of)
    return w_i, h_i


def to_float_image(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8/uint16/float image (H,W) or (H,W,3 RGB) -> float32 in [0, 1] with ``channels`` 1 or 3.

    Gray conversion uses OpenCV's RGB->GRAY weights (the same as ``cv2.imread(path, 0)`` on the
    BGR file, which is what the official SuperPoint demo does).
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype == np.uint8:
        f = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        f = img.astype(np.float32) / 65535.0
    else:
        f = img.astype(np.float32)
    if channels == 1 and f.ndim == 3:
        if img.dtype == np.uint8:  # exact OpenCV rounding path for 8-bit input
            f = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        else:
            f = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
    elif channels == 3 and f.ndim == 2:
        f = np.repeat(f[..., None], 3, axis=2)
    return np.ascontiguousarray(f)


def prepare_image(image: np.ndarray, channels: int, max_edge: int = 0, multiple_of: int = 1,
                  max_sum_edges: int = 0, device: torch.device | str = "cpu"
                  ) -> tuple[torch.Tensor, ResizeInfo]:
    """Numpy image -> ``(1, C, H, W)`` float tensor in [0, 1] on ``device`` + resize info.

    Shrinking uses INTER_AREA (as the official SuperPoint demo); enlarging uses INTER_LINEAR.
    """
    img = np.asarray(image)
    if img.ndim < 2 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"empty image of shape {img.shape}")
    h, w = img.shape[:2]
    f = to_float_image(img, channels)
    tw, th = target_size(w, h, max_edge, multiple_of, max_sum_edges)
    if (tw, th) != (w, h):
        interp = cv2.INTER_AREA if tw * th < w * h else cv2.INTER_LINEAR
        f = cv2.resize(f, (tw, th), interpolation=interp)
        if f.ndim == 2 and channels == 3:
            f = f[..., None]
    t = torch.from_numpy(f)
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    return t.contiguous().to(device), ResizeInfo((w, h), (tw, th))
