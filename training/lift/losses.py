"""LIFT losses: tf-lift ``losses.py`` with the ``config.py`` constants
(docs/lfnet_lift.md#lift-training).

Why unsquared L2 distances and big margins (M = 5, C = 4): the training descriptors are the raw
network outputs (no L2 normalisation, as in tf-lift); the runtime extractor L2-normalises at
test time (``desc_l2norm``), which does not change nearest-neighbour order per query.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_LOSS: dict[str, object] = {
    "use_triplet_loss": True,
    "triplet_loss_margin": 5.0,
    "use_hardest_anchor": True,
    "alpha_margin": 4.0,  # legacy pair / non-pair loss
    "alpha_overlap": 1.0,
    "alpha_classification": 1e-8,
    "alpha_kp": 1.0,  # joint
    "alpha_desc": 1.0,  # joint
    "r_base": 0.5,  # 64/128 in normalised patch coordinates
    "rotate_offsets": True,  # compare detector offsets in each keypoint's own frame [assumed]
    "hard_mining": {"enable": False, "keep_fraction": 0.5},
}


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(((a - b) ** 2).sum(-1) + 1e-12)


def triplet_loss(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, margin: float = 5.0,
                 hardest_anchor: bool = True, reduce: bool = True) -> torch.Tensor:
    """``ReLU(||d1 - d2|| - min(||d1 - d3||, ||d2 - d3||) + M)`` (``hardest_anchor``) or with the
    ``||d1 - d3||`` term only."""
    pos = _dist(d1, d2)
    neg = torch.minimum(_dist(d1, d3), _dist(d2, d3)) if hardest_anchor else _dist(d1, d3)
    per = F.relu(pos - neg + margin)
    return per.mean() if reduce else per


def pair_nonpair_loss(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, c: float = 4.0,
                      reduce: bool = True) -> torch.Tensor:
    """Legacy: ``||d1 - d2|| + ReLU(C - min(||d1 - d3||, ||d2 - d3||))``."""
    per = _dist(d1, d2) + F.relu(c - torch.minimum(_dist(d1, d3), _dist(d2, d3)))
    return per.mean() if reduce else per


def hardest_negatives(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor,
                      ids: torch.Tensor) -> torch.Tensor:
    """In-batch hard mining: for each pair, the candidate (any P1/P2/P3 of the batch with a
    different 3-D point id) closest to either anchor replaces its P3."""
    cands = torch.cat([d1, d2, d3], 0)
    cid = torch.cat([ids[:, 0], ids[:, 1], ids[:, 2]], 0)
    dist = torch.minimum(torch.cdist(d1, cands), torch.cdist(d2, cands))
    same = ids[:, 0:1] == cid[None, :]
    dist = dist.masked_fill(same, float("inf"))
    return cands[dist.argmin(1)]


def descriptor_loss(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, conf: dict,
                    ids: torch.Tensor | None = None) -> torch.Tensor:
    """Triplet (default) or pair/non-pair loss, with optional hard mining: hardest in-batch
    negative, then only the ``keep_fraction`` highest losses are averaged (tf-lift's mining
    scheduler keeps the hardest of several batches; this is its single-batch form)."""
    mining = {**DEFAULT_LOSS["hard_mining"], **dict(conf.get("hard_mining", {}))}
    if mining["enable"] and ids is not None:
        d3 = hardest_negatives(d1, d2, d3, ids)
    if conf.get("use_triplet_loss", True):
        per = triplet_loss(d1, d2, d3, float(conf["triplet_loss_margin"]),
                           bool(conf.get("use_hardest_anchor", True)), reduce=False)
    else:
        per = pair_nonpair_loss(d1, d2, d3, float(conf["alpha_margin"]), reduce=False)
    if mining["enable"]:
        k = max(1, int(round(float(mining["keep_fraction"]) * per.numel())))
        per = torch.topk(per, k).values
    return per.mean()


def orientation_loss(d1: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
    """``||d(P1) - d(P2)||`` of the positives described at the predicted orientations."""
    return _dist(d1, d2).mean()


def rotate(v: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate ``(N, 2)`` vectors by ``angle`` (image axes, y down; same sense as the crops)."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], -1)


def overlap_loss(xy1: torch.Tensor, xy2: torch.Tensor, gt1: torch.Tensor, gt2: torch.Tensor,
                 ang1: torch.Tensor | None = None, ang2: torch.Tensor | None = None,
                 r_base: float = 0.5, z1: torch.Tensor | None = None,
                 z2: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - IoU`` of the squares ``(x, y, r = r_base 2^z)`` of the two detections after rebasing
    each to its ground-truth keypoint, plus ``(gap_x + gap_y) / sqrt(union)`` when they do not
    overlap. With ``ang*`` the rebased offsets are rotated into the keypoint's own frame
    (``-angle``) so the same physical spot gives the same offset in both images."""
    o1, o2 = xy1 - gt1, xy2 - gt2
    if ang1 is not None and ang2 is not None:
        o1, o2 = rotate(o1, -ang1), rotate(o2, -ang2)
    r1 = r_base * (torch.pow(2.0, z1) if z1 is not None else torch.ones_like(o1[:, 0]))
    r2 = r_base * (torch.pow(2.0, z2) if z2 is not None else torch.ones_like(o2[:, 0]))
    lo = torch.maximum(o1 - r1[:, None], o2 - r2[:, None])
    hi = torch.minimum(o1 + r1[:, None], o2 + r2[:, None])
    inter_wh = hi - lo  # negative = gap
    inter = F.relu(inter_wh).prod(-1)
    union = 4 * r1 ** 2 + 4 * r2 ** 2 - inter
    iou = inter / union
    gap = F.relu(-inter_wh).sum(-1) / torch.sqrt(union)
    return (1.0 - iou + gap).mean()


def classification_loss(s1: torch.Tensor, s2: torch.Tensor, s3: torch.Tensor,
                        s4: torch.Tensor) -> torch.Tensor:
    """``[ReLU(1 - s1) + ReLU(1 - s2) + ReLU(1 - s3)] / 6 + ReLU(1 + s4) / 2`` (batch mean)."""
    pos = F.relu(1 - s1) + F.relu(1 - s2) + F.relu(1 - s3)
    return (pos / 6.0 + F.relu(1 + s4) / 2.0).mean()
