"""The ``lfnet`` method: LF-Net (Ono, Trulls, Fua, Yi, NeurIPS 2018) behind the Extractor interface.

Why the pipeline is a chain of public methods: training (training/lfnet/) needs the
*differentiable* detector (score maps, scale and orientation maps, soft 3-D NMS, soft scale
selection, soft-argmax refinement) and the patch descriptor as building blocks of its two-branch
scheme, so ``detector_forward``, ``score_maps``, ``detect`` and ``describe`` are batched methods
and ``_extract`` only chains them. Everything runs on the image's device; the only host sync is
the final boolean filtering in ``_extract``. Constants, deviations and assumptions:
docs/lfnet_lift.md#lf-net.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from ...types import Features
from ..base import ConfigError, Extractor, NetworkDecl
from ..patches import crop_patches_fast
from ..tf_weights import tensor_arrays
from .networks import LFNetDescriptor, LFNetDetector
from .ops import (border_mask, few_channel_conv, gather_maps, hard_nms, instance_norm,
                  resize_bilinear, scale_factors, soft_argmax_refine, soft_nms_3d, soft_scale_selection,
                  unit_vectors)
from .tf_convert import convert_tf_state

#: TF variable scopes of the official checkpoint; a state dict with them converts on load.
TF_SCOPES = ("ConvOnlyResNet/", "SimpleDesc/")


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

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
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
        if any(scope in k for k in state for scope in TF_SCOPES):
            return convert_tf_state(tensor_arrays(state), self.conf)
        return state
