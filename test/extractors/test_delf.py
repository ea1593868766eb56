"""DELF: shapes, receptive-field geometry (hand computation + numerical gradient), keypoint
locations, PCA fit/round trip, torchvision-layout and project checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from local_features_ros.extractors.delf import (DEFAULT_SCALES, DELF, RF_GEOMETRY, RF_PADDING,
                                                RF_SIZE, RF_STRIDE, fit_pca, sqrt2_scales)
from local_features_ros.registry import build_extractor
from local_features_ros.weights import WeightsError, save_checkpoint

from conftest import textured_image


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    g = textured_image(h, w, seed)
    return np.stack([g, np.roll(g, 3, axis=1), 255 - g], axis=2)


def torchvision_resnet50_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A full torchvision ResNet-50 key set (incl. layer4 and fc), written from its architecture:
    blocks (3, 4, 6, 3), widths (64, 128, 256, 512) x 4, projection shortcut on each first block."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name, cout, cin, k):
        sd[name + ".weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5

    def bn(name, c):
        sd[name + ".weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[name + ".bias"] = 0.1 * torch.randn(c, generator=g)
        sd[name + ".running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[name + ".running_var"] = 1 + 0.1 * torch.rand(c, generator=g)
        sd[name + ".num_batches_tracked"] = torch.tensor(100)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for li, (n, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(n):
            p = f"layer{li}.{b}"
            conv(p + ".conv1", planes, cin, 1); bn(p + ".bn1", planes)
            conv(p + ".conv2", planes, planes, 3); bn(p + ".bn2", planes)
            conv(p + ".conv3", planes * 4, planes, 1); bn(p + ".bn3", planes * 4)
            if b == 0:
                conv(p + ".downsample.0", planes * 4, cin, 1); bn(p + ".downsample.1", planes * 4)
            cin = planes * 4
    sd["fc.weight"] = torch.randn(1000, 2048, generator=g) * 0.01
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def test_torchvision_key_set_matches_known_size() -> None:
    # torchvision resnet50().state_dict() has 320 entries (53 convs, 53 BNs x 5, fc x 2)
    assert len(torchvision_resnet50_state_dict()) == 320


def hand_receptive_field(variant: str = "torchvision") -> tuple[int, int, float]:
    """rf, stride and the input coordinate of output cell 0's centre, from the layer list written
    out by hand: (kernel, stride, padding before) per layer along one axis."""
    if variant == "torchvision":  # v1.5: stride on the first block's 3x3; max-pool pad 1
        layers = [(7, 2, 3), (3, 2, 1)]
        plan = ((3, 1, "first"), (4, 2, "first"), (6, 2, "first"))
    else:  # TF-slim resnet_v1_50: stride on the last unit; SAME max-pool pads 0 before (even size)
        layers = [(7, 2, 3), (3, 2, 0)]
        plan = ((3, 2, "last"), (4, 2, "last"), (6, 2, "last"))
    for n, stride, where in plan:
        for b in range(n):
            strided = (b == 0) if where == "first" else (b == n - 1)
            layers += [(1, 1, 0), (3, stride if strided else 1, 1), (1, 1, 0)]
    rf, jump, start = 1, 1, 0.0
    for k, s, p in layers:
        rf += (k - 1) * jump
        start += ((k - 1) / 2 - p) * jump
        jump *= s
    return rf, jump, start


def test_receptive_field_constants_match_hand_computation() -> None:
    rf, stride, centre0 = hand_receptive_field("torchvision")
    assert (rf, stride, (rf - 1) / 2 - centre0) == (RF_SIZE, RF_STRIDE, RF_PADDING) == (267, 16, 133)
    rf, stride, centre0 = hand_receptive_field("tf_slim")
    # docs/method_facts/delf.md#extraction: 291 / 32 / 145
    assert (rf, stride) == RF_GEOMETRY["tf_slim"][:2] == (291, 32)
    assert centre0 == 2.0  # SAME max-pool pads at the end: true centre is 2 px past 145's


class _AvgPoolSame(nn.Module):
    """TF SAME 3x3/2 average pool: same geometry as the backbone's SAME max-pool."""

    def forward(self, x):
        pads = []
        for n in (x.shape[-1], x.shape[-2]):
            total = max(((n + 1) // 2 - 1) * 2 + 3 - n, 0)
            pads += [total // 2, total - total // 2]
        return F.avg_pool2d(F.pad(x, pads), 3, stride=2)


def _rf_probe(backbone: nn.Module) -> nn.Module:
    """float64 copy where every path is active: positive weights, identity BN, and the max-pool
    replaced by an average pool of the same geometry (max-pool gradients only reach the argmax,
    but the receptive field is the window's)."""
    net = copy.deepcopy(backbone).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(m.weight.abs() + 1e-3)
                m.weight.div_(m.weight[0].sum())
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight); nn.init.zeros_(m.bias)
                m.running_mean.zero_(); m.running_var.fill_(1.0)
    net.maxpool = (nn.AvgPool2d(3, stride=2, padding=1) if backbone.variant == "torchvision"
                   else _AvgPoolSame())
    return net


@pytest.mark.parametrize("variant,axis,size,cell", [
    ("torchvision", 0, (320, 32), 9), ("torchvision", 1, (32, 320), 9),
    ("tf_slim", 0, (384, 64), 5), ("tf_slim", 1, (64, 384), 5),
])
def test_receptive_field_numerically(variant: str, axis: int, size: tuple, cell: int) -> None:
    """Support of d(one output cell)/d(input) along each axis == the hand-computed box."""
    rf, stride, centre0 = hand_receptive_field(variant)
    net = _rf_probe(DELF(backbone=variant).backbone)
    x = (torch.rand(1, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
         + 0.5).requires_grad_(True)
    out = net(x)
    assert out.shape[-2:] == (-(-size[0] // stride), -(-size[1] // stride))
    other = 1
    idx = (0, slice(None), cell, other) if axis == 0 else (0, slice(None), other, cell)
    out[idx].sum().backward()
    support = torch.nonzero(x.grad[0].abs().sum(dim=(0, 2 - axis)) > 0).view(-1)
    lo, hi = int(support.min()), int(support.max())
    centre = stride * cell + centre0
    assert (lo, hi) == (centre - (rf - 1) / 2, centre + (rf - 1) / 2)
    assert support.numel() == rf  # contiguous
    if variant == "torchvision":  # the extractor's box centre is this feature location
        assert (lo + hi) / 2 == RF_STRIDE * cell == stride * cell - RF_PADDING + (RF_SIZE - 1) / 2


def test_locations_scales_and_shapes() -> None:
    img = rgb(64, 96, 1)
    ex = build_extractor("delf", weights="random", scales=[0.5, 1.0], max_keypoints=-1)
    f = ex.extract(img)
    # 1.0: 64x96 -> 4x6 cells at 16 y, 16 x. 0.5: 32x48 level -> 2x3 cells, centre 16 c in level
    # pixels -> (16 c + 0.5) * 2 - 0.5 in image pixels (pixel-centre aligned resize).
    exp1 = {(16.0 * x, 16.0 * y) for y in range(4) for x in range(6)}
    exp05 = {(32.0 * x + 0.5, 32.0 * y + 0.5) for y in range(2) for x in range(3)}
    got1 = {tuple(p) for p, s in zip(f.keypoints.tolist(), f.scales.tolist()) if s == 1.0}
    got05 = {tuple(p) for p, s in zip(f.keypoints.tolist(), f.scales.tolist()) if s == 2.0}
    assert got1 == exp1 and got05 == exp05 and len(f) == 30
    assert f.descriptors.shape == (30, 1024)  # no PCA fitted yet: L2 1024-D
    torch.testing.assert_close(f.descriptors.norm(dim=1), torch.ones(30))
    assert torch.all(f.scores > 0)  # softplus
    # top-k by attention
    top = build_extractor("delf", weights="random", scales=[0.5, 1.0], max_keypoints=5)
    top.load_state_dict(ex.state_dict())
    t = top.extract(img)
    torch.testing.assert_close(t.scores, torch.topk(f.scores, 5).values)
    # absolute attention threshold
    thr = float(f.scores.median())
    ex.update_conf(score_threshold=thr)
    assert len(ex.extract(img)) == int((f.scores >= thr).sum())


def test_default_pyramid_is_sqrt2_steps() -> None:
    np.testing.assert_allclose(DEFAULT_SCALES, sqrt2_scales(0.25, 2.0), atol=1e-4)
    assert len(DEFAULT_SCALES) == 7


def test_fit_pca_recovers_subspace_and_round_trips() -> None:
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(1024, 40, generator=g, dtype=torch.float64))[0].t()
    stds = torch.linspace(3.0, 0.5, 40, dtype=torch.float64)
    z = torch.randn(2000, 40, generator=g, dtype=torch.float64) * stds + 2.0
    # unit vectors inside a 40-D linear subspace: centred, they still span <= 40 dimensions
    data = F.normalize(z @ basis, dim=1) * 3.0  # any norm: fit_pca L2-normalises first
    mean, mat, var = fit_pca(data.float(), 40)
    x = F.normalize(data, dim=1).float()
    torch.testing.assert_close(mean, x.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(mat @ mat.t(), torch.eye(40), atol=1e-5, rtol=0)
    recon = (x - mean) @ mat.t() @ mat + mean  # 40-D data: projection is lossless
    torch.testing.assert_close(recon, x, atol=1e-4, rtol=0)
    assert torch.all(var[:-1] >= var[1:])
    cov = torch.cov((x - mean).t().double())
    torch.testing.assert_close(var.double(), torch.diagonal(mat.double() @ cov @ mat.double().t()),
                               atol=1e-6, rtol=1e-4)


def test_pca_descriptors_and_project_checkpoint_round_trip(tmp_path) -> None:
    img = rgb(96, 128, 2)
    ex = build_extractor("delf", weights="random", scales=[1.0], max_keypoints=-1)
    raw = torch.cat([ex.raw_descriptors(rgb(96, 128, s)) for s in range(3)])
    assert raw.shape[1] == 1024 and raw.shape[0] > 40
    ex.set_pca(*fit_pca(raw, 40))
    f = ex.extract(img)
    assert f.descriptors.shape == (len(f), 40) and ex.descriptor_dim == 40
    torch.testing.assert_close(f.descriptors.norm(dim=1), torch.ones(len(f)))
    # by hand: L2 -> centre -> project -> L2
    r = F.normalize(ex.raw_descriptors(img), dim=1)
    hand = F.normalize((r - ex.pca_mean) @ ex.pca_matrix.t(), dim=1)
    torch.testing.assert_close(f.descriptors, hand, atol=1e-5, rtol=0)
    ex.update_conf(use_whitening=True)
    white = F.normalize((r - ex.pca_mean) @ ex.pca_matrix.t() / ex.pca_variance.sqrt(), dim=1)
    torch.testing.assert_close(ex.extract(img).descriptors, white, atol=1e-5, rtol=0)
    ex.update_conf(use_whitening=False)
    path = save_checkpoint(tmp_path / "delf.pth", "delf", ex.state_dict(), dict(ex.conf))
    again = build_extractor("delf", weights=str(path), scales=[1.0], max_keypoints=-1)
    assert bool(again.pca_fitted)
    g = again.extract(img)
    torch.testing.assert_close(g.descriptors, f.descriptors)
    torch.testing.assert_close(g.keypoints, f.keypoints)


def test_torchvision_state_dict_loads_into_backbone(tmp_path) -> None:
    sd = torchvision_resnet50_state_dict(1)
    p = tmp_path / "resnet50.pth"
    torch.save(sd, p)
    ex = build_extractor("delf", weights=str(p))
    own = ex.state_dict()
    for k, v in sd.items():
        if k.startswith(("layer4.", "fc.")):
            assert "backbone." + k not in own
        else:
            assert torch.equal(own["backbone." + k], v), k
    assert not bool(ex.pca_fitted)
    # the official-geometry variant has the same keys and shapes (converted TF weights load alike)
    slim = DELF(backbone="tf_slim").state_dict()
    assert {k: v.shape for k, v in slim.items()} == {k: v.shape for k, v in own.items()}
    # a wrong key is named
    bad = dict(sd)
    bad["layer3.0.conv9.weight"] = bad.pop("layer3.0.conv2.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="layer3.0.conv"):
        build_extractor("delf", weights=str(tmp_path / "bad.pth"))


def test_backbone_matches_hand_written_bottleneck() -> None:
    """One v1.5 Bottleneck with a stride written in F ops: stride sits on the 3x3 conv."""
    ex = DELF().eval()
    blk = ex.backbone.layer2[0]
    x = torch.rand(1, 256, 12, 10)
    sd = {k: v for k, v in blk.state_dict().items()}

    def bn(t, n):
        return F.batch_norm(t, sd[n + ".running_mean"], sd[n + ".running_var"], sd[n + ".weight"],
                            sd[n + ".bias"], False, 0.0, 1e-5)

    y = F.relu(bn(F.conv2d(x, sd["conv1.weight"]), "bn1"))
    y = F.relu(bn(F.conv2d(y, sd["conv2.weight"], stride=2, padding=1), "bn2"))
    y = bn(F.conv2d(y, sd["conv3.weight"]), "bn3")
    sc = bn(F.conv2d(x, sd["downsample.0.weight"], stride=2), "downsample.1")
    with torch.no_grad():
        torch.testing.assert_close(blk(x), F.relu(y + sc))
    assert blk(x).shape == (1, 512, 6, 5)
