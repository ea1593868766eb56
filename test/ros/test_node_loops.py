"""Place recognition in ``feature_extractor``: ``~/loop_candidates`` layout (pack/unpack round
trip) and the node on the synthetic revisit loop, as a separate process on loopback DDS.

Expectations come from the rendered trajectory, not from the node's code: the revisit loop
(``SyntheticScene.frames(n, kind="revisit")``, 15 degrees of ellipse per frame) ends one step
before its start, so the last frames must find the first ones (see test_place_recognition.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from test_node import (Harness, image_msg, parse_cloud, stamp_of, start_node,  # noqa: E402
                       stop_node)

from local_features_ros.place_recognition import Candidate, KeyframeDatabase  # noqa: E402
from local_features_ros.ros.messages import (loop_candidates_to_pointcloud2,  # noqa: E402
                                             pointcloud2_to_loop_candidates)

W, H = 320, 240
N_FRAMES = 24
NODE = "/feature_extractor"
LOOP_FIELDS = [("keyframe_id", 0, 6), ("keyframe_stamp_sec", 4, 5),
               ("keyframe_stamp_nanosec", 8, 6), ("votes", 12, 6), ("inliers", 16, 6),
               ("score", 20, 7)]


# ----------------------------------------------------------------------------------- layout
def test_loop_candidates_pack_unpack_round_trip():
    header = Header(frame_id="cam", stamp=Time(sec=42, nanosec=7))
    cands = [Candidate(2**32 - 1, votes=300, inliers=120, score=120.0),
             Candidate(0, votes=17, inliers=0, score=17.0),
             Candidate(5, votes=2**32 - 1, inliers=16, score=16.5)]
    stamps = {2**32 - 1: Time(sec=-2, nanosec=999_999_999), 0: (7, 1), 5: 1.25, 99: (0, 0)}
    msg = loop_candidates_to_pointcloud2(header, cands, stamps)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        (n, o, d, 1) for n, o, d in LOOP_FIELDS]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 3, 24, 72)
    assert not msg.is_bigendian and msg.is_dense and len(msg.data) == 72
    assert msg.header.frame_id == "cam" and stamp_of(msg) == (42, 7)
    want = {"keyframe_id": [2**32 - 1, 0, 5], "keyframe_stamp_sec": [-2, 7, 1],
            "keyframe_stamp_nanosec": [999_999_999, 1, 250_000_000],
            "votes": [300, 17, 2**32 - 1], "inliers": [120, 0, 16], "score": [120.0, 17.0, 16.5]}
    # read once from the field table only (what any consumer does), once with the inverse
    for cols in (parse_cloud(msg), pointcloud2_to_loop_candidates(msg)):
        assert set(cols) == set(want)
        for name, values in want.items():
            np.testing.assert_array_equal(cols[name], values, err_msg=name)
    # Little-endian bytes, checked by hand for the first point.
    raw = bytes(msg.data)
    assert raw[0:4] == b"\xff\xff\xff\xff" and raw[4:8] == (-2).to_bytes(4, "little", signed=True)
    assert raw[12:16] == (300).to_bytes(4, "little")
    # No candidate: an empty cloud that still names its fields.
    empty = loop_candidates_to_pointcloud2(header, [], stamps)
    assert empty.width == 0 and len(empty.data) == 0 and len(empty.fields) == 6
    assert all(v.shape == (0,) for v in pointcloud2_to_loop_candidates(empty).values())
    # Ids and counts that do not fit the layout are refused, not wrapped.
    with pytest.raises(KeyError):
        loop_candidates_to_pointcloud2(header, [Candidate(3, 1, 1, 1.0)], stamps)
    for bad in (Candidate(-1, 1, 1, 1.0), Candidate(2**32, 1, 1, 1.0),
                Candidate(0, -1, 1, 1.0), Candidate(0, 1, 2**32, 1.0)):
        with pytest.raises(ValueError):
            loop_candidates_to_pointcloud2(header, [bad], {**stamps, -1: 0.0, 2**32: 0.0})
    with pytest.raises(ValueError):
        loop_candidates_to_pointcloud2(header, [Candidate("a", 1, 1, 1.0)], {"a": 0.0})
    with pytest.raises(ValueError):  # a cloud of another layout
        pointcloud2_to_loop_candidates(PointCloud2(fields=msg.fields[:3], point_step=12))


# ----------------------------------------------------------------------------------- node
def _frames():
    from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene

    return list(SyntheticScene(0, PinholeCamera.default(W, H)).frames(N_FRAMES, kind="revisit"))


def _start(ros_env: dict, log: Path, **params: Any) -> tuple[Harness, Any]:
    """Node + harness that also records ``~/loop_candidates`` (subscribed before discovery)."""
    proc = start_node(ros_env, log, **params)
    h = Harness(int(ros_env["ROS_DOMAIN_ID"]))
    h.got["loops"] = []
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    h.node.create_subscription(PointCloud2, f"{NODE}/loop_candidates", h.got["loops"].append,
                               QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    try:
        h.wait_ready(proc)
    except BaseException:
        stop_node(proc)
        h.close()
        raise
    return h, proc


def _loops_for(h: Harness, stamp: tuple[int, int], timeout: float = 30.0) -> PointCloud2 | None:
    return h.spin_until(lambda: next((m for m in h.got["loops"] if stamp_of(m) == stamp), None),
                        timeout)


def _prime(h: Harness, sec: int, timeout: float = 30.0) -> None:
    """Flat gray frames (no keypoints: empty keyframes, never a candidate) until one comes back
    on ``~/loop_candidates`` -- the output this test reads -- so discovery has settled."""
    flat = np.full((H, W, 3), 128, np.uint8)
    end, k = time.monotonic() + timeout, 0
    while time.monotonic() < end:
        h.pub_image.publish(image_msg(flat, "rgb8", (sec, k)))
        if _loops_for(h, (sec, k), timeout=0.5) is not None:
            return
        k += 1
    raise AssertionError("node never answered a priming frame on ~/loop_candidates")


def _send(h: Harness, image: np.ndarray, stamp: tuple[int, int]) -> dict[str, np.ndarray]:
    h.pub_image.publish(image_msg(image, "rgb8", stamp))
    msg = _loops_for(h, stamp)
    assert msg is not None, f"no loop candidates cloud for {stamp}"
    assert msg.header.frame_id == "cam" and msg.point_step == 24
    return parse_cloud(msg)


PARAMS = {"method": "sift", "max_keypoints": 400, "process_every_frame": True,
          "diagnostic_period": 0.25, "qos.depth": 50,
          # raw 230 kB frames: reliable input so no fragment is lost on a loaded machine
          "qos_overrides./image.subscription.reliability": "reliable",
          "place_recognition.enable": True, "place_recognition.keyframe_every": 1,
          "place_recognition.exclude_recent": 3}


@pytest.mark.ros
def test_node_finds_the_loop_closure(ros_env, tmp_path):
    frames = _frames()
    db_path = tmp_path / "keyframes.npz"
    stamps = [(100 + i, 500) for i in range(N_FRAMES)]
    index_of = {st: i for i, st in enumerate(stamps)}
    h, proc = _start(ros_env, tmp_path / "node.log", **PARAMS,
                     **{"place_recognition.database": str(db_path)})
    try:
        _prime(h, 1000)
        got = [_send(h, fr.image, st) for fr, st in zip(frames, stamps)]
        id_offsets = set()
        for i, c in enumerate(got):
            kf_stamps = list(zip(c["keyframe_stamp_sec"].tolist(),
                                 c["keyframe_stamp_nanosec"].tolist()))
            # every candidate is an earlier keyframe of ours (flat priming keyframes have no
            # features, so they never get a vote) outside the exclude_recent window
            assert all(st in index_of and index_of[st] < i - 3 for st in kf_stamps), (i, kf_stamps)
            assert len(kf_stamps) <= 3  # top_k default
            assert np.all(c["inliers"] >= 15) and np.all(c["votes"] > 0)
            np.testing.assert_array_equal(c["score"], c["inliers"].astype(np.float32))
            assert np.all(np.diff(c["inliers"].astype(np.int64)) <= 0)  # best first
            # keyframe id = running counter: a fixed offset (the priming frames) from the index
            id_offsets |= {int(k) - index_of[st] for k, st in zip(c["keyframe_id"], kf_stamps)}
        assert len(id_offsets) == 1, id_offsets
        (offset,) = id_offsets
        assert offset >= 1
        # The loop closes: the last two frames' best candidates are the first keyframes.
        best = {q: index_of[(int(got[q]["keyframe_stamp_sec"][0]),
                             int(got[q]["keyframe_stamp_nanosec"][0]))]
                for q in (N_FRAMES - 2, N_FRAMES - 1) if got[q]["inliers"].size}
        assert set(best) == {N_FRAMES - 2, N_FRAMES - 1} and set(best.values()) <= {0, 1}, best
        # ... clearly above what the far side of the loop (frames 10..19) finds in frames 0..2
        far = [int(n) for q in range(10, 20) for n, s in zip(got[q]["inliers"],
                                                            got[q]["keyframe_stamp_sec"])
               if index_of[(int(s), 500)] <= 2]
        top = int(got[N_FRAMES - 1]["inliers"][0])
        assert top > 2 * max(far, default=0), (top, far)

        d = h.last_diag(lambda v: int(v.get("frames_processed", 0)) == offset + N_FRAMES
                        and int(v.get("keyframes", -1)) == offset + N_FRAMES)
        assert d is not None, diag_dump(h)
        assert float(d["loop_query_ms"]) > 0 and int(d["loop_errors"]) == 0
        assert int(d["loop_candidates"]) == sum(c["inliers"].size for c in got)
        loop_query_ms = float(d["loop_query_ms"])

        # Runtime parameters: validated by range, restart-only ones refused, applied next frame.
        (res,) = h.set_params(**{"place_recognition.keyframe_every": 0})
        assert not res.successful and "out of range" in res.reason, res.reason
        (res,) = h.set_params(**{"place_recognition.max_keyframes": 10})
        assert not res.successful and "read-only" in res.reason, res.reason
        (res,) = h.set_params(**{"place_recognition.top_k": 1})
        assert res.successful
        c = _send(h, frames[-1].image, (200, 0))
        assert c["keyframe_id"].size == 1 and int(c["keyframe_id"][0]) - offset in (0, 1)
        res = h.set_params(**{"place_recognition.min_inliers": 100000,
                              "place_recognition.keyframe_every": 2})
        assert [r.successful for r in res] == [True, True]
        # keyframe_every 2: 200 was a keyframe, so 201 is skipped and 202 is the next one
        h.pub_image.publish(image_msg(frames[-1].image, "rgb8", (201, 0)))
        assert h.features_for((201, 0)) is not None
        c = _send(h, frames[-1].image, (202, 0))
        assert _loops_for(h, (201, 0), timeout=0.5) is None
        assert c["keyframe_id"].size == 0  # min_inliers 100000: nothing qualifies
        assert proc.poll() is None
        assert stop_node(proc) == 0
    finally:
        stop_node(proc)
        h.close()
    text = (tmp_path / "node.log").read_bytes().decode(errors="replace")
    assert "Traceback" not in text and "place recognition failed" not in text
    n_saved = offset + N_FRAMES + 2  # 200 and 202 were keyframes, 201 was not
    assert f"saved {n_saved} keyframes" in text, text[-2000:]

    # The saved database: every keyframe with the stamp of its image.
    db = KeyframeDatabase.load(db_path)
    assert len(db) == n_saved and db.keyframe_ids == list(range(n_saved))
    assert db._frames[offset].meta == {"stamp_sec": 100, "stamp_nanosec": 500}

    # A restarted node loads it: frame 0 seen again is found under its old id and stamp.
    h, proc = _start(ros_env, tmp_path / "node2.log", **PARAMS,
                     **{"place_recognition.database": str(db_path)})
    try:
        _prime(h, 1000)
        c = _send(h, frames[0].image, (300, 0))
        assert c["keyframe_id"].size >= 1
        assert (int(c["keyframe_id"][0]), int(c["keyframe_stamp_sec"][0]),
                int(c["keyframe_stamp_nanosec"][0])) == (offset, 100, 500)
        assert int(c["inliers"][0]) > 200  # the very same image
    finally:
        stop_node(proc)
        h.close()
    text2 = (tmp_path / "node2.log").read_bytes().decode(errors="replace")
    assert f"loaded {n_saved} keyframes" in text2
    print(f"loop closure: top inliers {top}, far side max {max(far, default=0)}, "
          f"loop_query_ms {loop_query_ms:.1f}")


@pytest.mark.ros
def test_place_recognition_rows_are_the_core_settings():
    """The node's ``place_recognition.*`` rows are generated from ``LoopSettings``: the same
    keys, defaults, runtime flags, descriptions and ranges, and a frame's values are read back
    into it (a key the node did not give keeps the core default)."""
    from local_features_ros.loop_closure import LoopSettings
    from local_features_ros.ros.loop_closure import NodeLoops
    from local_features_ros.ros.params import PLACE_RECOGNITION_PREFIX as PRE
    from local_features_ros.ros.params import node_defaults, place_recognition_specs

    specs = place_recognition_specs()
    assert {s.name.removeprefix(PRE): s.default for s in specs} == LoopSettings.defaults()
    assert {s.name.removeprefix(PRE) for s in specs if s.runtime} == LoopSettings.runtime_keys
    for s in specs:
        key = s.name.removeprefix(PRE)
        info = LoopSettings.key_info[key]
        assert s.target == "node:" + s.name and s.description == info.description
        assert s.int_range == info.int_range
    assert node_defaults()[PRE + "min_inliers"] == LoopSettings().min_inliers == 60
    assert NodeLoops.settings({}) == LoopSettings()
    assert NodeLoops.settings({PRE + "min_inliers": 20, "publish_overlay": True}).min_inliers == 20


def test_bad_place_recognition_config_exits_2(ros_env, tmp_path):
    bad_file = tmp_path / "corrupt.npz"
    bad_file.write_bytes(b"not a keyframe database")
    for params, needle in (({"place_recognition.max_keyframes": 0}, "max_keyframes"),
                           ({"place_recognition.database": str(bad_file)}, "cannot be loaded")):
        log = tmp_path / "startup.log"
        proc = start_node(ros_env, log, method="orb", **{"place_recognition.enable": True},
                          **params)
        try:
            rc = proc.wait(timeout=90)
        finally:
            stop_node(proc)
        text = log.read_bytes().decode(errors="replace")
        assert rc == 2, text
        assert "configuration error" in text and needle in text, text


def test_node_side_only_publishes_and_counts_the_pipelines_outcome():
    """``NodeLoops.report`` (no ROS process): a keyframe's candidates go to the publisher with
    the query header and their keyframes' stamps and are counted; a frame that was not a
    keyframe does nothing; a failed step or publisher is counted and logged once per period,
    and nothing at all while the node stops."""
    from types import SimpleNamespace

    from local_features_ros.loop_closure import LoopResult
    from local_features_ros.ros.diagnostics import NodeStats
    from local_features_ros.ros.loop_closure import NodeLoops

    stats, warnings, sent = NodeStats(), [], []
    loops = NodeLoops(None, SimpleNamespace(warning=warnings.append), stats)
    header = Header(frame_id="cam", stamp=Time(sec=3, nanosec=4))
    cands = [Candidate(7, votes=40, inliers=30, score=30.0)]
    found = SimpleNamespace(loops=LoopResult(cands, {7: (1, 2)}, 2.5, 8), loop_error=None)
    loops.report(found, header, lambda *a: sent.append(a), lambda: False)
    assert sent == [(header, cands, {7: (1, 2)})]
    snap = stats.snapshot()
    assert (snap["keyframes"], snap["loop_candidates"], stats.loop_errors) == (8, 1, 0)
    loops.report(SimpleNamespace(loops=None, loop_error=None), header,
                 lambda *a: sent.append(a), lambda: False)
    assert len(sent) == 1
    failed = SimpleNamespace(loops=None, loop_error=RuntimeError("query failed"))
    loops.report(failed, header, lambda *a: sent.append(a), lambda: False)
    loops.report(failed, header, lambda *a: sent.append(a), lambda: False)
    assert stats.loop_errors == 2 and len(warnings) == 1 and "query failed" in warnings[0]

    def broken(*_a):
        raise OSError("publisher gone")

    loops.report(found, header, broken, lambda: False)
    assert stats.loop_errors == 3
    loops.report(failed, header, broken, lambda: True)  # stopping: not an error
    assert stats.loop_errors == 3 and len(sent) == 1
    assert NodeLoops.settings({"place_recognition.top_k": 2}).top_k == 2


def diag_dump(h: Harness) -> str:
    from test_node import diag_values

    return str([diag_values(m) for m in h.got["diag"][-2:]])
