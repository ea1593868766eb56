"""The ``lift`` method: LIFT (Yi, Trulls, Lepetit, Fua, ECCV 2016) behind the Extractor interface.

Pipeline (tf-lift ``tester.py`` semantics, batched): TILDE-style detector (25x25 conv + GHH) run
fully convolutionally on a scale pyramid -> score maps resampled onto the input grid (the 12-px
VALID border is -inf) -> 3-D NMS over space and scale + edge test + quadratic interpolation ->
top-K -> orientation net on upright 64x64 crops -> descriptor net on rotated 64x64 crops.

Speed (CPU, 21 levels at 640x480; same outputs up to float rounding, see test/extractors/test_lift.py):
levels are packed side by side into a few canvases per detector call (``pyramid.pack_levels``),
each level is resampled only inside its VALID rectangle with cached grids, the 3-D NMS is
separable, and the derivatives for the edge test / Newton step are evaluated at the NMS
survivors only (``ops.sample_level_derivatives``) instead of resampling five derivative maps per
level. Constants, deviations and assumptions: docs/lfnet_lift.md#lift.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F

from ...types import Features
from ..base import ConfigError, Extractor, NetworkDecl
from ..patches import crop_patches_fast
from ..tf_weights import tensor_arrays
from .networks import LIFTDescriptor, LIFTDetector, LIFTOrientation, orientation_from_output
from .ops import (DESC_HALF_WIDTH_SIGMA, DESC_INPUT_SIZE, edge_ok, newton_offset, nms_3d,
                  parabola_offset, patch_soft_argmax, sample_level_derivatives)
from .pyramid import (KP_FILTER_SIZE, KP_INPUT_SIZE, PyramidLayout, PyramidLevel, ScorePyramid,
                      grid_sample_border, pyramid_layout, pyramid_levels)
from .tf_convert import convert_tf_state

#: mean/std on the 0..255 scale: (kp/ori, desc) per ``mean_std_type`` (tf-lift networks/lift.py).
MEAN_STD: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "hardcoded": ((128.0, 128.0), (128.0, 128.0)),
    "old": ((116.4368, 88.0831), (110.7539, 61.5369)),
}

#: TF variable scopes of the tf-lift checkpoints; a state dict with them converts on load.
TF_SCOPES = ("lift/kp/", "lift/ori/", "lift/desc/")


class LIFT(Extractor):
    """LIFT: pyramid detector, orientation and descriptor networks; gray input in [0, 1]."""

    name: ClassVar[str] = "lift"
    summary: ClassVar[str] = ("LIFT (Yi et al. 2016): learned detector, orientation and 128-D "
                              "patch descriptor.")
    weights_note: ClassVar[str] = ("local weights converted from the official release or a "
                                   "project checkpoint (required)")
    licence: ClassVar[str] = "LIFT is patented (academic use)."
    input_channels: ClassVar[int] = 1
    default_conf: ClassVar[dict[str, Any]] = {
        "max_keypoints": 1000,  # test_num_keypoint
        "nms_radius": 3,  # "nearby": round(round(0.5 (48-1) 64/128) * 0.25 * 1.0) = 3 px (min 1)
        "remove_borders": 0,  # the -inf 12-px VALID border already excludes edges
        "detection_threshold": -1.0e9,  # off (LIFT scores are signed)
        "min_scale_log2": 1.0,
        "max_scale_log2": 4.0,
        "scale_intervals": 4,
        "double_scale": True,  # min_log2 -= 1 when min(H, W) <= 1600
        "min_level_side": 26,  # levels with resized min side <= 26 px are dropped
        "nms_scale_radius": 1,  # levels on each side in the 3-D NMS [assumed; see docs]
        "edge_th": 10.0,
        "interpolate": True,
        "ori_variant": "tflift",  # or "theano" (FC-4 before pooling, atan2(out0, out1))
        "desc_variant": "tflift",  # or "original" (tanh + L2 pool + subtractive norm)
        "use_batch_norm": False,  # released tf-lift models: --use_batch_norm=False
        "mean_std_type": "hardcoded",  # hardcoded | old | dataset | patch
        "kp_mean": 128.0, "kp_std": 128.0,  # used by mean_std_type=dataset (0..255 scale)
        "desc_mean": 128.0, "desc_std": 128.0,
        "subnorm_ksize": 5,  # original variant: odd Gaussian kernel [assumed; stored in model file]
        "subnorm_sigma": 1.25,
        "desc_l2norm": True,  # the original had no final L2 normalisation
        "kp_com_strength": 10.0,  # patch-mode soft-argmax strength (training)
        "kp_scoremap_softmax_strength": 10.0,  # patch-mode soft-max score strength
        "crop_batch": 0,  # >0: run ori/desc nets in chunks of this many crops (memory bound)
    }

    #: exportable parts (``backend``): the detector on one pyramid level (dynamic size), the
    #: orientation and descriptor nets on normalised 64x64 patches (dynamic count). The pyramid
    #: loop, 3-D NMS, interpolation and cropping stay in torch.
    networks: ClassVar[dict[str, NetworkDecl]] = {
        "detector": NetworkDecl(
            call="det", inputs=(("image", (1, 1, 64, 64), {0: "batch", 2: "height", 3: "width"}),),
            outputs=(("score", {0: "batch", 2: "score_height", 3: "score_width"}),)),
        "orientation": NetworkDecl(
            call="ori", inputs=(("patches", (2, 1, 64, 64), {0: "patches"}),),
            outputs=(("orientation", {0: "patches"}),)),
        "descriptor": NetworkDecl(
            call="desc", inputs=(("patches", (2, 1, 64, 64), {0: "patches"}),),
            outputs=(("descriptors", {0: "patches"}),)),
    }

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **conf: Any):
        super().__init__(device=device, precision=precision, **conf)
        c = self.conf
        self.det = LIFTDetector()
        self.ori = LIFTOrientation(c["ori_variant"], bool(c["use_batch_norm"]))
        self.desc = LIFTDescriptor(c["desc_variant"], bool(c["use_batch_norm"]),
                                   int(c["subnorm_ksize"]), float(c["subnorm_sigma"]))
        self._layout_cache: PyramidLayout | None = None

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if conf["ori_variant"] not in ("tflift", "theano"):
            raise ConfigError("ori_variant must be 'tflift' or 'theano'")
        if conf["desc_variant"] not in ("tflift", "original"):
            raise ConfigError("desc_variant must be 'tflift' or 'original'")
        if conf["mean_std_type"] not in ("hardcoded", "old", "dataset", "patch"):
            raise ConfigError("mean_std_type must be hardcoded, old, dataset or patch")
        if float(conf["max_scale_log2"]) < float(conf["min_scale_log2"]):
            raise ConfigError("max_scale_log2 must be >= min_scale_log2")
        if int(conf["scale_intervals"]) < 1 or int(conf["nms_scale_radius"]) < 0:
            raise ConfigError("scale_intervals must be >= 1 and nms_scale_radius >= 0")
        if float(conf["kp_std"]) <= 0 or float(conf["desc_std"]) <= 0:
            raise ConfigError("kp_std and desc_std must be > 0")
        if conf["desc_variant"] == "original" and not int(conf["subnorm_ksize"]) % 2:
            raise ConfigError("subnorm_ksize must be a positive odd number")

    @property
    def descriptor_dim(self) -> int:
        return 128

    # ------------------------------------------------------------------ normalisation
    def _mean_std(self, module: str) -> tuple[float, float]:
        t = self.conf["mean_std_type"]
        if t in MEAN_STD:
            return MEAN_STD[t][0 if module == "kp" else 1]
        key = "kp" if module == "kp" else "desc"
        return float(self.conf[f"{key}_mean"]), float(self.conf[f"{key}_std"])

    def normalize(self, x: torch.Tensor, module: str) -> torch.Tensor:
        """[0, 1] image or ``(..., P, P)`` patches -> network input for ``module`` (kp/ori: "kp")."""
        if self.conf["mean_std_type"] == "patch":
            mean = x.mean(dim=(-2, -1), keepdim=True)
            std = x.std(dim=(-2, -1), keepdim=True).clamp_min(1e-5)
            return (x - mean) / std
        mean, std = self._mean_std(module)
        return (x * 255.0).sub_(mean).div_(std)  # (x * 255 - mean) / std, one buffer

    # ------------------------------------------------------------------ detection
    def levels(self, height: int, width: int) -> list[PyramidLevel]:
        c = self.conf
        return pyramid_levels(height, width, float(c["min_scale_log2"]), float(c["max_scale_log2"]),
                              int(c["scale_intervals"]), bool(c["double_scale"]),
                              min_side=int(c["min_level_side"]))

    def _layout(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> PyramidLayout:
        """``pyramid_layout`` cached for the last input size (a camera stream repeats it):
        rebuilding the 21 grids costs as much as sampling them."""
        levels = self.levels(h, w)
        key = (h, w, str(device), dtype, tuple(levels))
        if self._layout_cache is None or self._layout_cache.key != key:
            self._layout_cache = pyramid_layout(levels, h, w, device, dtype, key)
        return self._layout_cache

    def score_pyramid(self, image: torch.Tensor) -> ScorePyramid:
        """``(B, 1, H, W)`` [0, 1] -> every level's score map resampled onto the input pixel grid;
        -inf where the VALID 25x25 conv has no output (the 12-px border).

        Levels share detector calls (``pack_levels``: same score maps). Each level is sampled
        only inside its VALID rectangle (the rest of the preallocated stack stays -inf), with the
        same ``grid_sample`` call and coordinates as a full-grid sampling would use; the
        derivative maps are not resampled here (see :class:`ScorePyramid`)."""
        b, _, h, w = image.shape
        lay = self._layout(h, w, image.device, image.dtype)
        if not lay.levels:
            return ScorePyramid(image.new_zeros(b, 0, h, w), image.new_zeros(b, 0, 5, h, w),
                                image.new_zeros(0), image.new_zeros(0, 2))
        x = self.normalize(image, "kp")
        stack: torch.Tensor | None = None
        maps: list[torch.Tensor | None] = [None] * len(lay.levels)
        crop = KP_FILTER_SIZE - 1
        for ch, cw, items in lay.canvases:
            resized = []
            for i, _, _ in items:
                lv = lay.levels[i]
                resized.append(F.interpolate(x, size=(lv.height, lv.width), mode="bilinear",
                                             align_corners=False, antialias=lv.height * lv.width < h * w))
            if len(items) == 1:
                canvas = resized[0]
            else:
                canvas = x.new_zeros(b, 1, ch, cw)
                for (i, top, left), xl in zip(items, resized):
                    canvas[:, :, top:top + xl.shape[-2], left:left + xl.shape[-1]] = xl
            out = self.call_network("detector", canvas)[0]  # (B, 1, ch - 24, cw - 24)
            for i, top, left in items:
                lv = lay.levels[i]
                maps[i] = out[:, :, top:top + lv.height - crop, left:left + lv.width - crop]
            if stack is None:
                stack = torch.full((b, len(lay.levels), h, w), float("-inf"), device=image.device,
                                   dtype=out.dtype)
        assert stack is not None and all(m is not None for m in maps)
        level_maps = [m for m in maps if m is not None]
        for i, (s, rect, grid) in enumerate(zip(level_maps, lay.rects, lay.grids)):
            if rect is not None and grid is not None:
                ya, yb, xa, xb = rect
                stack[:, i, ya:yb, xa:xb] = grid_sample_border(s, grid)[:, 0]
        return ScorePyramid(stack, None, lay.sigmas, lay.level_px, maps=level_maps,
                            grid_x=lay.grid_x, grid_y=lay.grid_y)

    def candidate_derivatives(self, pyr: ScorePyramid, bi: torch.Tensor, li: torch.Tensor,
                              yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        """[Dx, Dy, Dxx, Dyy, Dxy] ``(N, 5)`` at input pixels ``(bi, li, yi, xi)``: from the dense
        ``deriv`` when the pyramid has one, else evaluated there from the level maps."""
        if pyr.deriv is not None:
            return pyr.deriv[bi, li, :, yi, xi]
        if pyr.maps is None or pyr.grid_x is None or pyr.grid_y is None:
            raise ValueError("ScorePyramid needs either deriv or maps + grid_x + grid_y")
        return sample_level_derivatives(pyr.maps, pyr.grid_x[li, xi], pyr.grid_y[li, yi], bi, li)

    def detect(self, pyr: ScorePyramid, top_k: int) -> dict[str, torch.Tensor]:
        """3-D NMS + edge test + threshold, top-K, then interpolation: one Newton step on the
        level's own score map for x, y (SIFT-style, in level pixels) and a parabola over
        neighbouring levels for log2 sigma. Fixed-size ``(B, K)`` outputs + ``valid``.

        The NMS is dense; everything after it runs on the NMS survivors only (one host sync for
        their count), which is what makes the 21-level pyramid cheap."""
        c = self.conf
        stack = pyr.score
        b, nl, h, w = stack.shape
        if nl == 0:
            z = stack.new_zeros(b, 0)
            return {"keypoints": stack.new_zeros(b, 0, 2), "scores": z, "scales": z,
                    "valid": z.bool(), "level": z.long()}
        k = min(int(top_k), nl * h * w)
        keep = nms_3d(stack, max(int(c["nms_radius"]), 1), int(c["nms_scale_radius"]))
        bi, li, yi, xi = torch.nonzero(keep.to(stack.device)).unbind(1)  # flat-index order
        val = stack[bi, li, yi, xi]
        ok = val > float(c["detection_threshold"])
        rb = int(c["remove_borders"])
        if rb > 0:
            ok &= (yi >= rb) & (yi < h - rb) & (xi >= rb) & (xi < w - rb)
        bi, li, yi, xi, val = bi[ok], li[ok], yi[ok], xi[ok], val[ok]
        d = self.candidate_derivatives(pyr, bi, li, yi, xi)  # (N, 5)
        ok = edge_ok(d[:, 2:], float(c["edge_th"]))
        bi, li, yi, xi, val, d = bi[ok], li[ok], yi[ok], xi[ok], val[ok], d[ok]
        # top-K per image: by score, descending; equal scores keep the flat-index order
        order = torch.sort(val, descending=True, stable=True).indices
        order = order[torch.sort(bi[order], stable=True).indices]
        bo = bi[order]
        counts = torch.bincount(bo, minlength=b)
        rank = torch.arange(bo.numel(), device=bo.device) - (torch.cumsum(counts, 0) - counts)[bo]
        take = rank < k
        order, bo, rank = order[take], bo[take], rank[take]
        top = stack.new_full((b, k), float("-inf"))
        top[bo, rank] = val[order]
        valid = torch.zeros(b, k, dtype=torch.bool, device=stack.device)
        valid[bo, rank] = True
        lev, y, x = (torch.zeros(b, k, dtype=torch.long, device=stack.device) for _ in range(3))
        lev[bo, rank], y[bo, rank], x[bo, rank] = li[order], yi[order], xi[order]
        xy = torch.stack([x, y], dim=-1).to(stack.dtype)
        log_s = torch.log2(pyr.sigmas)[lev]
        if c["interpolate"]:
            dk = d.new_zeros(b, k, 5)
            dk[bo, rank] = d[order]
            xy = xy + newton_offset(dk) * pyr.level_px[lev]
            if nl > 1:
                flat = stack.reshape(b, -1)
                inf = torch.full_like(top, float("-inf"))

                def at(dl: int) -> torch.Tensor:
                    ll = lev + dl
                    okl = (ll >= 0) & (ll < nl)
                    j = (ll.clamp(0, nl - 1) * h + y) * w + x
                    return torch.where(okl, torch.gather(flat, 1, j), inf)

                f0 = torch.where(valid, top, torch.zeros_like(top))
                step = torch.log2(pyr.sigmas[1:] / pyr.sigmas[:-1]).mean()
                log_s = log_s + parabola_offset(at(-1), f0, at(1)) * step
        return {"keypoints": xy, "scores": top, "scales": torch.pow(2.0, log_s), "valid": valid,
                "level": lev}

    def kp_patch_forward(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training-time patch mode: ``(N, 1, S, S)`` patches in [0, 1] (S = 128: 24 sigma wide)
        -> resized to 48x48 -> detector -> ``score_map (N, 1, 24, 24)``, soft-argmax location
        ``xy (N, 2)`` in [-1, 1] patch coordinates and the soft-max patch ``score (N,)``."""
        x = patches
        if tuple(x.shape[-2:]) != (KP_INPUT_SIZE, KP_INPUT_SIZE):
            x = F.interpolate(x, size=(KP_INPUT_SIZE, KP_INPUT_SIZE), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > KP_INPUT_SIZE)
        s = self.det(self.normalize(x, "kp"))
        xy, score = patch_soft_argmax(s, float(self.conf["kp_com_strength"]),
                                      float(self.conf["kp_scoremap_softmax_strength"]))
        return {"score_map": s, "xy": xy, "score": score}

    # ------------------------------------------------------------------ ori / desc
    def crop(self, image: torch.Tensor, kpts: torch.Tensor, sigmas: torch.Tensor,
             oris: torch.Tensor | None) -> torch.Tensor:
        """64x64 crops of half width 6 sigma (central 64 of the 128-px, 24-sigma patch) -> (B,K,1,64,64)."""
        return crop_patches_fast(image, kpts, sigmas * DESC_HALF_WIDTH_SIGMA, oris, DESC_INPUT_SIZE,
                                 corners=False)

    def _run_chunked(self, net: str, patches: torch.Tensor) -> torch.Tensor:
        """Network part ``net`` (``networks``) on ``crop_batch`` patches at a time."""
        n = int(self.conf["crop_batch"])
        if n <= 0 or patches.shape[0] <= n:
            return self.call_network(net, patches)[0]
        return torch.cat([self.call_network(net, p)[0] for p in patches.split(n)], dim=0)

    def orientation(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Upright crops ``(B, K, 1, 64, 64)`` in [0, 1] -> unit (cos, sin) ``(B, K, 2)``, angle ``(B, K)``."""
        b, k = patches.shape[:2]
        if k == 0:
            return patches.new_zeros(b, 0, 2), patches.new_zeros(b, 0)
        out = self._run_chunked("orientation", self.normalize(patches.flatten(0, 1), "kp"))
        vec, ang = orientation_from_output(out, self.conf["ori_variant"])
        return vec.view(b, k, 2), ang.view(b, k)

    def describe_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Rotated crops ``(B, K, 1, 64, 64)`` in [0, 1] -> ``(B, K, 128)``."""
        b, k = patches.shape[:2]
        if k == 0:
            return patches.new_zeros(b, 0, 128)
        d = self._run_chunked("descriptor", self.normalize(patches.flatten(0, 1), "desc"))
        if self.conf["desc_l2norm"]:
            d = F.normalize(d, dim=-1)
        return d.view(b, k, -1)

    def describe(self, image: torch.Tensor, kpts: torch.Tensor, sigmas: torch.Tensor,
                 oris: torch.Tensor | None) -> torch.Tensor:
        """Descriptors ``(B, K, 128)`` of keypoints at ``sigmas``/``oris`` ``(B, K)``."""
        return self.describe_patches(self.crop(image, kpts, sigmas, oris))

    # ------------------------------------------------------------------ inference
    def _extract(self, image: torch.Tensor) -> Features:
        h, w = image.shape[-2:]
        with self.autocast():
            pyr = self.score_pyramid(image)
            k = int(self.conf["max_keypoints"])
            det = self.detect(pyr, k if k > 0 else pyr.score[0].numel())
            # One sync: drop invalid slots before the (expensive) patch networks.
            v = det["valid"][0]
            kpts, sig = det["keypoints"][:, v], det["scales"][:, v]
            _, ang = self.orientation(self.crop(image, kpts, sig, None))
            desc = self.describe(image, kpts, sig, ang)
        return Features(
            keypoints=kpts[0].float(),
            scores=det["scores"][0][v].float(),
            descriptors=desc[0].float(),
            scales=sig[0].float(),
            orientations=ang[0].float(),
            image_size=(int(w), int(h)),
        )

    # ------------------------------------------------------------------ weights
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """TF variable names (``network/lift/...``) convert on load."""
        if any(scope in k for k in state for scope in TF_SCOPES):
            return convert_tf_state(tensor_arrays(state), self.conf)
        return state
