"""SuperPoint (DeTone et al., CVPRW 2018), weight-compatible with MagicLeap's ``superpoint_v1.pth``.

Why this layout: the module attributes are named exactly like the official ``SuperPointNet``
(``conv1a`` ... ``convDb``, no BatchNorm, biases everywhere), so the official plain state dict
loads strictly as it is (docs/method_facts/superpoint.md#network and
docs/method_facts/superpoint.md#checkpoint-layout).

Post-processing follows ``SuperPointFrontend.run``
(docs/method_facts/superpoint.md#post-processing), vectorised:

1. ``dense = exp(semi) / (sum_c exp(semi) + 1e-5)`` over the 65 channels, dustbin dropped. It is
   evaluated in the shifted (overflow-free) but algebraically identical form
   ``exp(semi - m) / (sum exp(semi - m) + 1e-5 * exp(-m))``.
2. Depth-to-space, channel ``c = 8r + q`` -> pixel ``(8i + r, 8j + q)`` (row-major in the cell),
   which is exactly ``pixel_shuffle(8)``.
3. Candidates: heatmap ``>= detection_threshold`` (official ``conf_thresh``, default 0.015).
4. NMS with L-infinity radius ``nms_radius`` (official ``nms_dist``, 4): ``nms="exact"``
   (default) gives exactly the greedy ``nms_fast`` result with batched rounds (~4 ms at 640x480
   here), ``nms="official"`` the same result by the literal sequential loop (the reference),
   ``nms="fast"`` the fixed-cost max-pool approximation without host syncs (see ``nms.py`` for
   where it can differ).
5. Border removal *after* NMS: keep ``b <= x < W - b`` and ``b <= y < H - b``
   (``remove_borders``, official fixed 4).
6. Descriptors: bilinear ``grid_sample`` of the L2-normalised coarse map, ``align_corners=False``
   (what the official call does on torch >= 1.3), then L2 again. ``descriptor_sampling``:
   ``"official"``: ``u = x / (W/2) - 1`` (the official normalisation; it samples half a pixel
   off the cell centres, ``coarse index = (x - 4) / 8``); ``"pixel_center"``:
   ``u = (x + 0.5) / (W/2) - 1`` (``coarse index = (x - 3.5) / 8``, cell centres hit exactly).

Scores are heatmap values, scales 1, orientations 0. The network runs under ``self.autocast()``
(fp32 / bf16 / fp16), post-processing always in fp32.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..types import Features
from .base import SHARED_DEFAULTS, ConfigError, Extractor, NetworkDecl
from .nms import greedy_nms, maxpool_nms, reference_greedy_nms

logger = logging.getLogger(__name__)

NMS_MODES = ("exact", "fast", "official")
SAMPLING_MODES = ("official", "pixel_center")
CELL = 8


class SuperPoint(Extractor):
    """SuperPoint detector + descriptor (official MagicLeap architecture)."""

    name: ClassVar[str] = "superpoint"
    summary: ClassVar[str] = ("SuperPoint (DeTone et al. 2018): 256-D descriptors, 1/8-resolution "
                              "heatmap + NMS.")
    weights_note: ClassVar[str] = ("empty = the package's shipped superpoint_lfr.pth; or an official "
                                   "superpoint_v1.pth")
    licence: ClassVar[str] = ("official release: academic/non-profit non-commercial research use "
                              "only; the shipped superpoint_lfr.pth: BSD-3-Clause (this project's).")
    shipped_weights: ClassVar[str | None] = "superpoint_lfr.pth"
    input_channels: ClassVar[int] = 1
    multiple_of: ClassVar[int] = CELL
    # Defaults = the official demo frontend's behaviour out of the box (conf_thresh 0.015,
    # nms_dist 4, border 4, no top-k).
    default_conf: ClassVar[dict[str, Any]] = {
        "max_keypoints": -1,
        "detection_threshold": 0.015,
        "nms_radius": 4,
        "remove_borders": 4,
        "nms": "exact",
        "descriptor_sampling": "official",
        # 0 = integer heatmap peaks (official). r > 0: each peak moves to the centre of mass of
        # the heatmap in its (2r+1)^2 window (kornia spatial expectation), see refine().
        # -1 = what the weights recommend (project checkpoints record it in ``extractor_conf``;
        # official weights record nothing -> 0, the official output).
        "subpixel_radius": -1,
    }
    #: one-line notes for the generated parameter files (config/*.yaml)
    conf_help: ClassVar[dict[str, str]] = {
        "nms": "exact (batched, = the greedy result) | fast (fixed-cost approximation) | "
               "official (the greedy loop itself, slow)",
        "descriptor_sampling": "official | pixel_center",
        "subpixel_radius": "-1 = the weights' own setting (shipped weights: see "
                           "local_features_ros/data/weights/MODEL_CARD.md; official "
                           "superpoint_v1.pth: 0 = official integer peaks) | 0..8",
    }
    runtime_keys: ClassVar[frozenset[str]] = (frozenset(SHARED_DEFAULTS)
                                              | {"nms", "descriptor_sampling", "subpixel_radius"})
    #: the exportable part (``backend``): ``forward``, image -> (semi, raw coarse descriptors)
    networks: ClassVar[dict[str, NetworkDecl]] = {"network": NetworkDecl(
        call="forward",
        inputs=(("image", (1, 1, 64, 80), {0: "batch", 2: "height", 3: "width"}),),
        outputs=(("semi", {0: "batch", 2: "height_8", 3: "width_8"}),
                 ("desc", {0: "batch", 2: "height_8", 3: "width_8"})))}

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **conf: Any):
        super().__init__(device=device, precision=precision, **conf)
        c1, c2, c3, c4, c5, d = 64, 64, 128, 128, 256, 256
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv1a = nn.Conv2d(1, c1, 3, 1, 1)
        self.conv1b = nn.Conv2d(c1, c1, 3, 1, 1)
        self.conv2a = nn.Conv2d(c1, c2, 3, 1, 1)
        self.conv2b = nn.Conv2d(c2, c2, 3, 1, 1)
        self.conv3a = nn.Conv2d(c2, c3, 3, 1, 1)
        self.conv3b = nn.Conv2d(c3, c3, 3, 1, 1)
        self.conv4a = nn.Conv2d(c3, c4, 3, 1, 1)
        self.conv4b = nn.Conv2d(c4, c4, 3, 1, 1)
        self.convPa = nn.Conv2d(c4, c5, 3, 1, 1)
        self.convPb = nn.Conv2d(c5, CELL * CELL + 1, 1, 1, 0)
        self.convDa = nn.Conv2d(c4, c5, 3, 1, 1)
        self.convDb = nn.Conv2d(c5, d, 1, 1, 0)

    @property
    def descriptor_dim(self) -> int:
        return 256

    #: sub-pixel radius the loaded weights recommend (used while ``subpixel_radius`` is -1)
    recommended_subpixel_radius: int = 0

    def on_weights_loaded(self, ckpt: Mapping[str, Any]) -> None:
        from ..weights import is_project_checkpoint

        rec = ckpt.get("extractor_conf", {}) if is_project_checkpoint(ckpt) else {}
        rec = rec.get("subpixel_radius", 0) if isinstance(rec, Mapping) else 0
        self.recommended_subpixel_radius = int(rec) if isinstance(rec, int) and 0 <= rec <= 8 else 0

    @property
    def subpixel_radius(self) -> int:
        """Effective refinement radius: the configured one, or the weights' recommendation."""
        r = int(self.conf["subpixel_radius"])
        return self.recommended_subpixel_radius if r < 0 else r

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if conf["nms"] not in NMS_MODES:
            raise ConfigError(f"nms must be one of {NMS_MODES}, got '{conf['nms']}'")
        if conf["descriptor_sampling"] not in SAMPLING_MODES:
            raise ConfigError(
                f"descriptor_sampling must be one of {SAMPLING_MODES}, got '{conf['descriptor_sampling']}'"
            )
        if not 0.0 <= float(conf["detection_threshold"]) <= 1.0:
            raise ConfigError("detection_threshold must be in [0, 1] (a heatmap probability)")
        r = conf["subpixel_radius"]
        if isinstance(r, bool) or not isinstance(r, int) or not -1 <= r <= 8:
            raise ConfigError(f"subpixel_radius must be an integer in [-1, 8], got {r!r}")

    # ------------------------------------------------------------------ network
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, H, W)`` in [0, 1] -> ``semi`` ``(B, 65, H/8, W/8)`` logits and the raw
        (not yet normalised) coarse descriptors ``(B, 256, H/8, W/8)``, in the autocast dtype."""
        x = self.encode(image)
        semi = self.detector_head(x)
        desc = self.convDb(self.relu(self.convDa(x)))
        return semi, desc

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """The shared VGG backbone: ``(B, 1, H, W)`` -> ``(B, 128, H/8, W/8)`` (training reuses it)."""
        r = self.relu
        x = r(self.conv1a(image))
        x = self.pool(r(self.conv1b(x)))
        x = r(self.conv2a(x))
        x = self.pool(r(self.conv2b(x)))
        x = r(self.conv3a(x))
        x = self.pool(r(self.conv3b(x)))
        x = r(self.conv4a(x))
        return r(self.conv4b(x))

    def detector_head(self, feat: torch.Tensor) -> torch.Tensor:
        """Backbone features -> ``semi`` logits ``(B, 65, H/8, W/8)`` (MagicPoint's whole output)."""
        return self.convPb(self.relu(self.convPa(feat)))

    def run_network(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward under the configured precision; returns fp32 ``semi`` and unit-norm coarse desc."""
        if image.shape[-2] % CELL or image.shape[-1] % CELL:
            raise ValueError(f"SuperPoint input must be a multiple of {CELL}, got {tuple(image.shape)}")
        semi, desc = self.run_image_network(
            "network", image, self.conv1b.weight.is_contiguous(memory_format=torch.channels_last))
        desc = F.normalize(desc.float(), p=2, dim=1)
        return semi.float(), desc

    # ------------------------------------------------------------------ post-processing
    @staticmethod
    def heatmap(semi: torch.Tensor) -> torch.Tensor:
        """``(B, 65, Hc, Wc)`` logits -> ``(B, 8Hc, 8Wc)`` keypoint probabilities (official softmax)."""
        semi = semi.float()
        # Shift by the per-cell max (clamped so exp(-m) cannot overflow): same value as the
        # official exp(s) / (sum exp(s) + 1e-5), without its overflow for logits > 88.
        m = semi.amax(dim=1, keepdim=True).clamp_min(-80.0)
        e = torch.exp(semi - m)
        dense = e / (e.sum(dim=1, keepdim=True) + 1e-5 * torch.exp(-m))
        return F.pixel_shuffle(dense[:, :-1], CELL)[:, 0]

    def detect(self, heat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(H, W)`` heatmap -> keypoints ``(N, 2)`` [x, y] (float, network pixels) and scores,
        sorted by descending score."""
        thr = float(self.conf["detection_threshold"])
        radius = int(self.conf["nms_radius"])
        mode = self.conf["nms"]
        if mode == "exact":
            keep = greedy_nms(heat, radius, thr)
        elif mode == "official":
            keep = reference_greedy_nms(heat, radius, thr)
        else:
            keep = maxpool_nms(heat, radius, thr)
        b = int(self.conf["remove_borders"])
        if b > 0:
            h, w = heat.shape
            border = torch.zeros_like(keep)
            border[b:h - b, b:w - b] = True
            keep &= border
        yx = torch.nonzero(keep)
        scores = heat[yx[:, 0], yx[:, 1]]
        order = torch.argsort(scores, descending=True, stable=True)
        return yx[order].flip(1).float(), scores[order]

    @staticmethod
    def refine(heat: torch.Tensor, kpts: torch.Tensor, radius: int) -> torch.Tensor:
        """Move integer peaks ``(N, 2)`` [x, y] to the heatmap's centre of mass around them.

        Why: a briefly trained detector puts a plateau or a ring of probability around a corner
        rather than one sharp peak, so the NMS winner lands 1-2 px off; the window's centre of
        mass (after subtracting its minimum, so flat background does not pull towards the
        window centre) is a better estimate. The official model's sharp peaks barely move.
        """
        if radius <= 0 or kpts.shape[0] == 0:
            return kpts
        from kornia.geometry.subpix import spatial_expectation2d

        k = 2 * radius + 1
        h, w = heat.shape
        padded = F.pad(heat[None, None], (radius, radius, radius, radius))
        xi, yi = kpts[:, 0].long(), kpts[:, 1].long()
        o = torch.arange(k, device=heat.device)
        rows = (yi[:, None] + o[None]).clamp(max=h + 2 * radius - 1)  # (N, k) padded coords
        cols = (xi[:, None] + o[None]).clamp(max=w + 2 * radius - 1)
        win = padded[0, 0][rows[:, :, None], cols[:, None, :]]  # (N, k, k)
        win = win - win.flatten(1).amin(1)[:, None, None]
        mass = win.flatten(1).sum(1)
        prob = win / mass.clamp_min(1e-12)[:, None, None]
        offset = spatial_expectation2d(prob[None], normalized_coordinates=False)[0] - radius
        offset = torch.where(mass[:, None] > 0, offset, torch.zeros_like(offset))
        return kpts + offset

    def sample_descriptors(self, kpts: torch.Tensor, desc: torch.Tensor,
                           image_size: tuple[int, int]) -> torch.Tensor:
        """Bilinear descriptors at ``kpts`` (network pixels) from the unit-norm coarse map
        ``(1, D, Hc, Wc)``."""
        if kpts.shape[0] == 0:
            return desc.new_zeros((0, desc.shape[1]))
        w, h = image_size
        offset = 0.5 if self.conf["descriptor_sampling"] == "pixel_center" else 0.0
        grid = (kpts + offset) / kpts.new_tensor([w / 2.0, h / 2.0]) - 1.0
        out = F.grid_sample(desc, grid.view(1, 1, -1, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=False)
        return F.normalize(out[0, :, 0].t(), p=2, dim=1)

    def postprocess(self, semi: torch.Tensor, desc: torch.Tensor) -> Features:
        """Network outputs for one image -> Features in network pixels."""
        heat = self.heatmap(semi)[0]
        kpts, scores = self.detect(heat)
        kpts = self.refine(heat, kpts, self.subpixel_radius)
        h, w = heat.shape
        descriptors = self.sample_descriptors(kpts, desc, (w, h))
        return Features(keypoints=kpts, scores=scores, descriptors=descriptors, image_size=(w, h))

    def _extract(self, image: torch.Tensor) -> Features:
        if image.shape[0] != 1:
            raise ValueError(f"SuperPoint._extract takes one image, got batch {image.shape[0]}")
        semi, desc = self.run_network(image)
        return self.postprocess(semi, desc)
