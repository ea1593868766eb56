"""LF-Net: scale-space machinery with hand-made maps/weights, refinement, crop/rotate path,
end-to-end shapes, checkpoints and the TF-name conversion; the fast inference path against the
reference ops; torch's BN fusion against the former hand-written folding and the written-out
instance norm against the library's."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import correlate, gaussian_laplace

from local_features_ros.extractors.lfnet import LFNet
from local_features_ros.extractors.lfnet.networks import fused_bn
from local_features_ros.extractors.lfnet.ops import (
    border_mask,
    few_channel_conv,
    hard_nms,
    instance_norm,
    scale_factors,
    soft_argmax_refine,
    soft_nms_3d,
    soft_scale_selection,
    unit_vectors,
)
from local_features_ros.extractors.lfnet.tf_convert import convert_tf_state, tf_name_table
from local_features_ros.extractors.nms import dense_window_max
from local_features_ros.extractors.patches import extract_patches
from local_features_ros.registry import build_extractor
from local_features_ros.weights import WeightsError, save_checkpoint

from conftest import textured_image

REPO = Path(__file__).resolve().parents[2]


def gaussian_blob(h: int, w: int, x0: float, y0: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    img = cv2.GaussianBlur(np.random.default_rng(seed).random((h, w)).astype(np.float32), (0, 0), 1.5)
    return (img - img.min()) / (img.max() - img.min())


# ------------------------------------------------------------------ scale space
def test_scale_factors_constants() -> None:
    np.testing.assert_allclose(scale_factors(5, 1 / math.sqrt(2), math.sqrt(2)),
                               [1.41421, 1.18921, 1.0, 0.84090, 0.70711], atol=1e-5)


def test_soft_nms_3d_hand_values() -> None:
    # 1 scale, 3x3 window on a 1x3 map: m = max over the window, p = e / (window sum of e + 1e-6).
    lg = torch.tensor([[[[0.0, 1.0, 0.0]]]])
    p = soft_nms_3d(lg, 3, 2.0)[0, 0, 0]
    e = np.exp(2.0 * (np.array([0.0, 1.0, 0.0]) - 1.0))  # every window contains the 1.0
    expect = [e[0] / (e[0] + e[1] + 1e-6), e[1] / (e.sum() + 1e-6), e[2] / (e[1] + e[2] + 1e-6)]
    np.testing.assert_allclose(p.numpy(), expect, rtol=1e-5)


def test_hard_nms_is_strict_5x5() -> None:
    s = torch.zeros(1, 1, 12, 12)
    s[0, 0, 5, 5] = 1.0
    s[0, 0, 5, 7] = 0.9  # inside the 5x5 window of the peak -> suppressed
    s[0, 0, 9, 9] = 0.8  # 4 px away on both axes -> survives
    s[0, 0, 1, 1] = s[0, 0, 1, 2] = 0.5  # exact tie -> neither is strictly greater
    keep = hard_nms(s, 5, 0.0)[0, 0]
    assert keep.nonzero().tolist() == [[5, 5], [9, 9]]


def _hand_scale_space(img: np.ndarray, net: LFNet, gain: float = 20.0, base: float = 3.0) -> torch.Tensor:
    """Scale-normalised LoG at sigma_k = base * s_k: a blob of sigma b peaks at s = b / base."""
    logits = [-(base * s) ** 2 * gaussian_laplace(img.astype(np.float64), base * s)
              for s in net.scales.tolist()]
    return torch.from_numpy(gain * np.stack(logits)).float()[None]


def _detect_from_logits(net: LFNet, logits: torch.Tensor, k: int = 3) -> dict:
    maps = net.score_maps(logits)
    h, w = logits.shape[-2:]
    maps["ori"] = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, h, w)
    return net.detect(maps, k)


def test_blob_and_its_2x_upscale_are_found_at_the_right_place_and_scale() -> None:
    net = LFNet().eval()
    # blob sigma 3/sqrt(2) -> smallest level (0.707); the 2x image has sigma 3 sqrt(2) -> 1.414.
    a = gaussian_blob(96, 96, 40.25, 44.25, 3.0 / math.sqrt(2))
    b = cv2.resize(a, (192, 192), interpolation=cv2.INTER_LINEAR)  # centre -> 2x + 0.5 = (81, 89)
    with torch.no_grad():
        da = _detect_from_logits(net, _hand_scale_space(a, net))
        db = _detect_from_logits(net, _hand_scale_space(b, net))
    assert np.linalg.norm(da["keypoints"][0, 0].numpy() - [40.25, 44.25]) < 0.5
    assert np.linalg.norm(db["keypoints"][0, 0].numpy() - [81.0, 89.0]) < 0.5
    sa, sb = float(da["scales"][0, 0]), float(db["scales"][0, 0])
    assert sa == pytest.approx(1 / math.sqrt(2), abs=0.05)
    assert sb == pytest.approx(math.sqrt(2), abs=0.05)
    assert sb / sa == pytest.approx(2.0, rel=0.1)
    # only one real detection: the others are tiny (flat background), the border is masked
    assert float(da["scores"][0, 1]) < 0.1 * float(da["scores"][0, 0])


def _identity_detector(net: LFNet) -> None:
    """Hand weights: feature channel 0 = input image, every score conv = that channel."""
    with torch.no_grad():
        for p in net.det.parameters():
            p.zero_()
        net.det.init_conv.weight[0, 0, 2, 2] = 1.0
        for blk in net.det.blocks:  # conv2 = 0 -> block is the identity
            blk.pre_bn.weight.fill_(1.0)
            blk.mid_bn.weight.fill_(1.0)
        net.det.fin_bn.weight.fill_(1.0)
        for conv in net.det.score_convs:
            conv.weight[0, 0, 2, 2] = 1.0
        net.det.ori_conv.bias.copy_(torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("mode", ["half_pixel", "tf_legacy"])
def test_full_detector_with_hand_weights_finds_blob(mode: str) -> None:
    net = LFNet(resize_mode=mode).eval()
    _identity_detector(net)
    img = gaussian_blob(80, 112, 70.3, 37.6, 3.0)  # asymmetric: catches x/y swaps and shifts
    with torch.no_grad():
        maps = net.detector_forward(torch.from_numpy(img)[None, None])
        det = net.detect(maps, 5)
    assert maps["scale_logits"].shape == (1, 5, 80, 112)
    assert [tuple(t.shape[-2:]) for t in maps["logits"]] == [(57, 79), (67, 94), (80, 112),
                                                             (95, 133), (113, 158)]
    assert np.linalg.norm(det["keypoints"][0, 0].numpy() - [70.3, 37.6]) < 1.0
    assert bool(det["valid"][0, 0])
    np.testing.assert_allclose(det["orientations"][0].numpy(), 0.0, atol=1e-6)


# ------------------------------------------------------------------ sub-pixel refinement
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_soft_argmax_recovers_subpixel_peak(scale: float) -> None:
    peak = np.array([30.3, 25.75])
    yy, xx = np.mgrid[0:60, 0:60]
    sig = 1.0 * scale
    # log of a Gaussian: softmax(1.0 * S) over the window is that Gaussian, centred at the peak.
    s = -((xx - peak[0]) ** 2 + (yy - peak[1]) ** 2) / (2 * sig ** 2)
    out = soft_argmax_refine(torch.from_numpy(s).float()[None, None], torch.tensor([[[30.0, 26.0]]]),
                             torch.tensor([[scale]]), 9, 1.0)
    assert np.linalg.norm(out[0, 0].numpy() - peak) < 0.1 * scale


def test_soft_argmax_on_flat_map_does_not_move() -> None:
    out = soft_argmax_refine(torch.zeros(1, 1, 40, 40), torch.tensor([[[20.0, 17.0]]]),
                             torch.tensor([[1.3]]), 9, 1.0)
    np.testing.assert_allclose(out[0, 0].numpy(), [20.0, 17.0], atol=1e-5)


# ------------------------------------------------------------------ orientation path
def test_crop_of_rotated_image_at_rotated_angle_equals_upright_crop() -> None:
    net = LFNet().eval()
    img = smooth_image(96, 96, 1)
    rot = np.ascontiguousarray(np.rot90(img, 1))  # rot[i, j] = img[j, W-1-i]
    x, y = 45.0, 52.0
    # (x, y) -> (y, W-1-x); the image +x direction (1, 0) becomes (0, -1): angle -90 deg
    xr, yr = y, 96 - 1 - x
    t = lambda a: torch.from_numpy(a)[None, None]  # noqa: E731
    with torch.no_grad():
        p0 = net.crop_patches(t(img), torch.tensor([[[x, y]]]), torch.tensor([[1.2]]), torch.tensor([[0.0]]))
        p1 = net.crop_patches(t(rot), torch.tensor([[[xr, yr]]]), torch.tensor([[1.2]]),
                              torch.tensor([[-math.pi / 2]]))
        np.testing.assert_allclose(p1.numpy(), p0.numpy(), atol=1e-5)
        d0 = net.describe(t(img), torch.tensor([[[x, y]]]), torch.tensor([[1.2]]), torch.tensor([[0.4]]))
        d1 = net.describe(t(rot), torch.tensor([[[xr, yr]]]), torch.tensor([[1.2]]),
                          torch.tensor([[0.4 - math.pi / 2]]))
    np.testing.assert_allclose(d1.numpy(), d0.numpy(), atol=1e-4)


def test_crop_machinery_follows_arbitrary_rotation() -> None:
    net = LFNet().eval()
    img = smooth_image(100, 100, 2)
    phi, c = math.radians(30.0), np.array([49.5, 49.5])
    r = np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])
    fwd = np.hstack([r, (c - r @ c)[:, None]])  # p' = c + R (p - c), image axes (y down)
    rot = cv2.warpAffine(img, fwd, (100, 100), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    p = np.array([55.0, 41.0])
    pr = r @ (p - c) + c
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]  # noqa: E731
    kp0 = torch.from_numpy(p[None, None]).float()
    kp1 = torch.from_numpy(pr[None, None]).float()
    s = torch.tensor([[0.8]])
    with torch.no_grad():
        p0 = net.crop_patches(t(img), kp0, s, torch.tensor([[0.0]]))
        p1 = net.crop_patches(t(rot), kp1, s, torch.tensor([[phi]]))
        wrong = net.crop_patches(t(rot), kp1, s, torch.tensor([[-phi]]))
    err = np.abs(p1.numpy() - p0.numpy()).mean()
    assert err < 0.01
    assert np.abs(wrong.numpy() - p0.numpy()).mean() > 5 * err  # the sign convention matters


# ------------------------------------------------------------------ end to end
def test_extract_random_weights_shapes() -> None:
    ex = build_extractor("lfnet", weights="random", max_keypoints=100)
    f = ex.extract(textured_image(120, 160))
    n = len(f)
    assert 0 < n <= 100
    assert f.keypoints.shape == (n, 2) and f.descriptors.shape == (n, 256)
    assert f.image_size == (160, 120)
    np.testing.assert_allclose(f.descriptors.norm(dim=1).numpy(), 1.0, atol=1e-4)
    assert float(f.scales.min()) >= 1 / math.sqrt(2) - 1e-4 and float(f.scales.max()) <= math.sqrt(2) + 1e-4
    # border mask 16 px; soft-argmax may move a keypoint by at most scale * 9/2
    margin = 16 - 4.5 * math.sqrt(2)
    assert float(f.keypoints[:, 0].min()) >= margin and float(f.keypoints[:, 0].max()) <= 159 - margin
    assert torch.isfinite(f.orientations).all()
    assert (f.scores[:-1] >= f.scores[1:]).all()


def test_detector_and_descriptor_are_differentiable() -> None:
    net = LFNet(max_keypoints=20)
    net.train()
    img = torch.from_numpy(smooth_image(64, 64, 3))[None, None].repeat(2, 1, 1, 1).requires_grad_(True)
    maps = net.detector_forward(img)
    det = net.detect(maps, 20)
    d = net.describe(img, det["keypoints"], det["scales"], det["orientations"])
    assert d.shape == (2, 20, 256)
    loss = d.sum() + det["scores"].sum() + det["keypoints"].sum()
    loss.backward()
    for name in ("det.score_convs.0.weight", "det.init_conv.weight", "desc.fc2.weight"):
        g = dict(net.named_parameters())[name].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_checkpoint_roundtrip(tmp_path: Path) -> None:
    ex = build_extractor("lfnet", weights="random", max_keypoints=50)
    with torch.no_grad():
        for m in ex.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = save_checkpoint(tmp_path / "lfnet.pth", "lfnet", ex.state_dict(), ex.conf)
    ex2 = build_extractor("lfnet", weights=str(path), max_keypoints=50)
    img = textured_image(120, 160, seed=3)
    f1, f2 = ex.extract(img), ex2.extract(img)
    torch.testing.assert_close(f1.keypoints, f2.keypoints)
    torch.testing.assert_close(f1.descriptors, f2.descriptors)


# ------------------------------------------------------------------ TF conversion
def fake_tf_variables(seed: int = 0) -> dict[str, np.ndarray]:
    """TF-named arrays with TF shapes ([k,k,in,out], [in,out]), nested in an outer scope, plus
    optimiser slots and a global step that the converter must ignore."""
    r = np.random.default_rng(seed)
    own = LFNet().state_dict()
    out: dict[str, np.ndarray] = {"global_step": np.array(1000)}
    for tf, key, kind in tf_name_table(LFNet().conf):
        shape = tuple(own[key].shape)
        if kind == "conv":
            shape = (shape[2], shape[3], shape[1], shape[0])
        elif kind in ("fc", "fc_nhwc"):
            shape = (shape[1], shape[0])
        a = r.standard_normal(shape).astype(np.float32)
        if tf.endswith("moving_variance"):
            a = np.abs(a) + 0.5
        out["MSDet/" + tf] = a
        out["MSDet/" + tf + "/Adam"] = np.zeros_like(a)
    return out


def test_tf_conversion_loads_strictly_and_matches_tf_layout() -> None:
    tf = fake_tf_variables()
    state = convert_tf_state(tf, LFNet().conf)
    net = LFNet()
    net.load_state_dict(state, strict=True)
    # conv: TF kernel [k,k,in,out] cross-correlation == our conv (checked with scipy on init_conv)
    x = np.random.default_rng(1).random((12, 12)).astype(np.float32)
    k = tf["MSDet/ConvOnlyResNet/init_conv/weights"]
    b = tf["MSDet/ConvOnlyResNet/init_conv/biases"]
    ref = correlate(x.astype(np.float64), k[:, :, 0, 3].astype(np.float64), mode="constant") + b[3]
    with torch.no_grad():
        ours = net.det.init_conv(torch.from_numpy(x)[None, None])[0, 3].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    # fc1: TF flattens NHWC (h, w, c); ours flattens NCHW -> same output after the permutation
    fmap = np.random.default_rng(2).standard_normal((4, 4, 256)).astype(np.float32)  # (h, w, c)
    ref = fmap.reshape(-1) @ tf["MSDet/SimpleDesc/fc1/weights"] + tf["MSDet/SimpleDesc/fc1/biases"]
    with torch.no_grad():
        ours = net.desc.fc1(torch.from_numpy(fmap.transpose(2, 0, 1).reshape(1, -1)))[0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)
    # a missing variable is named
    del tf["MSDet/ConvOnlyResNet/ori_conv/biases"]
    with pytest.raises(KeyError, match="ori_conv/biases"):
        convert_tf_state(tf, LFNet().conf)


def test_convert_script_and_tf_named_checkpoint_load(tmp_path: Path) -> None:
    tf = fake_tf_variables(seed=4)
    npz = tmp_path / "vars.npz"
    np.savez(npz, **tf)
    spec = importlib.util.spec_from_file_location("convert_tf_weights", REPO / "scripts" / "convert_tf_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "lfnet_conv.pth"
    assert mod.main(["lfnet", "--input", str(npz), "--output", str(out)]) == 0
    ex = build_extractor("lfnet", weights=str(out))
    torch.testing.assert_close(ex.det.fin_bn.running_var.cpu(),
                               torch.from_numpy(tf["MSDet/ConvOnlyResNet/fin-bn/moving_variance"]))
    # a .pth that still holds TF names converts on load (adapt_state_dict)
    raw = tmp_path / "tf_names.pth"
    torch.save({k: torch.from_numpy(v) for k, v in tf.items()}, raw)
    ex2 = build_extractor("lfnet", weights=str(raw))
    torch.testing.assert_close(ex2.state_dict()["desc.fc2.weight"], ex.state_dict()["desc.fc2.weight"])
    # wrong shapes are reported, not silently loaded
    bad = dict(tf)
    bad["MSDet/SimpleDesc/fc2/weights"] = np.zeros((512, 128), np.float32)
    torch.save({k: torch.from_numpy(v) for k, v in bad.items()}, raw)
    with pytest.raises(WeightsError, match="desc.fc2.weight"):
        build_extractor("lfnet", weights=str(raw))


def test_input_instance_norm_makes_output_gain_and_offset_invariant() -> None:
    img = textured_image(96, 128, seed=2).astype(np.float32) / 255.0
    ex = build_extractor("lfnet", weights="random", max_keypoints=30, input_inst_norm=True,
                         input_inst_norm_eps=1e-9)
    f1, f2 = ex.extract(img), ex.extract(0.5 * img + 0.2)
    torch.testing.assert_close(f1.keypoints, f2.keypoints, atol=1e-2, rtol=0)
    torch.testing.assert_close(f1.descriptors, f2.descriptors, atol=1e-3, rtol=0)
    raw = build_extractor("lfnet", weights="random", max_keypoints=30)  # run_lfnet: raw photo
    raw.load_state_dict(ex.state_dict())
    d1, d2 = raw.extract(img).descriptors, raw.extract(0.5 * img + 0.2).descriptors
    assert d1.shape != d2.shape or not torch.allclose(d1, d2, atol=1e-3)


# ------------------------------------------------------------------ fast inference == reference ops
def _randomise(net: LFNet, seed: int) -> None:
    """Random weights everywhere, incl. BN statistics (so BN folding is exercised) and the
    zero-initialised orientation conv (so crops really rotate)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = mod.num_features
                mod.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(n, generator=g))
                mod.weight.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.copy_(0.1 * torch.randn(n, generator=g))
        net.det.ori_conv.weight.copy_(0.05 * torch.randn(net.det.ori_conv.weight.shape, generator=g))


def _reference_maps(net: LFNet, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """LF-Net's dense maps with the reference ops only: BN modules, the 1-output score convs,
    F.normalize, 15x15 max_pool2d / avg_pool2d soft NMS and the border-mask product."""
    c, d = net.conf, net.det
    h, w = image.shape[-2:]
    x = d.init_conv(image)
    for blk in d.blocks:
        y = blk.conv1(F.leaky_relu(blk.pre_bn(x), 0.2))
        x = x + blk.conv2(F.leaky_relu(blk.mid_bn(y), 0.2))
    feat = F.leaky_relu(d.fin_bn(x), 0.2)
    full = []
    for s, conv in zip(net._scale_list, d.score_convs):
        size = (max(int(h / s + 0.5), 1), max(int(w / s + 0.5), 1))
        resize = lambda t, hw: t if tuple(t.shape[-2:]) == hw else F.interpolate(  # noqa: E731
            t, size=hw, mode="bilinear", align_corners=False)
        lg = conv(resize(feat, size))
        mean, var = lg.mean(dim=(-2, -1), keepdim=True), lg.var(dim=(-2, -1), unbiased=False, keepdim=True)
        full.append(resize((lg - mean) / torch.sqrt(var + c["score_inst_norm_eps"]), (h, w)))
    logits = torch.cat(full, dim=1)
    k = int(c["sm_ksize"])
    m = F.max_pool2d(logits.amax(dim=1, keepdim=True), k, stride=1, padding=k // 2)
    e = torch.exp(float(c["com_strength"]) * (logits - m))
    box = F.avg_pool2d(e.sum(dim=1, keepdim=True), k, stride=1, padding=k // 2, count_include_pad=True) * k * k
    probs = e / (box + 1e-6)
    score, scale = soft_scale_selection(probs, net.scales, float(c["score_com_strength"]),
                                        float(c["scale_com_strength"]))
    score = score * border_mask(h, w, int(c["remove_borders"]), score.device, score.dtype)
    return {"scale_logits": logits, "ori": F.normalize(d.ori_conv(feat), dim=1, eps=1e-12),
            "score": score, "scale": scale}


def _reference_features(net: LFNet, image: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Reference maps -> strict 5x5 NMS (unfold), top-K, gathers, soft-argmax on extract_patches
    windows, descriptors of extract_patches crops through the un-folded BN layers."""
    c = net.conf
    maps = _reference_maps(net, image)
    score = maps["score"]
    b, _, h, w = score.shape
    cols = F.unfold(F.pad(score, (2, 2, 2, 2), value=float("-inf")), 5)
    cols[:, 12] = float("-inf")
    keep = (score > cols.amax(dim=1).view(b, 1, h, w)) & (score > float(c["detection_threshold"]))
    top, idx = torch.topk(torch.where(keep, score, torch.full_like(score, -1.0)).reshape(b, -1), k)
    xy = torch.stack([idx % w, idx // w], dim=-1).float()
    scales = maps["scale"].reshape(b, -1).gather(1, idx)
    cs = maps["ori"].reshape(b, 2, -1).gather(2, idx[:, None].expand(b, 2, k)).transpose(1, 2)
    oris = torch.atan2(cs[..., 1], cs[..., 0])
    half = scales * 4.5
    win = extract_patches(score, xy, half, None, 9, corners=True)[:, :, 0].reshape(b, k, -1)
    prob = torch.softmax(float(c["kp_com_strength"]) * win, dim=-1).view(b, k, 9, 9)
    g = torch.linspace(-1.0, 1.0, 9)
    xy = xy + torch.stack([(prob.sum(2) * g).sum(-1), (prob.sum(3) * g).sum(-1)], dim=-1) * half[..., None]
    x = extract_patches(image, xy, scales * 16.0, oris, 32, corners=True).flatten(0, 1)
    dn = net.desc
    for conv, bn in zip(dn.convs, dn.bns):
        x = F.relu(bn(conv(F.pad(x, (0, 1, 0, 1)))))  # TF SAME, stride 2, even size
    x = F.relu(dn.fc_bn1(dn.fc1(x.flatten(1))))
    desc = F.normalize(dn.fc2(x), dim=-1).view(b, k, -1)
    return {"keypoints": xy, "scores": top, "scales": scales, "orientations": oris,
            "descriptors": desc, "valid": top > -1.0, **{f"map_{n}": v for n, v in maps.items()}}


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_inference_matches_reference_ops(seed: int) -> None:
    """Folded BN, depthwise score convs, separable soft NMS, OpenCV hard NMS and table-built
    crops give the reference pipeline's keypoints, scores, scales, orientations and
    descriptors (up to float rounding; equal scores may swap places)."""
    torch.manual_seed(seed)
    net = build_extractor("lfnet", weights="random", max_keypoints=80)
    _randomise(net, seed)
    img = torch.from_numpy(textured_image(96, 128, seed=seed)).float()[None, None] / 255.0
    with torch.no_grad():
        ref = _reference_features(net, img, 80)
        maps = net.detector_forward(img)
        # instance-normalised logits (unit variance) carry the conv's rounding x 1/std
        for name, tol in (("scale_logits", 1e-4), ("ori", 1e-5), ("score", 1e-5), ("scale", 1e-5)):
            torch.testing.assert_close(maps[name], ref[f"map_{name}"], rtol=tol, atol=tol, msg=name)
        det = net.detect(maps, 80)
        v = det["valid"][0]
        desc = net.describe(img, det["keypoints"][:, v], det["scales"][:, v], det["orientations"][:, v])
    n = int(ref["valid"].sum())
    assert n > 40 and int(v.sum()) == n
    rxy, gxy = ref["keypoints"][0, :n].numpy(), det["keypoints"][0, :n].numpy()
    dist = np.abs(rxy[:, None] - gxy[None]).max(-1)
    j = dist.argmin(1)
    assert (dist[np.arange(n), j] < 1e-4).all() and len(set(j.tolist())) == n
    s = ref["scores"][0, :n].numpy()
    np.testing.assert_allclose(det["scores"][0, :n].numpy()[j], s, rtol=1e-5, atol=1e-5)
    swapped = np.nonzero(j != np.arange(n))[0]
    assert np.all(np.abs(s[swapped] - s[j[swapped]]) < 1e-5)  # only (near-)ties change order
    for name, got, tol in (("scales", det["scales"][0, :n], 1e-5),
                           ("orientations", det["orientations"][0, :n], 1e-4),
                           ("descriptors", desc[0], 1e-5)):
        np.testing.assert_allclose(got.numpy()[j], ref[name][0, :n].numpy(), atol=tol, err_msg=name)
    assert float(ref["orientations"][0, :n].abs().max()) > 0.1  # the crops do rotate


def test_inference_rewrites_equal_reference_ops() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 41, 53)
    assert torch.equal(dense_window_max(x, 7), F.max_pool2d(x, 15, stride=1, padding=7))
    x[0, 1, 5, 5] = float("nan")
    assert torch.equal(torch.isnan(dense_window_max(x, 2)), torch.isnan(F.max_pool2d(x, 5, stride=1, padding=2)))
    s = torch.round(torch.rand(2, 1, 37, 45) * 6) / 6  # many exact ties
    padded = F.pad(s, (2, 2, 2, 2), value=float("-inf"))
    cols = F.unfold(padded, 5)
    cols[:, 12] = float("-inf")
    assert torch.equal(hard_nms(s, 5, 0.1), (s > cols.amax(1).view_as(s)) & (s > 0.1))
    feat = torch.randn(2, 16, 30, 40).contiguous(memory_format=torch.channels_last)
    convs = [torch.nn.Conv2d(16, 1, 5, padding=2), torch.nn.Conv2d(16, 2, 5, padding=2)]
    with torch.no_grad():
        for got, conv in zip(few_channel_conv(feat, convs), convs):
            torch.testing.assert_close(got, conv(feat), rtol=1e-5, atol=1e-5)
        net = LFNet().eval()
        _randomise(net, 2)
        blk = net.det.blocks[0]
        a = torch.randn(2, 16, 20, 24)
        torch.testing.assert_close(F.conv2d(a, *fused_bn(blk.conv1, blk.mid_bn), padding=2),
                                   blk.mid_bn(blk.conv1(a)), rtol=1e-5, atol=1e-5)
        z = torch.randn(7, 4096)
        torch.testing.assert_close(F.linear(z, *fused_bn(net.desc.fc1, net.desc.fc_bn1)),
                                   net.desc.fc_bn1(net.desc.fc1(z)), rtol=1e-4, atol=1e-4)
        v = torch.randn(2, 2, 9, 11)
        torch.testing.assert_close(unit_vectors(v), F.normalize(v, dim=1, eps=1e-12))
        lg = torch.randn(1, 5, 40, 50)
        ref = soft_nms_3d(lg.clone().requires_grad_(True), 15, 3.0).detach()  # autograd: reference ops
        torch.testing.assert_close(soft_nms_3d(lg, 15, 3.0), ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ library calls == former formulas
def _former_fold_bn(layer: torch.nn.Module, bn: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """BN folding as it was written by hand before torch's fusion utilities replaced it."""
    scale = torch.rsqrt(bn.running_var + bn.eps) * bn.weight
    shift = (layer.bias - bn.running_mean) * scale + bn.bias
    return layer.weight * scale.view(-1, *([1] * (layer.weight.ndim - 1))), shift


def test_instance_norm_equals_the_library_call() -> None:
    """The written-out instance norm (kept: faster than ``F.instance_norm`` on single-channel
    CPU maps) has the library's numbers, and is defined on the 1x1 maps torch refuses."""
    torch.manual_seed(0)
    for shape in ((2, 5, 13, 17), (1, 1, 2, 1), (3, 2, 57, 79), (1, 1, 96, 128)):
        x = torch.randn(*shape) * 3 + 1
        for eps in (1e-6, 1e-3):
            torch.testing.assert_close(instance_norm(x, eps), F.instance_norm(x, eps=eps),
                                       rtol=1e-5, atol=1e-5)
    one = torch.randn(2, 3, 1, 1)
    with pytest.raises(ValueError):
        F.instance_norm(one)
    assert torch.equal(instance_norm(one, 1e-6), torch.zeros_like(one))
    ex = build_extractor("lfnet", weights="random", input_inst_norm=True)
    for h, w in ((1, 1), (2, 2), (3, 5)):  # tiny images reach 1x1 maps at the coarse scales
        assert len(ex.extract(np.zeros((h, w), np.uint8))) == 0


def test_fused_bn_equals_the_former_folding() -> None:
    net = LFNet().eval()
    _randomise(net, 5)
    pairs = [(net.det.blocks[1].conv1, net.det.blocks[1].mid_bn), (net.desc.convs[2], net.desc.bns[2]),
             (net.desc.fc1, net.desc.fc_bn1)]
    with torch.no_grad():
        for layer, bn in pairs:
            for got, ref in zip(fused_bn(layer, bn), _former_fold_bn(layer, bn)):
                assert got.shape == ref.shape
                torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
