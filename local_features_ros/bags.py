"""rosbag2 (sqlite3 / MCAP) reading and writing with ``rosbags``: no ROS install, no rclpy.

Why: training data, offline extraction and the bag player all start from recorded bags, and this
machine (like most CI) has no rosbag2. ``rosbags`` reads and writes the CDR payloads directly;
images are decoded with the package's own cv_bridge-equivalent (:mod:`image.encodings`), which
honours ``step`` padding and endianness (``rosbags-image`` does not).

Rules shared by the readers:
- A missing path, a directory that is not a rosbag2 bag, an unreadable bag or a requested topic
  that is not in the bag raises :class:`BagError` with the reason.
- A bad *message* (undecodable CDR, inconsistent image, corrupt JPEG) never raises: it is skipped
  and counted in a :class:`BagReport` by reason.
- ``start`` / ``end`` select by bag (record) time, in absolute seconds, ``start <= t < end``.
  ``BagImage.stamp`` is the header stamp (what COLMAP / pose association should use).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from local_features_ros.image.encodings import (
    DecodeLimits,
    ImageDecodeError,
    decode_compressed,
    decode_image_msg_fields,
    encode_compressed,
    image_to_numpy,
    numpy_to_image_fields,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BagError",
    "BagImage",
    "BagReport",
    "IMAGE_TYPES",
    "POSE_TYPES",
    "get_bag_typestore",
    "write_synthetic_bag",
    "CameraBagWriter",
    "CameraInfoData",
    "guess_K",
    "list_topics",
    "iter_images",
    "iter_raw",
    "iter_depth",
    "read_camera_info",
    "iter_poses",
]

IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
COMPRESSED_MSGTYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_MSGTYPE = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE_MSGTYPE, COMPRESSED_MSGTYPE)
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "nav_msgs/msg/Odometry", "geometry_msgs/msg/TransformStamped",
              "tf2_msgs/msg/TFMessage")


class BagError(RuntimeError):
    """The bag itself (not one message) is unusable: missing, not a bag, corrupt, no such topic."""


@dataclass
class BagImage:
    """One decoded camera frame from a bag."""

    topic: str
    stamp: float  # header stamp, seconds
    bag_time_ns: int  # record time
    image: np.ndarray  # network input (encodings.to_network_input)
    encoding: str  # message encoding, or "compressed:<format>"
    frame_id: str


@dataclass
class BagReport:
    """Counts of what a reader did; ``reasons`` counts skipped messages by reason tag."""

    read: int = 0
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def get_bag_typestore() -> Any:
    """Newest ROS 2 typestore of the installed rosbags (Kilted when available)."""
    from rosbags.typesys import Stores, get_typestore

    for name in ("ROS2_KILTED", "ROS2_JAZZY", "ROS2_HUMBLE", "LATEST"):
        store = getattr(Stores, name, None)
        if store is not None:
            return get_typestore(store)
    raise BagError("rosbags offers no ROS 2 typestore")


# ----------------------------------------------------------------------------------------------
# writing


def _stamp_msgs(ts: Any, stamp: float, frame_id: str) -> Any:
    ns = int(round(float(stamp) * 1e9))
    Time = ts.types["builtin_interfaces/msg/Time"]
    Header = ts.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000),
                  frame_id=frame_id)


def _rgb_to_encoding(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """RGB uint8 frame -> array in a publishable encoding (the synthetic camera's formats)."""
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    if encoding == "rgba8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    if encoding == "bgra8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    if encoding == "mono8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding == "mono16":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    raise ValueError(f"write_synthetic_bag cannot produce encoding {encoding!r} "
                     f"(rgb8, bgr8, rgba8, bgra8, mono8, mono16)")


def _default_K(width: int, height: int) -> np.ndarray:
    f = 1.2 * max(width, height)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float64)


def write_synthetic_bag(
    path: str | Path,
    frames: Iterable[tuple[float, np.ndarray]],
    *,
    image_topic: str | None = "/camera/image_raw",
    compressed_topic: str | None = "/camera/image_raw/compressed",
    camera_info_topic: str | None = "/camera/camera_info",
    K: np.ndarray | None = None,
    storage: str = "sqlite3",
    encoding: str = "rgb8",
    depth: Iterable[np.ndarray] | None = None,
    depth_topic: str = "/camera/depth",
    corrupt_every: int = 0,
    poses: Iterable[np.ndarray] | None = None,
    pose_topic: str = "/camera/pose",
    frame_id: str = "camera_optical_frame",
    pose_frame_id: str = "world",
    overwrite: bool = False,
) -> Path:
    """Write a rosbag2 bag from RGB frames (tests, demos, the synthetic camera's recordings).

    Per frame ``(stamp_seconds, rgb uint8)``: ``sensor_msgs/Image`` in ``encoding``, a JPEG
    ``CompressedImage``, a ``CameraInfo`` (``K`` or a default pinhole), optionally a 32FC1 depth
    image (metres) and a ``PoseStamped`` from a 4x4 ``T_world_cam``. Bag time = header stamp.
    ``corrupt_every = k > 0`` makes every k-th frame (k-1, 2k-1, ...) bad on purpose: its Image
    has a ``step`` one byte short (``size_mismatch``) and its compressed payload is garbage
    (``corrupt``). ``storage``: ``sqlite3`` or ``mcap``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise ValueError(f"storage must be sqlite3 or mcap, got {storage!r}")
    if path.exists():
        if not overwrite:
            raise BagError(f"{path} already exists (pass overwrite=True to replace it)")
        shutil.rmtree(path)
    ts = get_bag_typestore()
    T = ts.types
    depth_it = iter(depth) if depth is not None else None
    pose_it = iter(poses) if poses is not None else None
    rng = np.random.default_rng(0)
    with Writer(path, version=9, storage_plugin=plugins[storage]) as writer:
        conns: dict[str, Any] = {}

        def put(topic: str, msgtype: str, msg: Any, time_ns: int) -> None:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(conns[topic], time_ns, ts.serialize_cdr(msg, msgtype))

        for i, (stamp, rgb) in enumerate(frames):
            rgb = np.asarray(rgb)
            header = _stamp_msgs(ts, stamp, frame_id)
            t_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
            h, w = rgb.shape[:2]
            bad = corrupt_every > 0 and (i + 1) % corrupt_every == 0
            if image_topic:
                arr = np.ascontiguousarray(_rgb_to_encoding(rgb, encoding))
                step = arr.strides[0]
                msg = T[IMAGE_MSGTYPE](
                    header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                    step=step - 1 if bad else step,
                    data=np.frombuffer(arr.tobytes(), np.uint8).copy())
                put(image_topic, IMAGE_MSGTYPE, msg, t_ns)
            if compressed_topic:
                payload = (b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 64, np.uint8).tobytes()
                           if bad else encode_compressed(rgb, "jpeg", 90))
                msg = T[COMPRESSED_MSGTYPE](header=header, format="rgb8; jpeg compressed bgr8",
                                            data=np.frombuffer(payload, np.uint8).copy())
                put(compressed_topic, COMPRESSED_MSGTYPE, msg, t_ns)
            if camera_info_topic:
                Kc = _default_K(w, h) if K is None else np.asarray(K, np.float64).reshape(3, 3)
                P = np.zeros((3, 4))
                P[:, :3] = Kc
                msg = T[CAMERA_INFO_MSGTYPE](
                    header=header, height=h, width=w, distortion_model="plumb_bob",
                    d=np.zeros(5), k=Kc.reshape(-1).copy(), r=np.eye(3).reshape(-1),
                    p=P.reshape(-1),
                    binning_x=0, binning_y=0,
                    roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                             width=0, do_rectify=False))
                put(camera_info_topic, CAMERA_INFO_MSGTYPE, msg, t_ns)
            if depth_it is not None:
                d = np.ascontiguousarray(np.asarray(next(depth_it), dtype="<f4"))
                msg = T[IMAGE_MSGTYPE](header=header, height=d.shape[0], width=d.shape[1],
                                       encoding="32FC1", is_bigendian=0, step=d.shape[1] * 4,
                                       data=np.frombuffer(d.tobytes(), np.uint8).copy())
                put(depth_topic, IMAGE_MSGTYPE, msg, t_ns)
            if pose_it is not None:
                Tm = np.asarray(next(pose_it), np.float64).reshape(4, 4)
                q = Rotation.from_matrix(Tm[:3, :3]).as_quat()
                G = "geometry_msgs/msg/"
                pose = T[G + "Pose"](
                    position=T[G + "Point"](x=float(Tm[0, 3]), y=float(Tm[1, 3]),
                                            z=float(Tm[2, 3])),
                    orientation=T[G + "Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                    w=float(q[3])))
                msg = T[G + "PoseStamped"](header=_stamp_msgs(ts, stamp, pose_frame_id), pose=pose)
                put(pose_topic, G + "PoseStamped", msg, t_ns)
    logger.debug("wrote synthetic bag %s", path)
    return path


def guess_K(width: int, height: int) -> np.ndarray:
    """The pinhole K used when a camera's intrinsics are unknown: ``fx = fy = 1.2 * max(w, h)``
    (about a 45 degree field of view across the long side, a common webcam/phone lens) and the
    principal point at the image centre. A placeholder, never a calibration."""
    return _default_K(int(width), int(height))


@dataclass(frozen=True)
class CameraInfoData:
    """What a ``sensor_msgs/CameraInfo`` says about one camera, independent of where the numbers
    came from (a calibration file, a preset, a guess). ``P`` is 3x4: ``[K | 0]`` for a mono or
    left camera, ``P[0, 3] = -fx * baseline`` for the right camera of a rectified stereo pair."""

    width: int
    height: int
    K: np.ndarray
    P: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))
    distortion_model: str = "plumb_bob"


class CameraBagWriter:
    """A new rosbag2 bag of camera messages (Image, CompressedImage, CameraInfo), one call per
    message, on any topics. Bag (record) time = header stamp.

    Why a class next to :func:`write_synthetic_bag`: dataset conversion writes topic layouts
    (stereo, RGB-D, compressed only) that the synthetic writer's fixed layout does not cover.
    The bag is written in a hidden folder next to ``path`` and moved there when the ``with``
    block ends normally, so an error or Ctrl-C leaves neither half a bag nor a lost old one.
    An existing ``path`` is an error unless ``overwrite``; even then only a rosbag2 directory
    (one with ``metadata.yaml``) or an empty directory is replaced, never another folder or a file.
    """

    def __init__(self, path: str | Path, *, storage: str = "sqlite3",
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        if storage not in ("sqlite3", "mcap"):
            raise ValueError(f"storage must be sqlite3 or mcap, got {storage!r}")
        self.storage = storage
        self.overwrite = overwrite
        self.counts: dict[str, int] = {}
        self._conns: dict[str, Any] = {}
        self._writer: Any = None
        self._ts: Any = None
        self._tmp: Path | None = None

    def _check_target(self) -> bool:
        """True when ``path`` exists and may be replaced; BagError when it may not."""
        p = self.path
        if not (p.exists() or p.is_symlink()):
            return False
        if not self.overwrite:
            raise BagError(f"{p} already exists (pass --overwrite to replace it)")
        if not p.is_dir() or p.is_symlink():
            raise BagError(f"{p} is not a rosbag2 bag directory; not replacing it")
        if not ((p / "metadata.yaml").is_file() or not any(p.iterdir())):
            raise BagError(f"{p} is a folder but not a rosbag2 bag (no metadata.yaml); "
                           "not deleting it")
        return True

    def __enter__(self) -> "CameraBagWriter":
        import tempfile

        from rosbags.rosbag2 import StoragePlugin, Writer

        self._check_target()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".partial",
                                          dir=self.path.parent))
        plugin = StoragePlugin.SQLITE3 if self.storage == "sqlite3" else StoragePlugin.MCAP
        try:
            self._ts = get_bag_typestore()
            # Same folder name as the target: the storage file inside is named after it.
            self._writer = Writer(self._tmp / self.path.name, version=9, storage_plugin=plugin)
            self._writer.open()
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        writer, self._writer = self._writer, None
        tmp, self._tmp = self._tmp, None
        if writer is None or tmp is None:
            return
        try:
            if exc_type is not None:
                writer.abort()
                return
            writer.close()
            if self._check_target():
                shutil.rmtree(self.path)
            (tmp / self.path.name).rename(self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _put(self, topic: str, msgtype: str, msg: Any) -> None:
        if self._writer is None:
            raise BagError("CameraBagWriter used outside its with block")
        if topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self._ts)
        t_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self._writer.write(self._conns[topic], t_ns, self._ts.serialize_cdr(msg, msgtype))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def image(self, topic: str, stamp: float, array: np.ndarray, encoding: str,
              frame_id: str) -> None:
        """``array`` already in ``encoding``'s layout (BGR order for bgr8, ...)."""
        f = numpy_to_image_fields(array, encoding)
        msg = self._ts.types[IMAGE_MSGTYPE](
            header=_stamp_msgs(self._ts, stamp, frame_id), height=f["height"],
            width=f["width"], encoding=f["encoding"], is_bigendian=f["is_bigendian"],
            step=f["step"], data=np.frombuffer(f["data"], np.uint8))
        self._put(topic, IMAGE_MSGTYPE, msg)

    def compressed(self, topic: str, stamp: float, payload: bytes, fmt: str,
                   frame_id: str) -> None:
        """``payload``: the JPEG/PNG bytes; ``fmt`` as image_transport writes it, e.g.
        ``"bgr8; jpeg compressed bgr8"``."""
        msg = self._ts.types[COMPRESSED_MSGTYPE](
            header=_stamp_msgs(self._ts, stamp, frame_id), format=fmt,
            data=np.frombuffer(payload, np.uint8))
        self._put(topic, COMPRESSED_MSGTYPE, msg)

    def camera_info(self, topic: str, stamp: float, info: CameraInfoData,
                    frame_id: str) -> None:
        T = self._ts.types
        msg = T[CAMERA_INFO_MSGTYPE](
            header=_stamp_msgs(self._ts, stamp, frame_id), height=int(info.height),
            width=int(info.width), distortion_model=info.distortion_model,
            d=np.asarray(info.D, np.float64).reshape(-1).copy(),
            k=np.asarray(info.K, np.float64).reshape(9).copy(), r=np.eye(3).reshape(-1),
            p=np.asarray(info.P, np.float64).reshape(12).copy(), binning_x=0, binning_y=0,
            roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                     do_rectify=False))
        self._put(topic, CAMERA_INFO_MSGTYPE, msg)


# ----------------------------------------------------------------------------------------------
# reading


def _bag_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise BagError(f"bag {p} does not exist")
    if p.is_file() and p.suffix in (".db3", ".mcap") and (p.parent / "metadata.yaml").is_file():
        p = p.parent  # a storage file inside a rosbag2 directory
    if p.is_file():
        raise BagError(f"{p} is a file; expected a rosbag2 directory (metadata.yaml + .db3/.mcap)")
    if not (p / "metadata.yaml").is_file():
        raise BagError(f"{p} is not a rosbag2 bag (no metadata.yaml)")
    return p


class _OpenBag:
    """AnyReader with every failure turned into a BagError."""

    def __init__(self, path: str | Path) -> None:
        from rosbags.highlevel import AnyReader

        self.path = _bag_dir(path)
        try:
            self.reader = AnyReader([self.path], default_typestore=get_bag_typestore())
            self.reader.open()
        except BagError:
            raise
        except Exception as exc:  # rosbags raises several types (AnyReaderError, ReaderError, yaml)
            raise BagError(f"cannot open bag {self.path}: {exc}") from exc

    def __enter__(self) -> "_OpenBag":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.reader.close()
        except Exception:  # closing a half-open reader must not hide the real error
            logger.debug("closing %s failed", self.path, exc_info=True)

    def topics(self) -> dict[str, str]:
        return {c.topic: c.msgtype for c in self.reader.connections}

    def connections(self, topics: Iterable[str] | None, allowed: tuple[str, ...] | None) -> list:
        available = self.topics()
        if topics is None:
            return [c for c in self.reader.connections if allowed is None or c.msgtype in allowed]
        topics = list(topics)
        missing = [t for t in topics if t not in available]
        if missing:
            raise BagError(f"topics {missing} not in bag {self.path}; it has "
                           f"{sorted(available)}")
        if allowed is not None:
            wrong = [t for t in topics if available[t] not in allowed]
            if wrong:
                raise BagError(f"topics {[(t, available[t]) for t in wrong]} are not of type "
                               f"{' / '.join(allowed)}")
        return [c for c in self.reader.connections if c.topic in topics]

    def messages(self, conns: list, start: float | None = None,
                 end: float | None = None) -> Iterator[tuple[Any, int, bytes]]:
        s = None if start is None else int(round(start * 1e9))
        e = None if end is None else int(round(end * 1e9))
        if not conns:
            return
        try:
            yield from self.reader.messages(connections=conns, start=s, stop=e)
        except Exception as exc:
            raise BagError(f"reading bag {self.path} failed: {exc}") from exc


def list_topics(path: str | Path) -> dict[str, str]:
    """topic -> msgtype of every connection in the bag."""
    with _OpenBag(path) as bag:
        return bag.topics()


def _stamp(msg: Any) -> float:
    return float(msg.header.stamp.sec) + float(msg.header.stamp.nanosec) * 1e-9


def iter_images(path: str | Path, topics: list[str] | None = None, start: float | None = None,
                end: float | None = None, report: BagReport | None = None, *,
                limits: DecodeLimits = DecodeLimits(),
                depth_range: tuple[float, float] | None = None) -> Iterator[BagImage]:
    """Decoded Image / CompressedImage frames in bag-time order (all image topics if ``topics``
    is None). Bad messages are skipped and counted in ``report`` (reason = the decode error's tag,
    or ``deserialize``)."""
    report = report if report is not None else BagReport()
    with _OpenBag(path) as bag:
        conns = bag.connections(topics, IMAGE_TYPES)
        for conn, t_ns, raw in bag.messages(conns, start, end):
            try:
                msg = bag.reader.deserialize(raw, conn.msgtype)
            except Exception as exc:  # any CDR error is a bad message, not a bad bag
                logger.debug("skip undecodable %s message at %d: %s", conn.topic, t_ns, exc)
                report.skip("deserialize")
                continue
            try:
                if conn.msgtype == IMAGE_MSGTYPE:
                    img = decode_image_msg_fields(msg.encoding, msg.height, msg.width, msg.step,
                                                  bool(msg.is_bigendian), msg.data, limits,
                                                  depth_range)
                    enc = msg.encoding
                else:
                    img = decode_compressed(msg.data, msg.format, limits, depth_range)
                    enc = f"compressed:{msg.format}"
            except ImageDecodeError as exc:
                logger.debug("skip %s message at %d: %s", conn.topic, t_ns, exc)
                report.skip(exc.reason)
                continue
            report.read += 1
            yield BagImage(conn.topic, _stamp(msg), int(t_ns), img, enc, str(msg.header.frame_id))


def iter_raw(path: str | Path, topics: Iterable[str] | None = None, start: float | None = None,
             end: float | None = None) -> Iterator[tuple[str, str, int, bytes]]:
    """``(topic, msgtype, bag_time_ns, raw CDR bytes)`` in bag-time order; the bytes are what
    ``rclpy.serialization.deserialize_message`` takes."""
    with _OpenBag(path) as bag:
        conns = bag.connections(topics, None)
        for conn, t_ns, raw in bag.messages(conns, start, end):
            yield conn.topic, conn.msgtype, int(t_ns), bytes(raw)


def iter_depth(path: str | Path, topic: str, report: BagReport | None = None
               ) -> Iterator[tuple[float, np.ndarray]]:
    """``(header stamp, depth in metres float32 (H, W))`` from a 32FC1 (metres) or 16UC1
    (millimetres, REP 118) topic; invalid pixels (0, NaN, inf) become NaN."""
    report = report if report is not None else BagReport()
    with _OpenBag(path) as bag:
        conns = bag.connections([topic], (IMAGE_MSGTYPE,))
        for conn, _, raw in bag.messages(conns):
            try:
                msg = bag.reader.deserialize(raw, conn.msgtype)
                if msg.encoding not in ("32FC1", "16UC1"):
                    raise ImageDecodeError("bad_depth", f"depth encoding {msg.encoding!r}")
                if msg.height == 0 or msg.width == 0:
                    raise ImageDecodeError("empty", "empty depth image")
                a = image_to_numpy(msg.encoding, msg.height, msg.width, msg.step,
                                   bool(msg.is_bigendian), msg.data).astype(np.float32)
            except ImageDecodeError as exc:
                report.skip(exc.reason)
                continue
            except Exception:  # undecodable CDR
                report.skip("deserialize")
                continue
            if msg.encoding == "16UC1":
                a = a / 1000.0
            a[~np.isfinite(a) | (a <= 0)] = np.nan
            report.read += 1
            yield _stamp(msg), a


def read_camera_info(path: str | Path, topic: str) -> dict | None:
    """First CameraInfo on ``topic``: ``K`` (3x3), ``D``, ``width``, ``height``,
    ``distortion_model``, ``frame_id``; None if the topic has no message."""
    with _OpenBag(path) as bag:
        conns = bag.connections([topic], (CAMERA_INFO_MSGTYPE,))
        for conn, _, raw in bag.messages(conns):
            msg = bag.reader.deserialize(raw, conn.msgtype)
            return {
                "K": np.asarray(msg.k, np.float64).reshape(3, 3).copy(),
                "D": np.asarray(msg.d, np.float64).copy(),
                "width": int(msg.width),
                "height": int(msg.height),
                "distortion_model": str(msg.distortion_model),
                "frame_id": str(msg.header.frame_id),
            }
    return None


def _pose_matrix(position: Any, orientation: Any) -> np.ndarray:
    Tm = np.eye(4)
    q = np.array([orientation.x, orientation.y, orientation.z, orientation.w], np.float64)
    if np.linalg.norm(q) < 1e-12:
        raise ValueError("zero quaternion")
    Tm[:3, :3] = Rotation.from_quat(q).as_matrix()
    Tm[:3, 3] = [position.x, position.y, position.z]
    return Tm


def iter_poses(path: str | Path, topic: str) -> Iterator[tuple[float, np.ndarray]]:
    """``(header stamp, 4x4)`` from PoseStamped, PoseWithCovarianceStamped, Odometry,
    TransformStamped or TFMessage (every transform in it). The matrix maps points of the child /
    body frame into ``header.frame_id`` (i.e. ``T_world_cam`` for a camera pose)."""
    with _OpenBag(path) as bag:
        conns = bag.connections([topic], POSE_TYPES)
        for conn, t_ns, raw in bag.messages(conns):
            try:
                msg = bag.reader.deserialize(raw, conn.msgtype)
                kind = conn.msgtype.rsplit("/", 1)[-1]
                if kind == "PoseStamped":
                    yield _stamp(msg), _pose_matrix(msg.pose.position, msg.pose.orientation)
                elif kind in ("PoseWithCovarianceStamped", "Odometry"):
                    p = msg.pose.pose
                    yield _stamp(msg), _pose_matrix(p.position, p.orientation)
                elif kind == "TransformStamped":
                    tr = msg.transform
                    yield _stamp(msg), _pose_matrix(tr.translation, tr.rotation)
                else:  # TFMessage
                    for ts_msg in msg.transforms:
                        tr = ts_msg.transform
                        yield _stamp(ts_msg), _pose_matrix(tr.translation, tr.rotation)
            except ValueError as exc:
                logger.debug("skip pose message on %s at %d: %s", topic, t_ns, exc)
