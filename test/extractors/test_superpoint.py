"""SuperPoint: parity with an independent re-statement of the official MagicLeap frontend
(docs/method_facts/superpoint.md), NMS properties, top-k, checkpoint errors, resize bookkeeping,
bf16.

The re-statement below (network in plain ``torch.nn.functional`` on the official state dict,
post-processing in numpy with a literal greedy ``nms_fast``) is written from that page only and
never calls the extractor's helpers.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import textured_image

from local_features_ros.extractors.nms import greedy_nms, maxpool_nms
from local_features_ros.registry import build_extractor
from local_features_ros.weights import WeightsError, save_checkpoint

# (name, out_channels, in_channels, kernel) — docs/method_facts/superpoint.md#network.
OFFICIAL_LAYERS = [
    ("conv1a", 64, 1, 3), ("conv1b", 64, 64, 3), ("conv2a", 64, 64, 3), ("conv2b", 64, 64, 3),
    ("conv3a", 128, 64, 3), ("conv3b", 128, 128, 3), ("conv4a", 128, 128, 3),
    ("conv4b", 128, 128, 3), ("convPa", 256, 128, 3), ("convPb", 65, 256, 1),
    ("convDa", 256, 128, 3), ("convDb", 256, 256, 1),
]


def official_state_dict(seed: int = 0, logit_std: float = 4.0, dustbin_bias: float = 8.0
                        ) -> dict[str, torch.Tensor]:
    """Random weights in the official plain layout, scaled to behave like a trained detector.

    He-normal convs keep activations at a constant scale through the VGG stack; ``convPb`` is
    scaled so cell logits spread over several units and the dustbin bias makes most cells "no
    keypoint", so the heatmap has separated peaks instead of the near-uniform 1/65 that default
    init gives (which sits right at the 0.015 threshold and makes every comparison meaningless).
    """
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, cout, cin, k in OFFICIAL_LAYERS:
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01
    sd["convPb.weight"] *= logit_std
    sd["convPb.bias"][64] = dustbin_bias
    return sd


# ---------------------------------------------------------------- official re-statement
def official_network(sd: dict[str, torch.Tensor], img: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """SuperPointNet.forward in functional form: (1,1,H,W) float image -> semi, unit-norm desc."""
    def conv(x: torch.Tensor, name: str) -> torch.Tensor:
        w = sd[f"{name}.weight"]
        return F.conv2d(x, w, sd[f"{name}.bias"], stride=1, padding=w.shape[-1] // 2)

    x = torch.from_numpy(img)[None, None]
    x = F.relu(conv(x, "conv1a"))
    x = F.max_pool2d(F.relu(conv(x, "conv1b")), 2, 2)
    x = F.relu(conv(x, "conv2a"))
    x = F.max_pool2d(F.relu(conv(x, "conv2b")), 2, 2)
    x = F.relu(conv(x, "conv3a"))
    x = F.max_pool2d(F.relu(conv(x, "conv3b")), 2, 2)
    x = F.relu(conv(x, "conv4a"))
    x = F.relu(conv(x, "conv4b"))
    semi = conv(F.relu(conv(x, "convPa")), "convPb")
    desc = conv(F.relu(conv(x, "convDa")), "convDb")
    desc = desc / torch.norm(desc, p=2, dim=1).unsqueeze(1)
    return semi, desc


def official_nms_fast(corners: np.ndarray, h: int, w: int, dist: int) -> np.ndarray:
    """Literal greedy grid NMS: corners (3, N) [x, y, conf] -> kept (3, K) by descending conf."""
    if corners.shape[1] == 0:
        return np.zeros((3, 0))
    if corners.shape[1] == 1:
        return corners
    grid = np.zeros((h, w), dtype=int)
    index = np.zeros((h, w), dtype=int)
    order = np.argsort(-corners[2, :])
    sorted_c = corners[:, order]
    rc = sorted_c[:2, :].round().astype(int)
    for i in range(rc.shape[1]):
        grid[rc[1, i], rc[0, i]] = 1
        index[rc[1, i], rc[0, i]] = i
    pad = dist
    grid = np.pad(grid, ((pad, pad), (pad, pad)), mode="constant")
    for i in range(rc.shape[1]):
        px, py = rc[0, i] + pad, rc[1, i] + pad
        if grid[py, px] == 1:
            grid[py - pad:py + pad + 1, px - pad:px + pad + 1] = 0
            grid[py, px] = -1
    ky, kx = np.where(grid == -1)
    kept = sorted_c[:, index[ky - pad, kx - pad]]
    return kept[:, np.argsort(-kept[2, :])]


def official_heatmap(semi: torch.Tensor) -> np.ndarray:
    s = semi.detach().numpy().squeeze(0)  # (65, Hc, Wc)
    dense = np.exp(s) / (np.sum(np.exp(s), axis=0) + 0.00001)
    nodust = dense[:-1].transpose(1, 2, 0)  # (Hc, Wc, 64)
    hc, wc = nodust.shape[:2]
    return nodust.reshape(hc, wc, 8, 8).transpose(0, 2, 1, 3).reshape(hc * 8, wc * 8)


def official_run(sd: dict[str, torch.Tensor], img: np.ndarray, conf_thresh: float = 0.015,
                 nms_dist: int = 4, border: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SuperPointFrontend.run: float (H, W) image -> pts (3, N), desc (256, N), heatmap."""
    h, w = img.shape
    with torch.no_grad():
        semi, coarse = official_network(sd, img)
    heat = official_heatmap(semi)
    ys, xs = np.where(heat >= conf_thresh)
    pts = np.zeros((3, len(xs)))
    pts[0], pts[1], pts[2] = xs, ys, heat[ys, xs]
    pts = official_nms_fast(pts, h, w, nms_dist)
    out = (pts[0] < border) | (pts[0] >= w - border) | (pts[1] < border) | (pts[1] >= h - border)
    pts = pts[:, ~out]
    if pts.shape[1] == 0:
        return pts, np.zeros((256, 0)), heat
    samp = torch.from_numpy(pts[:2].copy()).float()
    samp[0] = samp[0] / (float(w) / 2.0) - 1.0
    samp[1] = samp[1] / (float(h) / 2.0) - 1.0
    grid = samp.t().contiguous().view(1, 1, -1, 2)
    desc = F.grid_sample(coarse, grid, align_corners=False).numpy().reshape(256, -1)
    desc /= np.linalg.norm(desc, axis=0)[None, :]
    return pts, desc, heat


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    sd = official_state_dict()
    path = tmp_path_factory.mktemp("sp") / "superpoint_v1.pth"
    torch.save(sd, str(path))
    return str(path), sd


def _official_extractor(path: str, **conf):
    args = dict(nms="official", detection_threshold=0.015, nms_radius=4, remove_borders=4)
    args.update(conf)
    return build_extractor("superpoint", weights=path, **args)


def _by_xy(kpts: np.ndarray) -> dict[tuple[int, int], int]:
    return {(int(round(x)), int(round(y))): i for i, (x, y) in enumerate(kpts)}


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("size,thresh,dist", [((120, 160), 0.015, 4), ((240, 320), 0.015, 4),
                                               ((120, 160), 0.05, 2)])
def test_parity_with_official_frontend(weights_file, size, thresh, dist):
    path, sd = weights_file
    img = textured_image(*size, seed=3)
    pts, desc, _ = official_run(sd, img.astype(np.float32) / 255.0, conf_thresh=thresh, nms_dist=dist)
    assert pts.shape[1] > 50  # the comparison is not vacuous
    feats = _official_extractor(path, detection_threshold=thresh, nms_radius=dist).extract(img)
    kp = feats.keypoints.numpy()
    assert np.allclose(kp, np.round(kp))  # integer pixel positions, as official
    ours = _by_xy(kp)
    theirs = _by_xy(pts[:2].T)
    assert set(ours) == set(theirs)
    idx_o = np.array([ours[k] for k in theirs])
    idx_t = np.array(list(theirs.values()))
    np.testing.assert_allclose(feats.scores.numpy()[idx_o], pts[2, idx_t], atol=1e-5)
    np.testing.assert_allclose(feats.descriptors.numpy()[idx_o], desc[:, idx_t].T, atol=1e-5)
    # returned by descending score, like the official frontend
    assert np.all(np.diff(feats.scores.numpy()) <= 0)
    assert feats.descriptors.shape[1] == 256 and feats.image_size == (size[1], size[0])
    assert torch.all(feats.scales == 1) and torch.all(feats.orientations == 0)


def test_project_checkpoint_wrapper_loads(weights_file, tmp_path):
    _, sd = weights_file
    p = save_checkpoint(tmp_path / "sp_project.pth", "superpoint", sd, config={})
    img = textured_image(64, 80, seed=1)
    a = _official_extractor(str(p)).extract(img)
    b = _official_extractor(weights_file[0]).extract(img)
    assert torch.equal(a.keypoints, b.keypoints) and torch.allclose(a.descriptors, b.descriptors)


# ---------------------------------------------------------------- NMS
def _peaky_heatmap(seed: int, h: int = 120, w: int = 160) -> torch.Tensor:
    """Realistic detector output: blurred noise with a few hundred sharp peaks."""
    r = np.random.default_rng(seed)
    heat = cv2.GaussianBlur(r.random((h, w)).astype(np.float32), (0, 0), 2.0) * 0.02
    ys, xs = r.integers(0, h, 400), r.integers(0, w, 400)
    heat[ys, xs] += r.random(400).astype(np.float32) * 0.9
    return torch.from_numpy(cv2.GaussianBlur(heat, (3, 3), 0.7))


def _official_mask(heat: torch.Tensor, thr: float, radius: int) -> np.ndarray:
    hm = heat.numpy()
    ys, xs = np.where(hm >= thr)
    kept = official_nms_fast(np.stack([xs, ys, hm[ys, xs]]).astype(float), *hm.shape, radius)
    mask = np.zeros(hm.shape, bool)
    mask[kept[1].astype(int), kept[0].astype(int)] = True
    return mask


@pytest.mark.parametrize("radius", [1, 2, 4, 5])
def test_window_max_equals_max_pool(radius):
    from local_features_ros.extractors.nms import dilate, window_max

    x = torch.randn(2, 23, 37)
    ref = F.max_pool2d(F.pad(x[:, None], (radius,) * 4, value=float("-inf")), 2 * radius + 1, 1)[:, 0]
    assert torch.equal(window_max(x, radius), ref)
    m = x > 1.5
    grown = F.max_pool2d(F.pad(m.float()[:, None], (radius,) * 4), 2 * radius + 1, 1)[:, 0] > 0
    assert torch.equal(dilate(m, radius), grown)


@pytest.mark.parametrize("backend", ["torch", "opencv"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_nms_matches_official_loop(seed, backend):
    heat = _peaky_heatmap(seed)
    for radius in (1, 4):
        expected = _official_mask(heat, 0.015, radius)
        assert expected.sum() > 20
        np.testing.assert_array_equal(greedy_nms(heat, radius, 0.015, backend=backend).numpy(), expected)
        # the sequential tail alone (0 rounds) and mixed with one vectorised round
        for rounds in (0, 1):
            got = greedy_nms(heat, radius, 0.015, max_rounds=rounds, backend=backend).numpy()
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("backend", ["torch", "opencv"])
def test_greedy_nms_long_chain_uses_exact_tail(backend):
    # A ramp: each point is suppressed by its left neighbour, so greedy keeps every 5th column —
    # 64 rounds of suppression, more than the vectorised rounds; the tail must finish exactly.
    h, w = 9, 320
    heat = torch.from_numpy((1.0 - np.arange(w) / 1000.0)[None].repeat(h, 0).astype(np.float32))
    heat = heat - torch.arange(h)[:, None].float() * 1e-5
    expected = _official_mask(heat, 0.015, 4)
    got = greedy_nms(heat, 4, 0.015, max_rounds=8, backend=backend).numpy()
    np.testing.assert_array_equal(got, expected)
    assert expected[0].nonzero()[0].tolist() == list(range(0, w, 5))


def test_fast_nms_agrees_with_official_on_realistic_heatmap(weights_file):
    path, sd = weights_file
    img = textured_image(240, 320, seed=5)
    with torch.no_grad():
        semi, _ = official_network(sd, img.astype(np.float32) / 255.0)
    heat = torch.from_numpy(official_heatmap(semi).astype(np.float32))
    for h in (heat, _peaky_heatmap(7, 240, 320)):
        official = _official_mask(h, 0.015, 4)
        fast = maxpool_nms(h, 4, 0.015).numpy()
        # CPU (numpy + OpenCV dilate) and torch (GPU-style) implementations agree exactly
        np.testing.assert_array_equal(maxpool_nms(h, 4, 0.015, backend="torch").numpy(), fast)
        for r in (0, 1, 3):
            np.testing.assert_array_equal(maxpool_nms(h, 4, 0.015, rounds=r, backend="torch").numpy(),
                                          maxpool_nms(h, 4, 0.015, rounds=r, backend="opencv").numpy())
        # no exact ties here, so the capped max-pool rounds can only drop greedy points ...
        assert not np.any(fast & ~official)
        # ... and on a detector-like heatmap they drop almost none
        assert fast.sum() >= 0.95 * official.sum(), (fast.sum(), official.sum())


def test_fast_nms_keeps_no_dominated_neighbour(weights_file):
    path, _ = weights_file
    img = textured_image(120, 160, seed=2)
    f = _official_extractor(path, nms="fast", remove_borders=0).extract(img)
    kp, s = f.keypoints.numpy(), f.scores.numpy()
    assert len(kp) > 50
    d = np.abs(kp[:, None] - kp[None]).max(-1)
    close = (d <= 4) & ~np.eye(len(kp), dtype=bool)
    i, j = np.nonzero(close)
    assert np.all(s[i] == s[j]), "two kept points within the NMS radius with different scores"


def test_fast_nms_ties_and_official_tie_break():
    heat = torch.zeros(20, 20)
    heat[10, 10] = heat[10, 12] = 0.5  # equal scores inside one window
    for backend in ("torch", "opencv"):
        assert maxpool_nms(heat, 4, 0.015, backend=backend).sum() == 2  # documented: ties all kept
        g = greedy_nms(heat, 4, 0.015, backend=backend)
        assert g.sum() == 1 and bool(g[10, 10])  # stable order: row-major first
    batch = torch.stack([heat, heat.t()])
    assert torch.equal(maxpool_nms(batch, 4, 0.015)[1], maxpool_nms(heat.t().contiguous(), 4, 0.015))


# ---------------------------------------------------------------- top-k, resize
def test_max_keypoints_keeps_the_best(weights_file):
    path, _ = weights_file
    img = textured_image(120, 160, seed=4)
    full = _official_extractor(path).extract(img)
    k = 40
    top = _official_extractor(path, max_keypoints=k).extract(img)
    assert len(full) > k and len(top) == k
    np.testing.assert_allclose(np.sort(top.scores.numpy())[::-1], np.sort(full.scores.numpy())[::-1][:k])
    full_set = _by_xy(full.keypoints.numpy())
    for (x, y), i in _by_xy(top.keypoints.numpy()).items():
        j = full_set[(x, y)]
        assert torch.allclose(top.descriptors[i], full.descriptors[j])
    # runtime change goes through update_conf
    e = _official_extractor(path)
    e.update_conf(max_keypoints=10)
    assert len(e.extract(img)) == 10


def test_resize_keeps_original_pixel_coordinates(weights_file):
    path, _ = weights_file
    img = textured_image(120, 160, seed=6)
    big = cv2.resize(img, (320, 240), interpolation=cv2.INTER_NEAREST)
    small = _official_extractor(path).extract(img)
    # INTER_AREA by 2 of a nearest-neighbour x2 image gives back the same network input exactly.
    resized = _official_extractor(path, resize_max_edge=160).extract(big)
    assert resized.image_size == (320, 240) and len(resized) == len(small) > 20
    expected = (small.keypoints + 0.5) * 2.0 - 0.5
    assert torch.allclose(resized.keypoints, expected, atol=1e-4)
    assert torch.allclose(resized.scales, torch.full_like(resized.scales, 2.0))
    assert torch.allclose(resized.descriptors, small.descriptors, atol=1e-5)


# ---------------------------------------------------------------- checkpoints
class _Payload:
    """Pickled object whose unpickling would create a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("case", ["missing", "shape", "extra"])
def test_wrong_checkpoint_names_the_key(weights_file, tmp_path, case):
    _, sd = weights_file
    bad = dict(sd)
    if case == "missing":
        del bad["convDb.bias"]
        key = "convDb.bias"
    elif case == "shape":
        bad["convPb.weight"] = torch.zeros(64, 256, 1, 1)
        key = "convPb.weight"
    else:
        bad["conv5a.weight"] = torch.zeros(3)
        key = "conv5a.weight"
    p = tmp_path / "bad.pth"
    torch.save(bad, str(p))
    with pytest.raises(WeightsError, match=key.replace(".", r"\.")):
        build_extractor("superpoint", weights=str(p))


def test_not_a_state_dict_is_rejected(tmp_path):
    p = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), str(p))
    with pytest.raises(WeightsError, match="expected a dict"):
        build_extractor("superpoint", weights=str(p))
    q = tmp_path / "garbage.pth"
    q.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="cannot read"):
        build_extractor("superpoint", weights=str(q))
    with pytest.raises(FileNotFoundError):
        build_extractor("superpoint", weights=str(tmp_path / "absent.pth"))


def test_pickled_object_is_not_executed(weights_file, tmp_path):
    _, sd = weights_file
    marker = tmp_path / "pwned"
    bad = dict(sd)
    bad["conv1a.weight"] = _Payload(str(marker))
    p = tmp_path / "evil.pth"
    torch.save(bad, str(p))
    with pytest.raises(WeightsError):
        build_extractor("superpoint", weights=str(p))
    assert not marker.exists()


# ---------------------------------------------------------------- precision
def test_bf16_matches_fp32_on_cpu(weights_file):
    """bf16 autocast vs fp32. With the trained-like random weights above the heatmap has
    hundreds of competing peaks, so threshold/NMS decisions are actually exercised (default
    init would give a flat 1/65 map where the check means nothing)."""
    path, _ = weights_file
    img = textured_image(120, 160, seed=8)
    f32 = _official_extractor(path, nms="fast").extract(img)
    e16 = build_extractor("superpoint", weights=path, precision="bf16")
    assert e16.autocast_dtype == torch.bfloat16
    f16 = e16.extract(img)
    assert f16.descriptors.dtype == torch.float32 and len(f32) > 100
    d = torch.cdist(f32.keypoints, f16.keypoints)
    mind, idx = d.min(1)
    ok = mind <= 1.0
    assert ok.float().mean() >= 0.95
    cos = (f32.descriptors[ok] * f16.descriptors[idx[ok]]).sum(1)
    assert cos.min() >= 0.99
    # and the reduced precision really ran (outputs differ a little from fp32)
    diff = f32.scores[ok] - f16.scores[idx[ok]]
    assert diff.abs().max() > 0


def test_no_keypoints_gives_empty_features(weights_file):
    path, _ = weights_file
    for conf in ({"detection_threshold": 1.0}, {"remove_borders": 40}):
        f = _official_extractor(path, **conf).extract(textured_image(64, 80, seed=0))
        assert len(f) == 0 and f.descriptors.shape == (0, 256) and f.keypoints.shape == (0, 2)
        assert f.image_size == (80, 64)


def test_config_validation():
    from local_features_ros.extractors.base import ConfigError

    with pytest.raises(ConfigError, match="nms"):
        build_extractor("superpoint", weights="random", nms="greedy")
    with pytest.raises(ConfigError, match="descriptor_sampling"):
        build_extractor("superpoint", weights="random", descriptor_sampling="bicubic")
    e = build_extractor("superpoint", weights="random")
    assert e.conf["detection_threshold"] == 0.015 and e.conf["nms"] == "exact"
    assert e.conf["max_keypoints"] == -1 and e.conf["remove_borders"] == 4


def test_pixel_center_sampling_hits_cell_centres(weights_file):
    # With "pixel_center", a keypoint at a cell-centre pixel (8i + 3.5) samples exactly that cell.
    path, _ = weights_file
    e = _official_extractor(path, descriptor_sampling="pixel_center")
    desc = F.normalize(torch.randn(1, 256, 4, 5), dim=1)
    kp = torch.tensor([[8 * 2 + 3.5, 8 * 1 + 3.5], [3.5, 3.5]])
    out = e.sample_descriptors(kp, desc, (40, 32))
    assert torch.allclose(out[0], desc[0, :, 1, 2], atol=1e-6)
    assert torch.allclose(out[1], desc[0, :, 0, 0], atol=1e-6)


# ------------------------------------------------------------------ sub-pixel refinement (opt-in)
def _ring_heatmap(cx: float, cy: float, size: tuple[int, int] = (48, 64)) -> torch.Tensor:
    """A ring of probability (radius 2 px) around a sub-pixel corner, as a briefly trained
    detector draws it, with its strongest spot off-centre: the NMS winner lies on the ring."""
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    r = torch.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
    heat = 0.5 * torch.exp(-((r - 2.0) ** 2) / 0.5)
    heat = heat * (1.0 + 0.05 * (xs - cx))  # slight asymmetry: one peak on the ring wins
    return heat


@pytest.mark.parametrize("center", [(20.3, 15.6), (31.8, 22.2)])
def test_subpixel_refinement_finds_the_ring_centre(center):
    from local_features_ros.extractors.superpoint import SuperPoint

    heat = _ring_heatmap(*center)
    sp = build_extractor("superpoint", nms_radius=4, detection_threshold=0.1)
    kpts, _ = sp.detect(heat)
    assert len(kpts) >= 1
    top = kpts[:1]
    raw_err = float(torch.linalg.norm(top[0] - torch.tensor(center)))
    refined = SuperPoint.refine(heat, top, 4)
    err = float(torch.linalg.norm(refined[0] - torch.tensor(center)))
    assert raw_err > 1.5  # the integer peak is on the ring
    assert err < 0.35, (raw_err, err)
    assert torch.equal(SuperPoint.refine(heat, top, 0), top)  # radius 0 = official peaks


def test_subpixel_refinement_in_extract_and_border_safe(weights_file):
    img = textured_image(96, 128, seed=3)
    base = build_extractor("superpoint", weights=weights_file[0]).extract(img)
    ref = build_extractor("superpoint", weights=weights_file[0], subpixel_radius=3).extract(img)
    k0, k1 = base.keypoints, ref.keypoints
    assert torch.equal(k0, k0.round())  # default keeps integer peaks (official behaviour)
    assert k0.shape == k1.shape and torch.equal(base.scores, ref.scores)
    shift = (k1 - k0).abs()
    assert float(shift.max()) <= 3.0 and float(shift.max()) > 0.0
    # a peak in the image corner: the window is zero-padded, the result stays finite and close
    heat = torch.zeros(16, 16)
    heat[0, 0], heat[0, 1] = 1.0, 0.5
    out = build_extractor("superpoint").refine(heat, torch.tensor([[0.0, 0.0]]), 3)
    assert torch.isfinite(out).all() and float(out[0, 0]) == pytest.approx(1 / 3, abs=1e-5)


@pytest.mark.parametrize("bad", [-2, 9, 1.5])
def test_subpixel_radius_validation(bad):
    from local_features_ros.extractors.base import ConfigError

    with pytest.raises(ConfigError, match="subpixel_radius"):
        build_extractor("superpoint", subpixel_radius=bad)


def test_subpixel_radius_auto_follows_the_weights(weights_file, tmp_path):
    """-1 (default) = the checkpoint's recommendation: official weights -> 0 (official output),
    a project checkpoint recording ``subpixel_radius`` -> that radius; explicit values win."""
    _, sd = weights_file
    proj = tmp_path / "proj.pth"
    save_checkpoint(proj, "superpoint", sd, {}, extractor_conf={"subpixel_radius": 3})
    img = textured_image(96, 128, seed=5)
    official = build_extractor("superpoint", weights=weights_file[0], subpixel_radius=-1)
    recorded = build_extractor("superpoint", weights=str(proj), subpixel_radius=-1)
    forced_off = build_extractor("superpoint", weights=str(proj), subpixel_radius=0)
    assert official.subpixel_radius == 0 and recorded.subpixel_radius == 3
    assert forced_off.subpixel_radius == 0
    k_off = official.extract(img).keypoints
    assert torch.equal(k_off, k_off.round())
    assert torch.equal(forced_off.extract(img).keypoints, k_off)
    k_rec = recorded.extract(img).keypoints
    assert not torch.equal(k_rec, k_rec.round())
    torch.testing.assert_close(k_rec, build_extractor(
        "superpoint", weights=weights_file[0], subpixel_radius=3).extract(img).keypoints)
