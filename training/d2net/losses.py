"""D2-Net soft detection and loss, re-stated from the official ``lib/loss.py`` (facts:
docs/method_facts/training_d2net.md#soft-detection and docs/method_facts/training_d2net.md#loss)."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from ..sfm.pairs import warp_depth

#: guards 0/0 where a pixel (or a whole sample) has no positive activation; the official code
#: yields NaN there, any finite value elsewhere is unchanged.
_EPS = 1e-12


def soft_detection(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` raw features -> ``(B, H, W)`` soft scores summing to 1 per image."""
    b = x.shape[0]
    y = F.relu(x)
    max_b = y.reshape(b, -1).amax(1).clamp_min(_EPS).view(b, 1, 1, 1)
    e = torch.exp(y / max_b)
    sum_e = 9.0 * F.avg_pool2d(F.pad(e, [1, 1, 1, 1], mode="constant", value=1.0), 3, stride=1)
    alpha = e / sum_e
    beta = y / y.amax(1, keepdim=True).clamp_min(_EPS)
    s = (alpha * beta).amax(1)
    return s / s.reshape(b, -1).sum(1).clamp_min(_EPS).view(b, 1, 1)


def grid_positions(h: int, w: int, device: torch.device) -> torch.Tensor:
    """All (i, j) cells, ``(2, h*w)`` long, row-major."""
    i, j = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([i.reshape(-1), j.reshape(-1)])


def upscale_positions(pos: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        pos = pos * 2.0 + 0.5
    return pos


def downscale_positions(pos: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        pos = (pos - 0.5) / 2.0
    return pos


def _chebyshev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(2, N)`` x ``(2, M)`` -> ``(N, M)`` max(|di|, |dj|)."""
    return (a[:, :, None] - b[:, None, :]).abs().amax(0)


def pair_correspondences(feat_shape: tuple[int, int], batch: Mapping[str, torch.Tensor], b: int,
                         scaling_steps: int, depth_tol: float, relative_tol: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cells of image 1 warped into image 2 -> ``(fmap_pos1 (2, M), fmap_pos2 (2, M), ids)``."""
    h1, w1 = feat_shape
    dev = batch["depth0"].device
    fmap_pos1 = grid_positions(h1, w1, dev)
    pos1 = upscale_positions(fmap_pos1.float(), scaling_steps)
    _, pos2, ids = warp_depth(pos1, batch["depth0"][b], batch["K0"][b], batch["pose0"][b],
                              batch["bbox0"][b], batch["depth1"][b], batch["K1"][b],
                              batch["pose1"][b], batch["bbox1"][b], depth_tol, relative_tol)
    fmap_pos2 = torch.round(downscale_positions(pos2, scaling_steps)).long()
    return fmap_pos1[:, ids], fmap_pos2, ids


def d2net_loss(feat1: torch.Tensor, feat2: torch.Tensor, batch: Mapping[str, torch.Tensor],
               margin: float = 1.0, safe_radius: int = 4, scaling_steps: int = 3,
               min_correspondences: int = 128, depth_tol: float = 0.05,
               relative_tol: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over valid pairs of the score-weighted margin ranking loss. Returns ``(loss,
    metrics)``; with no valid pair the loss is a zero with no gradient path (batch skipped,
    like the official ``NoGradientError``)."""
    s1_all, s2_all = soft_detection(feat1), soft_detection(feat2)
    losses = []
    n_corr = []
    for b in range(feat1.shape[0]):
        c, h1, w1 = feat1[b].shape
        _, h2, w2 = feat2[b].shape
        fpos1, fpos2, ids = pair_correspondences((h1, w1), batch, b, scaling_steps, depth_tol,
                                                 relative_tol)
        if ids.numel() < min_correspondences:
            continue
        fpos2 = torch.stack([fpos2[0].clamp(0, h2 - 1), fpos2[1].clamp(0, w2 - 1)])
        all_d1 = F.normalize(feat1[b].reshape(c, -1), dim=0)
        all_d2 = F.normalize(feat2[b].reshape(c, -1), dim=0)
        d1 = all_d1[:, fpos1[0] * w1 + fpos1[1]]
        d2 = all_d2[:, fpos2[0] * w2 + fpos2[1]]
        positive = 2.0 - 2.0 * (d1 * d2).sum(0)
        out2 = (_chebyshev(fpos2, grid_positions(h2, w2, feat2.device)) > safe_radius).float()
        neg2 = (2.0 - 2.0 * d1.t() @ all_d2 + (1.0 - out2) * 10.0).amin(1)
        out1 = (_chebyshev(fpos1, grid_positions(h1, w1, feat1.device)) > safe_radius).float()
        neg1 = (2.0 - 2.0 * d2.t() @ all_d1 + (1.0 - out1) * 10.0).amin(1)
        diff = positive - torch.minimum(neg1, neg2)
        s1 = s1_all[b, fpos1[0], fpos1[1]]
        s2 = s2_all[b, fpos2[0], fpos2[1]]
        losses.append((s1 * s2 * F.relu(margin + diff)).sum() / (s1 * s2).sum())
        n_corr.append(ids.numel())
    if not losses:
        # a fresh leaf: backward leaves every parameter's grad None, so Adam skips the step
        skip = torch.zeros((), device=feat1.device, requires_grad=True)
        return skip, {"valid_pairs": 0.0, "correspondences": 0.0}
    return torch.stack(losses).mean(), {"valid_pairs": float(len(losses)),
                                        "correspondences": float(sum(n_corr) / len(n_corr))}


@torch.no_grad()
def dense_matching_accuracy(feat1: torch.Tensor, feat2: torch.Tensor,
                            batch: Mapping[str, torch.Tensor], scaling_steps: int = 3,
                            depth_tol: float = 0.05, tolerance_cells: int = 1,
                            relative_tol: bool = False) -> float:
    """Share of image-1 cells with a valid warp whose nearest image-2 descriptor (over all cells)
    lies within ``tolerance_cells`` (Chebyshev) of the true cell. Independent of the loss's
    margin/score weighting: a plain check that descriptors match across views."""
    hits, total = 0, 0
    for b in range(feat1.shape[0]):
        c, h1, w1 = feat1[b].shape
        _, h2, w2 = feat2[b].shape
        fpos1, fpos2, ids = pair_correspondences((h1, w1), batch, b, scaling_steps, depth_tol,
                                                 relative_tol)
        if ids.numel() == 0:
            continue
        d1 = F.normalize(feat1[b].reshape(c, -1), dim=0)[:, fpos1[0] * w1 + fpos1[1]]
        all_d2 = F.normalize(feat2[b].reshape(c, -1), dim=0)
        nn_idx = (d1.t() @ all_d2).argmax(1)
        nn_pos = torch.stack([nn_idx // w2, nn_idx % w2])
        hits += int(((nn_pos - fpos2).abs().amax(0) <= tolerance_cells).sum())
        total += ids.numel()
    return hits / max(total, 1)
