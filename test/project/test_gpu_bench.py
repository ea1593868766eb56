"""``bench/bench_gpu.py``: refuses to run without CUDA unless ``--allow-cpu``; with it, the same
code path writes the full table (rows x columns, failures and n/a in their cells) on the CPU.

Timings are never asserted: only the table's shape and the cells' kinds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "bench_gpu.py"


def _run(args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "LFR_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _module():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_without_cuda_exits_2_with_one_line(tmp_path):
    out = tmp_path / "gpu.md"
    r = _run(["--out", str(out)], tmp_path)  # CUDA_VISIBLE_DEVICES="" hides any GPU
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--allow-cpu" in lines[0]
    assert r.stdout == "" and not out.exists()


def test_allow_cpu_writes_the_table(tmp_path):
    out = tmp_path / "gpu.md"
    t0 = time.perf_counter()
    r = _run(["--allow-cpu", "--sizes", "64x48", "--runs", "1", "--warmup", "0",
              "--methods", "superpoint,aliked-t16,lightglue", "--keypoints", "32",
              "--compile-backend", "eager", "--out", str(out)], tmp_path)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert elapsed < 30, elapsed  # a smoke run, not a benchmark
    text = out.read_text()
    assert text in r.stdout
    table = [line for line in text.splitlines() if line.startswith("|")]
    head = [c.strip() for c in table[0].strip("|").split("|")]
    assert head == ["method", "size", "keypoints", "torch fp32 ms", "torch fp16 ms",
                    "torch.compile ms", "TensorRT fp16 ms"]
    rows = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(head), line
        rows[cells[0]] = cells
    assert list(rows) == ["superpoint", "aliked-t16", "lightglue (aliked, 32 kpts, full depth)",
                          "lightglue (aliked, 32 kpts, adaptive)"]
    number = re.compile(r"^\d+\.\d+$")
    for name, cells in rows.items():
        assert cells[1] == "64x48"
        assert number.match(cells[3]) and number.match(cells[4]), cells  # eager fp32 / fp16
        assert cells[6].startswith("n/a: "), cells  # TensorRT needs a GPU (or is not applicable)
    assert rows["superpoint"][6] == rows["aliked-t16"][6] == "n/a: no CUDA device"
    assert number.match(rows["superpoint"][5])  # torch.compile (dynamo, eager backend) runs
    assert rows["lightglue (aliked, 32 kpts, adaptive)"][5].startswith("n/a: adaptive")
    assert re.match(r"^\d+/\d+$", rows["lightglue (aliked, 32 kpts, full depth)"][2])
    assert int(rows["superpoint"][2]) > 0
    assert "--allow-cpu: not GPU numbers" in text


def test_method_list_and_cell_text():
    mod = _module()
    assert mod.expand_methods("aliked,superpoint") == ["aliked-t16", "aliked-n16",
                                                       "aliked-n16rot", "aliked-n32",
                                                       "superpoint"]
    with pytest.raises(SystemExit, match="unknown method 'orb'"):
        mod.expand_methods("superpoint,orb")
    msg = mod.short_error(RuntimeError("a | b\nc" + "x" * 300))
    assert "|" not in msg and "\n" not in msg and len(msg) <= 110
    assert mod.weights_for("lift") == "random" and mod.weights_for("superpoint") is None
    assert set(mod.COLUMNS) == set(mod.MODES)
