"""LF-Net training: loss pieces, gradient routing of the two objectives, a tiny run."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from local_features_ros.extractors.lfnet import LFNet
from local_features_ros.registry import build_extractor
from local_features_ros_training.config import load_config
from local_features_ros_training.engine import Trainer, seed_everything
from local_features_ros_training.lfnet.losses import (LOSS_DEFAULTS, dense_warp, lfnet_loss_terms, num_mine,
                                                      score_target)
from local_features_ros_training.lfnet.task import LFNetTask, load_lfnet_export
from local_features_ros_training.sfm.pairs import GeometricPairs
from local_features_ros_training.sfm.render import render_scene


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_hard_mining_schedule():
    # N = max(floor(64 * 0.9 ** (step / 1000)), 5)
    assert num_mine(0, LOSS_DEFAULTS) == 64
    assert num_mine(1000, LOSS_DEFAULTS) == 57  # 57.6
    assert num_mine(10_000, LOSS_DEFAULTS) == 22  # 22.3
    assert num_mine(30_000, LOSS_DEFAULTS) == 5  # 2.7 -> floor 5


def _former_gaussian_kernel(ksize: int, sigma: float) -> torch.Tensor:
    """The PSF as it was written by hand before kornia's kernel replaced it (centred on tap
    ``ksize // 2``, which is the middle for the odd sizes the blur can use)."""
    r = torch.arange(ksize, dtype=torch.float32) - ksize // 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma * sigma))
    return g / g.sum()


def test_score_target_is_blurred_topk_peaks():
    s = torch.zeros(1, 1, 32, 32)
    s[0, 0, 10, 12] = 0.9
    s[0, 0, 10, 13] = 0.5  # suppressed by NMS (neighbour of a stronger peak)
    s[0, 0, 25, 5] = 0.3
    vis = torch.ones_like(s)
    lc = {**LOSS_DEFAULTS, "top_k": 1}
    t = score_target(s, vis, lc)
    ker = _former_gaussian_kernel(15, 0.5)
    assert float(t[0, 0, 10, 12]) == pytest.approx(float(ker[7, 7]))
    assert float(t[0, 0, 10, 13]) == pytest.approx(float(ker[7, 8]))  # blur of the peak only
    assert float(t[0, 0, 25, 5]) == 0.0  # not in the top-1
    t2 = score_target(s, vis, {**LOSS_DEFAULTS, "top_k": 5})
    assert float(t2[0, 0, 25, 5]) == pytest.approx(float(ker[7, 7]))
    assert float(t2[0, 0, 10, 14]) == pytest.approx(float(ker[7, 9]))  # 10,13 stays suppressed


def test_score_target_blur_equals_the_former_kernel_and_needs_an_odd_size():
    """A single peak blurs into the whole kernel: kornia's equals the former formula at the odd
    sizes used (an even size padded ``k // 2`` grew the map by a pixel and broke the loss)."""
    s = torch.zeros(1, 1, 41, 41)
    s[0, 0, 20, 20] = 1.0
    vis = torch.ones_like(s)
    for ksize, sigma in ((15, 0.5), (15, 2.0), (7, 1.0), (3, 0.8)):
        t = score_target(s, vis, {**LOSS_DEFAULTS, "top_k": 1, "hm_ksize": ksize, "hm_sigma": sigma})
        r = ksize // 2
        ker = _former_gaussian_kernel(ksize, sigma)
        torch.testing.assert_close(t[0, 0, 20 - r:21 + r, 20 - r:21 + r], ker.clamp(max=1.0), rtol=0, atol=1e-7)
        assert float(t.sum()) == pytest.approx(float(ker.sum()), abs=1e-5)  # nothing outside the window
    with pytest.raises(ValueError, match="hm_ksize"):
        score_target(s, vis, {**LOSS_DEFAULTS, "hm_ksize": 14})


def _pairs(tmp_path, aug=None):
    r = render_scene(tmp_path / "s", n_frames=4, width=128, height=96, write_bag=False,
                     trajectory_kw={"step_deg": 8})
    conf = {"pairs_per_scene": 4, "crop_size": [80, 112], "min_overlap": 0.3,
            "euclidean_aug": aug, "relative_depth_tol": True}
    ds = GeometricPairs([r.index], conf)
    return torch.utils.data.default_collate([ds[0], ds[1]])


def test_in_plane_rotation_of_augmented_view(tmp_path):
    batch = _pairs(tmp_path, {"max_degree": 180.0, "max_scale": 1.3})
    wp = dense_warp(batch, 0, 1, 0.05, True)
    for b in range(2):
        R = batch["pose1"][b][:3, :3] @ batch["pose0"][b][:3, :3].T
        # the roll added by the augmentation shows up in the in-plane angle (orbit roll is small)
        d = (float(wp["in_plane"][b]) - float(batch["aug_angle"][b]) + math.pi) % (2 * math.pi) - math.pi
        assert abs(d) < math.radians(12)
        assert float(wp["in_plane"][b]) == pytest.approx(math.atan2(float(R[1, 0]), float(R[0, 0])), abs=1e-5)
    assert float(wp["visible"].mean()) > 0.2


def test_objectives_reach_disjoint_parameter_sets(tmp_path, one_thread):
    batch = _pairs(tmp_path)
    torch.manual_seed(0)
    model = LFNet(input_inst_norm=True)
    terms, metrics = lfnet_loss_terms(model, batch, 0, {"top_k": 16, "hard_geom_thresh": 8.0})
    assert metrics["visible_kpts"] > 0 and all(math.isfinite(v) for v in metrics.values())
    det_params = list(model.det.parameters())
    desc_params = list(model.desc.parameters())
    g_det = torch.autograd.grad(terms["det"], det_params + desc_params, allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0 for g in g_det[len(det_params):])
    assert any(g is not None and float(g.abs().max()) > 0 for g in g_det[:len(det_params)])
    g_desc = torch.autograd.grad(terms["desc"], det_params + desc_params, allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0 for g in g_desc[:len(det_params)])
    assert any(g is not None and float(g.abs().max()) > 0 for g in g_desc[len(det_params):])


def test_tiny_training_improves_heldout_match_score(tmp_path, one_thread):
    conf = load_config("training/configs/lfnet_tiny.yaml")
    conf["data"]["scenes"][0]["render"]["out_dir"] = str(tmp_path / "train_scene")
    conf["data"]["val_scenes"][0]["render"]["out_dir"] = str(tmp_path / "val_scene")
    task = LFNetTask(conf)
    seed_everything(int(conf["train"]["seed"]))
    initial = task.build_model()
    result = Trainer(task, conf, tmp_path / "run").fit()
    assert result["finished"]
    trained = load_lfnet_export(result["export"])
    initial.eval()
    _, val = task.build_datasets()
    loader = torch.utils.data.DataLoader(val, batch_size=4)
    before = [task.validate(initial, b) for b in loader]
    after = [task.validate(trained, b) for b in loader]
    mean = lambda rows, k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    assert mean(after, "match_score") > mean(before, "match_score") + 0.02
    assert mean(after, "loss") < mean(before, "loss")
    with open(tmp_path / "run" / "metrics.csv") as f:
        losses = [float(r["value"]) for r in csv.DictReader(f) if r["name"] == "loss"]
    assert np.mean(losses[-4:]) < np.mean(losses[:3])
    # the export also loads through the registry (runtime keys given explicitly)
    ext = build_extractor("lfnet", weights=result["export"], input_inst_norm=True, max_keypoints=50)
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(ext.state_dict()[k], v)
    img = (val[0]["image0"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    feats = ext.extract(img)
    assert feats.descriptors.shape[1] == 256 and 0 < len(feats.keypoints) <= 50
