"""rosbags I/O without ROS: round trips in sqlite3 and MCAP, bad messages, bad bags, time ranges."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from local_features_ros.bags import (
    BagError,
    BagReport,
    iter_depth,
    iter_images,
    iter_poses,
    iter_raw,
    list_topics,
    read_camera_info,
    write_synthetic_bag,
)

T0 = 1_700_000_000.25


def frames(n: int = 5, h: int = 24, w: int = 32) -> list[tuple[float, np.ndarray]]:
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = 10 * i  # frame index in the red channel
        img[..., 1] = np.arange(w, dtype=np.uint8)[None, :] * 4  # horizontal ramp
        img[..., 2] = 200
        out.append((T0 + 0.1 * i, img))
    return out


def poses(n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("xyz", [0.1 * i, -0.05 * i, 0.2]).as_matrix()
        T[:3, 3] = [i, 2.0 * i, -1.0]
        out.append(T)
    return out


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip(tmp_path, storage) -> None:
    fr = frames()
    K = np.array([[50.0, 0, 15.5], [0, 51.0, 11.5], [0, 0, 1]])
    depth = [np.full((24, 32), 1.0 + i, np.float32) for i in range(5)]
    depth[0][0, 0] = np.nan
    path = write_synthetic_bag(tmp_path / "bag", fr, storage=storage, K=K, depth=depth,
                               poses=poses(5), encoding="bgr8")
    assert any(path.glob("*.mcap" if storage == "mcap" else "*.db3"))
    assert list_topics(path) == {
        "/camera/image_raw": "sensor_msgs/msg/Image",
        "/camera/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
        "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        "/camera/depth": "sensor_msgs/msg/Image",
        "/camera/pose": "geometry_msgs/msg/PoseStamped",
    }
    report = BagReport()
    raw = list(iter_images(path, ["/camera/image_raw"], report=report))
    assert report.read == 5 and report.skipped == 0
    for (stamp, rgb), got in zip(fr, raw):
        assert got.stamp == pytest.approx(stamp, abs=1e-6) and got.bag_time_ns == round(stamp * 1e9)
        assert got.encoding == "bgr8" and got.frame_id == "camera_optical_frame"
        assert np.array_equal(got.image, rgb)  # bgr8 on the wire, RGB out
    comp = list(iter_images(path, ["/camera/image_raw/compressed"]))
    assert len(comp) == 5
    for (_, rgb), got in zip(fr, comp):
        assert got.image.shape == rgb.shape and np.abs(got.image.astype(int) - rgb).mean() < 6
    info = read_camera_info(path, "/camera/camera_info")
    assert np.allclose(info["K"], K) and (info["width"], info["height"]) == (32, 24)
    assert info["distortion_model"] == "plumb_bob" and info["D"].shape == (5,)
    ds = list(iter_depth(path, "/camera/depth"))
    assert len(ds) == 5 and np.isnan(ds[0][1][0, 0]) and np.nanmax(ds[3][1]) == pytest.approx(4.0)
    ps = list(iter_poses(path, "/camera/pose"))
    assert len(ps) == 5
    for (stamp, T), (fs, _), Tref in zip(ps, fr, poses(5)):
        assert stamp == pytest.approx(fs, abs=1e-6) and np.allclose(T, Tref, atol=1e-9)
    recs = list(iter_raw(path, ["/camera/camera_info", "/camera/pose"]))
    assert len(recs) == 10
    assert all(isinstance(r[3], bytes) and r[3][:4] == b"\x00\x01\x00\x00" for r in recs)  # CDR LE
    assert [r[2] for r in recs] == sorted(r[2] for r in recs)


def test_mono16_and_default_topics(tmp_path) -> None:
    path = write_synthetic_bag(tmp_path / "b", frames(2), encoding="mono16", compressed_topic=None,
                               camera_info_topic=None)
    imgs = list(iter_images(path))  # all image topics
    assert len(imgs) == 2 and imgs[0].image.dtype == np.uint8 and imgs[0].image.ndim == 2
    # gray of (R, G, B) = 0.299 R + 0.587 G + 0.114 B; mono16 = gray * 257 -> /257 gives gray
    assert abs(int(imgs[0].image[0, 0]) - round(0.114 * 200)) <= 1
    with pytest.raises(BagError, match="not of type"):
        read_camera_info(path, "/camera/image_raw")


def test_corrupt_messages_are_skipped_and_counted(tmp_path) -> None:
    path = write_synthetic_bag(tmp_path / "bag", frames(7), corrupt_every=3)
    report = BagReport()
    topics = ["/camera/image_raw", "/camera/image_raw/compressed"]
    got = list(iter_images(path, topics, report=report))
    # frames 2 and 5 are bad in both topics
    assert len(got) == 10 and report.read == 10 and report.skipped == 4
    assert report.reasons == {"size_mismatch": 2, "corrupt": 2}
    assert sorted({round(g.stamp - T0, 3) for g in got}) == [0.0, 0.1, 0.3, 0.4, 0.6]


def test_bad_bags_and_topics(tmp_path) -> None:
    with pytest.raises(BagError, match="does not exist"):
        list(iter_images(tmp_path / "nope"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("hi")
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        list_topics(tmp_path / "plain")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9\n")
    with pytest.raises(BagError, match="cannot open"):
        list_topics(broken)
    path = write_synthetic_bag(tmp_path / "ok", frames(2))
    with pytest.raises(BagError, match="/camera/missing"):
        list(iter_images(path, ["/camera/missing"]))
    with pytest.raises(BagError):
        write_synthetic_bag(tmp_path / "ok", frames(1))  # exists


def test_time_range(tmp_path) -> None:
    path = write_synthetic_bag(tmp_path / "bag", frames(6), storage="mcap", compressed_topic=None)
    got = list(iter_images(path, ["/camera/image_raw"], start=T0 + 0.15, end=T0 + 0.45))
    assert [round(g.stamp - T0, 3) for g in got] == [0.2, 0.3, 0.4]
    got = list(iter_images(path, ["/camera/image_raw"], start=T0 + 0.5))
    assert [round(g.stamp - T0, 3) for g in got] == [0.5]
    assert list(iter_images(path, ["/camera/image_raw"], end=T0 - 1)) == []


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_storage_file_is_a_bag_error(tmp_path, storage) -> None:
    path = write_synthetic_bag(tmp_path / "bag", frames(3), storage=storage)
    f = next(x for x in path.iterdir() if x.suffix in (".db3", ".mcap"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(BagError, match=str(path.name)):
        list(iter_images(path))
