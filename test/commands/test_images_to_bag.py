"""``local-features images-to-bag``: layouts, CameraInfo, timing, compressed-only bags, depth,
and one-line errors. Every dataset is generated here, a few pixels large."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from local_features_ros.bags import (get_bag_typestore, guess_K, iter_depth, iter_images,
                                     iter_raw, list_topics, read_camera_info)
from local_features_ros.cli import main as cli_main
from local_features_ros.commands.images_to_bag import DEFAULT_EPOCH
from local_features_ros.image_folders import detect_layout, load_sequence

PROG = "local-features images-to-bag"
FX, CX, CY, TX = 700.5, 15.25, 11.75, -378.27  # TX = -fx * baseline, baseline 0.54 m
P0 = [FX, 0, CX, 0, 0, FX, CY, 0, 0, 0, 1, 0]
P1 = [FX, 0, CX, TX, 0, FX, CY, 0, 0, 0, 1, 0]


def _img(seed: int, h: int = 24, w: int = 32, ch: int = 1) -> np.ndarray:
    """Smooth random pixels: distinct per seed, and JPEG-friendly."""
    coarse = np.random.default_rng(seed).integers(0, 256, (h // 4, w // 4, ch), dtype=np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    return img.reshape((h, w) if ch == 1 else (h, w, ch))


def _write(folder: Path, names: list[str], ch: int = 1, seed: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    imgs = []
    for i, name in enumerate(names):
        img = _img(seed + i, ch=ch)
        assert cv2.imwrite(str(folder / name), img)
        imgs.append(img)
    return imgs


def _row(values: list[float]) -> str:
    return " ".join(f"{v:.12e}" for v in values)


def kitti(root: Path, *, stereo: bool = True, labelled: bool = False, n: int = 4,
          times: list[float] | None = None) -> Path:
    names = [f"{i:06d}.png" for i in range(n)]
    if stereo:
        _write(root / "image_l", names)
        _write(root / "image_r", names, seed=100)
    else:
        _write(root / "image_0", names)
    rows = [("P0: " if labelled else "") + _row(P0), ("P1: " if labelled else "") + _row(P1)]
    (root / "calib.txt").write_text("\n".join(rows + (["Tr: " + _row([0.0] * 12)]
                                                     if labelled else [])))
    if times is not None:
        (root / "times.txt").write_text("".join(f"{t:.6e}\n" for t in times))
    return root


def tum(root: Path, n: int = 3) -> tuple[Path, list[np.ndarray], list[float], list[float]]:
    t_rgb = [1305031102.175304 + 0.1 * i for i in range(n)]
    t_depth = [t + 0.012 for t in t_rgb]
    _write(root / "rgb", [f"{t:.6f}.png" for t in t_rgb], ch=3)
    (root / "depth").mkdir()
    depths = []
    for i, t in enumerate(t_depth):
        d = (np.random.default_rng(50 + i).integers(0, 13000, (24, 32)) * 5).astype(np.uint16)
        d[0, :4] = 0  # no measurement
        cv2.imwrite(str(root / "depth" / f"{t:.6f}.png"), d)
        depths.append(d)
    for name, ts in (("rgb", t_rgb), ("depth", t_depth)):
        lines = ["# timestamp filename", "# generated"] + [f"{t:.6f} {name}/{t:.6f}.png"
                                                           for t in ts]
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root, depths, t_rgb, t_depth


def run(*argv: str | Path) -> int:
    return cli_main(["images-to-bag", *map(str, argv)])


def stamps(bag: Path, topic: str) -> list[float]:
    ts = get_bag_typestore()
    out = []
    for _, msgtype, _, raw in iter_raw(bag, [topic]):
        h = ts.deserialize_cdr(raw, msgtype).header
        out.append(h.stamp.sec + h.stamp.nanosec * 1e-9)
    return out


def camera_info_msg(bag: Path, topic: str):
    ts = get_bag_typestore()
    _, msgtype, _, raw = next(iter_raw(bag, [topic]))
    return ts.deserialize_cdr(raw, msgtype)


# ----------------------------------------------------------------------------------------------


def test_every_layout_is_detected(tmp_path: Path) -> None:
    kitti(tmp_path / "ks")
    kitti(tmp_path / "km", stereo=False, labelled=True)
    tum(tmp_path / "tum")
    _write(tmp_path / "plain", ["a.png", "b.png"])
    colour = tmp_path / "kc"
    _write(colour / "image_2", ["000000.png"], ch=3)
    _write(colour / "image_3", ["000000.png"], ch=3)
    (colour / "calib.txt").write_text("\n".join(f"P{i}: " + _row(P0 if i % 2 == 0 else P1)
                                                for i in range(4)))
    expect = {"ks": ("kitti", "stereo", {"left", "right"}), "km": ("kitti", "mono", {"mono"}),
              "tum": ("tum", "rgbd", {"rgb", "depth"}), "plain": ("folder", "mono", {"mono"}),
              "kc": ("kitti", "stereo", {"left", "right"})}
    for name, (layout, kind, roles) in expect.items():
        assert detect_layout(tmp_path / name) == layout
        seq = load_sequence(tmp_path / name, intrinsics=None)
        assert (seq.layout, seq.kind, set(seq.streams)) == (layout, kind, roles), name
    assert load_sequence(tmp_path / "ks", mono=True).kind == "mono"
    assert load_sequence(tmp_path / "ks" / "image_l", "folder").layout == "folder"
    assert run(tmp_path / "plain", tmp_path / "forced.bag", "--layout", "tum") == 2


def test_kitti_stereo_camera_info_rate_and_frame_ids(tmp_path: Path) -> None:
    src = kitti(tmp_path / "seq", n=5)
    out = tmp_path / "bag"
    assert run(src, out, "--rate", "5", "--storage", "mcap") == 0
    assert list_topics(out) == {
        "/stereo/left/image_raw": "sensor_msgs/msg/Image",
        "/stereo/right/image_raw": "sensor_msgs/msg/Image",
        "/stereo/left/camera_info": "sensor_msgs/msg/CameraInfo",
        "/stereo/right/camera_info": "sensor_msgs/msg/CameraInfo"}
    left = camera_info_msg(out, "/stereo/left/camera_info")
    right = camera_info_msg(out, "/stereo/right/camera_info")
    K = np.array(P0).reshape(3, 4)[:, :3].reshape(-1)
    assert np.array_equal(left.k, K) and np.array_equal(right.k, K)
    assert np.array_equal(left.p, np.array(P0, float))
    assert np.array_equal(right.p, np.array(P1, float))  # Tx = -fx * B
    assert right.p[3] == pytest.approx(-FX * 0.54)
    assert (left.width, left.height) == (32, 24)
    assert (left.header.frame_id, right.header.frame_id) == ("camera_optical_frame",
                                                             "camera_optical_frame_right")
    for topic in ("/stereo/left/image_raw", "/stereo/right/camera_info"):
        assert stamps(out, topic) == pytest.approx([DEFAULT_EPOCH + i * 0.2 for i in range(5)],
                                                   abs=1e-9)
    frames = [im for im in iter_images(out) if im.topic == "/stereo/right/image_raw"]
    assert len(frames) == 5 and frames[0].encoding == "mono8"
    assert np.array_equal(frames[0].image, cv2.imread(str(src / "image_r" / "000000.png"), -1))


def test_kitti_mono_times_txt_start_time_and_frame_limit(tmp_path: Path) -> None:
    times = [0.0, 0.103875, 0.207894, 0.31, 0.42, 0.55]  # more lines than frames, as in KITTI
    src = kitti(tmp_path / "seq", stereo=False, labelled=True, n=4, times=times)
    out = tmp_path / "bag"
    assert run(src, out, "--frames", "3", "--frame-id", "cam0") == 0
    assert set(list_topics(out)) == {"/camera/image_raw", "/camera/camera_info"}
    assert stamps(out, "/camera/image_raw") == pytest.approx(
        [DEFAULT_EPOCH + t for t in times[:3]], abs=1e-6)
    info = read_camera_info(out, "/camera/camera_info")
    assert np.array_equal(info["K"], np.array(P0).reshape(3, 4)[:, :3])
    assert info["frame_id"] == "cam0"
    out2 = tmp_path / "bag2"
    assert run(src, out2, "--start-time", "100.5") == 0
    assert stamps(out2, "/camera/camera_info") == pytest.approx(
        [100.5 + t for t in times[:4]], abs=1e-6)


@pytest.mark.parametrize("metres", [False, True])
def test_tum_rgbd_depth_round_trip_and_preset(tmp_path: Path, metres: bool) -> None:
    src, depths, t_rgb, t_depth = tum(tmp_path / "rgbd_dataset")
    out = tmp_path / "bag"
    assert run(src, out, "--camera", "tum-fr2", *(["--depth-metres"] if metres else [])) == 0
    assert list_topics(out) == {"/camera/rgb/image_raw": "sensor_msgs/msg/Image",
                                "/camera/depth/image": "sensor_msgs/msg/Image",
                                "/camera/rgb/camera_info": "sensor_msgs/msg/CameraInfo"}
    assert stamps(out, "/camera/rgb/image_raw") == pytest.approx(t_rgb, abs=1e-6)
    assert stamps(out, "/camera/depth/image") == pytest.approx(t_depth, abs=1e-6)
    info = camera_info_msg(out, "/camera/rgb/camera_info")
    assert np.array_equal(info.k, [520.9, 0, 325.1, 0, 521.0, 249.7, 0, 0, 1])
    assert np.array_equal(info.d, [0.2312, -0.7849, -0.0033, -0.0001, 0.9172])
    ts = get_bag_typestore()
    msgs = [ts.deserialize_cdr(raw, ty) for _, ty, _, raw in iter_raw(out, ["/camera/depth/image"])]
    assert [m.encoding for m in msgs] == ["32FC1" if metres else "16UC1"] * 3
    for m, d in zip(msgs, depths):
        if metres:
            got = np.frombuffer(bytes(m.data), "<f4").reshape(24, 32)
            want = d.astype(np.float32) / np.float32(5000)
            assert np.array_equal(np.isnan(got), d == 0)
            assert np.array_equal(got[d > 0], want[d > 0])
        else:  # REP 118 millimetres: TUM's 5000 units per metre are 5 units per mm, exact
            got = np.frombuffer(bytes(m.data), "<u2").reshape(24, 32)
            assert np.array_equal(got, d // 5)
    for (_, d_m), d in zip(iter_depth(out, "/camera/depth/image"), depths):
        assert np.allclose(d_m[d > 0], d[d > 0] / 5000.0, rtol=0, atol=1e-6)
        assert np.isnan(d_m[d == 0]).all()
    rgb = [im for im in iter_images(out, ["/camera/rgb/image_raw"])]
    assert rgb[0].encoding == "bgr8"
    src_bgr = cv2.imread(str(src / "rgb" / f"{t_rgb[0]:.6f}.png"))
    assert np.array_equal(rgb[0].image, src_bgr[..., ::-1])


def test_tum_rate_retimes_depth_between_colour_frames(tmp_path: Path) -> None:
    src, _, _, _ = tum(tmp_path / "seq")
    out = tmp_path / "bag"
    assert run(src, out, "--rate", "20", "--start-time", "50", "--intrinsics", "1,1,1,1") == 0
    assert stamps(out, "/camera/rgb/image_raw") == pytest.approx([50.0, 50.05, 50.1], abs=1e-6)
    # depth 12 ms after each colour frame of a 100 ms spacing -> 6 ms at 20 Hz; the last one
    # is past the last colour frame and stays on it
    assert stamps(out, "/camera/depth/image") == pytest.approx([50.006, 50.056, 50.1], abs=1e-6)


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_compressed_only_bag_decodes_back(tmp_path: Path, codec: str, capsys) -> None:
    src = tmp_path / "plain"
    imgs = _write(src, ["2.png", "10.png", "1.png"], ch=3)  # natural order: 1, 2, 10
    out = tmp_path / "bag"
    assert run(src, out, "--format", "compressed", "--compression", codec) == 0
    err = capsys.readouterr().err
    assert "GUESSED" in err  # no intrinsics given: said loudly
    topics = list_topics(out)
    assert topics == {"/camera/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
                      "/camera/camera_info": "sensor_msgs/msg/CameraInfo"}
    assert "sensor_msgs/msg/Image" not in topics.values()
    got = list(iter_images(out))
    assert [g.encoding for g in got] == [f"compressed:bgr8; {codec} compressed bgr8"] * 3
    for g, want_bgr in zip(got, [imgs[2], imgs[0], imgs[1]]):
        diff = np.abs(g.image.astype(int) - want_bgr[..., ::-1].astype(int))
        if codec == "png":
            assert diff.max() == 0
        else:
            assert diff.mean() < 10  # 4:2:0 chroma on 4-pixel colour blocks; wrong frame: > 30
    others = [np.abs(got[0].image.astype(int) - i[..., ::-1]).mean() for i in imgs[:2]]
    assert min(others) > 30  # a wrong frame order would be caught
    assert np.array_equal(read_camera_info(out, "/camera/camera_info")["K"], guess_K(32, 24))
    assert stamps(out, "/camera/image_raw/compressed") == pytest.approx(
        [DEFAULT_EPOCH, DEFAULT_EPOCH + 0.1, DEFAULT_EPOCH + 0.2], abs=1e-9)


def test_both_formats_intrinsics_and_encoding(tmp_path: Path) -> None:
    src = tmp_path / "plain"
    imgs = _write(src, ["a.png", "b.png"], ch=3)
    out = tmp_path / "bag"
    assert run(src, out, "--compressed", "--intrinsics", "400,401.5,16,12.5", "--encoding",
               "mono8") == 0
    assert set(list_topics(out)) == {"/camera/image_raw", "/camera/image_raw/compressed",
                                     "/camera/camera_info"}
    info = camera_info_msg(out, "/camera/camera_info")
    assert np.array_equal(info.k, [400, 0, 16, 0, 401.5, 12.5, 0, 0, 1])
    assert np.array_equal(info.p, [400, 0, 16, 0, 0, 401.5, 12.5, 0, 0, 0, 1, 0])
    raw = next(iter_images(out, ["/camera/image_raw"]))
    assert raw.encoding == "mono8"
    assert np.array_equal(raw.image, cv2.cvtColor(imgs[0], cv2.COLOR_BGR2GRAY))


def test_unreadable_files_are_skipped_and_counted(tmp_path: Path, capsys) -> None:
    src = kitti(tmp_path / "seq", n=4)
    (src / "image_r" / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "bag"
    assert run(src, out, "--rate", "10") == 0
    err = capsys.readouterr().err
    assert "skipped 1 image file(s)" in err and "000002.png" in err
    # the pair is left out of both cameras; the gap stays in the timing
    want = [DEFAULT_EPOCH + t for t in (0.0, 0.1, 0.3)]
    assert stamps(out, "/stereo/left/image_raw") == pytest.approx(want, abs=1e-9)
    assert stamps(out, "/stereo/right/camera_info") == pytest.approx(want, abs=1e-9)
    for f in (src / "image_l").iterdir():
        f.write_bytes(b"not an image")
    assert run(src, tmp_path / "none", "--overwrite") == 2
    assert "none of the" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "seq"]  # nothing left behind


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{PROG}: error: "), lines[0]
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize("case, argv, words", [
    ("missing", ["{tmp}/nope", "{tmp}/out"], "not found"),
    ("empty", ["{tmp}/empty", "{tmp}/out"], "no images"),
    ("short", ["{tmp}/plain", "{tmp}/out", "--intrinsics", "1,2,3"], "expected 4 numbers"),
    ("words", ["{tmp}/plain", "{tmp}/out", "--intrinsics", "a,b,c,d"], "not a list of numbers"),
    ("zero fx", ["{tmp}/plain", "{tmp}/out", "--intrinsics", "0,5,1,1"], "must be positive"),
    ("exists", ["{tmp}/plain", "{tmp}/existing"], "already exists"),
    ("not a bag", ["{tmp}/plain", "{tmp}/existing", "--overwrite"], "not a rosbag2 bag"),
    ("no calib", ["{tmp}/nocalib", "{tmp}/out"], "calib.txt not found"),
    ("bad calib", ["{tmp}/badcalib", "{tmp}/out"], "unreadable calibration"),
    ("rate", ["{tmp}/plain", "{tmp}/out", "--rate", "0"], "bad --rate"),
])
def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, capsys, case: str, argv: list[str],
                                         words: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    _write(tmp_path / "plain", ["0.png"])
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep.txt").write_text("user data")
    kitti(tmp_path / "nocalib", stereo=False).joinpath("calib.txt").unlink()
    kitti(tmp_path / "badcalib").joinpath("calib.txt").write_text("P0: 1 2 3\nP1: x\n")
    assert run(*(a.format(tmp=tmp_path) for a in argv)) == 2, case
    assert words in _one_line_error(capsys), case
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "existing" / "keep.txt").is_file()


def test_overwrite_replaces_an_existing_bag(tmp_path: Path, capsys) -> None:
    src = tmp_path / "plain"
    _write(src, ["0.png", "1.png", "2.png"])
    out = tmp_path / "bag"
    assert run(src, out, "--frames", "1", "--intrinsics", "30,30,16,12") == 0
    capsys.readouterr()
    assert run(src, out) == 2
    assert "--overwrite" in _one_line_error(capsys)
    assert run(src, out, "--overwrite", "--storage", "mcap") == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith(f"wrote {out}: 3 frames")
    assert "0.200 s" in summary[0] and "mcap" in summary[0]
    assert len(stamps(out, "/camera/image_raw")) == 3
    assert [p.suffix for p in out.iterdir() if p.suffix != ".yaml"] == [".mcap"]


def test_16bit_gray_and_jpeg_files(tmp_path: Path) -> None:
    src = tmp_path / "deep"
    src.mkdir()
    deep = (_img(7).astype(np.uint16) * 257 + 3)
    cv2.imwrite(str(src / "0.png"), deep)
    out = tmp_path / "bag"
    assert run(src, out, "--format", "both", "--compression", "png", "--intrinsics",
               "30,30,16,12") == 0
    ts = get_bag_typestore()
    msg = ts.deserialize_cdr(next(iter_raw(out, ["/camera/image_raw"]))[3], "sensor_msgs/msg/Image")
    assert msg.encoding == "mono16"
    assert np.array_equal(np.frombuffer(bytes(msg.data), "<u2").reshape(24, 32), deep)
    comp = ts.deserialize_cdr(next(iter_raw(out, ["/camera/image_raw/compressed"]))[3],
                              "sensor_msgs/msg/CompressedImage")
    assert comp.format == "mono16; png compressed mono16"
    assert np.array_equal(cv2.imdecode(np.asarray(comp.data), cv2.IMREAD_UNCHANGED), deep)
    jpg = tmp_path / "jpg"
    jpg.mkdir()
    cv2.imwrite(str(jpg / "0.jpg"), _img(8, ch=3))
    out2 = tmp_path / "bag2"
    assert run(jpg, out2, "--format", "compressed", "--intrinsics", "30,30,16,12") == 0
    comp = ts.deserialize_cdr(next(iter_raw(out2, ["/camera/image_raw/compressed"]))[3],
                              "sensor_msgs/msg/CompressedImage")
    assert bytes(comp.data) == (jpg / "0.jpg").read_bytes()  # no second lossy pass


def test_interrupt_leaves_nothing_behind(tmp_path: Path, monkeypatch, capsys) -> None:
    from local_features_ros.commands import images_to_bag

    src = tmp_path / "plain"
    _write(src, ["0.png", "1.png", "2.png"])
    real = images_to_bag.read_image
    calls = []

    def interrupted(path: Path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(images_to_bag, "read_image", interrupted)
    assert run(src, tmp_path / "bag", "--intrinsics", "30,30,16,12") == 130
    assert "interrupted" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]
