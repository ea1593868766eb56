"""D2-Net (Dusmanu et al., CVPR 2019): the official test-time network and post-processing.

Why a faithful re-statement: users bring the official ``d2_ots.pth`` / ``d2_tf.pth`` and expect the
keypoints of the official ``process_multiscale`` for the same weights and image
(docs/method_facts/d2net.md).
Where this module differs in *how* it computes (row tiles for the backbone, channel chunks for the
detector, so multi-scale on large images stays within a few GB), the arithmetic per element is the
same as the dense official code; ``docs/d2net_delf.md`` lists the deliberate deviations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..image.preprocess import ResizeInfo, to_float_image
from ..types import Features
from .base import SHARED_DEFAULTS, ConfigError, Extractor, NetworkDecl

logger = logging.getLogger(__name__)

#: Caffe VGG16 channel means in BGR order (0..255 scale), docs/method_facts/d2net.md#pre-processing.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
#: Indices of the conv layers inside the official ``nn.Sequential`` (state-dict indices).
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)
#: Input rows of context kept above/below a backbone tile. The network's receptive radius is about
#: 48 px (12 feature cells); 64 (a multiple of the stride 4) keeps every kept cell exact.
TILE_HALO = 64


def _vgg16_conv4_3_dilated() -> nn.Sequential:
    """Official test-time layer list (docs/method_facts/d2net.md#test-network); indices match the
    state dict."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(inplace=True),  # 0, 1
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),  # 2, 3
        nn.MaxPool2d(2, stride=2),  # 4
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True),  # 5, 6
        nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(inplace=True),  # 7, 8
        nn.MaxPool2d(2, stride=2),  # 9
        nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(inplace=True),  # 10, 11
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),  # 12, 13
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),  # 14, 15
        nn.AvgPool2d(2, stride=1),  # 16: replaces pool3
        nn.Conv2d(256, 512, 3, padding=2, dilation=2), nn.ReLU(inplace=True),  # 17, 18
        nn.Conv2d(512, 512, 3, padding=2, dilation=2), nn.ReLU(inplace=True),  # 19, 20
        nn.Conv2d(512, 512, 3, padding=2, dilation=2),  # 21: conv4_3, no ReLU here
    ]
    return nn.Sequential(*layers)


class DenseFeatureExtraction(nn.Module):
    """Holds the Sequential as ``model`` so the keys read ``dense_feature_extraction.model.N.*``."""

    num_channels = 512

    def __init__(self) -> None:
        super().__init__()
        self.model = _vgg16_conv4_3_dilated()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass
class _Detections:
    """Detections of one level, feature-map coordinates, official (c, i, j) order."""

    pos: torch.Tensor  # (3, N) long: channel, row, col
    step: torch.Tensor  # (2, N) float: sub-pixel (di, dj)


def hard_detect_and_localize(features: torch.Tensor, edge_threshold: float,
                             banned: torch.Tensor | None, nonnegative: bool = True,
                             channel_chunk: int = 64) -> tuple[_Detections, torch.Tensor]:
    """Official hard detection + Newton refinement on ``(C, H, W)`` features, evaluated sparsely.

    Why sparse: the official modules filter all C x H x W values with five 3x3 kernels (~10
    dense 512-channel maps: 600 MB each at 2x scale of a 1280x960 image, and as slow as the
    network on CPU). Only positions that are the channel maximum can be detected, so the 3x3
    neighbourhoods are gathered there and the same finite differences are evaluated on them:
    the local-max test is ``x >= every in-image neighbour`` (max-pool pads with -inf), the
    derivatives use zero padding like the official ``conv2d(padding=1)``. Results equal the dense
    computation up to float summation order (<= 1 ulp per derivative).
    ``nonnegative`` (features after ReLU): a candidate whose channel maximum is 0 cannot pass
    (all its neighbours are 0, so det = 0), which skips the all-zero pixels.
    Returns the kept detections (|step| < 0.5) in the official (c, i, j) order and the per-pixel
    mask of *all* hard detections (before the step test): what coarser levels ban.
    """
    c_all, h, w = features.shape
    dev = features.device
    channel_max = features.max(dim=0).values  # (H, W)
    allowed = torch.ones(h, w, dtype=torch.bool, device=dev)
    if nonnegative:
        allowed &= channel_max > 0
    if banned is not None:
        allowed &= ~banned
    parts = []
    for c0 in range(0, c_all, channel_chunk):  # chunks only bound the bool mask's memory
        idx = torch.nonzero((features[c0:c0 + channel_chunk] == channel_max) & allowed)
        idx[:, 0] += c0
        parts.append(idx)
    cand = torch.cat(parts) if parts else torch.zeros(0, 3, dtype=torch.long, device=dev)
    c, i, j = cand[:, 0], cand[:, 1], cand[:, 2]

    def nb(di: int, dj: int, pad: float) -> torch.Tensor:
        ii, jj = i + di, j + dj
        inside = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
        v = features[c, ii.clamp(0, h - 1), jj.clamp(0, w - 1)]
        return torch.where(inside, v, torch.full_like(v, pad))

    x = features[c, i, j]
    is_local_max = torch.ones_like(x, dtype=torch.bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                is_local_max &= x >= nb(di, dj, float("-inf"))
    up, down, left, right = nb(-1, 0, 0.0), nb(1, 0, 0.0), nb(0, -1, 0.0), nb(0, 1, 0.0)
    dii = up - 2.0 * x + down
    djj = left - 2.0 * x + right
    dij = (0.25 * nb(-1, -1, 0.0) - 0.25 * nb(-1, 1, 0.0) - 0.25 * nb(1, -1, 0.0)
           + 0.25 * nb(1, 1, 0.0))
    det = dii * djj - dij * dij
    tr = dii + djj
    threshold = (edge_threshold + 1) ** 2 / edge_threshold
    detected = is_local_max & (tr * tr / det <= threshold) & (det > 0)
    any_detected = torch.zeros(h, w, dtype=torch.bool, device=dev)
    any_detected[i[detected], j[detected]] = True

    # official order: torch.nonzero over (c, i, j)
    sel = torch.nonzero(detected).view(-1)
    sel = sel[torch.argsort((cand[sel, 0] * h + cand[sel, 1]) * w + cand[sel, 2])]
    cand, up, down, left, right = cand[sel], up[sel], down[sel], left[sel], right[sel]
    dii, djj, dij, det = dii[sel], djj[sel], dij[sel], det[sel]
    grad_i = 0.5 * down - 0.5 * up
    grad_j = 0.5 * right - 0.5 * left
    inv_00 = djj / det
    inv_01 = -dij / det
    inv_11 = dii / det
    step_i = -(inv_00 * grad_i + inv_01 * grad_j)
    step_j = -(inv_01 * grad_i + inv_11 * grad_j)
    keep = (step_i.abs() < 0.5) & (step_j.abs() < 0.5)
    return _Detections(cand[keep].t(), torch.stack([step_i[keep], step_j[keep]])), any_detected


def bilinear_descriptors(points: torch.Tensor, features: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear samples of ``(C, H, W)`` at ``(2, N)`` (i, j) points; drops points whose four
    neighbours are not all inside the map. Returns ``(C, M)`` raw descriptors and kept ids."""
    _, h, w = features.shape
    i, j = points[0], points[1]
    i0, j0 = torch.floor(i).long(), torch.floor(j).long()
    i1, j1 = torch.ceil(i).long(), torch.ceil(j).long()
    valid = (i0 >= 0) & (j0 >= 0) & (i1 < h) & (j1 < w)
    ids = torch.nonzero(valid).view(-1)
    i, j, i0, j0, i1, j1 = i[ids], j[ids], i0[ids], j0[ids], i1[ids], j1[ids]
    fi = i - i0.to(i.dtype)
    fj = j - j0.to(j.dtype)
    desc = ((1 - fi) * (1 - fj) * features[:, i0, j0] + (1 - fi) * fj * features[:, i0, j1]
            + fi * (1 - fj) * features[:, i1, j0] + fi * fj * features[:, i1, j1])
    return desc, ids


def d2net_target_size(width: int, height: int, max_edge: int, max_sum_edges: int,
                      resize_max_edge: int = 0) -> tuple[int, int]:
    """Official ``extract_features.py`` limits, applied in order with the sizes *truncated*
    (``scipy.misc.imresize`` with a float factor does ``int(size * factor)``). ``resize_max_edge``
    (the shared key, 0 = off) is an extra cap applied first."""
    w, h = width, height
    for limit in (resize_max_edge, max_edge):
        if limit and max(w, h) > limit:
            f = limit / max(w, h)
            w, h = max(int(w * f), 1), max(int(h * f), 1)
    if max_sum_edges and w + h > max_sum_edges:
        f = max_sum_edges / (w + h)
        w, h = max(int(w * f), 1), max(int(h * f), 1)
    return w, h


class D2Net(Extractor):
    """D2-Net test-time model (VGG16 to conv4_3, stride 4) with hard detection.

    Keypoints come back in original-image pixels; ``scales`` is ``1/s`` of the pyramid level (times
    the pre-resize factor); ``scores`` the (accumulated) activation divided by ``level + 1``.
    """

    name = "d2net"
    summary = ("D2-Net (Dusmanu et al. 2019): VGG16 conv4_3 dense 512-D descriptors, "
               "detect-and-describe.")
    weights_note = ("local d2_tf.pth / d2_ots.pth (official layout) or a project checkpoint "
                    "(required)")
    licence = "official code and weights: Clear BSD."
    input_channels = 3
    multiple_of = 1
    checkpoint_wrapper_keys = ("model",)
    default_conf: ClassVar[dict[str, Any]] = {
        "multiscale": False,
        "scales": [0.5, 1.0, 2.0],
        "max_edge": 1600,  # official extract_features.py
        "max_sum_edges": 2800,
        "use_relu": True,
        "edge_threshold": 5.0,
        "preprocessing": "caffe",  # caffe | torch
        "max_tile_pixels": 1_048_576,  # backbone row tiles above this many input pixels; 0 = off
        "channel_chunk": 64,  # detector channel chunk (memory only; results identical)
    }
    runtime_keys = frozenset(SHARED_DEFAULTS) | {
        "multiscale", "scales", "max_edge", "max_sum_edges", "edge_threshold", "max_tile_pixels",
        "channel_chunk",
    }
    #: the exportable part (``backend``): normalised image -> dense VGG map (ReLU, detection,
    #: pyramid and tiling stay in torch)
    networks: ClassVar[dict[str, NetworkDecl]] = {"dense": NetworkDecl(
        call="dense_feature_extraction",
        inputs=(("image", (1, 3, 64, 64), {0: "batch", 2: "height", 3: "width"}),),
        outputs=(("features", {0: "batch", 2: "height_4", 3: "width_4"}),))}

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **conf: Any):
        super().__init__(device=device, precision=precision, **conf)
        self.dense_feature_extraction = DenseFeatureExtraction()

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if conf["preprocessing"] not in ("caffe", "torch"):
            raise ConfigError("preprocessing must be 'caffe' or 'torch'")
        if float(conf["edge_threshold"]) <= 0:
            raise ConfigError("edge_threshold must be > 0")
        if not conf["scales"] or any(float(s) <= 0 for s in conf["scales"]):
            raise ConfigError("scales must be a non-empty list of positive factors")
        for k in ("max_edge", "max_sum_edges", "max_tile_pixels"):
            if int(conf[k]) < 0:
                raise ConfigError(f"{k} must be >= 0 (0 = off)")
        if int(conf["channel_chunk"]) < 1:
            raise ConfigError("channel_chunk must be >= 1")

    @property
    def descriptor_dim(self) -> int:
        return DenseFeatureExtraction.num_channels

    # ------------------------------------------------------------------ input
    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, ResizeInfo]:
        """Official resize limits, then 8-bit quantisation like ``scipy.misc.imresize``.

        The tensor stays in [0, 1] (the base contract); ``_extract`` scales it back to 0..255.
        Resampling is OpenCV (INTER_AREA down, INTER_LINEAR up) rather than PIL bilinear, so a
        *resized* image differs from the official one by interpolation only.
        """
        img = np.asarray(image)
        if img.ndim < 2 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"empty image of shape {img.shape}")
        h, w = img.shape[:2]
        f = to_float_image(img, 3)
        c = self.conf
        tw, th = d2net_target_size(w, h, int(c["max_edge"]), int(c["max_sum_edges"]),
                                   int(c["resize_max_edge"]))
        if (tw, th) != (w, h):
            interp = cv2.INTER_AREA if tw * th < w * h else cv2.INTER_LINEAR
            f = cv2.resize(f, (tw, th), interpolation=interp)
            if img.dtype == np.uint8:  # imresize returns uint8: quantise like it does
                f = np.clip(np.round(f * 255.0), 0, 255) / 255.0
        t = torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)).permute(2, 0, 1)[None]
        return t.contiguous().to(self._device), ResizeInfo((w, h), (tw, th))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> the network's input (caffe: 0..255 BGR minus mean; torch: ImageNet)."""
        if self.conf["preprocessing"] == "caffe":
            x = image.flip(1) * 255.0
            mean = x.new_tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
            return x - mean
        mean = image.new_tensor(TORCH_MEAN_RGB).view(1, 3, 1, 1)
        std = image.new_tensor(TORCH_STD_RGB).view(1, 3, 1, 1)
        return (image - mean) / std

    # ------------------------------------------------------------------ network
    def dense_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(1, 3, H, W)`` -> ``(1, 512, H/4 - 1, W/4 - 1)`` (ReLU if ``use_relu``).

        Large inputs run in row tiles with ``TILE_HALO`` rows of context so peak memory follows
        the tile, not the image (pyramid level 2x of a 1280x960 image is 2560x1920).
        """
        h, w = x.shape[-2:]
        max_px = int(self.conf["max_tile_pixels"])
        if max_px <= 0 or h * w <= max_px:
            out = self.call_network("dense", x)[0]
        else:
            out = self._tiled_features(x, max(16, (max_px // w) // 4 * 4))
        if self.conf["use_relu"]:
            out = F.relu_(out)  # in place: the map is fresh, and at 2x scale it is 100s of MB
        return out

    def _tiled_features(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        out_h, out_w = h // 4 - 1, w // 4 - 1
        out: torch.Tensor | None = None
        for y0 in range(0, h, rows):  # y0 is a multiple of 4: the pooling grid is preserved
            c0 = y0 // 4
            c1 = out_h if y0 + rows >= h else (y0 + rows) // 4
            if c1 <= c0:
                break
            a = max(0, y0 - TILE_HALO)
            b = min(h, y0 + rows + TILE_HALO)
            f = self.call_network("dense", x[:, :, a:b])[0]
            if out is None:  # written in place: no list of tiles + concatenated copy
                out = f.new_empty(f.shape[0], f.shape[1], out_h, out_w)
            out[:, :, c0:c1] = f[:, :, c0 - a // 4:c1 - a // 4]
            del f
            if c1 >= out_h:
                break
        assert out is not None
        return out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Bare network on a [0, 1] RGB batch (benchmarks, export)."""
        return self.dense_features(self.normalize(image))

    # ------------------------------------------------------------------ extraction
    def _extract(self, image: torch.Tensor) -> Features:
        scales = [float(s) for s in self.conf["scales"]] if self.conf["multiscale"] else [1.0]
        with self.autocast():
            x = self.normalize(image.float())
            kpts, scores, desc, kscales = self.process_pyramid(x, scales)
        h, w = image.shape[-2:]
        feats = Features(keypoints=kpts, scores=scores, descriptors=desc, scales=kscales,
                         image_size=(int(w), int(h)))
        thr = float(self.conf["detection_threshold"])
        if thr > 0:
            feats = feats.select(feats.scores >= thr)
        return feats

    def process_pyramid(self, x: torch.Tensor, scales: list[float]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Official ``process_multiscale`` on a normalised ``(1, 3, H, W)`` image.

        Returns keypoints ``(N, 2)`` [x, y] in input pixels, scores, L2 descriptors, scales.
        """
        _, _, h_init, w_init = x.shape
        edge = float(self.conf["edge_threshold"])
        chunk = int(self.conf["channel_chunk"])
        previous: torch.Tensor | None = None
        banned: torch.Tensor | None = None
        out_k, out_s, out_d, out_sc = [], [], [], []
        for idx, scale in enumerate(scales):
            level = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=True)
            h_level, w_level = level.shape[-2:]
            if min(h_level, w_level) < 8:  # feature map would be empty
                logger.debug("d2net: pyramid level %.3g too small (%dx%d), skipped",
                             scale, w_level, h_level)
                continue
            feats = self.dense_features(level)[0].float()
            del level
            h, w = feats.shape[-2:]
            if previous is not None:  # channel chunks: no full-size upsampled copy
                for c0 in range(0, feats.shape[0], chunk):
                    feats[c0:c0 + chunk] += F.interpolate(
                        previous[None, c0:c0 + chunk], size=[h, w], mode="bilinear",
                        align_corners=True)[0]
            if banned is not None:
                banned = F.interpolate(banned[None, None].float(), size=[h, w])[0, 0].bool()
            dets, detected = hard_detect_and_localize(feats, edge, banned,
                                                      bool(self.conf["use_relu"]), chunk)
            banned = detected if banned is None else (banned | detected)
            pts = dets.pos[1:].to(feats.dtype) + dets.step
            raw, ids = bilinear_descriptors(pts, feats)
            previous = feats
            if ids.numel() == 0:
                continue
            pos = dets.pos[:, ids]
            pts = pts[:, ids]
            kp = pts * 4.0 + 1.5  # upscale_positions twice: 2 * (2 * p + 0.5) + 0.5
            kp_y = kp[0] * (h_init / h_level)
            kp_x = kp[1] * (w_init / w_level)
            out_k.append(torch.stack([kp_x, kp_y], dim=1))
            out_d.append(F.normalize(raw, dim=0).t())
            out_s.append(feats[pos[0], pos[1], pos[2]] / (idx + 1))
            out_sc.append(torch.full((ids.numel(),), 1.0 / scale, dtype=feats.dtype,
                                     device=feats.device))
        if not out_k:
            z = torch.zeros(0, device=x.device)
            return torch.zeros(0, 2, device=x.device), z, torch.zeros(0, 512, device=x.device), z
        return torch.cat(out_k), torch.cat(out_s), torch.cat(out_d), torch.cat(out_sc)
