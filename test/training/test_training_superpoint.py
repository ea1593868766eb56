"""SuperPoint training: loss definitions against hand computations, each stage's loss goes down on
tiny data, and Homographic Adaptation puts its points on the true corners of a synthetic image."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from local_features_ros.weights import load_checkpoint
from local_features_ros_training.config import load_config
from local_features_ros_training.data.homographies import warp_points
from local_features_ros_training.engine import Trainer, read_metrics
from local_features_ros_training.superpoint.homographic_adaptation import box_nms, homographic_adaptation, run_export
from local_features_ros_training.superpoint.joint import JointTask, WarpedPairs
from local_features_ros_training.superpoint.losses import correspondence_matrix, descriptor_loss, detector_labels, \
    detector_loss
from local_features_ros_training.superpoint.magicpoint import MagicPointTask
from local_features_ros_training.superpoint.model import SuperPointModel

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


# ----------------------------------------------------------------------------- losses
def test_detector_labels_by_hand():
    k = torch.zeros(1, 16, 16)
    k[0, 3, 5] = 1  # cell (0, 0): channel 8 * 3 + 5 = 29
    k[0, 8 + 7, 8 + 0] = 1  # cell (1, 1): channel 56
    k[0, 2, 8 + 1] = 1  # cell (0, 1): two keypoints -> one of 17 or 8*6+6 = 54
    k[0, 6, 8 + 6] = 1
    seen = set()
    for s in range(20):
        lab = detector_labels(k, torch.Generator().manual_seed(s))[0]
        assert lab[0, 0] == 29 and lab[1, 1] == 56 and lab[1, 0] == 64
        seen.add(int(lab[0, 1]))
    assert seen == {17, 54}


def test_detector_loss_by_hand():
    k = torch.zeros(1, 16, 16)
    k[0, 3, 5] = 1
    logits = torch.zeros(1, 65, 2, 2)
    # uniform logits: CE = log 65 in every cell
    assert detector_loss(logits, k).item() == pytest.approx(math.log(65), rel=1e-6)
    # a confident correct cell (0,0) costs ~0; the other 3 cells stay log 65
    logits[0, 29, 0, 0] = 50.0
    assert detector_loss(logits, k).item() == pytest.approx(3 * math.log(65) / 4, rel=1e-5)
    # one invalid pixel removes its whole cell from the average
    mask = torch.ones(1, 16, 16)
    mask[0, 15, 15] = 0  # cell (1, 1)
    assert detector_loss(logits, k, mask).item() == pytest.approx(2 * math.log(65) / 3, rel=1e-5)


def test_correspondences_follow_the_homography():
    hc, wc = 3, 4
    shift = torch.tensor([[[1.0, 0, 8.0], [0, 1, 0], [0, 0, 1]]])  # +8 px in x = one cell
    s = correspondence_matrix(shift, hc, wc, 7.5)[0]
    for i in range(hc * wc):
        r, c = divmod(i, wc)
        expected = [r * wc + c + 1] if c + 1 < wc else []
        assert torch.nonzero(s[i]).flatten().tolist() == expected
    s_id = correspondence_matrix(torch.eye(3)[None], hc, wc, 7.5)[0]
    assert torch.equal(s_id, torch.eye(hc * wc))


def test_descriptor_loss_paper_form_matches_a_pairwise_loop():
    g = torch.Generator().manual_seed(0)
    b, d, hc, wc = 1, 8, 2, 3
    a = torch.randn(b, d, hc, wc, generator=g)
    w = torch.randn(b, d, hc, wc, generator=g)
    H = torch.tensor([[[1.0, 0, 8.0], [0, 1, 0], [0, 0, 1]]])
    conf = {"lambda_d": 250.0, "positive_margin": 1.0, "negative_margin": 0.2,
            "positive_radius": 8.0, "dot_product_normalization": False}
    got = descriptor_loss(a, w, H, None, conf).item()
    an = a / a.norm(dim=1, keepdim=True)
    wn = w / w.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(hc):
        for j in range(wc):
            p = np.array([8 * j + 4 + 8.0, 8 * i + 4])  # warped centre of source cell (i, j)
            for i2 in range(hc):
                for j2 in range(wc):
                    q = np.array([8 * j2 + 4, 8 * i2 + 4])
                    s = float(np.linalg.norm(p - q) <= 8.0)
                    dot = float((an[0, :, i, j] * wn[0, :, i2, j2]).sum())
                    total += 250.0 * s * max(0.0, 1.0 - dot) + (1 - s) * max(0.0, dot - 0.2)
    assert got == pytest.approx(total / (hc * wc) ** 2, rel=1e-5)


def test_descriptor_loss_zero_for_perfect_descriptors():
    hc, wc = 3, 3
    eye = torch.eye(hc * wc).reshape(1, hc * wc, hc, wc)
    for norm in (False, True):
        conf = {"positive_radius": 7.5, "dot_product_normalization": norm}
        assert descriptor_loss(eye, eye, torch.eye(3)[None], None, conf).item() == pytest.approx(0.0)
        # shuffled descriptors are penalised
        perm = eye[:, torch.randperm(hc * wc, generator=torch.Generator().manual_seed(1))]
        assert descriptor_loss(eye, perm, torch.eye(3)[None], None, conf).item() > 0.0


def test_model_wrapper_matches_runtime_network():
    torch.manual_seed(0)
    m = SuperPointModel(detector_only=True)
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        semi, _ = m.net(x)
        np.testing.assert_allclose(m(x)["logits"].numpy(), semi.numpy(), rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in m.net.convDa.parameters())
    assert all(p.requires_grad for p in m.net.convPb.parameters())
    full = SuperPointModel(detector_only=False)
    assert all(p.requires_grad for p in full.parameters())


# ----------------------------------------------------------------------------- stages on tiny data
def _first_last(path: Path, n: int = 5) -> tuple[float, float]:
    loss = [r["value"] for r in read_metrics(path) if r["split"] == "train" and r["name"] == "loss"]
    return float(np.mean(loss[:n])), float(np.mean(loss[-n:]))


def test_magicpoint_loss_decreases(tmp_path):
    conf = load_config(CONFIGS / "superpoint_magicpoint_tiny.yaml", ["train.max_steps=30"])
    res = Trainer(MagicPointTask(conf), conf, tmp_path).fit()
    first, last = _first_last(tmp_path / "metrics.csv")
    assert res["finished"] and last < 0.6 * first, (first, last)


def _shape_folder(root: Path, n: int, size: int = 64) -> None:
    from local_features_ros_training.data.synthetic_shapes import generate_shape

    root.mkdir(parents=True)
    gen = {"image_size": [256, 256], "resize": [size, size], "blur_size": 5,
           "background": {"nb_blobs": 100, "min_rad_ratio": 0.02, "max_rad_ratio": 0.031,
                          "min_kernel_size": 40, "max_kernel_size": 120}}
    for i in range(n):
        prim = ("draw_checkerboard", "draw_polygon", "draw_cube", "draw_stripes")[i % 4]
        s = generate_shape(prim, np.random.default_rng(i), gen)
        cv2.imwrite(str(root / f"{i:03d}.png"), s.image)
        np.savez(root / f"{i:03d}_gt.npz", points=s.points[:, ::-1])  # (row, col)


def test_joint_loss_decreases(tmp_path):
    img_dir = tmp_path / "images"
    _shape_folder(img_dir, 8)
    lab = tmp_path / "labels"
    lab.mkdir()
    for f in img_dir.glob("*_gt.npz"):
        f.rename(lab / f.name.replace("_gt", ""))
    conf = load_config(CONFIGS / "superpoint_joint_tiny.yaml", [
        f"data.image_dirs=[{img_dir}]", f"data.labels_dir={lab}", "train.max_steps=40",
        "data.augmentation.photometric.enable=false", "model.extractor_conf={subpixel_radius: 2}"])
    ds = WarpedPairs(conf["data"])
    item = ds[0]
    # the warped keypoint map is the source one pushed through the homography
    ys, xs = np.nonzero(item["keypoint_map"].numpy())
    wx = warp_points(np.stack([xs, ys], 1).astype(np.float64), item["homography"].numpy())
    wmap = item["warped_keypoint_map"].numpy()
    checked = 0
    for x, y in np.round(wx).astype(int):
        if 1 <= x < 63 and 1 <= y < 63:  # (map pixels are rounded before and after the warp)
            assert wmap[y - 1:y + 2, x - 1:x + 2].max() == 1
            checked += 1
    assert checked >= 3
    res = Trainer(JointTask(conf), conf, tmp_path / "run").fit()
    first, last = _first_last(tmp_path / "run" / "metrics.csv")
    assert res["finished"] and last < 0.9 * first, (first, last)
    desc = [r["value"] for r in read_metrics(tmp_path / "run" / "metrics.csv")
            if r["name"] == "descriptor"]
    assert np.mean(desc[-5:]) < np.mean(desc[:5])
    ck = load_checkpoint(res["export"])
    assert ck["method"] == "superpoint" and "convDb.weight" in ck["state_dict"]
    # the recommended post-processing travels with the weights into the runtime
    assert ck["extractor_conf"] == {"subpixel_radius": 2}
    from local_features_ros.registry import build_extractor
    assert build_extractor("superpoint", weights=res["export"], subpixel_radius=-1
                           ).subpixel_radius == 2


# ----------------------------------------------------------------------------- Homographic Adaptation
def test_box_nms_by_hand():
    p = np.zeros((20, 20), np.float32)
    p[5, 5], p[5, 6] = 0.9, 0.8  # overlapping boxes (IoU 0.6) -> the weaker goes
    p[5, 9] = 0.7  # 4 px away from (5,5): boxes touch, IoU 0 -> kept
    p[15, 15] = 0.01  # below min_prob
    out = box_nms(p, size=4, iou=0.1, min_prob=0.015)
    assert set(zip(*np.nonzero(out))) == {(5, 5), (5, 9)}
    assert out[5, 5] == pytest.approx(0.9)


def _harris_prob(x: torch.Tensor) -> torch.Tensor:
    """A stand-in detector: normalised Harris response (peaks on corners)."""
    out = []
    for im in x[:, 0].numpy():
        r = cv2.cornerHarris(im.astype(np.float32), 5, 3, 0.04)
        r = np.clip(r, 0, None)
        out.append(r / max(r.max(), 1e-12))
    return torch.from_numpy(np.stack(out))


def test_homographic_adaptation_points_on_true_corners():
    img = np.full((96, 128), 0.2, np.float32)
    corners = np.array([[30, 25], [90, 25], [90, 70], [30, 70]], np.float32)  # x, y
    cv2.fillPoly(img, [corners.astype(np.int32)], 0.8)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    conf = {"num": 12, "homographies": {"max_angle": 0.5, "patch_ratio": 0.85}}
    prob = homographic_adaptation(_harris_prob, img, np.random.default_rng(0), conf, batch_size=6)
    assert prob.shape == img.shape
    nms = box_nms(prob, 4, 0.1, 0.015)
    rc = np.argwhere(nms >= 0.2)
    pts = rc[:, ::-1].astype(np.float32)
    assert len(pts) >= 4
    d = np.linalg.norm(pts[:, None] - corners[None], axis=2)
    assert (d.min(axis=0) <= 2.5).all(), d.min(axis=0)  # every true corner found
    assert (d.min(axis=1) <= 3.0).mean() >= 0.8  # and nearly nothing else
    # 'max' aggregation peaks at the same corners
    pmax = homographic_adaptation(_harris_prob, img, np.random.default_rng(0),
                                  {**conf, "aggregation": "max"}, batch_size=6)
    for x, y in corners.astype(int):
        assert pmax[y - 3:y + 4, x - 3:x + 4].max() > 0.5


def test_export_stage_writes_labels(tmp_path):
    from local_features_ros.weights import save_checkpoint

    img_dir = tmp_path / "imgs"
    _shape_folder(img_dir, 3)
    torch.manual_seed(0)
    m = SuperPointModel()
    w = tmp_path / "mp.pth"
    save_checkpoint(w, "superpoint", m.runtime_state_dict(), {})
    conf = load_config(CONFIGS / "superpoint_homographic_adaptation_tiny.yaml", [
        f"model.weights={w}", f"data.image_dirs=[{img_dir}]", "homography_adaptation.num=3",
        "detection.min_prob=0.001", "detection.detection_threshold=0.001", "detection.top_k=5"])
    res = run_export(conf, tmp_path / "ha")
    assert res["exported"] == 3
    labels = sorted((tmp_path / "ha" / "labels").glob("*.npz"))
    assert len(labels) == 3
    pts = np.load(labels[0])["points"]
    assert pts.shape == (5, 2)  # (row, col), top-k respected
    assert (pts[:, 0] < 64).all() and (pts[:, 1] < 64).all()
    img = cv2.imread(str(tmp_path / "ha" / "images" / (labels[0].stem + ".png")), 0)
    assert img.shape == (64, 64)
    again = run_export(conf, tmp_path / "ha", resume=True)
    assert again["skipped"] == 3 and again["exported"] == 0


def test_scaled_tiles_cover_the_image_at_each_scale():
    from local_features_ros_training.data.image_folder import scaled_tiles

    img = (np.arange(100 * 300) % 251).astype(np.uint8).reshape(100, 300)
    tiles = dict(scaled_tiles(img, (64, 80), [1.0, 0.5]))
    native = [k for k in tiles if k.startswith("s100_")]
    assert len(native) == 2 * 4  # ceil(100/64) rows x ceil(300/80) cols, evenly spaced
    assert all(t.shape == (64, 80) for t in tiles.values())
    # scale 1.0 tiles are exact pixel copies: the first at the top-left, the last bottom-right
    assert np.array_equal(tiles["s100_t0"], img[:64, :80])
    assert np.array_equal(tiles["s100_t7"], img[-64:, -80:])
    # scale 0.5 gives 50x150 < 64 rows: falls back to one ratio-preserving centre crop
    assert [k for k in tiles if k.startswith("s050_")] == ["s050_t0"]
    with pytest.raises(ValueError, match="> 0"):
        scaled_tiles(img, (64, 80), [0.0])


def test_export_tiles_and_frame_step(tmp_path):
    from local_features_ros.weights import save_checkpoint

    a, b = tmp_path / "a", tmp_path / "b"
    _shape_folder(a, 4)
    _shape_folder(b, 2)
    torch.manual_seed(0)
    w = tmp_path / "mp.pth"
    save_checkpoint(w, "superpoint", SuperPointModel().runtime_state_dict(), {})
    conf = load_config(CONFIGS / "superpoint_homographic_adaptation_tiny.yaml", [
        f"model.weights={w}", f"data.image_dirs=[{a},{b}]", "homography_adaptation.num=2",
        "data.resize=[32,32]", "data.tile_scales=[1.0]", "data.frame_step=[2,1]",
        "detection.min_prob=0.001", "detection.detection_threshold=0.001"])
    res = run_export(conf, tmp_path / "ha")
    # folder a: images 0 and 2 of 4; folder b: both; each 64x64 image -> 2x2 tiles of 32x32
    assert res["images"] == (2 + 2) * 4 and res["exported"] == 16
    names = sorted(p.stem for p in (tmp_path / "ha" / "images").glob("*.png"))
    assert len(names) == 16 and all("__s100_t" in n for n in names)
    assert all(cv2.imread(str(tmp_path / "ha" / "images" / f"{n}.png"), 0).shape == (32, 32)
               for n in names)
    bad = load_config(CONFIGS / "superpoint_homographic_adaptation_tiny.yaml", [
        f"model.weights={w}", f"data.image_dirs=[{a},{b}]", "data.frame_step=[2]"])
    with pytest.raises(ValueError, match="frame_step"):
        run_export(bad, tmp_path / "ha2")


def test_retrain_stage_on_labels_decreases(tmp_path):
    from local_features_ros_training.commands.train import run_stage

    img_dir = tmp_path / "images"
    _shape_folder(img_dir, 8)
    lab = tmp_path / "labels"
    lab.mkdir()
    for f in img_dir.glob("*_gt.npz"):
        f.rename(lab / f.name.replace("_gt", ""))
    conf = load_config(CONFIGS / "superpoint_magicpoint_retrain.yaml", [
        f"data.image_dirs=[{img_dir}]", f"data.labels_dir={lab}", "data.resize=[64,64]",
        "train.max_steps=25", "train.batch_size=4", "train.log_every=1", "train.device=cpu",
        "data.augmentation.photometric.params.additive_shade.kernel_size_range=[5,15]"])
    res = run_stage("superpoint", "retrain", conf, tmp_path / "run")
    first, last = _first_last(tmp_path / "run" / "metrics.csv")
    assert res["finished"] and last < 0.6 * first, (first, last)


def test_shipped_configs_carry_the_reference_constants():
    mp = load_config(CONFIGS / "superpoint_magicpoint_shapes.yaml")
    assert mp["train"]["batch_size"] == 64 and mp["train"]["lr"] == pytest.approx(1e-3)
    assert mp["train"]["max_steps"] == 50000
    g = mp["data"]["generation"]
    assert g["resize"] == [120, 160] and g["blur_size"] == 21 and g["image_size"] == [960, 1280]
    assert g["truncate"] == {"draw_ellipses": 0.3, "draw_stripes": 0.2, "gaussian_noise": 0.1}
    h = mp["data"]["augmentation"]["homographic"]
    assert h["valid_border_margin"] == 2 and h["params"]["patch_ratio"] == 0.8
    assert h["params"]["translation_overflow"] == 0.05
    ha = load_config(CONFIGS / "superpoint_homographic_adaptation.yaml")
    assert ha["homography_adaptation"]["num"] == 100
    assert ha["homography_adaptation"]["homographies"]["patch_ratio"] == 0.85
    assert ha["homography_adaptation"]["homographies"]["max_angle"] == pytest.approx(math.pi)
    assert ha["detection"] == {"nms": 4, "iou": 0.1, "min_prob": 0.015,
                               "detection_threshold": 0.015, "top_k": 0}
    j = load_config(CONFIGS / "superpoint_joint.yaml")
    assert j["loss"]["lambda_loss"] == 10000 and j["loss"]["descriptor"]["lambda_d"] == 0.05
    assert j["loss"]["descriptor"]["dot_product_normalization"] is True
    assert j["train"]["batch_size"] == 2 and j["train"]["lr"] == pytest.approx(1e-4)
    p = load_config(CONFIGS / "superpoint_joint_paper.yaml")
    d = p["loss"]["descriptor"]
    assert (d["lambda_d"], d["positive_margin"], d["negative_margin"]) == (250, 1, 0.2)
    assert p["loss"]["lambda_loss"] == pytest.approx(1e-4) and p["train"]["batch_size"] == 32
