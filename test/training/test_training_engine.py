"""Training engine: config overrides, bit-for-bit resume (in-process and after SIGKILL), NaN
stop keeping the last good checkpoint, DDP on 2 gloo processes, and the export loading straight
into the runtime extractor."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from local_features_ros.registry import build_extractor
from local_features_ros.weights import load_checkpoint
from local_features_ros_training.config import ConfigError, apply_overrides, load_config
from local_features_ros_training.engine import Trainer, TrainingDiverged, read_metrics
from local_features_ros_training.superpoint.magicpoint import MagicPointTask

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "training" / "configs" / "superpoint_magicpoint_tiny.yaml")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["GLOO_SOCKET_IFNAME"] = "lo"
    env.pop("WORLD_SIZE", None)
    return env


def _conf(*overrides: str) -> dict:
    return load_config(TINY, ["data.train_size=48", "train.log_every=1", "train.batch_size=4",
                              *overrides])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_config_overrides_and_base_inheritance(tmp_path):
    conf = load_config(TINY, ["train.lr=3e-4", "data.generation.resize=[32,48]", "train.seed=7"])
    assert conf["train"]["lr"] == pytest.approx(3e-4)
    assert conf["data"]["generation"]["resize"] == [32, 48]
    assert conf["train"]["seed"] == 7
    # inherited from the full config (base:), overridden by the tiny one
    assert conf["data"]["augmentation"]["homographic"]["params"]["patch_ratio"] == 0.8
    assert conf["train"]["batch_size"] == 8
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(conf, ["train.lrr=1"])
    with pytest.raises(ConfigError):
        apply_overrides(conf, ["no_equals_sign"])


def test_resume_in_process_is_bit_for_bit(tmp_path):
    full = Trainer(MagicPointTask(_conf()), _conf("train.max_steps=6", "train.checkpoint_every=3"),
                   tmp_path / "full")
    full.fit()
    part = Trainer(MagicPointTask(_conf()), _conf("train.max_steps=3", "train.checkpoint_every=3"),
                   tmp_path / "part")
    part.fit()
    ck = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pth")
    assert ck["step"] == 3 and "rng" in ck and "optimizer" in ck and ck["config"]["train"]["max_steps"] == 3
    resumed = Trainer(MagicPointTask(_conf()), _conf("train.max_steps=6", "train.checkpoint_every=3"),
                      tmp_path / "part", resume=True)
    res = resumed.fit()
    assert res["step"] == 6
    _assert_same(_weights(tmp_path / "full" / "checkpoints" / "last.pth"),
                 _weights(tmp_path / "part" / "checkpoints" / "last.pth"))
    # metrics log has each step once after the resume
    steps = [r["step"] for r in read_metrics(tmp_path / "part" / "metrics.csv")
             if r["split"] == "train" and r["name"] == "loss"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_after_sigkill_is_bit_for_bit(tmp_path):
    steps = 12
    common = ["--config", TINY, "--set", "data.train_size=48", "--set", f"train.max_steps={steps}",
              "--set", "train.batch_size=4",
              "--set", "train.checkpoint_every=2"]
    cmd = [sys.executable, "-m", "local_features_ros.cli", "train", "superpoint", "--stage",
           "magicpoint", *common]
    ref = subprocess.run(cmd + ["--out", str(tmp_path / "ref")], env=_env(), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(run)], env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.pth"
    killed_at = None
    t0 = time.time()
    while time.time() - t0 < 240:
        if last.is_file():
            try:
                s = int(load_checkpoint(last)["step"])
            except Exception:
                s = -1
            if s >= 4:
                proc.send_signal(signal.SIGKILL)
                killed_at = s
                break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert killed_at is not None and killed_at < steps, "run finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    res = subprocess.run(cmd + ["--out", str(run), "--resume"], env=_env(), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stderr
    _assert_same(_weights(tmp_path / "ref" / "checkpoints" / "last.pth"), _weights(last))
    assert load_checkpoint(last)["step"] == steps


class _NaNTask(MagicPointTask):
    """MagicPoint whose loss turns NaN from a given step on (an injected divergence)."""

    nan_from = 5

    def loss(self, model, batch, step):
        loss, m = super().loss(model, batch, step)
        if step + 1 >= self.nan_from:
            loss = loss * float("nan")
        return loss, m


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    conf = _conf("train.max_steps=10", "train.checkpoint_every=2")
    tr = Trainer(_NaNTask(conf), conf, tmp_path)
    with pytest.raises(TrainingDiverged, match="non-finite loss.*step 5.*last.pth"):
        tr.fit()
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pth")
    assert ck["step"] == 4
    for k, v in ck["model"].items():
        assert torch.isfinite(v).all(), k
    # the diverged step did not update the weights in memory either
    _assert_same(ck["model"], {k: v.detach() for k, v in tr.model.state_dict().items()})
    assert not (tmp_path / "export").exists()


def test_nan_via_cli_returns_error(tmp_path):
    # a huge learning rate makes the real loss explode; the CLI reports it in one line
    r = subprocess.run([sys.executable, "-m", "local_features_ros.cli", "train", "superpoint",
                        "--stage", "magicpoint", "--config", TINY, "--out", str(tmp_path),
                        "--set", "train.max_steps=40", "--set", "train.lr=1e12",
                        "--set", "train.optimizer=sgd", "--set", "data.train_size=48"],
                       env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-1500:]
    assert "non-finite" in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    # SGD with lr 1 for one step: weights_after = weights_before - gradient, so equal weights
    # mean equal gradients. No augmentation and keypoint-free primitives make every sample's
    # target independent of the process's RNG; the 2 ranks split the same 8 shuffled samples.
    common = ["--config", TINY, "--set", "train.max_steps=1", "--set", "train.optimizer=sgd",
              "--set", "train.lr=1.0", "--set", "data.train_size=16",
              "--set", "data.augmentation.enable=false",
              "--set", "data.generation.primitives=[draw_ellipses,gaussian_noise]"]
    single = subprocess.run([sys.executable, "-m", "local_features_ros.cli", "train", "superpoint",
                             "--stage", "magicpoint", *common, "--set", "train.batch_size=8",
                             "--out", str(tmp_path / "one")],
                            env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                          "-m", "local_features_ros.cli", "train", "superpoint", "--stage",
                          "magicpoint", *common, "--set", "train.batch_size=4",
                          "--out", str(tmp_path / "two")],
                         env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "rank 1/2" in ddp.stderr or "rank 0/2" in ddp.stderr
    from local_features_ros_training.engine import seed_everything

    seed_everything(0)
    w0 = MagicPointTask(_conf()).build_model().state_dict()
    a = _weights(tmp_path / "one" / "checkpoints" / "last.pth")
    b = _weights(tmp_path / "two" / "checkpoints" / "last.pth")
    moved = 0
    for k in a:
        ga, gb = w0[k] - a[k], w0[k] - b[k]
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)
        moved += int(ga.abs().sum() > 0)
    assert moved >= 10  # the backbone and detector head really received gradients
    # only rank 0 wrote the log
    rows = [r for r in read_metrics(tmp_path / "two" / "metrics.csv") if r["name"] == "loss"]
    assert len(rows) == 1


def test_export_loads_into_runtime_extractor(tmp_path):
    conf = _conf("train.max_steps=2")
    tr = Trainer(MagicPointTask(conf), conf, tmp_path)
    res = tr.fit()
    path = Path(res["export"])
    assert path.is_file()
    ck = load_checkpoint(path)
    assert ck["method"] == "superpoint" and ck["config"]["train"]["max_steps"] == 2
    ex = build_extractor("superpoint", weights=str(path))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        semi_rt, _ = ex(x)
        semi_tr = tr.model.eval()(x)["logits"]
    torch.testing.assert_close(semi_rt, semi_tr)
    img = (np.random.default_rng(0).uniform(0, 1, (64, 80)) * 255).astype(np.uint8)
    feats = ex.extract(img)
    assert feats.descriptors.shape[1] == 256


def test_time_budget_stops_with_checkpoint_and_export(tmp_path):
    conf = _conf("train.max_steps=50", "train.max_time_s=0.001", "train.checkpoint_every=100")
    res = Trainer(MagicPointTask(conf), conf, tmp_path).fit()
    assert res["step"] == 1 and not res["finished"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pth")["step"] == 1
    assert Path(res["export"]).is_file()


def test_bf16_precision_trains_with_fp32_weights(tmp_path):
    """``train.precision: bf16`` autocasts forward + loss only: the loss still falls, weights,
    gradients and optimizer state stay fp32, the run differs from fp32 (autocast is really on)
    and the export loads into the runtime extractor."""
    def run(prec: str, out: Path) -> dict:
        conf = _conf("train.max_steps=30", "train.lr=3e-3", f"train.precision={prec}")
        return Trainer(MagicPointTask(conf), conf, out).fit()

    res = run("bf16", tmp_path / "bf16")
    losses = [r["value"] for r in read_metrics(tmp_path / "bf16" / "metrics.csv")
              if r["split"] == "train" and r["name"] == "loss"]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    ck = load_checkpoint(tmp_path / "bf16" / "checkpoints" / "last.pth")
    assert all(v.dtype == torch.float32 for v in ck["model"].values() if v.is_floating_point())
    assert ck["config"]["train"]["precision"] == "bf16"
    run("fp32", tmp_path / "fp32")
    w16, w32 = _weights(tmp_path / "bf16" / "checkpoints" / "last.pth"), \
        _weights(tmp_path / "fp32" / "checkpoints" / "last.pth")
    assert any(not torch.equal(w16[k], w32[k]) for k in w16)
    build_extractor("superpoint", weights=res["export"])
    with pytest.raises(ValueError, match="precision"):
        conf = _conf("train.precision=fp16")
        Trainer(MagicPointTask(conf), conf, tmp_path / "bad")
