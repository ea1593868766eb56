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
