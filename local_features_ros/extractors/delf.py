"""DELF (Noh et al., ICCV 2017): ResNet-50 to block3 + attention, multi-scale, PCA-reduced descriptors.

Why this backbone layout: the project loads *torchvision-layout* ResNet-50 weights (ImageNet
checkpoints users have locally), so the default backbone is torchvision's "v1.5" ResNet (stride on
the 3x3 conv of a Bottleneck, symmetric padding). Its block3 (``layer3``) geometry differs from the
TF-slim model of the official release (stride 32, rf 291): here stride 16, rf 267, padding 133,
computed by hand in ``RF_*`` below and checked numerically in the tests. ``backbone: tf_slim``
rebuilds the official geometry with the same keys, for converted official weights
(``docs/d2net_delf.md`` gives the name mapping)."""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..types import Features
from .base import SHARED_DEFAULTS, ConfigError, Extractor, NetworkDecl

logger = logging.getLogger(__name__)

#: Receptive field of one ``layer3`` cell of the torchvision v1.5 ResNet-50 (hand computation,
#: r += (k - 1) * jump, jump *= stride): conv1 7/2 -> 7, j2; maxpool 3/2 -> 11, j4; layer1 3 x
#: (3x3 @ j4) -> 35; layer2 (3x3/2 @ j4) -> 43, j8, then 3 x 16 -> 91; layer3 (3x3/2 @ j8) -> 107,
#: j16, then 5 x 32 -> 267. Every layer pads (k - 1) / 2, so cell (y, x) is centred on input
#: pixel (16 y, 16 x): the box starts at 16 y - 133.
RF_SIZE = 267
RF_STRIDE = 16
RF_PADDING = 133
#: The official TF-slim ``resnet_v1_50/block3`` values (docs/method_facts/delf.md#extraction),
#: used with
#: ``backbone: tf_slim`` so converted official weights give the official boxes.
TF_SLIM_BLOCK3_RF = (291, 32, 145)
RF_GEOMETRY = {"torchvision": (RF_SIZE, RF_STRIDE, RF_PADDING), "tf_slim": TF_SLIM_BLOCK3_RF}
DEFAULT_SCALES = [0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Bottleneck(nn.Module):
    """ResNet Bottleneck 1x1 -> 3x3 (``stride`` here) -> 1x1 (x4), parameter names of torchvision.

    Shortcut: a 1x1 projection (``downsample``, with ``project_stride``) when ``project``, else
    identity subsampled by ``stride`` (TF-slim's ``subsample``, a 1x1 max-pool with stride).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, project: bool = False,
                 project_stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.stride = stride
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if project:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=project_stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if self.downsample is not None:
            identity = self.downsample(x)
        else:
            identity = x if self.stride == 1 else x[:, :, ::self.stride, ::self.stride]
        return self.relu(y + identity)


class MaxPoolSame(nn.Module):
    """3x3 stride-2 max-pool with TF ``SAME`` padding (extra row/column at the end for even
    sizes), as in TF-slim's ``resnet_v1`` root block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for n in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=float("-inf")), 3, stride=2)


class ResNet50Block3(nn.Module):
    """ResNet-50 up to ``layer3`` (1024 channels) with torchvision parameter names.

    ``variant="torchvision"`` (v1.5): stride on the *first* block's 3x3 of layer2/3, max-pool
    padding 1, block3 output stride 16. ``variant="tf_slim"`` (official DELF TF1
    ``resnet_v1_50``): stride 2 on the *last* unit's 3x3 of blocks 1-3 with a subsampled identity
    shortcut, SAME max-pool, output stride 32. Same keys and shapes in both.
    """

    VARIANTS = ("torchvision", "tf_slim")

    def __init__(self, variant: str = "torchvision") -> None:
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {self.VARIANTS}")
        self.variant = variant
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (nn.MaxPool2d(3, stride=2, padding=1) if variant == "torchvision"
                                   else MaxPoolSame())
        slim = variant == "tf_slim"
        self.layer1 = self._layer(64, 64, 3, 2 if slim else 1, slim)
        self.layer2 = self._layer(256, 128, 4, 2, slim)
        self.layer3 = self._layer(512, 256, 6, 2, slim)

    @staticmethod
    def _layer(inplanes: int, planes: int, blocks: int, stride: int, stride_last: bool
               ) -> nn.Sequential:
        mods = []
        for b in range(blocks):
            cin = inplanes if b == 0 else planes * 4
            if stride_last:
                s = stride if b == blocks - 1 else 1
                mods.append(Bottleneck(cin, planes, s, project=b == 0, project_stride=1))
            else:
                s = stride if b == 0 else 1
                mods.append(Bottleneck(cin, planes, s, project=b == 0, project_stride=s))
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


class AttentionHead(nn.Module):
    """1x1 conv 1024->512, BN, ReLU, 1x1 conv 512->1, softplus: alpha >= 0 per cell."""

    def __init__(self, in_channels: int = 1024, hidden: int = 512) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 1)
        self.bn = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.conv2(F.relu(self.bn(self.conv1(x)))))


def fit_pca(descriptors: torch.Tensor, dim: int = 40
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA of ``(N, D)`` descriptors -> ``(mean (D,), matrix (dim, D), variance (dim,))``.

    Descriptors are L2-normalised first (that is the input of the PCA step at extraction). Rows
    of ``matrix`` are eigenvectors by decreasing variance, with a deterministic sign (largest
    component positive) so that refits on the same data give the same checkpoint.
    """
    x = F.normalize(descriptors.detach().double(), dim=1)
    if x.shape[0] < 2:
        raise ValueError("fit_pca needs at least 2 descriptors")
    if dim > x.shape[1]:
        raise ValueError(f"pca dim {dim} > descriptor dim {x.shape[1]}")
    mean = x.mean(0)
    xc = x - mean
    cov = xc.t() @ xc / (x.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(evals, descending=True)[:dim]
    matrix = evecs[:, order].t()
    sign = torch.sign(matrix.gather(1, matrix.abs().argmax(1, keepdim=True)))
    matrix = matrix * sign
    variance = evals[order].clamp_min(0)
    return mean.float(), matrix.float(), variance.float()


class DELF(Extractor):
    """Dense attentive local features with image pyramid; keypoints are receptive-field centres.

    ``scores`` = attention, ``scales`` = 1/s of the pyramid level, descriptors are 40-D PCA (or the
    L2-normalised 1024-D features when no PCA has been fitted, see ``pca_fitted``).
    """

    name = "delf"
    summary = ("DELF (Noh et al. 2017): attention-selected ResNet-50 conv4 features, PCA to "
               "40-D.")
    weights_note = ("local weights (converted tensorflow/models layout or a project checkpoint) "
                    "(required)")
    licence = "tensorflow/models DELF: Apache-2.0."
    input_channels = 3
    default_conf: ClassVar[dict[str, Any]] = {
        "max_keypoints": 1000,  # official max_feature_num, selected by attention
        "scales": list(DEFAULT_SCALES),
        # Official TF weights: 100.0. Our own checkpoints train the attention with a different
        # (unbounded softplus) scale, so 0 = no absolute threshold; top-k by attention selects.
        "score_threshold": 0.0,
        "pca_dim": 40,
        "use_whitening": False,
        "preprocessing": "torchvision",  # torchvision (ImageNet mean/std) | tf ((x*255-128)/128)
        "backbone": "torchvision",  # torchvision (v1.5, stride 16) | tf_slim (official TF1, 32)
        "min_level_size": 16,  # pyramid levels smaller than this (pixels) are skipped
    }
    runtime_keys = frozenset(SHARED_DEFAULTS) | {"scales", "score_threshold", "use_whitening"}
    #: the exportable part (``backend``): one pyramid level -> block3 features + attention.
    #: ``dynamic=False``: TF-SAME max-pool padding is computed from the size in Python, so one
    #: export per level size is cached (the pyramid loop, keypoints and PCA stay in torch).
    networks: ClassVar[dict[str, NetworkDecl]] = {"features": NetworkDecl(
        call="forward", inputs=(("image", (1, 3, 64, 64), {}),),
        outputs=(("features", {}), ("attention", {})), dynamic=False)}

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **conf: Any):
        super().__init__(device=device, precision=precision, **conf)
        self.backbone = ResNet50Block3(self.conf["backbone"])
        self.rf_size, self.rf_stride, self.rf_padding = RF_GEOMETRY[self.conf["backbone"]]
        self.attention = AttentionHead()
        d = int(self.conf["pca_dim"]) or 1
        self.register_buffer("pca_mean", torch.zeros(1024))
        self.register_buffer("pca_matrix", torch.eye(d, 1024))
        self.register_buffer("pca_variance", torch.ones(d))
        self.register_buffer("pca_fitted", torch.zeros((), dtype=torch.bool))

    @classmethod
    def validate_conf(cls, conf: Mapping[str, Any]) -> None:
        super().validate_conf(conf)
        if not conf["scales"] or any(float(s) <= 0 for s in conf["scales"]):
            raise ConfigError("scales must be a non-empty list of positive factors")
        if not 0 <= int(conf["pca_dim"]) <= 1024:
            raise ConfigError("pca_dim must be in [0, 1024] (0 = no PCA)")
        if conf["backbone"] not in ResNet50Block3.VARIANTS:
            raise ConfigError(f"backbone must be one of {ResNet50Block3.VARIANTS}")
        if conf["preprocessing"] not in ("torchvision", "tf"):
            raise ConfigError("preprocessing must be 'torchvision' or 'tf'")
        if float(conf["score_threshold"]) < 0:
            raise ConfigError("score_threshold must be >= 0")

    # ------------------------------------------------------------------ PCA
    @property
    def uses_pca(self) -> bool:
        return int(self.conf["pca_dim"]) > 0 and bool(self.pca_fitted)

    @property
    def descriptor_dim(self) -> int:
        return int(self.conf["pca_dim"]) if self.uses_pca else 1024

    def set_pca(self, mean: torch.Tensor, matrix: torch.Tensor, variance: torch.Tensor) -> None:
        """Install PCA parameters (from ``fit_pca``); they travel in the state dict."""
        d = int(self.conf["pca_dim"])
        if tuple(matrix.shape) != (d, 1024) or mean.shape != (1024,) or variance.shape != (d,):
            raise ValueError(f"PCA shapes must be mean (1024,), matrix ({d}, 1024), variance ({d},)")
        dev = self.pca_mean.device
        self.pca_mean.copy_(mean.to(dev))
        self.pca_matrix.copy_(matrix.to(dev))
        self.pca_variance.copy_(variance.to(dev))
        self.pca_fitted.fill_(True)

    def postprocess_descriptors(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw ``(N, 1024)`` -> L2 -> PCA -> optional whitening -> L2
        (docs/method_facts/delf.md#descriptor-post-processing)."""
        x = F.normalize(raw.float(), dim=1)
        if not self.uses_pca:
            return x
        x = (x - self.pca_mean) @ self.pca_matrix.t()
        if self.conf["use_whitening"]:
            x = x / torch.sqrt(self.pca_variance.clamp_min(1e-12))
        return F.normalize(x, dim=1)

    # ------------------------------------------------------------------ weights
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A torchvision ResNet-50 state dict (``conv1.weight``, ``layer1.0.downsample.0.weight``
        ...) goes into the backbone: ``layer4.*`` and ``fc.*`` are dropped (DELF stops at block3);
        the attention head and PCA keep their current (untrained / not fitted) values."""
        if "conv1.weight" not in state or any(k.startswith("backbone.") for k in state):
            return state
        own = self.state_dict()
        mapped = {}
        dropped = 0
        for k, v in state.items():
            if k.startswith(("layer4.", "fc.")):
                dropped += 1
                continue
            mapped["backbone." + k] = v
        for k, v in own.items():
            if not k.startswith("backbone."):
                mapped[k] = v
        logger.warning("delf: loaded a torchvision ResNet-50 into the backbone (%d layer4/fc keys "
                       "ignored); the attention head is untrained and no PCA is fitted", dropped)
        return mapped

    # ------------------------------------------------------------------ network
    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if self.conf["preprocessing"] == "tf":
            return (image * 255.0 - 128.0) / 128.0
        mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (image - mean) / std

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[0, 1] RGB ``(B, 3, H, W)`` -> block3 features ``(B, 1024, h, w)``, attention ``(B, 1, h, w)``."""
        f = self.backbone(self.normalize(image))
        return f, self.attention(f)

    def pyramid_levels(self, height: int, width: int) -> list[tuple[float, int, int]]:
        """(scale, level height, level width) with round(H * s) like ``tf.image.resize``."""
        out = []
        m = int(self.conf["min_level_size"])
        for s in self.conf["scales"]:
            s = float(s)
            h, w = int(round(height * s)), int(round(width * s))
            if min(h, w) >= max(m, 1):
                out.append((s, h, w))
        return out

    def _extract(self, image: torch.Tensor) -> Features:
        feats = self._extract_raw(image)
        feats.descriptors = self.postprocess_descriptors(feats.descriptors)
        return feats

    def _extract_raw(self, image: torch.Tensor) -> Features:
        """Pyramid, threshold, top-k; descriptors are the raw 1024-D block3 features."""
        _, _, H, W = image.shape
        thr = float(self.conf["score_threshold"])
        locs, scores, raws, scales = [], [], [], []
        with self.autocast():
            for s, h, w in self.pyramid_levels(H, W):
                level = image if (h, w) == (H, W) else F.interpolate(
                    image, size=(h, w), mode="bilinear", align_corners=False)
                feats, att = self.call_network("features", level)
                att = att[0, 0].float()
                keep = torch.nonzero(att >= thr)  # (n, 2) cell (y, x)
                if keep.numel() == 0:
                    continue
                cy, cx = keep[:, 0], keep[:, 1]
                # box [stride*c - pad, stride*c - pad + rf - 1]; its centre in level pixels:
                centre = keep.float() * self.rf_stride - self.rf_padding + (self.rf_size - 1) / 2.0
                # level pixels -> input pixels (pixel-centre aligned, the resize's own mapping)
                y = (centre[:, 0] + 0.5) * (H / h) - 0.5
                x = (centre[:, 1] + 0.5) * (W / w) - 0.5
                locs.append(torch.stack([x, y], dim=1))
                scores.append(att[cy, cx])
                raws.append(feats[0][:, cy, cx].t().float())
                scales.append(torch.full((cy.numel(),), 1.0 / s, device=image.device))
        if not locs:
            return Features.empty(1024, (W, H), device=image.device)
        kpts, sc, raw, ks = torch.cat(locs), torch.cat(scores), torch.cat(raws), torch.cat(scales)
        k = int(self.conf["max_keypoints"])
        if 0 < k < sc.numel():  # top-k by attention before the (per-descriptor) PCA
            idx = torch.topk(sc, k).indices
            kpts, sc, raw, ks = kpts[idx], sc[idx], raw[idx], ks[idx]
        thr_det = float(self.conf["detection_threshold"])
        if thr_det > 0:
            m = sc >= thr_det
            kpts, sc, raw, ks = kpts[m], sc[m], raw[m], ks[m]
        return Features(keypoints=kpts, scores=sc, descriptors=raw, scales=ks, image_size=(W, H))

    @torch.inference_mode()
    def raw_descriptors(self, image) -> torch.Tensor:
        """L2-normalised 1024-D descriptors of the selected features of a numpy image: the data
        ``fit_pca`` is fitted on (training collects these over many images)."""
        tensor, _ = self.prepare(image)
        return F.normalize(self._extract_raw(tensor).descriptors.float(), dim=1)


def sqrt2_scales(lo: float = 0.25, hi: float = 2.0) -> list[float]:
    """Pyramid factors lo .. hi in sqrt(2) steps (the official 0.25 .. 2.0 list is this rounded)."""
    n = int(round(math.log(hi / lo, math.sqrt(2))))
    return [lo * math.sqrt(2) ** i for i in range(n + 1)]
