"""D2-Net: official checkpoint layouts load, and the output equals an independent re-statement of
the official test pipeline (docs/method_facts/d2net.md) written here in plain torch, dense, all
channels at once, the way ``lib/model_test.py`` + ``lib/pyramid.py`` compute it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from local_features_ros.extractors.d2net import D2Net, d2net_target_size
from local_features_ros.registry import build_extractor
from local_features_ros.weights import WeightsError

OFFICIAL_CONV = {  # state-dict index -> (in, out, dilation)
    0: (3, 64, 1), 2: (64, 64, 1), 5: (64, 128, 1), 7: (128, 128, 1), 10: (128, 256, 1),
    12: (256, 256, 1), 14: (256, 256, 1), 17: (256, 512, 2), 19: (512, 512, 2), 21: (512, 512, 2),
}


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official key layout (He-scaled so activations neither die nor blow up)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for idx, (cin, cout, _) in OFFICIAL_CONV.items():
        std = (2.0 / (9 * cin)) ** 0.5
        sd[f"dense_feature_extraction.model.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * std
        sd[f"dense_feature_extraction.model.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
    return sd


def reference_network(sd: dict[str, torch.Tensor], channels_last: bool = True, use_relu: bool = True):
    """The test-time VGG as a function (no nn.Sequential shared with the implementation).

    ``channels_last``: the extractor runs CPU convs in channels-last layout (``Extractor.setup``);
    the layout only changes the summation order (~1e-5 relative), so the reference uses the same
    layout to make the comparison exact instead of loosening the tolerance.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    w = {k.split("model.")[1]: (v.contiguous(memory_format=fmt) if v.ndim == 4 else v)
         for k, v in sd.items()}

    def conv(x, i, dil):
        return F.conv2d(x, w[f"{i}.weight"], w[f"{i}.bias"], padding=dil, dilation=dil)

    def run(x):
        x = F.relu(conv(x, 0, 1)); x = F.relu(conv(x, 2, 1)); x = F.max_pool2d(x, 2, 2)
        x = F.relu(conv(x, 5, 1)); x = F.relu(conv(x, 7, 1)); x = F.max_pool2d(x, 2, 2)
        x = F.relu(conv(x, 10, 1)); x = F.relu(conv(x, 12, 1)); x = F.relu(conv(x, 14, 1))
        x = F.avg_pool2d(x, 2, stride=1)
        x = F.relu(conv(x, 17, 2)); x = F.relu(conv(x, 19, 2)); x = conv(x, 21, 2)
        return F.relu(x) if use_relu else x

    return run


def _k3(rows, mult=1.0):
    return (mult * torch.tensor(rows, dtype=torch.float32)).view(1, 1, 3, 3)


def ref_hard_detection(x: torch.Tensor, edge_threshold: float = 5.0) -> torch.Tensor:
    """(1, C, H, W) -> bool detections, all channels densely (official HardDetectionModule)."""
    b, c, h, w = x.shape
    is_depth_max = x == torch.max(x, dim=1, keepdim=True)[0]
    is_local_max = x == F.max_pool2d(x, 3, stride=1, padding=1)
    flat = x.view(b * c, 1, h, w)
    dii = F.conv2d(flat, _k3([[0, 1, 0], [0, -2, 0], [0, 1, 0]]), padding=1).view(b, c, h, w)
    djj = F.conv2d(flat, _k3([[0, 0, 0], [1, -2, 1], [0, 0, 0]]), padding=1).view(b, c, h, w)
    dij = F.conv2d(flat, _k3([[1, 0, -1], [0, 0, 0], [-1, 0, 1]], 0.25), padding=1).view(b, c, h, w)
    det = dii * djj - dij * dij
    tr = dii + djj
    thr = (edge_threshold + 1) ** 2 / edge_threshold
    not_edge = torch.min(tr * tr / det <= thr, det > 0)
    return torch.min(torch.min(is_depth_max, is_local_max), not_edge)


def ref_localization(x: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (1, 2, C, H, W) Newton steps (official HandcraftedLocalizationModule)."""
    b, c, h, w = x.shape
    flat = x.view(b * c, 1, h, w)
    f = lambda k: F.conv2d(flat, k, padding=1).view(b, c, h, w)  # noqa: E731
    di = f(_k3([[0, -0.5, 0], [0, 0, 0], [0, 0.5, 0]]))
    dj = f(_k3([[0, 0, 0], [-0.5, 0, 0.5], [0, 0, 0]]))
    dii = f(_k3([[0, 1, 0], [0, -2, 0], [0, 1, 0]]))
    djj = f(_k3([[0, 0, 0], [1, -2, 1], [0, 0, 0]]))
    dij = f(_k3([[1, 0, -1], [0, 0, 0], [-1, 0, 1]], 0.25))
    det = dii * djj - dij * dij
    h00, h01, h11 = djj / det, -dij / det, dii / det
    return torch.stack([-(h00 * di + h01 * dj), -(h01 * di + h11 * dj)], dim=1)


def ref_interpolate(pos: torch.Tensor, fmap: torch.Tensor):
    """Bilinear sampling with the 4-valid-corners rule; returns descriptors (C, M) and ids."""
    _, h, w = fmap.shape
    i, j = pos[0], pos[1]
    it, jl = torch.floor(i).long(), torch.floor(j).long()
    ib, jr = torch.ceil(i).long(), torch.ceil(j).long()
    ok = torch.min(torch.min(it >= 0, jl >= 0), torch.min(ib < h, jr < w))
    ids = torch.arange(pos.shape[1])[ok]
    i, j, it, jl, ib, jr = i[ids], j[ids], it[ids], jl[ids], ib[ids], jr[ids]
    di, dj = i - it.float(), j - jl.float()
    d = ((1 - di) * (1 - dj) * fmap[:, it, jl] + (1 - di) * dj * fmap[:, it, jr]
         + di * (1 - dj) * fmap[:, ib, jl] + di * dj * fmap[:, ib, jr])
    return d, ids


def ref_process_multiscale(image: torch.Tensor, net, scales):
    """Official pyramid: coarse -> fine, accumulated features, banned positions."""
    _, _, h_init, w_init = image.shape
    all_k, all_d, all_s = torch.zeros(3, 0), torch.zeros(512, 0), torch.zeros(0)
    prev, banned = None, None
    per_level = []
    for idx, scale in enumerate(scales):
        cur = F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=True)
        _, _, h_level, w_level = cur.shape
        dense = net(cur)
        _, _, h, w = dense.shape
        if prev is not None:
            dense = dense + F.interpolate(prev, size=[h, w], mode="bilinear", align_corners=True)
        det = ref_hard_detection(dense)
        if banned is not None:
            banned = F.interpolate(banned.float(), size=[h, w]).bool()
            det = torch.min(det, ~banned)
            banned = torch.max(torch.max(det, dim=1)[0].unsqueeze(1), banned)
        else:
            banned = torch.max(det, dim=1)[0].unsqueeze(1)
        fpos = torch.nonzero(det[0]).t()
        disp = ref_localization(dense)[0]
        d_i = disp[0, fpos[0], fpos[1], fpos[2]]
        d_j = disp[1, fpos[0], fpos[1], fpos[2]]
        m = torch.min(d_i.abs() < 0.5, d_j.abs() < 0.5)
        fpos = fpos[:, m]
        fkp = fpos[1:].float() + torch.stack([d_i[m], d_j[m]])
        raw, ids = ref_interpolate(fkp, dense[0])
        per_level.append(int(ids.numel()))
        fpos, fkp = fpos[:, ids], fkp[:, ids]
        kp = fkp.clone()
        for _ in range(2):  # upscale_positions(pos, scaling_steps=2)
            kp = kp * 2 + 0.5
        kp[0] *= h_init / h_level
        kp[1] *= w_init / w_level
        kp = torch.cat([kp, torch.ones(1, kp.shape[1]) / scale])
        all_k = torch.cat([all_k, kp], 1)
        all_d = torch.cat([all_d, F.normalize(raw, dim=0)], 1)
        all_s = torch.cat([all_s, dense[0, fpos[0], fpos[1], fpos[2]] / (idx + 1)])
        prev = dense
    kp = all_k.t()[:, [1, 0, 2]]  # extract_features.py: (i, j, s) -> (x, y, s)
    return kp, all_s, all_d.t(), per_level


def caffe_input(img: np.ndarray) -> torch.Tensor:
    """Official preprocess_image('caffe') on an RGB uint8 image."""
    x = img.astype(np.float32)[:, :, ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def rgb_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour noise: many D2-Net detections even with random weights."""
    r = np.random.default_rng(seed)
    small = r.integers(0, 256, (h // 2, w // 2, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> tuple[str, dict]:
    sd = official_state_dict(0)
    p = tmp_path_factory.mktemp("d2") / "d2_official.pth"
    torch.save({"model": sd, "epoch_idx": 3, "args": {"x": 1}}, p)  # like d2.NN.pth (no objects)
    return str(p), sd


def _compare(extractor: D2Net, img: np.ndarray, sd, scales, use_relu: bool = True) -> None:
    with torch.inference_mode():
        feats = extractor.extract(img)
        net = reference_network(sd, use_relu=use_relu)
        kp, sc, de, per_level = ref_process_multiscale(caffe_input(img), net, scales)
    assert all(n > 0 for n in per_level), f"a pyramid level had no detection: {per_level}"
    assert len(feats) == kp.shape[0] > 15
    torch.testing.assert_close(feats.keypoints, kp[:, :2], atol=1e-5, rtol=0)
    torch.testing.assert_close(feats.scales, kp[:, 2], atol=1e-6, rtol=0)
    torch.testing.assert_close(feats.scores, sc, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats.descriptors, de, atol=1e-5, rtol=0)
    assert feats.descriptors.shape[1] == 512
    assert torch.all(feats.orientations == 0)
    assert feats.image_size == (img.shape[1], img.shape[0])


def test_single_scale_equals_official(weights_file) -> None:
    path, sd = weights_file
    ex = build_extractor("d2net", weights=path)
    _compare(ex, rgb_image(64, 80, 1), sd, [1.0])


def test_multiscale_equals_official(weights_file) -> None:
    path, sd = weights_file
    ex = build_extractor("d2net", weights=path, multiscale=True)
    _compare(ex, rgb_image(80, 96, 2), sd, [0.5, 1.0, 2.0])


def test_no_relu_equals_official(weights_file) -> None:
    """``use_relu: false`` (official --no-relu): negative maxima and all-pixel candidates."""
    path, sd = weights_file
    ex = build_extractor("d2net", weights=path, use_relu=False)
    _compare(ex, rgb_image(64, 80, 4), sd, [1.0], use_relu=False)


def test_tiled_backbone_equals_untiled(weights_file) -> None:
    """Row tiles (memory bound for big pyramids) give the same dense features."""
    path, _ = weights_file
    ex = build_extractor("d2net", weights=path, max_tile_pixels=0)
    x = ex.normalize(torch.from_numpy(rgb_image(160, 48, 3)).permute(2, 0, 1)[None].float() / 255)
    with torch.inference_mode():
        full = ex.dense_features(x)
        ex.update_conf(max_tile_pixels=48 * 32)  # 32-row tiles + 64-row halos -> 5 tiles
        tiled = ex.dense_features(x)
    assert tiled.shape == full.shape == (1, 512, 39, 11)
    torch.testing.assert_close(tiled, full, atol=1e-4, rtol=1e-4)


def test_plain_state_dict_loads_and_wrong_key_is_named(weights_file, tmp_path) -> None:
    path, sd = weights_file
    plain = tmp_path / "plain.pth"
    torch.save(sd, plain)
    a = build_extractor("d2net", weights=str(plain))
    b = build_extractor("d2net", weights=path)
    for k, v in a.state_dict().items():
        assert torch.equal(v, sd[k]) and torch.equal(b.state_dict()[k], sd[k])
    assert sorted(a.state_dict()) == sorted(sd)  # exactly the official keys, nothing else
    bad = dict(sd)
    bad["dense_feature_extraction.model.3.weight"] = bad.pop("dense_feature_extraction.model.2.weight")
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="dense_feature_extraction.model.2.weight"):
        build_extractor("d2net", weights=str(tmp_path / "bad.pth"))


def test_max_keypoints_keeps_best_and_maps_to_original(weights_file) -> None:
    path, sd = weights_file
    img = rgb_image(64, 80, 1)
    full = build_extractor("d2net", weights=path).extract(img)
    top = build_extractor("d2net", weights=path, max_keypoints=7).extract(img)
    assert len(top) == 7
    best = torch.sort(full.scores, descending=True).values[:7]
    torch.testing.assert_close(torch.sort(top.scores, descending=True).values, best)
    # resize limits: a 2x upsampled image, capped back to 80 px, maps keypoints to the big image
    big = np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)
    capped = build_extractor("d2net", weights=path, max_edge=80).extract(big)
    assert capped.image_size == (160, 128)
    assert float(capped.keypoints[:, 0].max()) < 160 and float(capped.keypoints[:, 1].max()) < 128
    assert torch.allclose(capped.scales, torch.full_like(capped.scales, 2.0))


def test_official_resize_limits() -> None:
    # scipy.misc.imresize truncates: 2000x1000 -> max edge 1600 -> 1600x800 (sum 2400 <= 2800)
    assert d2net_target_size(2000, 1000, 1600, 2800) == (1600, 800)
    # 1600x1500: edge ok, sum 3100 > 2800 -> factor 2800/3100 -> int(1445.16), int(1354.83)
    assert d2net_target_size(1600, 1500, 1600, 2800) == (1445, 1354)
    assert d2net_target_size(640, 480, 1600, 2800) == (640, 480)
    assert d2net_target_size(640, 480, 1600, 2800, resize_max_edge=320) == (320, 240)
