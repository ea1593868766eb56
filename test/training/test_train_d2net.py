"""D2-Net training: soft detection, loss, weight sharing with the runtime net, a tiny run."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from local_features_ros.extractors.d2net import D2Net
from local_features_ros.registry import build_extractor
from local_features_ros_training.config import load_config
from local_features_ros_training.d2net.losses import d2net_loss, soft_detection
from local_features_ros_training.d2net.model import D2NetTrainModel
from local_features_ros_training.d2net.task import D2NetTask
from local_features_ros_training.engine import Trainer, seed_everything


def _naive_soft_detection(x: torch.Tensor) -> torch.Tensor:
    """Loop re-statement of docs/method_facts/training_d2net.md#soft-detection (pad value
    exp(0) = 1 outside the map)."""
    b, c, h, w = x.shape
    out = torch.zeros(b, h, w, dtype=torch.float64)
    for n in range(b):
        y = F.relu(x[n]).double()
        mx = y.max()
        e = torch.exp(y / mx)
        for i in range(h):
            for j in range(w):
                best = 0.0
                for ch in range(c):
                    tot = 0.0
                    for di in (-1, 0, 1):
                        for dj in (-1, 0, 1):
                            ii, jj = i + di, j + dj
                            tot += float(e[ch, ii, jj]) if 0 <= ii < h and 0 <= jj < w else 1.0
                    alpha = float(e[ch, i, j]) / tot
                    beta = float(y[ch, i, j]) / float(y[:, i, j].max())
                    best = max(best, alpha * beta)
                out[n, i, j] = best
        out[n] /= out[n].sum()
    return out


def test_soft_detection_matches_restatement():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6) + 0.5
    x[0, :, 2, 3] = torch.tensor([0.1, 0.2, 0.3]) + 1.0  # every pixel needs a positive channel
    x = torch.where(x.amax(1, keepdim=True) > 0, x, x.abs())
    torch.testing.assert_close(soft_detection(x).double(), _naive_soft_detection(x), rtol=1e-5, atol=1e-7)


def _identity_batch(h: int = 128, w: int = 128) -> dict[str, torch.Tensor]:
    K = torch.tensor([[50.0, 0, 63.5], [0, 50.0, 63.5], [0, 0, 1]])
    d = torch.full((1, h, w), 3.0)
    return {"depth0": d, "depth1": d.clone(), "K0": K[None], "K1": K[None],
            "pose0": torch.eye(4)[None], "pose1": torch.eye(4)[None],
            "bbox0": torch.zeros(1, 2), "bbox1": torch.zeros(1, 2)}


def test_loss_known_values_on_identity_pair():
    batch = _identity_batch()
    h, w = 16, 16  # stride-8 map of a 128x128 crop: every cell has cells > 4 away
    # distinct orthogonal descriptors: positive distance 0, every negative 2 -> loss 0
    feat = torch.eye(256).view(256, h, w)[None] * 3.0
    loss, m = d2net_loss(feat, feat.clone(), batch, min_correspondences=16)
    assert m["valid_pairs"] == 1.0 and m["correspondences"] >= 14 * 14
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    # identical descriptors everywhere: pos = neg = 0 -> loss = margin
    const = torch.ones(1, 16, h, w)
    loss, _ = d2net_loss(const, const.clone(), batch, min_correspondences=16)
    assert float(loss) == pytest.approx(1.0, abs=1e-6)
    # a descriptor repeated only inside the safe radius is not a negative: still 0
    feat2 = feat.clone()
    feat2[0, :, 0, 1] = feat2[0, :, 0, 0]
    loss2, _ = d2net_loss(feat2, feat2.clone(), batch, min_correspondences=16)
    assert float(loss2) < 0.05
    # too few correspondences: batch skipped, no gradient path to any parameter
    loss3, m3 = d2net_loss(feat, feat.clone(), batch, min_correspondences=10_000)
    assert m3["valid_pairs"] == 0.0 and loss3.grad_fn is None


def test_training_net_shares_runtime_weights_at_stride_8():
    model = D2NetTrainModel()
    runtime_convs = [m for m in model.net.dense_feature_extraction.model if isinstance(m, torch.nn.Conv2d)]
    assert {id(p) for m in runtime_convs for p in m.parameters()} == {id(p) for p in model.parameters()}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["net.dense_feature_extraction.model.21.weight",
                         "net.dense_feature_extraction.model.21.bias"]  # official finetuning
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert model(x).shape == (1, 512, 8, 12)
        assert model.net(x).shape == (1, 512, 15, 23)  # runtime: stride 4, H/4 - 1
    with pytest.raises(ValueError, match="trainable"):
        D2NetTrainModel(trainable="conv9")


@pytest.fixture
def one_thread():
    """VGG on a shared CPU: oversubscribed threads are several times slower than one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_tiny_training_improves_heldout_matching(tmp_path, one_thread):
    conf = load_config("training/configs/d2net_tiny.yaml")
    conf["data"]["scenes"][0]["render"]["out_dir"] = str(tmp_path / "train_scene")
    conf["data"]["val_scenes"][0]["render"]["out_dir"] = str(tmp_path / "val_scene")
    task = D2NetTask(conf)
    seed_everything(int(conf["train"]["seed"]))
    initial = task.build_model().eval()  # the engine seeds identically before build_model
    result = Trainer(task, conf, tmp_path / "run").fit()
    assert result["finished"]
    trained = D2NetTrainModel(trainable="conv4")
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pth", weights_only=True)
    trained.load_state_dict(ck["model"])
    trained.eval()
    _, val = task.build_datasets()
    loader = torch.utils.data.DataLoader(val, batch_size=4)
    before = [task.validate(initial, b) for b in loader]
    after = [task.validate(trained, b) for b in loader]
    mean = lambda rows, k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    assert mean(after, "loss") < mean(before, "loss") - 0.02
    assert mean(after, "match_acc") > mean(before, "match_acc")
    with open(tmp_path / "run" / "metrics.csv") as f:
        losses = [float(r["value"]) for r in csv.DictReader(f) if r["name"] == "loss"]
    assert np.mean(losses[-10:]) < np.mean(losses[:5])
    # the export loads into the runtime extractor (stride 4) with the trained tensors
    ext = build_extractor("d2net", weights=result["export"])
    assert isinstance(ext, D2Net)
    torch.testing.assert_close(ext.dense_feature_extraction.model[21].weight,
                               trained.net.dense_feature_extraction.model[21].weight)
    img = (val[0]["image0"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    feats = ext.extract(img)
    assert feats.descriptors.shape[1] == 512 and len(feats.keypoints) > 0
