"""Training declarations: ``local-features train`` reads each package's ``TRAINING`` and the
``local_features_ros.training`` entry points; a task's ``default_conf`` rejects typo'd keys."""

from __future__ import annotations

import json
import textwrap

import pytest

from local_features_ros.cli import main

PLUGIN_INIT = '''
from pathlib import Path

from local_features_ros_training.spec import TrainingSpec

TRAINING = TrainingSpec(
    method="toyplugin",
    stages={"run": "toy_trainer_plugin.task:run", "fit": "toy_trainer_plugin.task:ToyTask"},
    default_configs={"run": str(Path(__file__).parent / "toy.yaml")},
)
'''

PLUGIN_TASK = '''
import json
from pathlib import Path

from local_features_ros_training.engine import Task


def run(conf, out, resume=False):
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "ran.json").write_text(json.dumps(conf))
    return {"ran": True, "answer": conf["answer"]}


class ToyTask(Task):
    name = "toy"
    default_conf = {"model": {"width": 8, "depth": 2}, "data": {}}
'''


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """A throwaway installed distribution: a package + ``*.dist-info`` with one entry point."""
    site = tmp_path / "site"
    pkg = site / "toy_trainer_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN_INIT)
    (pkg / "task.py").write_text(PLUGIN_TASK)
    (pkg / "toy.yaml").write_text("answer: 42\n")
    dist = site / "toy_trainer_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-trainer-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [local_features_ros.training]
        toyplugin = toy_trainer_plugin:TRAINING
        """))
    monkeypatch.syspath_prepend(str(site))
    yield tmp_path
    import sys

    for name in [m for m in sys.modules if m.startswith("toy_trainer_plugin")]:
        del sys.modules[name]


def test_builtin_declarations_are_cheap_and_complete():
    """Every training package declares itself in its ``__init__`` with strings only."""
    import subprocess
    import sys

    code = ("import sys; from local_features_ros_training.spec import find_specs; s = find_specs(); "
            "print(sorted(s)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    methods, torch_loaded = out.stdout.split("\n")[:2]
    assert methods == str(["d2net", "delf", "lfnet", "lift", "superpoint"])
    assert torch_loaded == "False"


def test_plugin_shows_in_help_and_dispatches(toy_plugin, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    assert "toyplugin" in help_text and "superpoint" in help_text
    assert "toyplugin: run|fit" in " ".join(help_text.split())

    out = toy_plugin / "run"
    assert main(["train", "toyplugin", "--stage", "run", "--out", str(out)]) == 0  # default config
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"ran": True, "answer": 42}
    assert json.loads((out / "ran.json").read_text()) == {"answer": 42}

    from local_features_ros_training.commands import train

    assert train.STAGES["toyplugin"]["fit"] == "toy_trainer_plugin.task:ToyTask"
    with pytest.raises(TypeError):
        train.STAGES["toyplugin"]["new"] = "x:y"  # a derived, read-only view


def test_typo_in_config_key_fails_with_known_keys(toy_plugin):
    from local_features_ros_training.commands import train
    from local_features_ros_training.config import ConfigError

    task_cls = train.resolve("toyplugin", "fit")
    task = task_cls({"model": {"width": 4}})
    assert task.settings["model"]["width"] == 4 and task.settings["model"]["depth"] == 2
    assert task.settings["train"]["batch_size"] == 8  # the engine's defaults are part of it
    with pytest.raises(TypeError):
        task.settings["model"]["width"] = 5  # frozen
    with pytest.raises(KeyError, match="known: depth, width"):
        task.settings["model"]["widht"]
    with pytest.raises(ConfigError, match=r"unknown config key 'model.widht'.*known: depth, width"):
        task_cls({"model": {"widht": 4}})
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        task_cls({"modle": {}})


def test_typo_in_a_builtin_task_config_fails(tmp_path):
    """The same check on a shipped trainer: a misspelt loss key of D2-Net's config."""
    from local_features_ros_training.config import ConfigError, load_config
    from local_features_ros_training.d2net.task import D2NetTask

    conf = load_config("d2net_tiny.yaml")
    D2NetTask(conf)  # the shipped config passes
    conf["loss"]["margn"] = 2.0
    with pytest.raises(ConfigError, match=r"'loss.margn'.*known: .*margin"):
        D2NetTask(conf)
