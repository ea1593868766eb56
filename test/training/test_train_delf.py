"""DELF training: landmark/place datasets, the two training steps, PCA, runtime loading."""

from __future__ import annotations

import csv
import logging

import cv2
import numpy as np
import pytest
import torch

from local_features_ros.registry import build_extractor
from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene, look_at
from local_features_ros.weights import load_checkpoint
from local_features_ros_training.delf.datasets import LandmarkCrops, class_folder_tree, google_landmarks_csv, \
    place_labels, places_from_poses, split_per_class
from local_features_ros_training.delf.task import DelfAttentionTask, DelfFinetuneTask, run_pca
from local_features_ros_training.engine import Trainer

W, H, N = 64, 48, 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a loaded machine two threads spin-wait and run several times
    slower (these runs are tiny; a second thread buys nothing)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """Frames of one loop through the synthetic room, one folder per place (pose clusters)."""
    root = tmp_path_factory.mktemp("delf_places")
    scene = SyntheticScene(seed=0, camera=PinholeCamera.default(W, H))
    frames = list(scene.frames(N, "revisit"))
    labels = place_labels(np.stack([f.T_world_cam for f in frames]), radius=2.5, max_angle_deg=50)
    for f, lab in zip(frames, labels):
        d = root / f"place_{lab:02d}"
        d.mkdir(exist_ok=True)
        cv2.imwrite(str(d / f"f{f.index:03d}.png"), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    return root, frames, labels


def test_place_labels_hand_example():
    fwd = look_at(np.zeros(3), np.array([1.0, 0, 0]))
    back = look_at(np.zeros(3), np.array([-1.0, 0, 0]))
    T = []
    for x, base in ((0.0, fwd), (0.5, fwd), (3.0, fwd), (3.2, fwd), (0.1, back)):
        t = base.copy()
        t[0, 3] = x
        T.append(t)
    # 0 and 0.5 m apart, same heading -> one place; 3.0/3.2 -> another; facing back -> a third
    assert place_labels(np.stack(T), radius=1.0, max_angle_deg=45).tolist() == [0, 0, 1, 1, 2]
    ls = places_from_poses([f"{i}.png" for i in range(5)], np.stack(T), 1.0, 45, min_per_class=2)
    assert ls.num_classes == 2 and ls.labels.tolist() == [0, 0, 1, 1]


def test_google_landmarks_csv_and_folder_tree(tmp_path):
    img = np.full((8, 8, 3), 100, np.uint8)
    rows = [("abc123", "7"), ("abd999", "7"), ("xyz000", "12"), ("missing1", "12"), ("q", "3")]
    for i, _ in rows[:3]:
        p = tmp_path / "imgs" / i[0] / i[1] / i[2] / f"{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), img)
    cv2.imwrite(str(tmp_path / "imgs" / "q.jpg"), img)  # GLDv1 flat layout
    with open(tmp_path / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "url", "landmark_id"])
        for i, lab in rows:
            w.writerow([i, "http://never.fetched/" + i, lab])
    ls = google_landmarks_csv(tmp_path / "train.csv", tmp_path / "imgs")
    assert ls.classes == ["12", "3", "7"]  # sorted ids of landmarks that have images
    assert [p.stem for p in ls.paths] == ["abc123", "abd999", "xyz000", "q"]
    assert ls.labels.tolist() == [2, 2, 0, 1]
    assert google_landmarks_csv(tmp_path / "train.csv", tmp_path / "imgs", 2).num_classes == 1
    for name in ("b", "a"):
        (tmp_path / "tree" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "tree" / name / "1.png"), img)
    tree = class_folder_tree(tmp_path / "tree")
    assert tree.classes == ["a", "b"] and [p.parent.name for p in tree.paths] == ["a", "b"]


def test_crops_centre_square_resize_and_random_crop(tmp_path):
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 200  # the centre square (columns 20..59) is bright, the sides dark
    (tmp_path / "c").mkdir()
    cv2.imwrite(str(tmp_path / "c" / "x.png"), img)
    ls = class_folder_tree(tmp_path)
    val = LandmarkCrops(ls, resize=20, crop=16, train=False)[0]["image"]
    assert val.shape == (3, 16, 16) and float(val.min()) > 0.7  # only the bright square remains
    tr = LandmarkCrops(ls, resize=20, crop=16, train=True, seed=1)
    a = [tr[0]["image"] for _ in range(2)]
    assert torch.equal(a[0], a[1])  # same (seed, epoch, index) -> same crop
    tr, va = split_per_class(class_folder_tree(tmp_path), 0.5)
    assert len(tr) == 1 and va is None  # a one-image class stays in training


def _conf(root, tmp_path, stage_steps=8):
    return {"data": {"folder": str(root), "finetune": {"resize": 40, "crop": 40},
                     "attention": {"resize": 48, "crop": 48, "min_downscale": 0.75}},
            "model": {"delf": {"scales": [1.0], "pca_dim": 40}},
            "train": {"batch_size": 4, "max_steps": stage_steps, "lr": 1e-4, "log_every": 2,
                      "val_every": 1000, "val_batches": 0, "checkpoint_every": 1000,
                      "device": "cpu", "seed": 0},
            "pca": {"max_per_image": 1000}}


def _fixed_loss(task, model, ls_resize, ls_crop) -> float:
    ds = LandmarkCrops(task.landmarks(), ls_resize, ls_crop, train=False)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    model.train()  # batch statistics, like training (frozen parts stay in eval mode)
    with torch.no_grad():
        return float(task.loss(model, batch, -1)[0])


def test_two_steps_reduce_loss_then_pca_loads_into_runtime(places, tmp_path):
    root, frames, _ = places
    conf = _conf(root, tmp_path)
    # step 1: classification fine-tuning of the backbone
    t1 = DelfFinetuneTask(conf)
    before = _fixed_loss(t1, t1.build_model(), 40, 40)
    r1 = Trainer(t1, conf, tmp_path / "finetune").fit()
    m1 = t1.build_model()
    m1.load_state_dict(load_checkpoint(tmp_path / "finetune" / "checkpoints" / "last.pth")["model"])
    after = _fixed_loss(t1, m1, 40, 40)
    assert after < before, (before, after)
    # step 2: attention on fixed features
    c2 = {**conf, "model": {**conf["model"], "init_weights": r1["export"]},
          "train": {**conf["train"], "lr": 1e-3, "max_steps": 30}}  # only the head trains
    t2 = DelfAttentionTask(c2)
    before2 = _fixed_loss(t2, t2.build_model(), 48, 48)
    r2 = Trainer(t2, c2, tmp_path / "attention").fit()
    m2 = t2.build_model()
    last2 = tmp_path / "attention" / "checkpoints" / "last.pth"
    m2.load_state_dict(load_checkpoint(last2)["model"])
    after2 = _fixed_loss(t2, m2, 48, 48)
    logging.getLogger(__name__).info("DELF losses: finetune %.4f -> %.4f, attention %.4f -> %.4f",
                                     before, after, before2, after2)
    assert after2 < before2, (before2, after2)
    s1 = load_checkpoint(r1["export"])["state_dict"]
    s2 = load_checkpoint(r2["export"])["state_dict"]
    for k in s1:  # the backbone (incl. BatchNorm statistics) is fixed in step 2
        if k.startswith("backbone."):
            assert torch.equal(s1[k], s2[k]), k
    assert not torch.equal(s1["attention.conv2.weight"], s2["attention.conv2.weight"])
    # step 3: PCA on the trained extractor's descriptors -> final runtime checkpoint
    c3 = {**conf, "model": {**conf["model"], "init_weights": r2["export"]}}
    summ = run_pca(c3, tmp_path / "pca")
    ck = load_checkpoint(summ["export"])
    assert ck["pca_explained_variance"] == pytest.approx(summ["explained_variance"])
    delf = build_extractor("delf", weights=summ["export"], scales=[1.0])
    assert delf.uses_pca and delf.descriptor_dim == 40
    for k, v in delf.state_dict().items():
        assert torch.equal(v.cpu(), ck["state_dict"][k])
    f = delf.extract(frames[0].image)
    assert f.descriptors.shape[1] == 40 and len(f) > 0
    assert torch.allclose(f.descriptors.norm(dim=1), torch.ones(len(f)), atol=1e-4)
    # independent check of the reported variance: recollect the descriptors with the runtime
    # extractor, eigen-decompose in numpy, and project with the stored matrix
    x = torch.cat([delf.raw_descriptors(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))
                   for p in sorted(root.rglob("*.png"))]).double().numpy()
    assert len(x) == summ["num_descriptors"]
    xc = x - x.mean(0)
    ev = np.linalg.svd(xc, compute_uv=False) ** 2 / (len(x) - 1)  # covariance eigenvalues
    assert summ["explained_variance"] == pytest.approx(ev[:40].sum() / ev.sum(), abs=1e-3)
    proj = (x - ck["state_dict"]["pca_mean"].double().numpy()) @ \
        ck["state_dict"]["pca_matrix"].double().numpy().T
    kept = proj.var(0, ddof=1).sum()
    reported = float(ck["state_dict"]["pca_variance"].double().sum())
    logging.getLogger(__name__).info("DELF PCA: %d descriptors, reported %.4f of the variance, "
                                     "kept/reported %.4f", len(x), summ["explained_variance"],
                                     kept / reported)
    assert kept >= 0.9 * reported and kept <= 1.1 * reported
    # the trained extractor drives the place-recognition API: a stored view is its own best match
    from local_features_ros.place_recognition import KeyframeDatabase

    db = KeyframeDatabase(knn=1)
    for f in frames[::4]:
        db.add(f.index, delf.extract(f.image))
    for f in frames[::8]:
        top = db.query(delf.extract(f.image), top_k=1, verify=False)
        assert top and top[0].keyframe_id == f.index


def test_places_from_rosbag_match_pose_clustering(places, tmp_path):
    from local_features_ros.bags import write_synthetic_bag
    from local_features_ros_training.delf.datasets import places_from_bag

    _, frames, labels = places
    bag = write_synthetic_bag(tmp_path / "bag", [(f.stamp, f.image) for f in frames],
                              compressed_topic=None, poses=[f.T_world_cam for f in frames])
    ls = places_from_bag(bag, "/camera/image_raw", "/camera/pose", tmp_path / "work",
                         radius=2.5, max_angle_deg=50, min_per_class=1)
    assert ls.labels.tolist() == labels.tolist()  # same clusters as from the exact poses
    first = cv2.cvtColor(cv2.imread(str(ls.paths[0])), cv2.COLOR_BGR2RGB)
    assert np.abs(first.astype(int) - frames[0].image.astype(int)).max() <= 1
