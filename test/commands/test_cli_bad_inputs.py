"""Every ``local-features`` command on bad input, and the one ``--set`` vocabulary.

Contract (``commands/_common.py``): exit status 2 when the command line, a setting, an input file
or the weights are wrong; 1 only when the work started and then failed; one
``local-features COMMAND: error: ...`` line naming the problem; never a traceback. ``demo`` and
``run`` are checked only up to the point where a process would start (their validation): the
test replaces the function that starts processes with one that fails the test.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import textured_image

from local_features_ros.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]


class ProcessWouldStart(AssertionError):
    """Raised instead of starting the node: validation let the configuration through."""


@dataclass(frozen=True)
class Case:
    """One row: command line (``{name}`` = a file of the ``files`` fixture), expected exit
    status, and a fragment the error line must contain."""

    argv: tuple[str, ...]
    status: int
    fragment: str


@dataclass
class Outcome:
    status: int
    out: str
    err: str
    log: str


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny inputs: good, flat, non-image and truncated images; a SuperPoint-shaped state dict,
    a junk checkpoint; an empty folder; a one-pair HPatches-style sequence."""
    from local_features_ros.extractors.superpoint import SuperPoint

    d = tmp_path_factory.mktemp("bad_inputs")
    cv2.imwrite(str(d / "a.png"), textured_image(96, 128, seed=1))
    cv2.imwrite(str(d / "b.png"), textured_image(96, 128, seed=2))
    cv2.imwrite(str(d / "flat.png"), np.full((96, 128), 120, np.uint8))
    (d / "text.png").write_text("this is not an image")
    (d / "trunc.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # header ok, body corrupt
    torch.save(SuperPoint().state_dict(), d / "superpoint_sd.pth")  # official SuperPoint layout
    (d / "junk.pth").write_bytes(b"not a checkpoint")
    (d / "empty").mkdir()
    seq = d / "hp" / "v_one"
    seq.mkdir(parents=True)
    cv2.imwrite(str(seq / "1.png"), textured_image(96, 128, seed=3))
    cv2.imwrite(str(seq / "2.png"), textured_image(96, 128, seed=3))
    np.savetxt(seq / "H_1_2", np.eye(3))
    out = {p.stem if p.is_file() else p.name: str(p) for p in d.iterdir()}
    out.update(dir=str(d), missing=str(d / "missing.png"), missing_pth=str(d / "missing.pth"),
               missing_dir=str(d / "no_such_dir"), sp=out["superpoint_sd"])
    return out


@pytest.fixture
def no_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """``demo``/``run`` stop where a process would start: the plans that got that far are
    recorded and ``ProcessWouldStart`` is raised (a bad-input row that reaches it fails)."""
    import tempfile

    from local_features_ros.ros import runner
    from local_features_ros.ros.commands import demo

    plans: list[Any] = []

    def refuse(plan: Any, *args: Any, **kwargs: Any) -> Any:
        plans.append(plan)
        raise ProcessWouldStart("validation passed: a process would start")

    monkeypatch.setattr(demo, "_run", refuse)
    monkeypatch.setattr(runner, "run_plan", refuse)
    monkeypatch.setattr(runner, "start_processes", refuse)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # run's params file lands here
    return plans


def run_cli(argv: list[str], capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
            ) -> Outcome:
    """``local-features ARGV`` in this process (argparse's usage errors exit via SystemExit)."""
    try:
        status = cli_main(argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Outcome(int(status), captured.out, captured.err, caplog.text)


def assert_refused(result: Outcome, status: int, fragment: str) -> None:
    """The exit status, one error line naming the problem, and no traceback anywhere."""
    everything = result.out + result.err + result.log
    assert "Traceback" not in everything, everything
    assert result.status == status, everything
    errors = [line for line in result.err.splitlines() if ": error: " in line
              or line.startswith("local-features") and ": failed: " in line]
    assert len(errors) == 1, result.err
    assert errors[0].startswith("local-features"), errors[0]
    assert fragment in errors[0], errors[0]


def expand(argv: tuple[str, ...], files: dict[str, str], out: Path) -> list[str]:
    return [a.format(out=str(out), **files) for a in argv]


# ------------------------------------------------------------------------------------ the table
OUT = "{out}/o"  # per-test output folder
NPZ = "{out}/m.npz"
ORB = ("--method", "orb")
SP_RANDOM = ("--method", "superpoint", "--weights", "random")
EVAL_OUT = ("--json", "{out}/r.json")
BENCH = ("bench", "--sizes", "64x48", "--runs", "1", "--warmup", "0")
CASES: dict[str, list[Any]] = {
    "extract": [
        ("set-type", Case(("extract", *ORB, "--set", "max_keypoints=abc", "--out", OUT, "{a}"),
                          2, "'max_keypoints'")),
        ("set-unknown-key", Case(("extract", *ORB, "--set", "bogus=1", "--out", OUT, "{a}"),
                                 2, "unknown setting 'bogus'")),
        ("set-syntax", Case(("extract", *ORB, "--set", "max_keypoints", "--out", OUT, "{a}"),
                            2, "KEY=VALUE")),
        ("set-matcher-key", Case(("extract", *ORB, "--set", "matcher.ratio=0.8", "--out", OUT,
                                  "{a}"), 2, "'matcher.ratio' is a matcher setting")),
        ("set-node-only-key", Case(("extract", *ORB, "--set", "qos.depth=3", "--out", OUT, "{a}"),
                                   2, "parameter of the node only")),
        ("set-two-spellings", Case(("extract", *ORB, "--set", "resize_max_edge=32", "--set",
                                    "resize.max_edge=64", "--out", OUT, "{a}"),
                                   2, "same setting")),
        ("set-shared-key-prefixed", Case(("extract", *ORB, "--set", "extractor.max_keypoints=5",
                                          "--out", OUT, "{a}"), 2, "set it as 'max_keypoints'")),
        ("flag-and-set-disagree", Case(("extract", *SP_RANDOM, "--precision", "bf16", "--set",
                                        "precision=fp32", "--out", OUT, "{a}"),
                                       2, "precision given twice")),
        ("negative-size", Case(("extract", *ORB, "--set", "resize.max_edge=-1", "--out", OUT,
                                "{a}"), 2, "resize.max_edge must be >= 0")),
        ("negative-keypoints", Case(("extract", *ORB, "--set", "max_keypoints=-5", "--out", OUT,
                                     "{a}"), 2, "max_keypoints")),
        ("precision", Case(("extract", *ORB, "--set", "precision=fp8", "--out", OUT, "{a}"),
                           2, "precision must be one of")),
        ("device", Case(("extract", *ORB, "--device", "gpu0", "--out", OUT, "{a}"),
                        2, "device must be")),
        ("unknown-method", Case(("extract", "--method", "surf", "--out", OUT, "{a}"),
                                2, "unknown method 'surf'")),
        ("image-missing", Case(("extract", *ORB, "--out", OUT, "{missing}"), 2, "not found")),
        ("image-not-an-image", Case(("extract", *ORB, "--out", OUT, "{text}"),
                                    2, "cannot read image")),
        ("image-corrupt-past-header", Case(("extract", *ORB, "--out", OUT, "{trunc}"),
                                           1, "cannot read image")),
        ("folder-without-images", Case(("extract", *ORB, "--out", OUT, "{empty}"),
                                       2, "no images")),
        ("weights-missing", Case(("extract", "--method", "superpoint", "--weights",
                                  "{missing_pth}", "--out", OUT, "{a}"),
                                 2, "weights file not found")),
        ("weights-corrupt", Case(("extract", "--method", "superpoint", "--weights", "{junk}",
                                  "--out", OUT, "{a}"), 2, "cannot read checkpoint")),
        ("weights-other-method", Case(("extract", "--method", "d2net", "--weights", "{sp}",
                                       "--out", OUT, "{a}"),
                                      2, "holds superpoint weights, not d2net weights")),
        ("weights-other-method-via-set", Case(("extract", "--method", "d2net", "--set",
                                               "weights={sp}", "--out", OUT, "{a}"),
                                              2, "holds superpoint weights, not d2net weights")),
        ("weights-none-shipped", Case(("extract", "--method", "d2net", "--out", OUT, "{a}"),
                                     2, "needs weights")),
        ("out-is-a-file", Case(("extract", *ORB, "--out", "{a}", "{b}"),
                               2, "cannot create output folder")),
    ],
    "match": [
        ("set-type", Case(("match", *ORB, "--set", "max_keypoints=abc", "--out", NPZ, "{a}",
                           "{b}"), 2, "'max_keypoints'")),
        ("set-unknown-key", Case(("match", *ORB, "--set", "bogus=1", "--out", NPZ, "{a}", "{b}"),
                                 2, "unknown setting 'bogus'")),
        ("negative-size", Case(("match", *ORB, "--set", "resize.max_edge=-8", "--out", NPZ,
                                "{a}", "{b}"), 2, "resize.max_edge must be >= 0")),
        ("unknown-method", Case(("match", "--method", "surf", "--out", NPZ, "{a}", "{b}"),
                                2, "unknown method 'surf'")),
        ("image-missing", Case(("match", *ORB, "--out", NPZ, "{a}", "{missing}"), 2, "not found")),
        ("image-not-an-image", Case(("match", *ORB, "--out", NPZ, "{a}", "{text}"),
                                    2, "cannot read image")),
        ("image-corrupt", Case(("match", *ORB, "--out", NPZ, "{a}", "{trunc}"),
                               2, "cannot read image")),
        ("ratio", Case(("match", *ORB, "--ratio", "0", "--out", NPZ, "{a}", "{b}"), 2, "ratio")),
        ("ransac-threshold", Case(("match", *ORB, "--threshold", "-1", "--out", NPZ, "{a}",
                                   "{b}"), 2, "threshold")),
        ("ratio-type", Case(("match", *ORB, "--ratio", "abc", "--out", NPZ, "{a}", "{b}"),
                            2, "argument --ratio")),
        ("out-suffix", Case(("match", *ORB, "--out", "{out}/m.txt", "{a}", "{b}"),
                            2, "must end in .npz")),
        ("draw-extension", Case(("match", *ORB, "--out", NPZ, "--draw", "{out}/m.xyz", "{a}",
                                 "{b}"), 2, "no image writer")),
        ("unknown-matcher", Case(("match", *ORB, "--matcher", "bogus", "--out", NPZ, "{a}",
                                  "{b}"), 2, "unknown matcher 'bogus'")),
        ("matcher-set-key", Case(("match", *ORB, "--matcher-set", "bogus=1", "--out", NPZ, "{a}",
                                  "{b}"), 2, "'bogus'")),
        ("nn-options-with-lightglue", Case(("match", *ORB, "--matcher", "lightglue", "--ratio",
                                            "0.8", "--out", NPZ, "{a}", "{b}"),
                                           2, "--matcher nn only")),
        ("matcher-twice", Case(("match", *ORB, "--matcher", "nn", "--set",
                                "matcher.type=lightglue", "--out", NPZ, "{a}", "{b}"),
                               2, "matcher given twice")),
        ("lightglue-key-with-nn", Case(("match", *ORB, "--set",
                                        "matcher.lightglue.filter_threshold=0.5", "--out", NPZ,
                                        "{a}", "{b}"), 2, "applies to matcher.type=lightglue")),
        ("set-matcher-value", Case(("match", *ORB, "--set", "matcher.ratio=0", "--out", NPZ,
                                    "{a}", "{b}"), 2, "ratio must be in (0, 1]")),
        ("set-verify-key", Case(("match", *ORB, "--set", "verify.bogus=1", "--out", NPZ, "{a}",
                                 "{b}"), 2, "unknown setting 'verify.bogus'")),
        ("set-verify-type", Case(("match", *ORB, "--set", "verify.ransac_threshold=far", "--out",
                                  NPZ, "{a}", "{b}"), 2, "'verify.ransac_threshold'")),
        ("verify-model-needs-intrinsics", Case(("match", *ORB, "--set", "verify.model=essential",
                                                "--out", NPZ, "{a}", "{b}"),
                                               2, "no camera intrinsics")),
        ("flag-and-set-disagree", Case(("match", *ORB, "--threshold", "2", "--set",
                                        "verify.ransac_threshold=3", "--out", NPZ, "{a}", "{b}"),
                                       2, "given twice")),
        ("weights-other-method", Case(("match", "--method", "d2net", "--weights", "{sp}",
                                       "--out", NPZ, "{a}", "{b}"),
                                      2, "holds superpoint weights, not d2net weights")),
    ],
    "bench": [
        ("runs", Case((*BENCH[:4], "0", "--methods", "orb"), 2, "--runs must be >= 1")),
        ("runs-type", Case((*BENCH[:4], "abc", "--methods", "orb"), 2, "argument --runs")),
        ("warmup", Case((*BENCH[:6], "-1", "--methods", "orb"), 2, "--warmup must be >= 0")),
        ("threads", Case((*BENCH, "--methods", "orb", "--threads", "-2"), 2, "--threads")),
        ("size-syntax", Case((BENCH[0], "--sizes", "abc", "--methods", "orb"), 2, "640x480")),
        ("size-too-small", Case((BENCH[0], "--sizes", "4x4", "--methods", "orb"), 2, "too small")),
        ("unknown-method", Case((*BENCH, "--methods", "orb,surf"), 2, "unknown method 'surf'")),
        ("set-type", Case((*BENCH, "--methods", "orb", "--set", "nms_radius=two"),
                          2, "'nms_radius'")),
        ("set-unknown-for-one-method", Case((*BENCH, "--methods", "orb,superpoint", "--weights",
                                             "random", "--set", "extractor.nms=exact"),
                                            2, "unknown setting 'extractor.nms' for method 'orb'")),
        ("weights-other-method", Case((*BENCH, "--methods", "d2net", "--weights", "{sp}"),
                                      2, "holds superpoint weights, not d2net weights")),
    ],
    "evaluate": [
        ("folder-missing", Case(("evaluate", "hpatches", "{missing_dir}", *ORB, *EVAL_OUT),
                                2, "not found")),
        ("no-homography-pairs", Case(("evaluate", "hpatches", "{empty}", *ORB, *EVAL_OUT),
                                     2, "no homography pairs")),
        ("not-a-pair-list", Case(("evaluate", "pairs", "{empty}", *ORB, *EVAL_OUT),
                                 2, "not a pair list")),
        ("not-a-sequence", Case(("evaluate", "sequence", "{empty}", *ORB, *EVAL_OUT),
                                2, "not a KITTI-style")),
        ("unknown-protocol", Case(("evaluate", "homographies", "{hp}", *ORB, *EVAL_OUT),
                                  2, "invalid choice")),
        ("intrinsics-type", Case(("evaluate", "pairs", "{empty}", *ORB, *EVAL_OUT,
                                  "--intrinsics", "a,b,c,d"), 2, "--intrinsics must be numbers")),
        ("intrinsics-count", Case(("evaluate", "pairs", "{empty}", *ORB, *EVAL_OUT,
                                   "--intrinsics", "500,500,320"), 2, "needs 4 numbers")),
        ("stride", Case(("evaluate", "sequence", "{empty}", *ORB, *EVAL_OUT, "--stride", "0"),
                        2, "--stride must be >= 1")),
        ("gaps", Case(("evaluate", "pairs", "{empty}", *ORB, *EVAL_OUT, "--min-gap", "3",
                       "--max-gap", "2"), 2, "--min-gap")),
        ("ransac-threshold", Case(("evaluate", "hpatches", "{hp}", *ORB, *EVAL_OUT,
                                   "--ransac-thresh", "-1"), 2, "--ransac-thresh must be > 0")),
        ("set-type", Case(("evaluate", "hpatches", "{hp}", *ORB, *EVAL_OUT, "--set",
                           "max_keypoints=many"), 2, "'max_keypoints'")),
        ("set-matcher-value", Case(("evaluate", "hpatches", "{hp}", *ORB, *EVAL_OUT, "--set",
                                    "matcher.max_distance=-1"), 2, "max_distance must be >= 0")),
        ("set-verify", Case(("evaluate", "hpatches", "{hp}", *ORB, *EVAL_OUT, "--set",
                             "verify.model=homography"), 2, "--ransac-thresh")),
        ("unknown-method", Case(("evaluate", "hpatches", "{hp}", "--method", "surf", *EVAL_OUT),
                                2, "unknown method 'surf'")),
        ("weights-other-method", Case(("evaluate", "hpatches", "{hp}", "--method", "d2net",
                                       "--weights", "{sp}", *EVAL_OUT),
                                      2, "holds superpoint weights, not d2net weights")),
    ],
    "export": [
        ("unknown-method", Case(("export", "--method", "surf", "--out", "{out}/x.onnx"),
                                2, "unknown method 'surf'")),
        ("no-network", Case(("export", *ORB, "--out", "{out}/x.onnx"),
                            2, "no exportable network")),
        ("unknown-part", Case(("export", *SP_RANDOM, "--part", "head", "--out", "{out}/x.onnx"),
                              2, "no network part 'head'")),
        ("shape-syntax", Case(("export", *SP_RANDOM, "--shape", "big", "--out", "{out}/x.onnx"),
                              2, "--shape must look like")),
        ("shape-negative", Case(("export", *SP_RANDOM, "--shape", "1x1x-48x64", "--out",
                                 "{out}/x.onnx"), 2, "must be positive")),
        ("shape-rank", Case(("export", *SP_RANDOM, "--shape", "1x48x64", "--out",
                             "{out}/x.onnx"), 2, "takes 4")),
        ("precision", Case(("export", *SP_RANDOM, "--set", "precision=bf16", "--out",
                            "{out}/x.onnx"), 2, "traces the network in fp32")),
        ("set-type", Case(("export", *SP_RANDOM, "--set", "nms_radius=x", "--out",
                           "{out}/x.onnx"), 2, "'nms_radius'")),
        ("weights-missing", Case(("export", "--method", "superpoint", "--weights",
                                  "{missing_pth}", "--out", "{out}/x.onnx"),
                                 2, "weights file not found")),
        ("weights-other-method", Case(("export", "--method", "d2net", "--weights", "{sp}",
                                       "--out", "{out}/x.onnx"),
                                      2, "holds superpoint weights, not d2net weights")),
        ("matcher-with-extractor-options", Case(("export", "--matcher", "lightglue", *ORB,
                                                 "--set", "max_keypoints=5", "--out",
                                                 "{out}/x.onnx"), 2, "apply to extractor")),
    ],
    "methods": [
        ("unknown-method", Case(("methods", "surf"), 2, "unknown method 'surf'")),
        ("extra-argument", Case(("methods", "orb", "sift"), 2, "unrecognized arguments")),
    ],
    "cli": [
        ("unknown-command", Case(("extrct",), 2, "invalid choice")),
    ],
    "demo": [
        ("set-type", Case(("demo", *ORB, "--set", "max_keypoints=abc", "--out", OUT),
                          2, "'max_keypoints'")),
        ("set-unknown-key", Case(("demo", *ORB, "--set", "bogus=1", "--out", OUT),
                                 2, "unknown parameter 'bogus'")),
        ("negative-size", Case(("demo", *ORB, "--set", "resize.max_edge=-1", "--out", OUT),
                               2, "resize.max_edge")),
        ("precision", Case(("demo", *ORB, "--set", "precision=fp8", "--out", OUT),
                           2, "precision")),
        ("unknown-method", Case(("demo", "--method", "surf", "--out", OUT),
                                2, "unknown method 'surf'")),
        ("frames", Case(("demo", *ORB, "--frames", "0", "--out", OUT), 2, "--frames")),
        ("bag-missing", Case(("demo", *ORB, "--bag", "{missing_dir}", "--out", OUT),
                             2, "no_such_dir")),
        ("weights-missing", Case(("demo", "--method", "superpoint", "--weights",
                                  "{missing_pth}", "--out", OUT), 2, "weights file not found")),
        pytest.param("images-folder-missing",
                     Case(("demo", *ORB, "--images", "{missing_dir}", "--out", OUT),
                          2, "no_such_dir"),
                     ),
        pytest.param("device", Case(("demo", *ORB, "--set", "device=gpu0", "--out", OUT),
                                    2, "device")),
        pytest.param("weights-other-method",
                     Case(("demo", "--method", "d2net", "--weights", "{sp}", "--out", OUT),
                          2, "holds superpoint weights")),
        pytest.param("weights-corrupt",
                     Case(("demo", "--method", "superpoint", "--weights", "{junk}", "--out", OUT),
                          2, "cannot read checkpoint")),
    ],
    "run": [
        ("set-type", Case(("run", *ORB, "--synthetic", "--set", "max_keypoints=abc"),
                          2, "'max_keypoints'")),
        ("set-unknown-key", Case(("run", *ORB, "--synthetic", "--set", "bogus=1"),
                                 2, "unknown parameter 'bogus'")),
        ("unknown-method", Case(("run", "--method", "surf", "--synthetic"),
                                2, "unknown method 'surf'")),
        ("config-missing", Case(("run", "{missing_dir}/x.yaml", "--synthetic"),
                                2, "parameter file not found")),
        ("bag-missing", Case(("run", *ORB, "--bag", "{missing_dir}"), 2, "no_such_dir")),
        ("weights-missing", Case(("run", "--method", "superpoint", "--synthetic", "--set",
                                  "weights={missing_pth}"), 2, "weights file not found")),
        ("frames", Case(("run", *ORB, "--synthetic", "--frames", "-1"), 2, "--frames")),
        pytest.param("device", Case(("run", *ORB, "--synthetic", "--set", "device=gpu0"),
                                    2, "device")),
        pytest.param("weights-other-method",
                     Case(("run", "--method", "d2net", "--synthetic", "--set", "weights={sp}"),
                          2, "holds superpoint weights")),
    ],
}


def _params() -> list[Any]:
    out = []
    for command, rows in CASES.items():
        for row in rows:
            marks = getattr(row, "marks", ())  # pytest.param(name, case, marks=...)
            name, case = row.values if hasattr(row, "marks") else row
            out.append(pytest.param(case, id=f"{command}-{name}", marks=marks))
    return out


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_refused_with_one_line(case: Case, files: dict[str, str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture,
                                            caplog: pytest.LogCaptureFixture,
                                            no_processes: list[Any]) -> None:
    result = run_cli(expand(case.argv, files, tmp_path), capsys, caplog)
    assert_refused(result, case.status, case.fragment)
    assert not list(tmp_path.rglob("*.npz")) or case.status == 1  # nothing half-written


# ------------------------------------------------------------------------------------ processes
def _subprocess(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "local_features_ros.cli", *argv],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_real_processes_exit_status_and_one_line(files: dict[str, str], tmp_path: Path) -> None:
    """As a user runs it: OpenCV's own log lines do not add to the one error line, and
    ``--set precision=...`` (a ``build_extractor`` argument, not a config key) works."""
    ok = _subprocess(["extract", *SP_RANDOM, "--set", "precision=fp32", "--set", "device=cpu",
                      "--out", str(tmp_path / "o"), files["a"]])
    assert ok.returncode == 0 and "Traceback" not in ok.stderr, ok.stderr
    assert (tmp_path / "o" / "a.npz").is_file()
    for argv, status, fragment in (
            (["extract", *ORB, "--out", str(tmp_path / "o2"), files["trunc"]], 1,
             "cannot read image"),
            (["match", "--method", "d2net", "--weights", files["sp"], "--out",
              str(tmp_path / "m.npz"), files["a"], files["b"]], 2,
             "holds superpoint weights, not d2net weights")):
        bad = _subprocess(argv)
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert bad.returncode == status and "Traceback" not in bad.stderr + bad.stdout, bad.stderr
        assert len(lines) == 1 and fragment in lines[0], bad.stderr


# ------------------------------------------------------------------------------------ vocabulary
def _imports(module: str) -> set[str]:
    tree = ast.parse((REPO / "local_features_ros" / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    return imported


def test_settings_module_imports_neither_torch_nor_ros() -> None:
    """The vocabulary and the configuration rules it parses with are importable by torch-free
    and ROS-free code (launch files, tools)."""
    assert _imports("settings") <= {"__future__", "re", "dataclasses", "typing", ".conventions",
                                    ".config"}, _imports("settings")
    assert _imports("config") <= {"__future__", "copy", "dataclasses", "math", "numbers",
                                  "typing", "yaml", ".conventions"}, _imports("config")


def test_node_parameters_and_command_line_share_one_vocabulary() -> None:
    """Per method: the node's extractor parameters (and weights/device/precision) are exactly
    the names ``--set`` accepts and ``methods`` prints, and each translates to its config key."""
    from local_features_ros import settings
    from local_features_ros.commands._common import known_settings
    from local_features_ros.extractors.base import BASE_DEFAULTS, SHARED_DEFAULTS
    from local_features_ros.registry import available_methods, get_extractor_class
    from local_features_ros.ros import params
    from local_features_ros.ros.validate import node_param_specs

    assert params.RENAMED_KEYS is settings.RENAMED_KEYS
    shared = {*SHARED_DEFAULTS, *BASE_DEFAULTS}
    for method in available_methods(include_evaluation_only=False):
        specs = node_param_specs(method)
        names = {n for n in settings.BUILD_ARGUMENTS if specs[n].target == f"node:{n}"}
        for name, spec in specs.items():
            kind, _, key = spec.target.partition(":")
            if kind == "extractor":
                names.add(name)
                assert settings.config_key(name) == key, (method, name)
                assert settings.node_name(key, shared) == name, (method, key)
                assert settings.canonical_name(key, shared) == name, (method, key)
        assert names == set(known_settings(get_extractor_class(method))), method
    routed_kinds = set()
    for name, spec in node_param_specs("superpoint").items():  # matcher and verification
        kind, _, key = spec.target.partition(":")
        if kind not in ("matcher", "lightglue", "verify") and name != "matcher.type":
            continue
        routed_kinds.add(kind)
        routed = settings.translate_settings([(name, "1")])
        if kind == "matcher":
            assert routed.matcher == {"nn": {key: "1"}}, name
        elif kind == "lightglue":
            assert routed.matcher == {"lightglue": {key: "1"}}, name
        elif kind == "verify":
            assert routed.verify == {key: "1"}, name
        else:
            assert name == "matcher.type" and routed.matcher_type == "1", name
    assert routed_kinds == {"matcher", "lightglue", "verify", "node"}
    assert settings.canonical_name("resize_max_edge", shared) == "resize.max_edge"
    assert settings.in_node_terms("resize_max_edge must be >= 0") == "resize.max_edge must be >= 0"


def test_every_command_takes_the_node_names(files: dict[str, str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture,
                                            caplog: pytest.LogCaptureFixture,
                                            no_processes: list[Any]) -> None:
    """The same ``--set`` line works in extract, match, bench, evaluate, export, demo and run,
    with the same effect; the extractor's spellings are aliases giving the same features."""
    node_names = ["--set", "resize.max_edge=64", "--set", "precision=fp32", "--set",
                  "device=cpu", "--set", f"weights={files['sp']}", "--set",
                  "extractor.nms=official"]
    sp = ["--method", "superpoint", *node_names]
    o = tmp_path
    for argv in (["extract", *sp, "--out", str(o / "node"), files["a"]],
                 ["extract", "--method", "superpoint", "--weights", files["sp"], "--set",
                  "resize_max_edge=64", "--set", "nms=official", "--out", str(o / "alias"),
                  files["a"]],
                 ["match", *sp, "--set", "matcher.ratio=0.95", "--set", "verify.model=homography",
                  "--set", "verify.ransac_threshold=2", "--out", str(o / "m.npz"), files["a"],
                  files["b"]],
                 ["bench", "--methods", "superpoint", *node_names, "--sizes", "64x48", "--runs",
                  "1", "--warmup", "0", "--json", str(o / "b.json")],
                 ["evaluate", "hpatches", files["hp"], *sp, "--json", str(o / "e.json")],
                 ["export", *sp, "--format", "torchscript", "--out", str(o / "sp.pt")]):
        result = run_cli(argv, capsys, caplog)
        assert result.status == 0 and "Traceback" not in result.err, (argv[0], result.err)
    node, alias = (np.load(o / d / "a.npz") for d in ("node", "alias"))
    assert np.allclose(node["scales"], 2.0)  # 128 px wide -> 64: the resize was applied
    assert str(np.load(o / "m.npz")["model_type"]) == "homography"
    for key in node.files:
        np.testing.assert_array_equal(node[key], alias[key])
    evaluated = json.loads((o / "e.json").read_text())
    assert evaluated["conf"]["resize_max_edge"] == 64 and evaluated["conf"]["nms"] == "official"
    assert evaluated["precision"] == "fp32" and evaluated["device"] == "cpu"
    assert json.loads((o / "b.json").read_text())[0]["precision"] == "fp32"
    assert (o / "sp.pt").is_file() and (o / "m.npz").is_file()
    for argv in (["demo", *sp, "--out", str(o / "demo")], ["run", *sp, "--synthetic"]):
        with pytest.raises(ProcessWouldStart):  # validation passed: the node would start
            cli_main(argv)
    assert len(no_processes) == 2
    for plan in no_processes:
        p = plan.params
        assert (p["resize.max_edge"], p["precision"], p["device"], p["weights"],
                p["extractor.nms"]) == (64, "fp32", "cpu", files["sp"], "official")


def test_methods_prints_the_node_names(capsys: pytest.CaptureFixture,
                                       caplog: pytest.LogCaptureFixture) -> None:
    result = run_cli(["methods", "superpoint"], capsys, caplog)
    assert result.status == 0
    assert "resize.max_edge=0" in result.out and "extractor.nms=exact" in result.out
    assert "resize_max_edge" not in result.out and " nms=" not in result.out


# ------------------------------------------------------------------------------------ weights
def test_every_learned_method_recognises_its_own_state_dict() -> None:
    """``weights_method`` names the owner of each method's key layout, and only that one (built
    on the meta device: no memory, no weights)."""
    from local_features_ros.registry import method_classes, weights_method

    for name, cls in method_classes().items():
        if not cls.is_learned:
            continue
        with torch.device("meta"):
            model = cls(device="cpu")
        assert weights_method(dict(model.state_dict())) == name
    assert weights_method({"some.layer.weight": torch.zeros(1)}) is None


# ------------------------------------------------------------------------------------ 0 keypoints
def test_zero_keypoints_warn_and_fail_only_when_trained_weights_find_nothing(
        files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture,
        caplog: pytest.LogCaptureFixture) -> None:
    """A flat image: a warning line naming the image and what to check; exit 0 while another
    image has keypoints or the method is classical; 1 when trained weights find none at all."""
    orb = run_cli(["extract", *ORB, "--out", str(tmp_path / "orb"), files["a"], files["flat"]],
                  capsys, caplog)
    warnings = [line for line in orb.err.splitlines() if ": warning: " in line]
    assert orb.status == 0 and len(warnings) == 1, orb.err
    assert "orb found 0 keypoints in" in warnings[0] and "flat.png" in warnings[0]
    assert "detection_threshold" in warnings[0]
    assert sorted(p.name for p in (tmp_path / "orb").iterdir()) == ["a.npz", "flat.npz"]
    only_flat = run_cli(["extract", *ORB, "--out", str(tmp_path / "orb2"), files["flat"]],
                        capsys, caplog)
    assert only_flat.status == 0 and ": error: " not in only_flat.err  # classical: a property
    trained = run_cli(["extract", "--method", "superpoint", "--out", str(tmp_path / "sp"),
                       files["flat"]], capsys, caplog)  # the shipped SuperPoint weights
    assert_refused(trained, 1, "found 0 keypoints in every image")
    assert "superpoint found 0 keypoints in" in trained.err and "weights" in trained.err
    assert (tmp_path / "sp" / "flat.npz").is_file()  # written, but the run reports the failure
    pair = run_cli(["match", "--method", "superpoint", "--out", str(tmp_path / "m.npz"),
                    files["flat"], files["flat"]], capsys, caplog)
    assert_refused(pair, 1, "found 0 keypoints in both images")
    assert pair.err.count(": warning: ") == 2
