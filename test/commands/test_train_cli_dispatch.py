"""`local-features train METHOD` reaches every trainer through the one stage table."""

from __future__ import annotations

import pytest

from local_features_ros.cli import main
from local_features_ros.registry import build_extractor


@pytest.mark.parametrize("method", ["lfnet", "d2net"])
def test_train_cli_runs_geometric_trainers(method, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tiny configs render their scenes under ./runs
    out = tmp_path / "run"
    rc = main(["train", method, "--stage", "train", "--config", f"{method}_tiny.yaml",
               "--out", str(out), "--set", "train.max_steps=2"])
    assert rc == 0
    exports = sorted((out / "export").glob("*.pth"))
    assert exports, list(out.iterdir())
    conf = {"max_keypoints": 50}
    ex = build_extractor(method, weights=str(exports[0]), **conf)
    import numpy as np

    feats = ex.extract((np.random.default_rng(0).random((96, 128)) * 255).astype(np.uint8))
    assert feats.descriptors.shape[1] == ex.descriptor_dim


def test_stage_table_help_and_default_configs_agree():
    """Every (method, stage) entry imports, every default config exists for a known stage, and
    ``--stage``'s help names exactly the table's stages (LIFT: the four single stages + all)."""
    from local_features_ros_training.commands import train
    from local_features_ros_training.config import CONFIG_DIR

    for method, stages in train.STAGES.items():
        for stage in stages:
            assert callable(train.resolve(method, stage)), (method, stage)
    for (method, stage), cfg in train.DEFAULT_CONFIGS.items():
        assert stage in train.STAGES[method] and (CONFIG_DIR / cfg).is_file(), (method, stage)
    for stage in ("desc", "ori", "kp", "joint", "all"):
        assert train.DEFAULT_CONFIGS[("lift", stage)] == "lift_eccv2016.yaml"
    assert "lift: desc|ori|kp|joint|all" in train.stage_help()
    with pytest.raises(ValueError, match="unknown stage 'orientation' for method 'lift'"):
        train.resolve("lift", "orientation")
