"""LF-Net (Ono, Trulls, Fua, Yi, NeurIPS 2018), re-implemented from methods.md §3.

Why the pieces are separate functions: the training issue needs the *differentiable* detector
(score maps, scale and orientation maps, soft 3-D NMS, soft scale selection, soft-argmax
refinement) and the patch descriptor as building blocks of its two-branch scheme, so they are
batched functions / methods here and ``_extract`` only chains them. Everything runs on the
image's device; the only host sync is the final boolean filtering in ``_extract``.

Inference (no autograd) takes faster forms of the same computation, equal up to float rounding
(test_lfnet.py compares them with the reference ops): eval BatchNorm folded into the preceding
conv/linear, the 1-output score convs as depthwise convs + channel sums, separable window max /
sum in the soft 3-D NMS, an OpenCV dilation for the hard NMS and a table-built crop grid.
Training (autograd on) keeps the reference ops.

Official TF1 model: ``vcg-uvic/lf-net-release``. Weight conversion (TF variable names -> our
state dict keys) is :func:`convert_tf_state`, used by ``scripts/convert_tf_weights.py`` and by
``load_weights`` when a checkpoint still carries TF names. See docs/lfnet_lift.md.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Mapping

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..types import Features
from .base import ConfigError, Extractor, NetworkDecl
from .nms import dense_window_max
from .patches import crop_patches_fast

logger = logging.getLogger(__name__)

#: TF ``tf.layers.batch_normalization(momentum=0.9)`` -> torch momentum 1 - 0.9.
BN_MOMENTUM = 0.1
BN_EPS = 1e-5  # methods.md §3.1 (detector); assumed identical for SimpleDesc


def leaky_relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Leaky ReLU, alpha 0.2; ``inplace`` for fresh BN outputs (their backward does not need
    them), which saves a full-resolution buffer per call."""
    return F.leaky_relu(x, 0.2, inplace=inplace)


def instance_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per image and channel: zero mean, unit variance over H, W (biased variance, as tf.nn.moments)."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = x.var(dim=(-2, -1), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], mode: str = "half_pixel") -> torch.Tensor:
    """Bilinear resize of ``(B, C, H, W)`` to ``size = (h, w)``.

    ``half_pixel``: pixel centres aligned (``F.interpolate(align_corners=False)``), geometrically
    centred. ``tf_legacy``: TF1 ``resize_images`` without half-pixel centres, ``src = dst * in/out``
    (what the official model was trained with; shifts content by up to half an input pixel).
    """
    h, w = int(size[0]), int(size[1])
    if (h, w) == tuple(x.shape[-2:]):
        return x
    if mode == "half_pixel":
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    if mode != "tf_legacy":
        raise ValueError(f"unknown resize mode '{mode}'")
    hin, win = x.shape[-2:]
    ys = torch.arange(h, device=x.device, dtype=x.dtype) * (hin / h)
    xs = torch.arange(w, device=x.device, dtype=x.dtype) * (win / w)
    gy = ys / max(hin - 1, 1) * 2 - 1
    gx = xs / max(win - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
    grid = grid[None].expand(x.shape[0], h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def scale_factors(num_scales: int, min_scale: float, max_scale: float) -> list[float]:
    """``exp(linspace(log max, log min, n))``: [1.414, 1.189, 1.0, 0.841, 0.707] by default."""
    if num_scales == 1:
        return [1.0]
    return [float(v) for v in np.exp(np.linspace(math.log(max_scale), math.log(min_scale), num_scales))]


def few_channel_conv(x: torch.Tensor, convs: list[nn.Conv2d]) -> list[torch.Tensor]:
    """Stride-1 'same' convs with few output channels (the 16 -> 1 score convs, 16 -> 2 ori conv)
    on one input, as one depthwise conv (every input channel times each kernel slice) and a sum
    over the input channels.

    Why: oneDNN vectorises a direct conv over output channels, so a 1-output conv runs at ~1/16
    of its speed; the depthwise form keeps the 16 input channels in the vector lanes (~3x faster
    on CPU). Same sum, different order: equal up to float rounding. With autograd on, the convs
    themselves run (training keeps the reference ops).
    """
    if torch.is_grad_enabled():
        return [cv(x) for cv in convs]
    c = x.shape[1]
    ws = [cv.weight for cv in convs]
    outs = [int(wt.shape[0]) for wt in ws]
    wt = torch.cat(ws, dim=0)  # (O, C, k, k)
    o = wt.shape[0]
    wd = wt.transpose(0, 1).reshape(c * o, 1, *wt.shape[-2:])  # channel c -> outputs (c, 0..O-1)
    if x.is_contiguous(memory_format=torch.channels_last):
        wd = wd.contiguous(memory_format=torch.channels_last)
    d = F.conv2d(x, wd, None, stride=1, padding=convs[0].padding, groups=c)
    y = d.unflatten(1, (c, o)).sum(dim=1)
    bias = torch.cat([cv.bias for cv in convs]) if convs[0].bias is not None else None
    if bias is not None:
        y = y + bias.view(1, o, 1, 1).to(y.dtype)
    return list(y.split(outs, dim=1))


def unit_vectors(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(v, dim=1, eps)`` for a 2-channel ``(B, 2, H, W)`` map, element-wise.

    Why: ``normalize``'s norm is a reduction over a 2-long (possibly strided) channel axis,
    ~20x slower on CPU than ``sqrt(c^2 + s^2)`` written out (equal up to float rounding)."""
    if v.shape[1] != 2:
        return F.normalize(v, dim=1, eps=eps)
    c, s = v[:, 0:1], v[:, 1:2]
    return v / torch.sqrt(c * c + s * s).clamp_min(eps)


def soft_nms_3d(logits: torch.Tensor, ksize: int, strength: float) -> torch.Tensor:
    """Soft 3-D NMS over all scales x ``ksize``^2 (methods.md §3.1 step 2).

    ``m`` is the max over the window centred at each location (all scales); the numerator is
    ``exp(strength (l - m))`` at that location and the denominator the sum of the same quantity
    over the window (zero padding), + 1e-6. Input/output ``(B, S, H, W)``.
    """
    pad = ksize // 2
    top = logits.amax(dim=1, keepdim=True)
    if torch.is_grad_enabled() and logits.requires_grad:  # training: the reference ops
        m = F.max_pool2d(top, ksize, stride=1, padding=pad)
        e = torch.exp(strength * (logits - m))
        box = F.avg_pool2d(e.sum(dim=1, keepdim=True), ksize, stride=1, padding=pad,
                           count_include_pad=True) * float(ksize * ksize)
        return e / (box + 1e-6)
    # inference: the same window max exactly and the same window sum as two 1-D passes
    # (2k instead of k^2 reads per pixel; equal up to float rounding), in place
    m = dense_window_max(top, pad)
    e = (logits - m).mul_(strength).exp_()
    rows = F.avg_pool2d(e.sum(dim=1, keepdim=True), (1, ksize), stride=1, padding=(0, pad),
                        count_include_pad=True)
    box = F.avg_pool2d(rows, (ksize, 1), stride=1, padding=(pad, 0), count_include_pad=True)
    return e.div_(box.mul_(float(ksize * ksize)).add_(1e-6))


def soft_scale_selection(probs: torch.Tensor, scales: torch.Tensor, score_strength: float,
                         scale_strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``score = sum_k p_k softmax_k(a p)``, ``scale = sum_k s_k softmax_k(b p)`` -> two ``(B, 1, H, W)``."""
    w_score = torch.softmax(score_strength * probs, dim=1)
    score = (probs * w_score).sum(dim=1, keepdim=True)
    w_scale = w_score if scale_strength == score_strength else torch.softmax(scale_strength * probs, dim=1)
    scale = (scales.view(1, -1, 1, 1).to(probs) * w_scale).sum(dim=1, keepdim=True)
    return score, scale


def border_mask(h: int, w: int, pad: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """``(1, 1, H, W)`` 1 inside, 0 within ``pad`` px of the border."""
    m = torch.zeros(1, 1, h, w, device=device, dtype=dtype)
    if h > 2 * pad and w > 2 * pad:
        m[..., pad:h - pad, pad:w - pad] = 1
    return m


def hard_nms(score: torch.Tensor, ksize: int, threshold: float) -> torch.Tensor:
    """Keep pixels strictly greater than every other pixel of their ``ksize`` window and > threshold.

    ``(B, 1, H, W)`` -> bool ``(B, 1, H, W)``.
    """
    r = ksize // 2
    if r == 0:
        return score > threshold
    s = score.detach().contiguous().numpy() if (
        score.device.type == "cpu" and score.dtype == torch.float32 and not score.requires_grad) else None
    if s is not None and not np.isnan(s).any():
        # one OpenCV dilation with a ring kernel (the window without its centre) per map: the
        # same strict maximum without a (k*k, H*W) unfold buffer (OpenCV's max skips NaN, so
        # maps with NaN take the unfold path below)
        ring = np.ones((ksize, ksize), np.uint8)
        ring[r, r] = 0
        neigh = np.stack([[cv2.dilate(m, ring) for m in img] for img in s])
        return (score > torch.from_numpy(neigh)) & (score > threshold)
    b, _, h, w = score.shape
    padded = F.pad(score, (r, r, r, r), value=float("-inf"))
    cols = F.unfold(padded, ksize)  # (B, k*k, H*W)
    cols[:, (ksize * ksize) // 2] = float("-inf")  # exclude the centre itself
    neigh = cols.amax(dim=1).view(b, 1, h, w)
    return (score > neigh) & (score > threshold)


def gather_maps(maps: torch.Tensor, flat_idx: torch.Tensor) -> torch.Tensor:
    """Values of ``maps (B, C, H, W)`` at flat indices ``(B, K)`` -> ``(B, K, C)``."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)
    return torch.gather(flat, 2, flat_idx[:, None, :].expand(b, c, flat_idx.shape[1])).transpose(1, 2)


def soft_argmax_refine(score: torch.Tensor, kpts: torch.Tensor, scales: torch.Tensor,
                       window: int = 9, strength: float = 1.0) -> torch.Tensor:
    """Sub-pixel refinement (methods.md §3.1): crop a ``window``^2 grid of the score map spanning
    ``scale * window/2`` px around each keypoint (TF transformer_crop grid, linspace(-1, 1)),
    softmax(strength * values), soft-argmax on the [-1, 1] grid; ``kpt += dxdy * scale * window/2``.

    ``score (B, 1, H, W)``, ``kpts (B, K, 2)``, ``scales (B, K)`` -> ``(B, K, 2)``.
    """
    half = scales * (window / 2.0)
    win = crop_patches_fast(score, kpts, half, None, window, corners=True)[:, :, 0]  # (B, K, w, w)
    b, k = win.shape[:2]
    prob = torch.softmax(strength * win.reshape(b, k, -1), dim=-1).view(b, k, window, window)
    g = torch.linspace(-1.0, 1.0, window, device=score.device, dtype=prob.dtype)
    dx = (prob.sum(dim=2) * g).sum(dim=-1)
    dy = (prob.sum(dim=3) * g).sum(dim=-1)
    return kpts + torch.stack([dx, dy], dim=-1) * half[..., None]


# ---------------------------------------------------------------------------------- networks
def fold_bn(layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm2d | nn.BatchNorm1d
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(layer(x))`` as one layer, for eval-mode BN (running statistics):
    ``w * g / sqrt(v + eps)`` and ``(b - mu) * g / sqrt(v + eps) + beta``. Why: inference saves
    a full pass over the layer's output per BN; the result is the same up to float rounding."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    shift = (bias - bn.running_mean) * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    w = layer.weight * scale.view(-1, *([1] * (layer.weight.ndim - 1)))
    return w, shift


class PreActBlock(nn.Module):
    """pre-bn -> act -> conv1 -> mid-bn -> act -> conv2, + identity (no projection)."""

    def __init__(self, ch: int, ksize: int):
        super().__init__()
        self.pre_bn = nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv1 = nn.Conv2d(ch, ch, ksize, padding=ksize // 2)
        self.mid_bn = nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(ch, ch, ksize, padding=ksize // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = leaky_relu(self.pre_bn(x), inplace=True)
        if self.training or torch.is_grad_enabled():
            y = self.mid_bn(self.conv1(a))
        else:  # eval BN folded into conv1: one full-resolution pass less (equal up to rounding)
            y = F.conv2d(a, *fold_bn(self.conv1, self.mid_bn), padding=self.conv1.padding)
        out = self.conv2(leaky_relu(y, inplace=True))
        return out.add_(x) if not torch.is_grad_enabled() else x + out


class LFNetDetector(nn.Module):
    """``ConvOnlyResNet``: init conv, residual blocks, fin-bn, per-scale score convs, ori conv."""

    def __init__(self, channels: int = 16, num_blocks: int = 3, ksize: int = 5, num_scales: int = 5):
        super().__init__()
        self.init_conv = nn.Conv2d(1, channels, ksize, padding=ksize // 2)
        self.blocks = nn.ModuleList([PreActBlock(channels, ksize) for _ in range(num_blocks)])
        self.fin_bn = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.score_convs = nn.ModuleList(
            [nn.Conv2d(channels, 1, ksize, padding=ksize // 2) for _ in range(num_scales)])
        self.ori_conv = nn.Conv2d(channels, 2, ksize, padding=ksize // 2)
        nn.init.zeros_(self.ori_conv.weight)  # starts as "upright" (cos, sin) = (1, 0)
        with torch.no_grad():
            self.ori_conv.bias.copy_(torch.tensor([1.0, 0.0]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.init_conv(x)
        for blk in self.blocks:
            x = blk(x)
        return leaky_relu(self.fin_bn(x), inplace=True)


class LFNetDescriptor(nn.Module):
    """``SimpleDesc``: 3 x [conv3x3 s2 (TF SAME) -> BN -> ReLU] 64/128/256, fc 512 -> BN -> ReLU -> fc."""

    def __init__(self, patch_size: int = 32, out_dim: int = 256):
        super().__init__()
        chans = [1, 64, 128, 256]
        self.convs = nn.ModuleList([nn.Conv2d(chans[i], chans[i + 1], 3, stride=2) for i in range(3)])
        self.bns = nn.ModuleList(
            [nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM) for c in chans[1:]])
        side = patch_size
        for _ in range(3):
            side = -(-side // 2)
        self.flat_shape = (256, side, side)
        self.fc1 = nn.Linear(256 * side * side, 512)
        self.fc_bn1 = nn.BatchNorm1d(512, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.fc2 = nn.Linear(512, out_dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N, 1, P, P)`` -> ``(N, D)`` L2-normalised."""
        x = patches
        fold = not (self.training or torch.is_grad_enabled())  # eval BN folded into the layer
        for conv, bn in zip(self.convs, self.bns):
            x = _tf_same_pad(x, 3, 2)
            if fold:
                x = F.conv2d(x, *fold_bn(conv, bn), stride=conv.stride).relu_()
            else:
                x = F.relu(bn(conv(x)))
        if fold:
            x = F.linear(x.flatten(1), *fold_bn(self.fc1, self.fc_bn1)).relu_()
        else:
            x = F.relu(self.fc_bn1(self.fc1(x.flatten(1))))
        return F.normalize(self.fc2(x), dim=-1)


def _tf_same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TF 'SAME' padding (extra pixel at bottom/right), so converted weights see the same input."""
    h, w = x.shape[-2:]
    ph = max((-(-h // s) - 1) * s + k - h, 0)
    pw = max((-(-w // s) - 1) * s + k - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


# ---------------------------------------------------------------------------------- extractor
class LFNet(Extractor):
    """LF-Net detector + descriptor; gray input in [0, 1] (the official ``/255`` photo)."""

    name: ClassVar[str] = "lfnet"
    summary: ClassVar[str] = ("LF-Net (Ono et al. 2018): scale-space score maps, orientation, "
                              "256-D patch descriptors.")
    weights_note: ClassVar[str] = ("local project checkpoint or converted official weights "
                                   "(required)")
    licence: ClassVar[str] = "official release: research and evaluation only."
    input_channels: ClassVar[int] = 1
    default_conf: ClassVar[dict[str, Any]] = {
        # shared keys, LF-Net values
        "max_keypoints": 500,  # run_lfnet top_k (training uses 512)
        "nms_radius": 2,  # nms_ksize 5 -> radius 2
        "remove_borders": 16,  # pad_size 16 (= crop_radius 16)
        # architecture (restart-only)
        "channels": 16,
        "num_blocks": 3,
        "conv_ksize": 5,
        "num_scales": 5,
        "min_scale": 0.7071067811865476,  # 1/sqrt(2)
        "max_scale": 1.4142135623730951,  # sqrt(2)
        "patch_size": 32,
        "descriptor_dim": 256,
        # input: run_lfnet computes the instance-normalised photo but feeds the raw /255 photo
        # to the detector and the crops; False reproduces that, True is the training input.
        "input_inst_norm": False,
        "input_inst_norm_eps": 1e-3,
        "score_inst_norm_eps": 1e-6,  # eps of the per-scale logit instance norm [assumed]
        "resize_mode": "half_pixel",  # or "tf_legacy" (TF1 resize_images, see resize_bilinear)
        "sm_ksize": 15,  # soft 3-D NMS window
        "com_strength": 3.0,  # soft 3-D NMS strength
        "score_com_strength": 100.0,
        "scale_com_strength": 100.0,
        "soft_kpts": True,
        "kp_loc_size": 9,
        "kp_com_strength": 1.0,
    }

    #: exportable parts (``backend``): the detector's dense maps (scale logits resized back +
    #: orientation; ``dynamic=False``: the per-scale sizes are Python arithmetic, so one export
    #: per input size is cached) and the patch descriptor (dynamic patch count). Soft 3-D NMS,
    #: scale selection, hard NMS, refinement and cropping stay in torch.
    networks: ClassVar[dict[str, NetworkDecl]] = {
        "detector": NetworkDecl(
            call="detector_maps", inputs=(("image", (1, 1, 64, 64), {}),),
            outputs=(("scale_logits", {}), ("orientation", {})), dynamic=False),
        "descriptor": NetworkDecl(
            call="desc", inputs=(("patches", (2, 1, 32, 32), {0: "patches"}),),
            outputs=(("descriptors", {0: "patches"}),)),
    }

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **conf: Any):
        super().__init__(device=device, precision=precision, **conf)
        c = self.conf
        self.det = LFNetDetector(int(c["channels"]), int(c["num_blocks"]), int(c["conv_ksize"]),
                                 int(c["num_scales"]))
        self.desc = LFNetDescriptor(int(c["patch_size"]), int(c["descriptor_dim"]))
        self._scale_list = scale_factors(int(c["num_scales"]), float(c["min_scale"]),
                                         float(c["max_scale"]))  # host copy: no device sync
        self.register_buffer("scales", torch.tensor(self._scale_list, dtype=torch.float32),
                             persistent=False)

    def validate_conf(self, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if conf["resize_mode"] not in ("half_pixel", "tf_legacy"):
            raise ConfigError("resize_mode must be 'half_pixel' or 'tf_legacy'")
        for k in ("sm_ksize", "kp_loc_size", "conv_ksize"):
            if int(conf[k]) < 1 or int(conf[k]) % 2 == 0:
                raise ConfigError(f"{k} must be a positive odd number")
        if not 0 < float(conf["min_scale"]) <= float(conf["max_scale"]):
            raise ConfigError("need 0 < min_scale <= max_scale")
        if int(conf["num_scales"]) < 1 or int(conf["patch_size"]) < 8:
            raise ConfigError("num_scales must be >= 1 and patch_size >= 8")

    @property
    def descriptor_dim(self) -> int:
        return int(self.conf["descriptor_dim"])

    # ------------------------------------------------------------------ differentiable parts
    def normalize_input(self, image: torch.Tensor) -> torch.Tensor:
        if self.conf["input_inst_norm"]:
            return instance_norm(image, float(self.conf["input_inst_norm_eps"]))
        return image

    def detector_forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 1, H, W)`` network input -> dense maps (all differentiable).

        Returns ``feat (B,16,H,W)``, ``logits`` list of per-scale raw logits (at H/s_k x W/s_k),
        ``scale_logits (B,S,H,W)`` instance-normalised and resized back, ``ori (B,2,H,W)`` unit
        (cos, sin), plus everything :meth:`score_maps` returns.
        """
        c = self.conf
        h, w = image.shape[-2:]
        feat = self.det.features(image)
        logits, full = [], []
        ori_raw = None
        for s, conv in zip(self._scale_list, self.det.score_convs):
            size = (max(int(h / s + 0.5), 1), max(int(w / s + 0.5), 1))
            x = resize_bilinear(feat, size, c["resize_mode"])
            if x is feat and ori_raw is None:  # the s = 1 scale and ori_conv read the same map
                lg, ori_raw = few_channel_conv(feat, [conv, self.det.ori_conv])
            else:
                lg, = few_channel_conv(x, [conv])
            logits.append(lg)
            lg = instance_norm(lg, float(c["score_inst_norm_eps"]))
            full.append(resize_bilinear(lg, (h, w), c["resize_mode"]))
        scale_logits = torch.cat(full, dim=1)
        if ori_raw is None:
            ori_raw, = few_channel_conv(feat, [self.det.ori_conv])
        ori = unit_vectors(ori_raw)
        out = {"feat": feat, "logits": logits, "scale_logits": scale_logits, "ori": ori}
        out.update(self.score_maps(scale_logits))
        return out

    def detector_maps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exported detector part: ``scale_logits (B,S,H,W)`` and unit ``ori (B,2,H,W)``."""
        out = self.detector_forward(image)
        return out["scale_logits"], out["ori"]

    def score_maps(self, scale_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scale-space machinery on given ``(B, S, H, W)`` logits (testable with hand-made maps):
        soft 3-D NMS, soft scale selection, border mask -> ``probs``, ``score``, ``scale``."""
        c = self.conf
        probs = soft_nms_3d(scale_logits, int(c["sm_ksize"]), float(c["com_strength"]))
        score, scale = soft_scale_selection(probs, self.scales, float(c["score_com_strength"]),
                                            float(c["scale_com_strength"]))
        h, w = score.shape[-2:]
        pad = int(c["remove_borders"])
        if torch.is_grad_enabled() and score.requires_grad:
            score = score * border_mask(h, w, pad, score.device, score.dtype)
        elif pad > 0:  # the same zeros (scores are >= 0), written into the fresh score map
            if h > 2 * pad and w > 2 * pad:
                score[..., :pad, :] = 0
                score[..., h - pad:, :] = 0
                score[..., :, :pad] = 0
                score[..., :, w - pad:] = 0
            else:
                score.zero_()
        return {"probs": probs, "score": score, "scale": scale}

    def detect(self, maps: Mapping[str, torch.Tensor], top_k: int) -> dict[str, torch.Tensor]:
        """Hard NMS, top-K, gather scale/orientation, soft-argmax refinement. Fixed-size ``(B, K)``
        outputs plus ``valid`` (NMS survivor above threshold); no host sync."""
        c = self.conf
        score = maps["score"]
        b, _, h, w = score.shape
        keep = hard_nms(score.detach(), 2 * int(c["nms_radius"]) + 1, float(c["detection_threshold"]))
        masked = torch.where(keep, score, torch.full_like(score, -1.0)).reshape(b, -1)
        k = min(int(top_k), h * w)
        top, idx = torch.topk(masked, k, dim=1)
        valid = top > -1.0
        xy = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=-1).to(score.dtype)
        scales = gather_maps(maps["scale"], idx)[..., 0]
        cs = gather_maps(maps["ori"], idx)
        oris = torch.atan2(cs[..., 1], cs[..., 0])
        scores = gather_maps(score, idx)[..., 0]  # differentiable (masked copy is not)
        if c["soft_kpts"]:
            xy = soft_argmax_refine(score, xy, scales, int(c["kp_loc_size"]), float(c["kp_com_strength"]))
        return {"keypoints": xy, "scores": scores, "scales": scales, "orientations": oris,
                "ori_vec": cs, "valid": valid, "index": idx}

    def crop_patches(self, image: torch.Tensor, kpts: torch.Tensor, scales: torch.Tensor,
                     oris: torch.Tensor | None) -> torch.Tensor:
        """32x32 rotated crops, support 32*scale px (TF grid linspace(-1,1) * 16*scale) -> (B,K,1,P,P)."""
        p = int(self.conf["patch_size"])
        return crop_patches_fast(image, kpts, scales * (p / 2.0), oris, p, corners=True)

    def describe_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, K, 1, P, P)`` -> ``(B, K, D)``."""
        b, k = patches.shape[:2]
        if k == 0:
            return patches.new_zeros(b, 0, self.descriptor_dim)
        return self.call_network("descriptor", patches.flatten(0, 1))[0].view(b, k, -1)

    def describe(self, image: torch.Tensor, kpts: torch.Tensor, scales: torch.Tensor,
                 oris: torch.Tensor | None) -> torch.Tensor:
        """Descriptors ``(B, K, D)`` of keypoints ``(B, K, 2)`` at ``scales``/``oris`` ``(B, K)``."""
        return self.describe_patches(self.crop_patches(image, kpts, scales, oris))

    # ------------------------------------------------------------------ inference
    def _extract(self, image: torch.Tensor) -> Features:
        h, w = image.shape[-2:]
        with self.autocast():
            x = self.normalize_input(image)
            if self._network_runners:  # exported detector: score maps from its outputs
                scale_logits, ori = self.call_network("detector", x)
                maps = {"scale_logits": scale_logits, "ori": ori, **self.score_maps(scale_logits)}
            else:
                maps = self.detector_forward(x)
            k = int(self.conf["max_keypoints"])
            if k <= 0:  # all NMS survivors (one host sync to count them)
                keep = hard_nms(maps["score"], 2 * int(self.conf["nms_radius"]) + 1,
                                float(self.conf["detection_threshold"]))
                k = max(int(keep.sum()), 1)
            det = self.detect(maps, k)
            # One sync: drop invalid slots before the descriptor network.
            v = det["valid"][0]
            desc = self.describe(x, det["keypoints"][:, v], det["scales"][:, v],
                                 det["orientations"][:, v])
        return Features(
            keypoints=det["keypoints"][0][v].float(),
            scores=det["scores"][0][v].float(),
            descriptors=desc[0].float(),
            scales=det["scales"][0][v].float(),
            orientations=det["orientations"][0][v].float(),
            image_size=(int(w), int(h)),
        )

    # ------------------------------------------------------------------ weights
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """TF variable names (``ConvOnlyResNet/...``, ``SimpleDesc/...``) convert on load."""
        if any("ConvOnlyResNet/" in k or "SimpleDesc/" in k for k in state):
            arrays = {k: v.detach().cpu().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}
            return convert_tf_state(arrays, self.conf)
        return state


# ---------------------------------------------------------------------------------- TF names
def tf_name_table(conf: Mapping[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """(TF variable name, our state-dict key, kind) for every parameter / BN statistic.

    kinds: ``conv`` [k,k,in,out] -> [out,in,k,k]; ``fc`` [in,out] -> [out,in]; ``fc_nhwc`` like
    fc but the input rows are TF's (h, w, c) flatten order, permuted to torch's (c, h, w);
    ``vec`` copied as is.
    """
    c = {**LFNet.full_default_conf(), **(conf or {})}
    rows: list[tuple[str, str, str]] = []

    def conv(tf: str, ours: str) -> None:
        rows.append((f"{tf}/weights", f"{ours}.weight", "conv"))
        rows.append((f"{tf}/biases", f"{ours}.bias", "vec"))

    def bn(tf: str, ours: str) -> None:
        for tfn, on in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                        ("moving_variance", "running_var")):
            rows.append((f"{tf}/{tfn}", f"{ours}.{on}", "vec"))

    d = "ConvOnlyResNet"
    conv(f"{d}/init_conv", "det.init_conv")
    for i in range(int(c["num_blocks"])):
        bn(f"{d}/block-{i + 1}/pre-bn", f"det.blocks.{i}.pre_bn")
        conv(f"{d}/block-{i + 1}/conv1", f"det.blocks.{i}.conv1")
        bn(f"{d}/block-{i + 1}/mid-bn", f"det.blocks.{i}.mid_bn")
        conv(f"{d}/block-{i + 1}/conv2", f"det.blocks.{i}.conv2")
    bn(f"{d}/fin-bn", "det.fin_bn")
    for k in range(int(c["num_scales"])):
        conv(f"{d}/score_conv_{k}", f"det.score_convs.{k}")
    conv(f"{d}/ori_conv", "det.ori_conv")
    s = "SimpleDesc"
    for i in range(3):
        conv(f"{s}/conv{i + 1}", f"desc.convs.{i}")
        bn(f"{s}/bn{i + 1}", f"desc.bns.{i}")
    rows.append((f"{s}/fc1/weights", "desc.fc1.weight", "fc_nhwc"))
    rows.append((f"{s}/fc1/biases", "desc.fc1.bias", "vec"))
    bn(f"{s}/fc-bn1", "desc.fc_bn1")
    rows.append((f"{s}/fc2/weights", "desc.fc2.weight", "fc"))
    rows.append((f"{s}/fc2/biases", "desc.fc2.bias", "vec"))
    return rows


def _find_var(arrays: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Exact name, or a name ending in ``/name`` (checkpoints nest scopes); optimiser slots ignored."""
    if name in arrays:
        return np.asarray(arrays[name])
    hits = [k for k in arrays if k.endswith("/" + name) or k.endswith("/" + name + ":0")
            or k == name + ":0"]
    if len(hits) != 1:
        raise KeyError(f"TF variable '{name}' {'not found' if not hits else 'ambiguous: ' + str(hits)}")
    return np.asarray(arrays[hits[0]])


def convert_arrays(arrays: Mapping[str, np.ndarray], table: list[tuple[str, str, str]],
                   flat_chw: tuple[int, int, int] | None = None) -> dict[str, torch.Tensor]:
    """Apply a (tf name, key, kind) table; BN ``num_batches_tracked`` counters are added as 0."""
    out: dict[str, torch.Tensor] = {}
    for tf, key, kind in table:
        a = _find_var(arrays, tf).astype(np.float32)
        if kind == "conv":
            if a.ndim != 4:
                raise ValueError(f"{tf}: expected [k, k, in, out], got shape {a.shape}")
            a = a.transpose(3, 2, 0, 1)
        elif kind == "fc":
            a = a.T
        elif kind == "fc_nhwc":
            if flat_chw is None:
                raise ValueError("fc_nhwc needs the (C, H, W) of the flattened map")
            ch, hh, ww = flat_chw
            a = a.reshape(hh, ww, ch, -1).transpose(2, 0, 1, 3).reshape(ch * hh * ww, -1).T
        out[key] = torch.from_numpy(np.ascontiguousarray(a))
        if key.endswith(".running_var"):
            out[key[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out


def convert_tf_state(arrays: Mapping[str, np.ndarray], conf: Mapping[str, Any] | None = None
                     ) -> dict[str, torch.Tensor]:
    """TF LF-Net variables (name -> numpy) -> our state dict (loads with ``strict=True``)."""
    c = {**LFNet.full_default_conf(), **(conf or {})}
    side = int(c["patch_size"])
    for _ in range(3):
        side = -(-side // 2)
    return convert_arrays(arrays, tf_name_table(c), flat_chw=(256, side, side))
