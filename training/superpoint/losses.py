"""SuperPoint losses: the paper form and rpautrat's normalisation (facts:
docs/method_facts/training_superpoint.md#paper-recipe-and-losses and
docs/method_facts/training_superpoint.md#stage-3-joint-training).

Why both descriptor-loss variants: the paper constants (lambda_d 250, lambda 1e-4) and the
reference re-implementation's normalised dot products (lambda_d 0.05, lambda_loss 10000) are not
interchangeable; the config picks one and the constants travel with it.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

CELL = 8

DEFAULT_DESCRIPTOR_LOSS: dict[str, Any] = {
    "lambda_d": 250.0,
    "positive_margin": 1.0,
    "negative_margin": 0.2,
    "positive_radius": 8.0,  # paper: ||H p - p'|| <= 8; rpautrat: 8 - 0.5
    "dot_product_normalization": False,  # rpautrat's ReLU + two-axis L2 normalisation
}


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` -> ``(B, 64, H/8, W/8)``, channel ``8r + q`` = pixel (8i + r, 8j + q)
    (the inverse of the runtime's ``pixel_shuffle`` depth-to-space)."""
    return F.pixel_unshuffle(x[:, None], CELL)


def detector_labels(keypoint_map: torch.Tensor, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """Cell class in 0..64 (64 = dustbin): ``argmax([2 * labels, 1] + U[0, 0.1))``.

    Why the noise: a cell holding several keypoints gets one of them at random, and a cell with
    none gets the dustbin (2 + noise > 1 + noise always).
    """
    lab = space_to_depth(keypoint_map.float())
    b, _, hc, wc = lab.shape
    full = torch.cat([2.0 * lab, torch.ones(b, 1, hc, wc, dtype=lab.dtype, device=lab.device)], 1)
    noise = torch.rand(full.shape, generator=generator, dtype=full.dtype).to(full.device) * 0.1
    return torch.argmax(full + noise, dim=1)


def cell_valid_mask(valid_mask: torch.Tensor | None, shape: tuple[int, int, int]) -> torch.Tensor:
    """Cell weight = product of the pixel valid mask over the cell, ``(B, Hc, Wc)``."""
    b, hc, wc = shape
    if valid_mask is None:
        return torch.ones(shape)
    return space_to_depth(valid_mask.float()).prod(dim=1)


def detector_loss(logits: torch.Tensor, keypoint_map: torch.Tensor,
                  valid_mask: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Masked 65-way cell-wise softmax cross-entropy, averaged over cells with non-zero weight."""
    labels = detector_labels(keypoint_map, generator).to(logits.device)
    b, _, hc, wc = logits.shape
    w = cell_valid_mask(valid_mask, (b, hc, wc)).to(logits)
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    n = (w > 0).sum().clamp_min(1)
    return (ce * w).sum() / n


def cell_centers(hc: int, wc: int, device: torch.device | None = None) -> torch.Tensor:
    """``(Hc, Wc, 2)`` [x, y] centre pixel of each cell: ``8 * idx + 4``."""
    ys, xs = torch.meshgrid(torch.arange(hc, device=device), torch.arange(wc, device=device),
                            indexing="ij")
    return torch.stack([xs, ys], -1).float() * CELL + CELL // 2


def warp_points_torch(points: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """``(B, N, 2)`` points through ``(B, 3, 3)`` homographies."""
    ones = torch.ones_like(points[..., :1])
    hom = torch.cat([points, ones], -1) @ H.transpose(1, 2)
    return hom[..., :2] / hom[..., 2:3]


def correspondence_matrix(H: torch.Tensor, hc: int, wc: int, radius: float) -> torch.Tensor:
    """``s[b, i, j] = 1`` iff source cell i, warped by ``H`` (source px -> warped px), lands within
    ``radius`` px of warped cell j's centre. Shape ``(B, Hc*Wc, Hc*Wc)``."""
    c = cell_centers(hc, wc, H.device).reshape(1, -1, 2)
    warped = warp_points_torch(c.expand(H.shape[0], -1, -1).to(H.dtype), H)
    d = torch.cdist(warped.float(), c.float())
    return (d <= radius).float()


def descriptor_loss(desc: torch.Tensor, warped_desc: torch.Tensor, H: torch.Tensor,
                    warped_valid_mask: torch.Tensor | None = None,
                    conf: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Hinge loss over all cell pairs (paper form; optional rpautrat normalisation).

    ``desc``/``warped_desc``: raw coarse maps ``(B, D, Hc, Wc)``; ``H`` maps source pixels to
    warped pixels; the mask is the warped image's pixel valid mask ``(B, H, W)``.
    """
    c = {**DEFAULT_DESCRIPTOR_LOSS, **(conf or {})}
    b, d, hc, wc = desc.shape
    s = correspondence_matrix(H.to(desc.device), hc, wc, float(c["positive_radius"]))
    a = F.normalize(desc.float(), dim=1).reshape(b, d, -1)
    bw = F.normalize(warped_desc.float(), dim=1).reshape(b, d, -1)
    dot = a.transpose(1, 2) @ bw  # (B, source cells, warped cells)
    if c["dot_product_normalization"]:
        dot = F.relu(dot)
        dot = F.normalize(dot, dim=2)  # along the warped-cell axis
        dot = F.normalize(dot, dim=1)  # then along the source-cell axis
    pos = F.relu(float(c["positive_margin"]) - dot)
    neg = F.relu(dot - float(c["negative_margin"]))
    loss = float(c["lambda_d"]) * s * pos + (1.0 - s) * neg
    m = cell_valid_mask(warped_valid_mask, (b, hc, wc)).to(loss).reshape(b, 1, -1)
    norm = m.sum() * (hc * wc)
    return (loss * m).sum() / norm.clamp_min(1.0)
