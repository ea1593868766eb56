"""The one-command SuperPoint pipeline: stage wiring (paths, device, budgets), a real tiny run whose
output loads into the runtime extractor, resume that skips finished stages, and the export stage's
time budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from local_features_ros_training.config import ConfigError, load_config
from local_features_ros_training.superpoint import pipeline as pl
from local_features_ros_training.superpoint.homographic_adaptation import run_export
from conftest import rectangle_frames

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "training" / "configs"


_frames = rectangle_frames  # 96x128 frames of bright rectangles (conftest)


def _tiny(tmp_path: Path, *extra: str) -> dict:
    frames = _frames(tmp_path / "frames")
    return load_config(CONFIGS / "superpoint_pipeline_tiny.yaml",
                       [f"export.set.data.image_dirs=[{frames}]", *extra])


def test_stages_are_wired_with_paths_device_and_budget(tmp_path, monkeypatch):
    """Fake stages record what the driver hands them: round r's joint stage trains on round r's
    labels from round r-1's weights; budgets are shares of what is left and sum to the total."""
    calls = []
    clock = [1000.0]
    monkeypatch.setattr(pl, "_now", lambda: clock[0])

    def fake_run_stage(method, kind, conf, out, resume=False):
        calls.append((kind, Path(out).name, conf))
        clock[0] += 5.0  # every stage takes 5 s
        if kind == "export":
            return {"images_dir": f"{out}/images", "labels_dir": f"{out}/labels", "exported": 1}
        w = Path(out) / "export" / f"{kind}.pth"
        w.parent.mkdir(parents=True, exist_ok=True)
        w.write_bytes(b"w")
        return {"export": str(w), "step": 1}

    monkeypatch.setattr("local_features_ros_training.commands.train.run_stage", fake_run_stage)
    conf = _tiny(tmp_path, "pipeline.rounds=2", "pipeline.time_budget_s=100",
                 "pipeline.precision=bf16")
    rep = pl.run_pipeline(conf, tmp_path / "run")
    assert [c[1] for c in calls] == ["magicpoint", "ha1", "joint1", "ha2", "joint2"]
    mp, ha1, j1, ha2, j2 = (c[2] for c in calls)
    assert ha1["model"]["weights"].endswith("magicpoint/export/magicpoint.pth")
    assert j1["model"]["init_weights"] == ha1["model"]["weights"]
    assert j1["data"]["labels_dir"].endswith("ha1/labels")
    assert j1["data"]["image_dirs"] == [str(tmp_path / "run" / "ha1" / "images")]
    assert ha2["model"]["weights"].endswith("joint1/export/joint.pth")
    assert j2["model"]["init_weights"] == ha2["model"]["weights"]
    assert j2["data"]["labels_dir"].endswith("ha2/labels")
    assert all(c["train"]["device"] == "cpu" and c["train"]["precision"] == "bf16"
               for c in (mp, j1, j2))
    assert ha1["device"] == "cpu"
    # fractions 0.3 / 0.1 / 0.6, export and joint split over 2 rounds: weights .3 .05 .3 .05 .3
    budgets = [mp["train"]["max_time_s"], ha1["max_time_s"], j1["train"]["max_time_s"],
               ha2["max_time_s"], j2["train"]["max_time_s"]]
    assert budgets[0] == pytest.approx(30.0)
    assert budgets[1] == pytest.approx((100 - 5) * 0.05 / 0.7)  # share of what is left
    # time a stage leaves unused goes to the next ones; the last stage gets all that is left
    left_at_start = [100.0 - 5.0 * i for i in range(5)]
    assert all(b <= left for b, left in zip(budgets, left_at_start))
    assert budgets[-1] == pytest.approx(80.0)
    assert rep["stages"][-1]["stage"] == "joint2"
    # the tiny configs' own settings survive the wiring
    assert mp["data"]["generation"]["resize"] == [64, 64] and mp["train"]["max_steps"] == 10


def test_init_weights_skips_magicpoint(tmp_path, monkeypatch):
    calls = []

    def fake_run_stage(method, kind, conf, out, resume=False):
        calls.append((Path(out).name, conf))
        if kind == "export":
            return {"images_dir": "i", "labels_dir": "l"}
        return {"export": str(tmp_path / "w.pth")}

    (tmp_path / "w.pth").write_bytes(b"x")
    monkeypatch.setattr("local_features_ros_training.commands.train.run_stage", fake_run_stage)
    pl.run_pipeline(_tiny(tmp_path, "pipeline.init_weights=/some/superpoint.pth"), tmp_path / "r")
    assert [c[0] for c in calls] == ["ha1", "joint1"]
    assert calls[0][1]["model"]["weights"] == "/some/superpoint.pth"
    assert calls[1][1]["model"]["init_weights"] == "/some/superpoint.pth"
    assert (tmp_path / "r" / "superpoint.pth").read_bytes() == b"x"


def test_bad_pipeline_configs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        pl.run_pipeline(_tiny(tmp_path) | {"pipeline": {"budget": 1}}, tmp_path / "a")
    conf = load_config(CONFIGS / "superpoint_pipeline_tiny.yaml",
                       ["joint.set={train: {no_such_key: 1}}"])
    with pytest.raises(ConfigError, match="no_such_key"):
        pl.run_pipeline(conf, tmp_path / "b")
    conf = load_config(CONFIGS / "superpoint_pipeline_tiny.yaml", ["pipeline.rounds=0"])
    with pytest.raises(ConfigError, match="rounds"):
        pl.run_pipeline(conf, tmp_path / "c")
    # `--set` may add keys below a stage's `set:` (they override another config) ...
    conf = load_config(CONFIGS / "superpoint_pipeline_tiny.yaml",
                       ["export.set.homography_adaptation.num=3", "joint.set.train.lr=0.01"])
    assert conf["export"]["set"]["homography_adaptation"] == {"num": 3}
    assert conf["joint"]["set"]["train"]["lr"] == 0.01
    # ... and a typo there is caught before the first stage runs, not after hours
    conf = load_config(CONFIGS / "superpoint_pipeline_tiny.yaml",
                       ["joint.set.data.warped_pair.params.scaling_amplitud=0.4"])
    with pytest.raises(ConfigError, match="scaling_amplitud"):
        pl.run_pipeline(conf, tmp_path / "d")
    assert not (tmp_path / "d" / "magicpoint").exists()
    with pytest.raises(ConfigError, match="exportt"):
        load_config(CONFIGS / "superpoint_pipeline_tiny.yaml", ["exportt.set.x=1"])


#: what a bare torch image on a GPU machine lacks: the pipeline must not import any of it
BARE_IMAGE_RUNNER = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("kornia", "rclpy", "rosbags", "pycolmap", "sensor_msgs"):
            raise ImportError("not on a bare torch image: " + name)
sys.meta_path.insert(0, Block())
sys.argv = ["train"] + sys.argv[1:]
runpy.run_module("training.commands.train", run_name="__main__")
"""


def test_tiny_pipeline_runs_resumes_and_loads_in_the_runtime(tmp_path):
    """A real end-to-end run through `python -m training.commands.train` (how a GPU machine
    with a bare torch image runs the recipe), with the packages such an image lacks made
    unimportable."""
    frames = _frames(tmp_path / "frames")
    cmd = [sys.executable, "-c", BARE_IMAGE_RUNNER, "superpoint", "--stage", "pipeline",
           "--config", "superpoint_pipeline_tiny.yaml", "--out", str(tmp_path / "run"),
           "--set", f"export.set.data.image_dirs=[{frames}]",
           "--set", "export.set.data.synthetic_scene={frames: 1, seeds: [0], kinds: [orbit], "
                    "width: 64, height: 64}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "run"
    rep = json.loads((run / "pipeline.json").read_text())
    assert [s["stage"] for s in rep["stages"]] == ["magicpoint", "ha1", "joint1"]
    assert rep["stages"][1]["exported"] == 5  # 4 frames + 1 rendered scene frame
    for d in ("magicpoint", "ha1", "joint1"):
        assert (run / d / "stage_done.json").is_file()

    from local_features_ros.registry import build_extractor

    ex = build_extractor("superpoint", weights=str(run / "superpoint.pth"))
    trained = torch.load(run / "joint1" / "export" / "superpoint.pth", weights_only=True)
    assert torch.equal(ex.convDb.weight.detach(), trained["state_dict"]["convDb.weight"])
    img = cv2.imread(str(frames / "00.png"), cv2.IMREAD_GRAYSCALE)
    feats = ex.extract(np.stack([img] * 3, -1))
    assert feats.descriptors.shape[1] == 256

    # resume: every finished stage is skipped, nothing is retrained
    mtime = (run / "joint1" / "export" / "superpoint.pth").stat().st_mtime_ns
    res = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.count("already done, skipped") == 3
    assert (run / "joint1" / "export" / "superpoint.pth").stat().st_mtime_ns == mtime


def test_export_time_budget_keeps_what_was_exported(tmp_path):
    from local_features_ros.weights import save_checkpoint
    from local_features_ros_training.superpoint.model import SuperPointModel

    frames = _frames(tmp_path / "frames", 3)
    torch.manual_seed(0)
    w = tmp_path / "mp.pth"
    save_checkpoint(w, "superpoint", SuperPointModel().runtime_state_dict(), {})
    conf = load_config(CONFIGS / "superpoint_homographic_adaptation_tiny.yaml", [
        f"model.weights={w}", f"data.image_dirs=[{frames}]", "homography_adaptation.num=2",
        "max_time_s=1e-9"])
    res = run_export(conf, tmp_path / "ha")
    # the first image always goes through; the budget stops the rest
    assert res["exported"] == 1 and res["stopped_early"]
    assert len(list((tmp_path / "ha" / "labels").glob("*.npz"))) == 1
    assert len(list((tmp_path / "ha" / "images").glob("*.png"))) == 1
    res = run_export(load_config(CONFIGS / "superpoint_homographic_adaptation_tiny.yaml", [
        f"model.weights={w}", f"data.image_dirs=[{frames}]", "homography_adaptation.num=2"]),
        tmp_path / "ha", resume=True)
    assert res["skipped"] == 1 and res["exported"] == 2 and not res["stopped_early"]


def test_torch_homographic_adaptation_matches_the_opencv_one():
    """The batched (GPU) warps give the OpenCV path's aggregated heatmap: same homographies from
    the same seed, masks and aggregation; only OpenCV's 1/32 px fixed-point sampling differs."""
    from local_features_ros_training.data.homographies import compute_valid_mask, sample_homography
    from local_features_ros_training.superpoint.homographic_adaptation import _torch_valid_mask, \
        homographic_adaptation, homographic_adaptation_torch

    rng = np.random.default_rng(0)
    img = np.zeros((64, 80), np.float32)
    for _ in range(8):
        x, y = (int(v) for v in rng.integers(0, 70, 2))
        cv2.rectangle(img, (x, y), (x + 12, y + 9), float(rng.uniform(0.3, 1.0)), -1)

    def detector(x: torch.Tensor) -> torch.Tensor:  # any deterministic image -> heatmap map
        return torch.nn.functional.avg_pool2d(x, 3, 1, 1)[:, 0] * x[:, 0]

    for agg in ("sum", "max"):
        conf = {"num": 12, "aggregation": agg}
        ref = homographic_adaptation(detector, img, np.random.default_rng(1), conf, 5)
        got = homographic_adaptation_torch(detector, img, np.random.default_rng(1), conf, 5)
        assert np.abs(ref - got).max() < 0.02 * ref.max()
        assert np.abs(ref - got).mean() < 1e-3 * ref.max()
    # valid masks (nearest warp + elliptic erosion with cv2's anchor) agree pixel for pixel
    # except where a pixel centre falls within float error of a sampling boundary
    Hs = [sample_homography((64, 80), np.random.default_rng(s), patch_ratio=0.8,
                            allow_artifacts=True).H for s in range(4)]
    got = _torch_valid_mask(torch.from_numpy(np.stack(Hs)), (64, 80), 3, torch.device("cpu"))
    for H, g in zip(Hs, got.numpy()):
        ref = compute_valid_mask((64, 80), H, 3)
        assert (ref != g).mean() < 0.01


def _kornia_warp(images: torch.Tensor, H: torch.Tensor, mode: str) -> torch.Tensor:
    """The same warp by kornia's ``warp_perspective`` (pixel centres at integers)."""
    from kornia.geometry.transform import warp_perspective

    h, w = images.shape[-2:]
    return warp_perspective(images, H.to(images.dtype), (h, w), mode=mode, padding_mode="zeros",
                            align_corners=True)


def test_torch_warp_equals_kornias_warp_perspective():
    """Bilinear: equal to float noise. Nearest: the same pixel wherever the sampling position is
    not within float error of a pixel boundary (a handful in 150k)."""
    from local_features_ros_training.data.homographies import sample_homography
    from local_features_ros_training.superpoint.homographic_adaptation import _torch_warp

    Hs = torch.from_numpy(np.stack([sample_homography((96, 128), np.random.default_rng(s), patch_ratio=0.8,
                                                      allow_artifacts=True).H for s in range(12)]))
    img = torch.rand(12, 1, 96, 128, generator=torch.Generator().manual_seed(0))
    for H in (Hs, torch.linalg.inv(Hs)):
        torch.testing.assert_close(_torch_warp(img, H, "bilinear"), _kornia_warp(img, H, "bilinear"),
                                   rtol=0, atol=1e-4)
        near = _torch_warp(img, H, "nearest") != _kornia_warp(img, H, "nearest")
        assert near.float().mean() < 1e-4
        ones = torch.ones_like(img)
        assert torch.equal(_torch_warp(ones, H, "nearest"), _kornia_warp(ones, H, "nearest"))


def test_export_backends_give_the_same_labels(tmp_path):
    from local_features_ros.weights import save_checkpoint
    from local_features_ros_training.superpoint.model import SuperPointModel

    frames = _frames(tmp_path / "frames", 2)
    torch.manual_seed(0)
    w = tmp_path / "mp.pth"
    save_checkpoint(w, "superpoint", SuperPointModel().runtime_state_dict(), {})
    pts = {}
    for backend in ("cv2", "torch"):
        conf = load_config(CONFIGS / "superpoint_homographic_adaptation_tiny.yaml", [
            f"model.weights={w}", f"data.image_dirs=[{frames}]", "homography_adaptation.num=4",
            f"homography_adaptation.backend={backend}", "detection.top_k=20",
            "detection.min_prob=0.0", "detection.detection_threshold=0.0"])
        run_export(conf, tmp_path / backend)
        pts[backend] = [np.load(f)["points"] for f in sorted((tmp_path / backend / "labels").glob("*.npz"))]
    for a, b in zip(pts["cv2"], pts["torch"]):
        same = {tuple(p) for p in a} & {tuple(p) for p in b}
        assert len(same) >= 0.8 * len(a)


def test_stage_overrides_replace_free_form_sections():
    """``model.extractor_conf: {}`` is a free-form mapping: a nested override replaces it (and is
    what the joint export records as the runtime's recommended post-processing)."""
    conf = pl._stage_conf({"config": "superpoint_joint_tiny.yaml",
                           "set": {"model": {"extractor_conf": {"subpixel_radius": 4}},
                                   "train": {"lr": 0.5}, "data.resize": [32, 32]}}, "joint")
    assert conf["model"]["extractor_conf"] == {"subpixel_radius": 4}
    assert conf["train"]["lr"] == 0.5 and conf["train"]["max_steps"] == 30  # merged, not replaced
    assert conf["data"]["resize"] == [32, 32]
    with pytest.raises(ConfigError, match="unknown key"):
        pl._stage_conf({"config": "superpoint_joint_tiny.yaml", "set": {"train": {"lrr": 1}}}, "joint")
    with pytest.raises(ConfigError, match="needs 'config"):
        pl._stage_conf({"set": {}}, "joint")


def test_training_precision_auto_uses_bf16_only_where_it_is_native(monkeypatch):
    import local_features_ros.device as device
    from local_features_ros_training.engine import resolve_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"


def test_gpu_recipe_resolves_every_stage():
    """The one-command GPU recipe (`--config superpoint_pipeline_gpu.yaml`): its base and every
    stage's own config resolve with its overrides, one frame step per frame folder, the stages
    plan inside the time budget, and the frame folders are those of ../shared/data's layout."""
    from training.config import load_config
    from training.superpoint.pipeline import _plan, _stage_conf, _teacher

    conf = load_config("superpoint_pipeline_gpu.yaml")
    pipe = conf["pipeline"]
    plan = _plan(pipe, _teacher(conf))
    assert [p[0] for p in plan] == ["magicpoint", "ha1", "joint1", "ha2", "joint2"]
    assert abs(sum(p[2] for p in plan) - 1.0) < 1e-9 and pipe["time_budget_s"] == 480
    stages = {kind: _stage_conf(conf[kind], kind) for kind in ("magicpoint", "export", "joint")}
    data = stages["export"]["data"]
    assert len(data["image_dirs"]) == len(data["frame_step"]) == 3
    assert all(d.startswith("../shared/data/") for d in data["image_dirs"])
    assert stages["magicpoint"]["train"]["batch_size"] == 64
    assert stages["joint"]["train"]["batch_size"] == 16
