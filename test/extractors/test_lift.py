"""LIFT: pyramid geometry, GHH, 3-D NMS / edge test / interpolation, hand-weighted detector on
blobs (position, scale, 2x scaling, 90 deg rotation), network shapes for both variants,
end-to-end, checkpoints and the TF-name conversion; the fast (packed, sparse) detection against
a straightforward per-level dense reference; kornia's kernel against the former hand-written one
and the written-out L2 pooling against ``F.lp_pool2d``."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from local_features_ros.extractors.base import ConfigError
from local_features_ros.extractors.lift import LIFT
from local_features_ros.extractors.lift.networks import (
    LIFTDescriptor,
    LIFTOrientation,
    SubtractiveNorm,
    ghh,
    orientation_from_output,
    subnorm_kernel,
)
from local_features_ros.extractors.lift.ops import (
    derivative_maps,
    edge_ok,
    ghh_maps,
    l2_pool,
    max_pool_2x2,
    newton_offset,
    nms_3d,
    parabola_offset,
    patch_soft_argmax,
    sample_level_derivatives,
    scale_space_max,
)
from local_features_ros.extractors.lift.pyramid import ScorePyramid, pack_levels, pyramid_levels
from local_features_ros.extractors.lift.tf_convert import convert_tf_state, tf_name_table
from local_features_ros.extractors.patches import crop_patches_fast
from local_features_ros.extractors.patches import extract_patches, sample_image
from local_features_ros.registry import build_extractor
from local_features_ros.weights import save_checkpoint

from conftest import textured_image


# ------------------------------------------------------------------ pyramid
def test_pyramid_levels_hand_computation_120x160() -> None:
    lv = pyramid_levels(120, 160)
    # min side 120 <= 1600 -> min log2 1 - 1 = 0; linspace(0, 4, 4*5+1): step 0.2 octave.
    # factor = 23.5 / (12 s); keep while round(120 f) > 26: s = 2^3.0 -> f = 0.24479,
    # 120 f = 29.4 -> 29 (kept); s = 2^3.2 = 9.19 -> 120 f = 25.57 -> 26 (dropped).
    assert len(lv) == 16
    assert lv[0].scale == pytest.approx(1.0) and lv[0].factor == pytest.approx(23.5 / 12)
    assert (lv[0].height, lv[0].width) == (235, 313)  # 120*1.9583 = 235.0, 160*1.9583 = 313.3
    assert lv[5].scale == pytest.approx(2.0) and (lv[5].height, lv[5].width) == (118, 157)
    assert lv[-1].scale == pytest.approx(8.0) and (lv[-1].height, lv[-1].width) == (29, 39)
    np.testing.assert_allclose(np.log2([v.scale for v in lv]), np.arange(16) * 0.2, atol=1e-9)


def test_pyramid_no_double_scale_for_large_images() -> None:
    lv = pyramid_levels(1700, 1800)
    # min side > 1600: log2 from 1 to 4 in (4-1)*5+1 = 16 levels; the smallest is 1700*23.5/192 = 208 px
    assert len(lv) == 16 and lv[0].scale == pytest.approx(2.0) and lv[-1].scale == pytest.approx(16.0)
    assert lv[-1].height == round(1700 * 23.5 / (12 * 16))


# ------------------------------------------------------------------ GHH and pooling
def test_ghh_hand_computation() -> None:
    u0 = [1, 5, 2, 3, 0, -1, 4, 2, 7, 7, 1, 0, -3, -2, -5, -1]  # maxes 5, 4, 7, -1 -> 5-4+7+1 = 9
    u1 = [0, 0, 0, 1, 2, 2, 2, 2, -1, -2, -3, -4, 10, 0, 0, 0]  # maxes 1, 2, -1, 10 -> 1-2-1-10 = -12
    x = torch.tensor(u0 + u1, dtype=torch.float32)
    np.testing.assert_allclose(ghh(x[None], dim=1)[0].numpy(), [9.0, -12.0])
    # conv layout: channels along dim 1, spatial maps carried through
    maps = x.view(1, 32, 1, 1).expand(1, 32, 2, 3)
    out = ghh(maps)
    assert out.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(out[0, :, 1, 2].numpy(), [9.0, -12.0])


def _former_gaussian_kernel(ksize: int, sigma: float) -> torch.Tensor:
    """The subtractive-normalisation kernel as it was written by hand before kornia's replaced it."""
    r = torch.arange(ksize, dtype=torch.float32) - (ksize - 1) / 2.0
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def test_l2_pool_and_subtractive_norm() -> None:
    x = torch.tensor([[[[1.0, 2.0], [2.0, 4.0]]]])
    # the root of the *sum* of squares (lp_pool2d's convention), not of their mean (2.5)
    assert float(l2_pool(x, 2)) == pytest.approx(5.0)  # sqrt(1 + 4 + 4 + 16)
    sn = SubtractiveNorm(5, 1.25)
    const = torch.full((1, 3, 9, 9), 2.5)
    np.testing.assert_allclose(sn(const).numpy(), 0.0, atol=1e-6)  # borders renormalised too
    ramp = torch.arange(9.0).view(1, 1, 1, 9).expand(1, 1, 9, 9)
    np.testing.assert_allclose(sn(ramp)[0, 0, 4, 2:7].numpy(), 0.0, atol=1e-5)  # linear: mean = value


def test_subnorm_kernel_is_the_former_gaussian_for_odd_sizes_and_refuses_even_ones() -> None:
    """kornia's kernel equals the former formula at odd sizes, the only ones the layer can use:
    it pads ``ksize // 2``, so an even kernel made the output one pixel larger and the
    subtraction fail. Even sizes are now refused up front."""
    for ksize, sigma in ((3, 0.75), (5, 1.25), (7, 1.75), (9, 3.0), (11, 0.6)):
        torch.testing.assert_close(subnorm_kernel(ksize, sigma), _former_gaussian_kernel(ksize, sigma),
                                   rtol=0, atol=1e-7)
    torch.testing.assert_close(SubtractiveNorm(5, 1.25).kernel, _former_gaussian_kernel(5, 1.25),
                               rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="odd"):
        subnorm_kernel(4, 1.0)
    with pytest.raises(ConfigError, match="subnorm_ksize"):
        LIFT(desc_variant="original", subnorm_ksize=6)
    LIFT(subnorm_ksize=6)  # the tflift descriptor has no subtractive normalisation: accepted


def test_l2_pool_equals_the_library_call() -> None:
    """The written-out L2 pooling (kept: faster on CPU) is ``F.lp_pool2d`` with norm 2, except on
    an all-zero block (the clamp under the root gives 1e-6 instead of 0)."""
    torch.manual_seed(0)
    for shape, k in (((3, 32, 58, 58), 2), ((3, 64, 24, 24), 3), ((3, 128, 4, 4), 4)):
        x = torch.tanh(torch.randn(*shape))
        torch.testing.assert_close(l2_pool(x, k), F.lp_pool2d(x, 2, k), rtol=1e-6, atol=1e-6)
    z = torch.zeros(1, 1, 4, 4)
    assert float(F.lp_pool2d(z, 2, 2).max()) == 0.0
    assert float(l2_pool(z, 2).max()) == pytest.approx(1e-6)


def test_original_descriptor_equals_the_former_kernel() -> None:
    """The ``original`` descriptor with kornia's Gaussian, layer by layer against the same layers
    with the former hand-written kernel."""
    torch.manual_seed(0)
    net = LIFTDescriptor("original").eval()
    p = torch.rand(5, 1, 64, 64) * 2 - 1
    k = _former_gaussian_kernel(5, 1.25)[None, None]
    with torch.no_grad():
        x = p
        for i, conv in enumerate(net.convs):
            x = l2_pool(torch.tanh(conv(x)), net.pools[i])
            if i < 2:
                mean_c = x.mean(dim=1, keepdim=True)
                x = x - F.conv2d(mean_c, k, padding=2) / F.conv2d(torch.ones_like(mean_c[:1]), k, padding=2)
        torch.testing.assert_close(net(p), x.flatten(1), rtol=0, atol=1e-6)


def test_orientation_normalisation_hand_values() -> None:
    v, a = orientation_from_output(torch.tensor([[3.0, -4.0]]), "tflift")
    raw = np.array([0.75 + 1e-3, -1.0 - 1e-3])
    np.testing.assert_allclose(v[0].numpy(), raw / np.linalg.norm(raw), rtol=1e-6)
    assert float(a) == pytest.approx(math.atan2(raw[1], raw[0]), rel=1e-6)
    _, a_th = orientation_from_output(torch.tensor([[3.0, -4.0]]), "theano")
    assert float(a_th) == pytest.approx(math.atan2(raw[0], raw[1]), rel=1e-6)


# ------------------------------------------------------------------ NMS / edge / interpolation
def _pyr_from_stack(stack: torch.Tensor, sigmas: list[float]) -> ScorePyramid:
    b, nl, h, w = stack.shape
    d = derivative_maps(stack.reshape(b * nl, 1, h, w)).reshape(b, nl, 5, h, w)
    return ScorePyramid(stack, d, torch.tensor(sigmas), torch.ones(nl, 2))


def test_nms_3d_keeps_isolated_peak_and_suppresses_neighbours() -> None:
    s = torch.zeros(1, 4, 20, 20)
    s[0, 1, 10, 10] = 5.0
    s[0, 1, 10, 13] = 4.0  # 3 px away: inside radius 3 -> suppressed
    s[0, 2, 11, 11] = 4.5  # next level, 1 px away -> suppressed
    s[0, 3, 10, 10] = 4.9  # two levels away: outside the scale neighbourhood (radius 1) -> kept
    s[0, 1, 10, 17] = 3.0  # 7 px away -> kept
    keep = nms_3d(s, 3, 1) & (s > 0)
    assert keep.nonzero()[:, 1:].tolist() == [[1, 10, 10], [1, 10, 17], [3, 10, 10]]
    keep = nms_3d(s, 3, 2) & (s > 0)  # wider scale neighbourhood now covers level 3
    assert keep.nonzero()[:, 1:].tolist() == [[1, 10, 10], [1, 10, 17]]


def test_detect_interpolates_quadratic_peak_exactly_and_rejects_edges() -> None:
    net = LIFT(nms_scale_radius=1)
    yy, xx = torch.meshgrid(torch.arange(30.0), torch.arange(40.0), indexing="ij")
    lv = torch.arange(3.0).view(3, 1, 1)
    # exact quadratic: Newton / parabola steps recover (x, y, level) = (12.3, 10.6, 1.2)
    blob = 10 - (xx - 12.3) ** 2 - (yy - 10.6) ** 2 - (lv - 1.2) ** 2
    ridge = 8 - 0.01 * (xx - 30.0) ** 2 - (yy - 20.0) ** 2 - (lv - 1.0) ** 2  # edge-like
    stack = torch.maximum(blob, ridge)[None]
    sig = [2.0, 2.0 * 2 ** 0.2, 2.0 * 2 ** 0.4]
    det = net.detect(_pyr_from_stack(stack, sig), 10)
    kp = det["keypoints"][0][det["valid"][0]]
    assert kp.shape[0] == 1  # the ridge fails tr^2/det < (10+1)^2/10
    np.testing.assert_allclose(kp[0].numpy(), [12.3, 10.6], atol=1e-4)
    assert float(det["scales"][0, 0]) == pytest.approx(2.0 * 2 ** (0.2 * 1.2), rel=1e-4)
    no_edge = LIFT(edge_th=0.0).detect(_pyr_from_stack(stack, sig), 10)
    assert int(no_edge["valid"][0].sum()) == 2


# ------------------------------------------------------------------ hand-weighted detector
def _log_kernel(sig: float, k: int = 25) -> np.ndarray:
    r = np.arange(k) - (k - 1) / 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    g = np.exp(-(xx ** 2 + yy ** 2) / (2 * sig ** 2))
    kern = -sig ** 2 * g * (xx ** 2 + yy ** 2 - 2 * sig ** 2) / sig ** 4 / g.sum()
    return kern - kern.mean()  # zero response on flat image regions


def _blob_net() -> LIFT:
    """Hand weights: GHH unit = (channel 0: negated scale-normalised LoG, sigma 3 level px) - 0 + 0 - 0.
    A Gaussian blob of sigma b peaks where b * factor = 3, i.e. sigma_kp = b * 23.5 / 36."""
    net = LIFT(min_scale_log2=2.0, max_scale_log2=3.2).eval()  # levels 2^1 .. 2^3.2 (test speed)
    with torch.no_grad():
        net.det.conv.weight.zero_()
        net.det.conv.bias.zero_()
        net.det.conv.weight[0, 0] = torch.from_numpy(_log_kernel(3.0)).float()
        net.det.conv.bias[1:4] = -1e3  # channels 1-3 never win the max of block 0
    return net


def _blob(h: int, w: int, x0: float, y0: float, s: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s)).astype(np.float32)


def _top(net: LIFT, img: np.ndarray) -> tuple[np.ndarray, float]:
    with torch.no_grad():
        det = net.detect(net.score_pyramid(torch.from_numpy(np.ascontiguousarray(img))[None, None]), 3)
    assert bool(det["valid"][0, 0])
    return det["keypoints"][0, 0].numpy(), float(det["scales"][0, 0])


def test_blob_position_scale_under_scaling_and_rotation() -> None:
    net = _blob_net()
    img = _blob(128, 128, 60.3, 70.6, 6.0)
    xy, s = _top(net, img)
    np.testing.assert_allclose(xy, [60.3, 70.6], atol=0.3)
    assert s == pytest.approx(6.0 * 23.5 / 36.0, rel=0.06)
    # the same scene scaled by 2 (pixel centres: x -> 2x + 0.5): twice the sigma
    xy2, s2 = _top(net, _blob(256, 256, 121.1, 141.7, 12.0))
    np.testing.assert_allclose(xy2, [121.1, 141.7], atol=0.5)
    assert s2 / s == pytest.approx(2.0, rel=0.06)
    # rotated by 90 deg (np.rot90): (x, y) -> (y, W-1-x), same sigma
    xy_r, s_r = _top(net, np.rot90(img, 1))
    np.testing.assert_allclose(xy_r, [70.6, 127 - 60.3], atol=0.3)
    assert s_r == pytest.approx(s, rel=0.02)


# ------------------------------------------------------------------ networks
@pytest.mark.parametrize("variant", ["tflift", "theano"])
def test_orientation_net_shapes(variant: str) -> None:
    net = LIFTOrientation(variant).eval()
    out = net(torch.rand(3, 1, 64, 64))
    assert out.shape == (3, 2)
    assert net.fc4.in_features == (1250 if variant == "tflift" else 6050)


@pytest.mark.parametrize("variant", ["tflift", "original"])
def test_descriptor_net_shapes(variant: str) -> None:
    net = LIFTDescriptor(variant).eval()
    sizes = []
    hooks = [c.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for c in net.convs]
    out = net(torch.rand(2, 1, 64, 64))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 128)
    assert sizes == [58, 24, 4]  # 64 -7+1 = 58 -> /2 = 29 -6+1 = 24 -> /3 = 8 -5+1 = 4 -> /4 = 1


def test_descriptor_crop_rotation_equivariance() -> None:
    net = LIFT().eval()
    img = cv2.GaussianBlur(np.random.default_rng(0).random((96, 96)).astype(np.float32), (0, 0), 1.5)
    rot = np.ascontiguousarray(np.rot90(img, 1))
    x, y, sig = 45.0, 50.0, 2.5
    t = lambda a: torch.from_numpy(a)[None, None]  # noqa: E731
    with torch.no_grad():
        d0 = net.describe(t(img), torch.tensor([[[x, y]]]), torch.tensor([[sig]]), torch.tensor([[0.3]]))
        d1 = net.describe(t(rot), torch.tensor([[[y, 95 - x]]]), torch.tensor([[sig]]),
                          torch.tensor([[0.3 - math.pi / 2]]))
        up0 = net.crop(t(img), torch.tensor([[[x, y]]]), torch.tensor([[sig]]), None)
    np.testing.assert_allclose(d1.numpy(), d0.numpy(), atol=1e-4)
    # crop geometry: 64 px spanning 12 sigma (half width 6 sigma) around the keypoint
    assert up0.shape == (1, 1, 1, 64, 64)
    step = 12 * sig / 64
    np.testing.assert_allclose(float(up0[0, 0, 0, 31, 31]),
                               float(torch.nn.functional.grid_sample(
                                   t(img), torch.tensor([[[[(x - step / 2) / 95 * 2 - 1,
                                                           (y - step / 2) / 95 * 2 - 1]]]]),
                                   align_corners=True)), atol=1e-6)


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize("variant", [("tflift", "tflift"), ("original", "theano")])
def test_extract_random_weights_both_variants(variant: tuple[str, str]) -> None:
    ex = build_extractor("lift", weights="random", max_keypoints=40, desc_variant=variant[0],
                         ori_variant=variant[1])
    f = ex.extract(textured_image(120, 160))
    n = len(f)
    assert 0 < n <= 40
    assert f.keypoints.shape == (n, 2) and f.descriptors.shape == (n, 128)
    np.testing.assert_allclose(f.descriptors.norm(dim=1).numpy(), 1.0, atol=1e-4)
    assert float(f.scales.min()) >= 1.0 - 1e-4 and float(f.scales.max()) <= 16.0
    assert torch.isfinite(f.orientations).all() and float(f.orientations.abs().max()) <= math.pi
    assert (f.keypoints >= 0).all() and (f.keypoints[:, 0] <= 159).all() and (f.keypoints[:, 1] <= 119).all()


def test_differentiable_patch_path() -> None:
    net = LIFT()
    img = torch.rand(1, 1, 64, 64)
    kp = torch.tensor([[[30.2, 31.7]]], requires_grad=True)
    sig = torch.tensor([[2.0]], requires_grad=True)
    _, ang = net.orientation(net.crop(img, kp, sig, None))
    d = net.describe(img, kp, sig, ang)
    g = torch.autograd.grad(d[0, 0, :8].sum(), (kp, sig))
    assert all(torch.isfinite(t).all() and t.abs().sum() > 0 for t in g)


def test_checkpoint_roundtrip_and_tf_conversion(tmp_path: Path) -> None:
    small = {"max_keypoints": 20, "min_scale_log2": 2.0}  # skip the 2x-upsampled levels (speed)
    ex = build_extractor("lift", weights="random", **small)
    path = save_checkpoint(tmp_path / "lift.pth", "lift", ex.state_dict(), ex.conf)
    ex2 = build_extractor("lift", weights=str(path), **small)
    img = textured_image(96, 128, seed=5)
    torch.testing.assert_close(ex.extract(img).descriptors, ex2.extract(img).descriptors)

    for desc_variant, ori_variant in (("tflift", "tflift"), ("original", "theano")):
        conf = {"desc_variant": desc_variant, "ori_variant": ori_variant}
        full = LIFT(**conf).conf
        own = LIFT(**conf).state_dict()
        r = np.random.default_rng(0)
        tf = {"global_step": np.array(5)}
        for name, key, kind in tf_name_table(full):
            shape = tuple(own[key].shape)
            if kind == "conv":
                shape = (shape[2], shape[3], shape[1], shape[0])
            elif kind in ("fc", "fc_nhwc"):
                shape = (shape[1], shape[0])
            tf[name] = r.standard_normal(shape).astype(np.float32)
            tf[name + "/Adam_1"] = np.zeros(shape, np.float32)
        net = LIFT(**conf)
        net.load_state_dict(convert_tf_state(tf, full), strict=True)
        # kp conv kernel [25, 25, 1, 16] -> [16, 1, 25, 25]
        np.testing.assert_array_equal(net.det.conv.weight[5, 0].detach().numpy(),
                                      tf["network/lift/kp/conv-ghh-1/weights"][:, :, 0, 5])
        if ori_variant == "tflift":  # NHWC flatten of the pooled conv-3 map (5, 5, 50)
            fmap = r.standard_normal((5, 5, 50)).astype(np.float32)
            ref = fmap.reshape(-1) @ tf["network/lift/ori/fc-ghh-drop-4/weights"]
            with torch.no_grad():
                ours = net.ori.fc4(torch.from_numpy(fmap.transpose(2, 0, 1).reshape(1, -1)))[0]
            np.testing.assert_allclose(ours.detach().numpy(), ref + tf["network/lift/ori/fc-ghh-drop-4/biases"],
                                       rtol=1e-4, atol=1e-3)
        # TF-named checkpoints convert on load
        raw = tmp_path / f"lift_tf_{desc_variant}.pth"
        torch.save({k: torch.from_numpy(v) for k, v in tf.items()}, raw)
        ex3 = build_extractor("lift", weights=str(raw), **conf)
        np.testing.assert_array_equal(ex3.desc.convs[2].bias.detach().cpu().numpy(),
                                      tf["network/lift/desc/conv-act-pool-3/biases"])


# ------------------------------------------------------------------ patch mode (training)
def test_patch_soft_argmax_hand_values() -> None:
    s = torch.zeros(1, 1, 24, 24)
    s[0, 0, 5 + 3, 5 + 7] = 100.0  # cropped map (14x14) peak at x = 7, y = 3
    xy, score = patch_soft_argmax(s)
    # x_n = (7 + 17) / 23.5 - 1, y_n = (3 + 17) / 23.5 - 1; the other 195 cells weigh exp(-1000) = 0
    np.testing.assert_allclose(xy[0].numpy(), [24 / 23.5 - 1, 20 / 23.5 - 1], atol=1e-6)
    # log(mean(exp(10 (S - max)))) / 10 + max = log(1/196) / 10 + 100
    assert float(score[0]) == pytest.approx(100 + math.log(1 / 196) / 10, abs=1e-4)
    flat = torch.full((1, 1, 24, 24), 2.0)
    xy, score = patch_soft_argmax(flat)  # uniform: centre of the 14x14 crop, score = the value
    np.testing.assert_allclose(xy[0].numpy(), [(6.5 + 17) / 23.5 - 1] * 2, atol=1e-6)
    assert float(score[0]) == pytest.approx(2.0, abs=1e-5)


def test_kp_patch_forward_locates_blob_in_patch_and_is_differentiable() -> None:
    net = _blob_net()
    # 128-px patch, blob sigma 8 (= 3 px after the 128 -> 48 resize), 10 px right and 6 px up
    patch = torch.from_numpy(_blob(128, 128, 63.5 + 10, 63.5 - 6, 8.0))[None, None].requires_grad_(True)
    out = net.kp_patch_forward(patch)
    assert out["score_map"].shape == (1, 1, 24, 24)
    # 128-px offsets -> 48-px pixels (x 48/128) -> normalised by 23.5
    np.testing.assert_allclose(out["xy"][0].detach().numpy(), [10 * 0.375 / 23.5, -6 * 0.375 / 23.5],
                               atol=0.02)
    g, = torch.autograd.grad(out["xy"][0, 0], patch)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


# ------------------------------------------------------------------ fast pipeline == reference
def _reference_score_pyramid(net: LIFT, image: torch.Tensor) -> ScorePyramid:
    """The straightforward pyramid: one detector call per level (module conv + reference GHH),
    the score map and its five derivative maps resampled densely onto the input grid."""
    b, _, h, w = image.shape
    x = net.normalize(image, "kp")
    scores, derivs, sig, px = [], [], [], []
    for lv in net.levels(h, w):
        xl = F.interpolate(x, size=(lv.height, lv.width), mode="bilinear", align_corners=False,
                           antialias=lv.height * lv.width < h * w)
        s = ghh(net.det.conv(xl))
        maps = torch.cat([s, derivative_maps(s)], dim=1)
        ly = (torch.arange(h, dtype=x.dtype) + 0.5) * (lv.height / h) - 0.5 - 12
        lx = (torch.arange(w, dtype=x.dtype) + 0.5) * (lv.width / w) - 0.5 - 12
        gy, gx = torch.meshgrid(ly, lx, indexing="ij")
        samp = sample_image(maps, torch.stack([gx, gy], dim=-1)[None].expand(b, h, w, 2))
        inside = (gx >= 0) & (gx <= s.shape[-1] - 1) & (gy >= 0) & (gy <= s.shape[-2] - 1)
        scores.append(torch.where(inside, samp[:, 0], torch.full_like(samp[:, 0], float("-inf"))))
        derivs.append(samp[:, 1:])
        sig.append(lv.scale)
        px.append((w / lv.width, h / lv.height))
    return ScorePyramid(torch.stack(scores, 1), torch.stack(derivs, 1), torch.tensor(sig),
                        torch.tensor(px))


def _reference_detect(net: LIFT, pyr: ScorePyramid, k: int) -> dict[str, torch.Tensor]:
    """Dense 3-D NMS (max_pool3d), dense edge test, top-K over the flat stack, Newton step and
    parabola: the detection written out without any sparse shortcut."""
    c = net.conf
    stack, deriv = pyr.score, pyr.deriv
    b, nl, h, w = stack.shape
    r, q = max(int(c["nms_radius"]), 1), int(c["nms_scale_radius"])
    m = F.max_pool3d(stack[:, None], (2 * q + 1, 2 * r + 1, 2 * r + 1), stride=1, padding=(q, r, r))[:, 0]
    keep = (stack >= m) & torch.isfinite(stack)
    keep &= edge_ok(deriv[:, :, 2:].permute(0, 1, 3, 4, 2), float(c["edge_th"]))
    keep &= stack > float(c["detection_threshold"])
    top, idx = torch.topk(torch.where(keep, stack, torch.full_like(stack, float("-inf"))).reshape(b, -1), k)
    valid = torch.isfinite(top)
    lev, y, x = idx // (h * w), (idx % (h * w)) // w, idx % w
    d = deriv.permute(0, 1, 3, 4, 2).reshape(b, -1, 5)[torch.arange(b)[:, None], idx]
    xy = torch.stack([x, y], dim=-1).float() + newton_offset(d) * pyr.level_px[lev]
    flat = stack.reshape(b, -1)

    def at(dl: int) -> torch.Tensor:
        ll = lev + dl
        v = torch.gather(flat, 1, (ll.clamp(0, nl - 1) * h + y) * w + x)
        return torch.where((ll >= 0) & (ll < nl), v, torch.full_like(v, float("-inf")))

    step = torch.log2(pyr.sigmas[1:] / pyr.sigmas[:-1]).mean()
    f0 = torch.where(valid, top, torch.zeros_like(top))
    log_s = torch.log2(pyr.sigmas)[lev] + parabola_offset(at(-1), f0, at(1)) * step
    return {"keypoints": xy, "scores": top, "scales": torch.pow(2.0, log_s), "valid": valid}


def _match(ref_xy: np.ndarray, got_xy: np.ndarray, tol: float) -> np.ndarray:
    """Index of the keypoint in ``got_xy`` within ``tol`` px of each reference keypoint (-1: none)."""
    d = np.abs(ref_xy[:, None, :] - got_xy[None, :, :]).max(-1)
    j = d.argmin(1)
    return np.where(d[np.arange(len(ref_xy)), j] <= tol, j, -1)


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_detection_matches_per_level_dense_reference(seed: int) -> None:
    """Packed canvases, cached grids, separable NMS and survivor-only derivatives give the
    keypoints, scores and scales of the per-level dense pipeline (up to float rounding; equal
    scores may swap places)."""
    torch.manual_seed(seed)
    net = build_extractor("lift", weights="random", max_keypoints=150)
    img = torch.from_numpy(textured_image(120, 160, seed=seed)).float()[None, None] / 255.0
    with torch.no_grad():
        pyr = net.score_pyramid(img)
        ref_pyr = _reference_score_pyramid(net, img)
        assert pyr.deriv is None and len(pyr.maps) == ref_pyr.score.shape[1] == 16
        assert torch.equal(torch.isfinite(pyr.score), torch.isfinite(ref_pyr.score))
        fin = torch.isfinite(ref_pyr.score)
        torch.testing.assert_close(pyr.score[fin], ref_pyr.score[fin], rtol=0, atol=1e-5)
        got, ref = net.detect(pyr, 150), _reference_detect(net, ref_pyr, 150)
    n = int(ref["valid"].sum())
    assert n > 50 and int(got["valid"].sum()) == n
    rxy, gxy = ref["keypoints"][0, :n].numpy(), got["keypoints"][0, :n].numpy()
    j = _match(rxy, gxy, 1e-4)
    assert (j >= 0).all() and len(set(j.tolist())) == n
    np.testing.assert_allclose(got["scores"][0, :n].numpy(), ref["scores"][0, :n].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["scales"][0, :n].numpy()[j], ref["scales"][0, :n].numpy(), rtol=1e-5)
    order_swaps = np.nonzero(j != np.arange(n))[0]  # only among (near-)equal scores
    s = ref["scores"][0, :n].numpy()
    assert np.all(np.abs(s[order_swaps] - s[j[order_swaps]]) <= 1e-5)


def test_fast_detection_on_hand_made_dense_pyramid_matches_reference() -> None:
    """The sparse detect on a pyramid that carries dense derivatives (hand-made stacks) is the
    dense reference detect, ties included (flat-index order)."""
    net = LIFT()
    r = np.random.default_rng(3)
    stack = torch.from_numpy(cv2.GaussianBlur(r.random((5, 40, 50)).transpose(1, 2, 0), (0, 0), 1.2)
                             .transpose(2, 0, 1).copy()).float()[None]
    stack[0, 2, :5] = float("-inf")  # a VALID border
    sig = [2.0 * 2 ** (0.2 * i) for i in range(5)]
    pyr = _pyr_from_stack(stack, sig)
    got, ref = net.detect(pyr, 30), _reference_detect(net, pyr, 30)
    n = int(ref["valid"].sum())
    assert n > 5 and int(got["valid"].sum()) == n
    np.testing.assert_allclose(got["keypoints"][0, :n].numpy(), ref["keypoints"][0, :n].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["scales"][0, :n].numpy(), ref["scales"][0, :n].numpy(), rtol=1e-6)
    assert torch.equal(got["scores"][0, :n], ref["scores"][0, :n])


def test_packed_canvases_give_the_per_level_score_maps() -> None:
    """pack_levels: no overlaps, inside the canvas, and one detector call over a canvas returns
    each level's own VALID score map exactly."""
    levels = pyramid_levels(120, 160)
    canvases = pack_levels(levels, 120 * 160)
    assert sorted(i for _, _, items in canvases for i, _, _ in items) == list(range(len(levels)))
    for ch, cw, items in canvases:
        occ = np.zeros((ch, cw), int)
        for i, top, left in items:
            occ[top:top + levels[i].height, left:left + levels[i].width] += 1
            assert top + levels[i].height <= ch and left + levels[i].width <= cw
        assert occ.max() == 1
    torch.manual_seed(0)
    net = build_extractor("lift", weights="random")
    with torch.no_grad():
        ch, cw, items = max(canvases, key=lambda c: len(c[2]))
        canvas = torch.zeros(1, 1, ch, cw)
        imgs = {i: torch.rand(1, 1, levels[i].height, levels[i].width) for i, _, _ in items}
        for i, top, left in items:
            canvas[..., top:top + levels[i].height, left:left + levels[i].width] = imgs[i]
        out = net.det(canvas)
        for i, top, left in items:
            own = net.det(imgs[i])
            assert torch.equal(out[..., top:top + own.shape[-2], left:left + own.shape[-1]], own)


def test_survivor_derivatives_equal_sampled_dense_derivative_maps() -> None:
    torch.manual_seed(0)
    maps = [torch.randn(2, 1, 31, 45), torch.randn(2, 1, 17, 23)[..., 2:, 3:]]  # a strided view too
    n = 400
    li = torch.randint(0, 2, (n,))
    bi = torch.randint(0, 2, (n,))
    gx, gy = torch.rand(n) * 2.2 - 1.1, torch.rand(n) * 2.2 - 1.1  # a few beyond the border
    got = sample_level_derivatives(maps, gx, gy, bi, li)
    for lev, m in enumerate(maps):
        sel = li == lev
        dense = derivative_maps(m.contiguous())
        for b in range(2):
            s = sel & (bi == b)
            grid = torch.stack([gx[s], gy[s]], dim=-1).view(1, -1, 1, 2)
            ref = F.grid_sample(dense[b:b + 1], grid, mode="bilinear", padding_mode="border",
                                align_corners=True)[0, :, :, 0].T
            torch.testing.assert_close(got[s], ref, rtol=0, atol=1e-5)


def test_scale_space_max_equals_max_pool3d_including_nan() -> None:
    r = np.random.default_rng(1)
    stack = torch.from_numpy(np.round(r.random((2, 5, 19, 23)) * 4).astype(np.float32))
    stack[0, 1, 3:6, 4:8] = float("-inf")
    for radius, q in ((3, 1), (1, 2), (2, 0)):
        ref = F.max_pool3d(stack[:, None], (2 * q + 1, 2 * radius + 1, 2 * radius + 1), stride=1,
                           padding=(q, radius, radius))[:, 0]
        assert torch.equal(scale_space_max(stack, radius, q), ref)
    stack[1, 2, 9, 9] = float("nan")  # NaN spreads like max_pool3d's
    ref = F.max_pool3d(stack[:, None], (3, 7, 7), stride=1, padding=(1, 3, 3))[:, 0]
    assert torch.equal(torch.isnan(scale_space_max(stack, 3, 1)), torch.isnan(ref))


def test_ghh_maps_and_pool_rewrites_are_exact() -> None:
    torch.manual_seed(0)
    for c, ns, nm in ((16, 4, 4), (32, 4, 4), (8, 2, 4)):
        x = torch.randn(2, c, 9, 11)
        assert torch.equal(ghh_maps(x, ns, nm), ghh(x, ns, nm))
        assert torch.equal(ghh_maps(x.clone(), ns, nm, inplace=True), ghh(x, ns, nm))
    for shape in ((3, 10, 60, 60), (3, 50, 11, 11)):
        x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            assert torch.equal(max_pool_2x2(x), F.max_pool2d(x, 2))
    # the orientation net (pool before ReLU) equals the straightforward layer order
    for variant in ("tflift", "theano"):
        net = LIFTOrientation(variant).eval()
        p = torch.rand(6, 1, 64, 64)
        with torch.no_grad():
            x, pre = p, p
            for conv in net.convs:
                pre = F.relu(conv(x))
                x = F.max_pool2d(pre, 2)
            x = ghh(net.fc4((x if variant == "tflift" else pre).flatten(1)))
            assert torch.equal(net(p), ghh(net.fc5(x)))


@pytest.mark.parametrize("corners", [False, True])
def test_fast_crops_equal_extract_patches(corners: bool) -> None:
    torch.manual_seed(0)
    img = torch.rand(2, 1, 50, 70)
    kp = torch.rand(2, 30, 2) * torch.tensor([69.0, 49.0])
    hw = torch.rand(2, 30) * 20 + 1
    ori = torch.rand(2, 30) * 6.3 - 3.15
    for o in (None, ori):
        with torch.no_grad():
            fast = crop_patches_fast(img, kp, hw, o, 16, corners)
        torch.testing.assert_close(fast, extract_patches(img, kp, hw, o, 16, corners), rtol=0, atol=1e-6)
    kp.requires_grad_(True)  # autograd falls back to the differentiable path
    assert crop_patches_fast(img, kp, hw, ori, 8, corners).requires_grad
