"""LF-Net training losses (docs/lfnet_lift.md#lf-net-training).

Two branches, one network: branch *i* is differentiable; branch *j* is the same network with its
current weights but *no gradient* (a non-differentiable copy updated every iteration). Each
image is forwarded once; every target built from the other view is ``detach()``-ed, which is
exactly that copy. Warping goes through depth + pose + K (:func:`training.sfm.pairs.warp_depth`),
so the euclidean augmentation (a camera roll / zoom, see ``rotate_scale_view``) is part of the
geometry rather than a separate term.

Gradient routing (why one Adam is enough): ``L_det = L_im + 0.01 L_pair + 0.1 L_ori +
0.1 L_scale`` reaches only detector parameters (the pair loss runs the descriptor with detached
parameters), ``L_desc`` (triplet) reaches only descriptor parameters (its patches are cut with
detached keypoints). Adam is element-wise, so one Adam over ``L_det + L_desc`` equals the
official two Adams (same lr and betas) stepped every iteration (``train_same_time``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from kornia.filters import get_gaussian_kernel2d
from torch.func import functional_call

from local_features_ros.extractors.lfnet import LFNet
from local_features_ros.extractors.lfnet.ops import hard_nms

from ..sfm.pairs import _bilinear_depth, warp_depth

#: ``train_lfnet.py`` argparse defaults (docs/lfnet_lift.md#lf-net-training)
LOSS_DEFAULTS: dict[str, Any] = {
    "top_k": 512,
    "nms_ksize": 5,
    "hm_ksize": 15,
    "hm_sigma": 0.5,
    "weight_det_loss": 0.01,  # pair loss
    "ori_weight": 0.1,
    "scale_weight": 0.1,
    "desc_margin": 1.0,
    "hard_geom_thresh": 32.0,
    "init_num_mine": 64,
    "pickup_delay": 0.9,
    "min_num_pickup": 5,
    "depth_tol": 0.05,
    "relative_depth_tol": True,
    "match_reproj_thresh": 5.0,
}


def to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB [0, 1] -> (B, 1, H, W) (ITU-R 601 luma, as cv2 RGB2GRAY)."""
    w = rgb.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)


def dense_warp(batch: Mapping[str, torch.Tensor], src: int, dst: int, depth_tol: float,
               relative: bool) -> dict[str, torch.Tensor]:
    """Every pixel of view ``src`` -> its position in view ``dst``.

    Returns ``xy (B, H, W, 2)`` [x, y] dst pixels, ``visible (B, 1, H, W)`` (depth-consistent),
    ``z_src``, ``z_dst`` (B, H, W) depths of the point in both cameras, ``in_plane (B,)`` the
    in-plane rotation src -> dst (radians, about the optical axis).
    """
    d_src = batch[f"depth{src}"]
    b, h, w = d_src.shape
    dev = d_src.device
    ii, jj = torch.meshgrid(torch.arange(h, device=dev, dtype=d_src.dtype),
                            torch.arange(w, device=dev, dtype=d_src.dtype), indexing="ij")
    pos = torch.stack([ii.reshape(-1), jj.reshape(-1)])
    xy = torch.zeros(b, h * w, 2, device=dev, dtype=d_src.dtype)
    vis = torch.zeros(b, h * w, device=dev, dtype=d_src.dtype)
    z_src = torch.ones(b, h * w, device=dev, dtype=d_src.dtype)
    z_dst = torch.ones(b, h * w, device=dev, dtype=d_src.dtype)
    ang = torch.zeros(b, device=dev, dtype=d_src.dtype)
    for k in range(b):
        _, p2, ids = warp_depth(pos, d_src[k], batch[f"K{src}"][k], batch[f"pose{src}"][k],
                                batch[f"bbox{src}"][k], batch[f"depth{dst}"][k], batch[f"K{dst}"][k],
                                batch[f"pose{dst}"][k], batch[f"bbox{dst}"][k], depth_tol, relative)
        xy[k, ids] = torch.stack([p2[1], p2[0]], -1)
        vis[k, ids] = 1.0
        z_src[k, ids] = d_src[k].reshape(-1)[ids]
        z_dst[k, ids], _ = _bilinear_depth(batch[f"depth{dst}"][k], p2[0], p2[1])
        R = batch[f"pose{dst}"][k][:3, :3] @ batch[f"pose{src}"][k][:3, :3].t()
        ang[k] = torch.atan2(R[1, 0], R[0, 0])
    return {"xy": xy.view(b, h, w, 2), "visible": vis.view(b, 1, h, w),
            "z_src": z_src.view(b, h, w), "z_dst": z_dst.view(b, h, w), "in_plane": ang}


def sample_at(maps: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear ``maps (B, C, H, W)`` at pixel positions ``xy (B, ..., 2)`` (centres at integers)."""
    h, w = maps.shape[-2:]
    g = torch.stack([2 * xy[..., 0] / max(w - 1, 1) - 1, 2 * xy[..., 1] / max(h - 1, 1) - 1], -1)
    shape = g.shape
    out = F.grid_sample(maps, g.reshape(shape[0], -1, 1, 2), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out.reshape(maps.shape[0], maps.shape[1], *shape[1:-1])


def score_target(score_other_warped: torch.Tensor, visible: torch.Tensor, lc: Mapping[str, Any]
                 ) -> torch.Tensor:
    """NMS + top-k of the warped other-view heatmap, blurred by the Gaussian PSF (kornia's
    normalised ``hm_ksize``^2 kernel, sigma ``hm_sigma``), clipped to 1.

    ``hm_ksize`` must be odd: the blur pads ``hm_ksize // 2`` to keep the map's size, which an even
    kernel would grow by one pixel."""
    ks = int(lc["hm_ksize"])
    if ks < 1 or ks % 2 == 0:
        raise ValueError(f"loss.hm_ksize must be a positive odd number, got {ks}")
    s = score_other_warped * visible
    keep = hard_nms(s, int(lc["nms_ksize"]), 0.0)
    b = s.shape[0]
    flat = torch.where(keep, s, torch.full_like(s, -1.0)).reshape(b, -1)
    k = min(int(lc["top_k"]), flat.shape[1])
    top, idx = torch.topk(flat, k, dim=1)
    peaks = torch.zeros_like(flat).scatter_(1, idx, (top > 0).to(flat.dtype)).view_as(s)
    sigma = float(lc["hm_sigma"])
    ker = get_gaussian_kernel2d((ks, ks), (sigma, sigma), device=s.device, dtype=s.dtype)
    return F.conv2d(peaks, ker[None], padding=ks // 2).clamp(max=1.0)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image sum over the mask / #mask, averaged over images that have any."""
    dims = tuple(range(1, x.dim()))
    n = mask.sum(dims)
    per = (x * mask).sum(dims) / n.clamp_min(1.0)
    has = (n > 0).to(x.dtype)
    return (per * has).sum() / has.sum().clamp_min(1.0)


def num_mine(step: int, lc: Mapping[str, Any]) -> int:
    """N = max(floor(64 * 0.9^(step/1000)), 5) (``rand_hard_sch``)."""
    n = math.floor(float(lc["init_num_mine"]) * float(lc["pickup_delay"]) ** (max(step, 0) / 1000.0))
    return max(int(n), int(lc["min_num_pickup"]))


def warp_keypoints(kpts: torch.Tensor, batch: Mapping[str, torch.Tensor], src: int, dst: int,
                   lc: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, K, 2)`` [x, y] -> positions in ``dst`` and visibility ``(B, K)``."""
    b, k, _ = kpts.shape
    out = torch.zeros_like(kpts)
    vis = torch.zeros(b, k, device=kpts.device, dtype=kpts.dtype)
    for n in range(b):
        pos = torch.stack([kpts[n, :, 1], kpts[n, :, 0]])
        _, p2, ids = warp_depth(pos, batch[f"depth{src}"][n], batch[f"K{src}"][n],
                                batch[f"pose{src}"][n], batch[f"bbox{src}"][n],
                                batch[f"depth{dst}"][n], batch[f"K{dst}"][n], batch[f"pose{dst}"][n],
                                batch[f"bbox{dst}"][n], float(lc["depth_tol"]),
                                bool(lc["relative_depth_tol"]))
        out[n, ids] = torch.stack([p2[1], p2[0]], -1)
        vis[n, ids] = 1.0
    return out, vis


def lfnet_losses(model: LFNet, batch: Mapping[str, torch.Tensor], step: int,
                 conf: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """``L_det + L_desc`` (see the module docstring) and the individual terms for logging."""
    terms, metrics = lfnet_loss_terms(model, batch, step, conf)
    return terms["det"] + terms["desc"], metrics


def lfnet_loss_terms(model: LFNet, batch: Mapping[str, torch.Tensor], step: int,
                     conf: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The detector objective ``det`` and descriptor objective ``desc`` as tensors + metrics."""
    lc = {**LOSS_DEFAULTS, **conf}
    tol, rel = float(lc["depth_tol"]), bool(lc["relative_depth_tol"])
    x = [model.normalize_input(to_gray(batch["image0"])), model.normalize_input(to_gray(batch["image1"]))]
    maps = [model.detector_forward(x[0]), model.detector_forward(x[1])]
    warps = {(0, 1): dense_warp(batch, 0, 1, tol, rel), (1, 0): dense_warp(batch, 1, 0, tol, rel)}
    fx = [batch["K0"][:, 0, 0], batch["K1"][:, 0, 0]]
    l_im, l_ori, l_scale = [], [], []
    for i, j in ((0, 1), (1, 0)):
        wp = warps[(i, j)]
        vis = wp["visible"]
        mj = {k: maps[j][k].detach() for k in ("score", "ori", "scale")}  # branch j: no gradient
        target = score_target(sample_at(mj["score"], wp["xy"]), vis, lc)
        l_im.append(_masked_mean((maps[i]["score"] - target) ** 2, vis))
        ori_w = sample_at(mj["ori"], wp["xy"])
        c, s = torch.cos(-wp["in_plane"]).view(-1, 1, 1), torch.sin(-wp["in_plane"]).view(-1, 1, 1)
        ori_t = F.normalize(torch.stack([c * ori_w[:, 0] - s * ori_w[:, 1],
                                         s * ori_w[:, 0] + c * ori_w[:, 1]], 1), dim=1)
        l_ori.append(_masked_mean(((maps[i]["ori"] - ori_t) ** 2).sum(1, keepdim=True), vis))
        ratio = (fx[i] / fx[j]).view(-1, 1, 1) * wp["z_dst"] / wp["z_src"].clamp_min(1e-6)
        scale_t = (sample_at(mj["scale"], wp["xy"])[:, 0] * ratio).clamp(1 / math.sqrt(2), math.sqrt(2))
        l_scale.append(_masked_mean((torch.log(maps[i]["scale"][:, 0]) - torch.log(scale_t)) ** 2,
                                    vis[:, 0]))
    l_im_t = torch.stack(l_im).mean()
    l_ori_t = torch.stack(l_ori).mean()
    l_scale_t = torch.stack(l_scale).mean()

    # keypoints of view 0 (differentiable location / scale / orientation)
    k = int(lc["top_k"])
    det0 = model.detect(maps[0], k)
    det1 = {kk: v.detach() for kk, v in model.detect(maps[1], k).items()}
    kp0 = det0["keypoints"]
    kp0_in1, vis0 = warp_keypoints(kp0.detach(), batch, 0, 1, lc)
    vis0 = vis0 * det0["valid"].to(vis0.dtype)
    sc_pos = sample_at(maps[1]["scale"].detach(), kp0_in1)[:, 0]
    cs_pos = sample_at(maps[1]["ori"].detach(), kp0_in1)
    ori_pos = torch.atan2(cs_pos[:, 1], cs_pos[:, 0])
    patches_pos = model.crop_patches(x[1].detach(), kp0_in1, sc_pos, ori_pos)
    d_pos = model.describe_patches(patches_pos)  # grad -> descriptor (triplet positive)

    # pair loss: detector learns through the patch sampler; descriptor weights frozen here
    params = {n: p.detach() for n, p in model.desc.named_parameters()}
    buffers = dict(model.desc.named_buffers())
    p0 = model.crop_patches(x[0], kp0, det0["scales"], det0["orientations"])
    d0_det = functional_call(model.desc, {**params, **buffers}, (p0.flatten(0, 1),)).view(*p0.shape[:2], -1)
    l_pair = _masked_mean(((d0_det - d_pos.detach()) ** 2).sum(-1), vis0)

    # triplet descriptor loss, negatives: random among the N hardest keypoints of view 1
    d_anchor = model.describe_patches(p0.detach())
    d_cand = model.describe(x[1].detach(), det1["keypoints"], det1["scales"], det1["orientations"])
    dist_pos = ((d_anchor - d_pos) ** 2).sum(-1)
    dist_all = torch.cdist(d_anchor, d_cand) ** 2  # (B, K, K1)
    geo = torch.cdist(kp0_in1, det1["keypoints"])
    bad = (geo < float(lc["hard_geom_thresh"])) | ~det1["valid"][:, None, :]
    masked = dist_all.masked_fill(bad, float("inf"))
    n_mine = min(num_mine(step, lc), masked.shape[-1])
    hard_d, _ = torch.topk(masked, n_mine, dim=-1, largest=False)
    pick = torch.randint(0, n_mine, hard_d.shape[:2] + (1,), device=hard_d.device)
    dist_neg = torch.gather(hard_d, -1, pick)[..., 0]
    ok = vis0 * torch.isfinite(dist_neg).to(vis0.dtype)
    trip = F.relu(float(lc["desc_margin"]) + dist_pos - torch.where(torch.isfinite(dist_neg),
                                                                     dist_neg, dist_pos))
    l_desc = _masked_mean(trip, ok)

    l_det = l_im_t + float(lc["weight_det_loss"]) * l_pair + float(lc["ori_weight"]) * l_ori_t \
        + float(lc["scale_weight"]) * l_scale_t
    metrics = {"l_det": float(l_det.detach()), "l_im": float(l_im_t.detach()),
               "l_pair": float(l_pair.detach()), "l_ori": float(l_ori_t.detach()),
               "l_scale": float(l_scale_t.detach()), "l_desc": float(l_desc.detach()),
               "visible_kpts": float(vis0.sum(1).mean())}
    return {"det": l_det, "desc": l_desc}, metrics


@torch.no_grad()
def match_score(model: LFNet, batch: Mapping[str, torch.Tensor], top_k: int,
                thresh: float = 5.0, depth_tol: float = 0.05, relative: bool = True) -> float:
    """Official validation metric: share of view-0 keypoints (with a visible warp) whose nearest
    view-1 descriptor belongs to a keypoint within ``thresh`` px of the true position."""
    lc = {**LOSS_DEFAULTS, "depth_tol": depth_tol, "relative_depth_tol": relative}
    x = [model.normalize_input(to_gray(batch["image0"])), model.normalize_input(to_gray(batch["image1"]))]
    dets, descs = [], []
    for xi in x:
        d = model.detect(model.detector_forward(xi), top_k)
        dets.append(d)
        descs.append(model.describe(xi, d["keypoints"], d["scales"], d["orientations"]))
    warped, vis = warp_keypoints(dets[0]["keypoints"], batch, 0, 1, lc)
    vis = vis.bool() & dets[0]["valid"]
    hits, total = 0, 0
    for b in range(vis.shape[0]):
        v1 = dets[1]["valid"][b]
        if not bool(v1.any()):
            continue
        dist = torch.cdist(descs[0][b], descs[1][b][v1])
        nn_idx = dist.argmin(1)
        err = (dets[1]["keypoints"][b][v1][nn_idx] - warped[b]).norm(dim=-1)
        hits += int(((err < thresh) & vis[b]).sum())
        total += int(vis[b].sum())
    return hits / max(total, 1)
