"""Core types <-> ROS 2 messages (the only packing code; numpy-vectorised, no per-point loops).

Why here: the node, the bag player and consumers (tests, tools) must agree byte for byte on the
PointCloud2 layouts below; keeping packing and unpacking side by side makes the round trip
testable. All multi-byte values are little-endian (``is_bigendian = False``), ``height = 1``,
``width = N``, ``row_step = point_step * N``, ``is_dense = True``.

``~/features`` (header = input image header), one point per keypoint, ``point_step = 24 + 4 D``:

====  ===============  =======  =====  =================================================
off   name             type     count  meaning
====  ===============  =======  =====  =================================================
0     u                float32  1      x in original-image pixels (top-left pixel centre = 0)
4     v                float32  1      y in original-image pixels
8     score            float32  1      detector score (higher is better)
12    scale            float32  1      scale w.r.t. the network's native scale (1 if none)
16    orientation      float32  1      radians (0 if the method has none)
20    track_id         uint32   1      persists while the keypoint keeps being matched
24    descriptor       float32  D      descriptor; D = the field's ``count``
====  ===============  =======  =====  =================================================

``~/matches`` (header = *current* image header), one point per match between the previous
processed frame and this one, ``point_step = 44``:

====  ===================  =======  ===============================================================
off   name                 type     meaning
====  ===================  =======  ===============================================================
0     prev_index           uint32   row in the previous frame's ``~/features`` cloud
4     cur_index            uint32   row in this frame's ``~/features`` cloud
8     prev_u, 12 prev_v    float32  keypoint in the previous image (pixels)
16    cur_u, 20 cur_v      float32  keypoint in the current image (pixels)
24    distance             float32  descriptor distance
28    inlier               uint8    1 = survived geometric verification (bytes 29..31: padding)
32    track_id             uint32   track id of the current keypoint
36    prev_stamp_sec       int32    previous frame's ``header.stamp.sec``
40    prev_stamp_nanosec   uint32   previous frame's ``header.stamp.nanosec``
====  ===================  =======  ===============================================================

A consumer pairs a matches cloud with the ``~/features`` clouds of stamps ``prev_stamp_*`` (in
every point) and ``header.stamp``. An empty matches cloud carries no previous stamp.

``~/loop_candidates`` (header = the *query* image header; only with ``place_recognition.enable``),
one point per verified loop candidate (best first), ``point_step = 24``:

====  ======================  =======  ============================================================
off   name                    type     meaning
====  ======================  =======  ============================================================
0     keyframe_id             uint32   keyframe database id (running counter of the node)
4     keyframe_stamp_sec      int32    ``header.stamp.sec`` of the keyframe's image
8     keyframe_stamp_nanosec  uint32   ``header.stamp.nanosec`` of the keyframe's image
12    votes                   uint32   kNN votes of the query descriptors for this keyframe
16    inliers                 uint32   RANSAC inliers of the mutual-NN matches query <-> keyframe
20    score                   float32  ranking score (= inliers when verified)
====  ======================  =======  ============================================================

One cloud per keyframe query (every ``place_recognition.keyframe_every`` processed frames); an
empty cloud means no candidate reached ``place_recognition.min_inliers``.
"""

from __future__ import annotations

import array
import logging
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from local_features_ros.image.encodings import (
    DecodeLimits,
    decode_compressed,
    decode_image_msg_fields,
    numpy_to_image_fields,
)
from local_features_ros.types import Features, MatchResult, RelativeMotion

logger = logging.getLogger(__name__)

__all__ = [
    "FEATURE_FIELDS_FIXED",
    "MATCH_DTYPE",
    "features_to_pointcloud2",
    "pointcloud2_to_features",
    "matches_to_pointcloud2",
    "pointcloud2_to_matches",
    "LOOP_CANDIDATE_DTYPE",
    "loop_candidates_to_pointcloud2",
    "pointcloud2_to_loop_candidates",
    "image_msg_to_numpy",
    "compressed_msg_to_numpy",
    "numpy_to_image_msg",
    "camera_info_to_K",
    "motion_to_transform",
    "stamp_to_sec",
]

# PointField datatype <-> numpy (little-endian)
_PF_TO_NP = {
    PointField.INT8: np.dtype("i1"), PointField.UINT8: np.dtype("u1"),
    PointField.INT16: np.dtype("<i2"), PointField.UINT16: np.dtype("<u2"),
    PointField.INT32: np.dtype("<i4"), PointField.UINT32: np.dtype("<u4"),
    PointField.FLOAT32: np.dtype("<f4"), PointField.FLOAT64: np.dtype("<f8"),
}

FEATURE_FIELDS_FIXED = ("u", "v", "score", "scale", "orientation", "track_id")
_FEATURE_FIXED_BYTES = 24

MATCH_DTYPE = np.dtype({
    "names": ["prev_index", "cur_index", "prev_u", "prev_v", "cur_u", "cur_v", "distance",
              "inlier", "track_id", "prev_stamp_sec", "prev_stamp_nanosec"],
    "formats": ["<u4", "<u4", "<f4", "<f4", "<f4", "<f4", "<f4", "u1", "<u4", "<i4", "<u4"],
    "offsets": [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40],
    "itemsize": 44,
})
_MATCH_PF = [("prev_index", PointField.UINT32), ("cur_index", PointField.UINT32),
             ("prev_u", PointField.FLOAT32), ("prev_v", PointField.FLOAT32),
             ("cur_u", PointField.FLOAT32), ("cur_v", PointField.FLOAT32),
             ("distance", PointField.FLOAT32), ("inlier", PointField.UINT8),
             ("track_id", PointField.UINT32), ("prev_stamp_sec", PointField.INT32),
             ("prev_stamp_nanosec", PointField.UINT32)]

LOOP_CANDIDATE_DTYPE = np.dtype({
    "names": ["keyframe_id", "keyframe_stamp_sec", "keyframe_stamp_nanosec", "votes", "inliers",
              "score"],
    "formats": ["<u4", "<i4", "<u4", "<u4", "<u4", "<f4"],
    "offsets": [0, 4, 8, 12, 16, 20],
    "itemsize": 24,
})
_LOOP_PF = [("keyframe_id", PointField.UINT32), ("keyframe_stamp_sec", PointField.INT32),
            ("keyframe_stamp_nanosec", PointField.UINT32), ("votes", PointField.UINT32),
            ("inliers", PointField.UINT32), ("score", PointField.FLOAT32)]
_U32_MAX = 2**32 - 1


def _np(x: Any, dtype: Any) -> np.ndarray:
    """Tensor or array -> numpy ``dtype`` on the CPU."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32 if np.dtype(dtype).kind == "f" else None).numpy()
    return np.asarray(x, dtype=dtype)


def _bytes_field(buf: np.ndarray) -> array.array:
    """Contiguous numpy buffer -> ``array('B')``: the message setter accepts it without the
    per-element checks it runs on any other sequence (one copy)."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(buf).reshape(-1).view(np.uint8))
    return out


def _cloud(header: Any, width: int, fields: list[PointField], point_step: int,
           data: np.ndarray) -> PointCloud2:
    msg = PointCloud2()
    msg.header = header
    msg.height = 1
    msg.width = int(width)
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = int(point_step)
    msg.row_step = int(point_step) * int(width)
    msg.is_dense = True
    msg.data = _bytes_field(data)
    return msg


def _cloud_array(msg: PointCloud2, required: tuple[str, ...]) -> tuple[np.ndarray, dict]:
    """PointCloud2 -> structured array over its fields (a view of ``msg.data``)."""
    if msg.is_bigendian:
        raise ValueError("big-endian PointCloud2 is not supported")
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in required if n not in fields]
    if missing:
        raise ValueError(f"PointCloud2 lacks fields {missing}; has {sorted(fields)}")
    names, formats, offsets = [], [], []
    for f in msg.fields:
        base = _PF_TO_NP.get(f.datatype)
        if base is None:
            raise ValueError(f"field {f.name!r} has unknown datatype {f.datatype}")
        names.append(f.name)
        formats.append(base if f.count <= 1 else (base, (int(f.count),)))
        offsets.append(int(f.offset))
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                   "itemsize": int(msg.point_step)})
    n = int(msg.width) * int(msg.height)
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    if raw.size < n * msg.point_step:
        raise ValueError(f"PointCloud2 data has {raw.size} bytes, needs {n * msg.point_step}")
    if msg.height > 1 and msg.row_step != msg.width * msg.point_step:
        rows = raw[: msg.height * msg.row_step].reshape(msg.height, msg.row_step)
        raw = np.ascontiguousarray(rows[:, : msg.width * msg.point_step]).reshape(-1)
    return raw[: n * msg.point_step].view(dt), fields


def stamp_to_sec(stamp: Any) -> float:
    """``builtin_interfaces/Time`` -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def _to_time(stamp: Any) -> Time:
    """Time message, ``(sec, nanosec)`` or float seconds -> ``builtin_interfaces/Time``."""
    if stamp is None:
        return Time()
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return Time(sec=int(stamp.sec), nanosec=int(stamp.nanosec))
    if isinstance(stamp, tuple):
        return Time(sec=int(stamp[0]), nanosec=int(stamp[1]))
    ns = int(round(float(stamp) * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def features_to_pointcloud2(header: Any, feats: Features,
                            track_ids: np.ndarray | None) -> PointCloud2:
    """``Features`` (+ per-keypoint track ids) -> ``~/features`` cloud (layout in module doc)."""
    n, d = len(feats), feats.descriptor_dim
    point_step = _FEATURE_FIXED_BYTES + 4 * d
    buf = np.empty((n, 6 + d), dtype="<f4")
    if n:
        buf[:, 0:2] = _np(feats.keypoints, np.float32)
        buf[:, 2] = _np(feats.scores, np.float32)
        buf[:, 3] = _np(feats.scales, np.float32)
        buf[:, 4] = _np(feats.orientations, np.float32)
        tid = np.zeros(n, "<u4") if track_ids is None else _np(track_ids, np.int64).astype("<u4")
        if tid.shape != (n,):
            raise ValueError(f"track_ids must be ({n},), got {tid.shape}")
        buf[:, 5] = tid.view("<f4")  # bit pattern of uint32, not a numeric cast
        buf[:, 6:] = _np(feats.descriptors, np.float32)
    fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, name in enumerate(FEATURE_FIELDS_FIXED)]
    fields[5].datatype = PointField.UINT32
    fields.append(PointField(name="descriptor", offset=_FEATURE_FIXED_BYTES,
                             datatype=PointField.FLOAT32, count=d))
    return _cloud(header, n, fields, point_step, buf)


def pointcloud2_to_features(msg: PointCloud2) -> tuple[Features, np.ndarray]:
    """``~/features`` cloud -> ``(Features, track_ids uint32)``; D is read from the fields.
    ``image_size`` is not part of the cloud and is left at (0, 0)."""
    arr, fields = _cloud_array(msg, FEATURE_FIELDS_FIXED)
    d = int(fields["descriptor"].count) if "descriptor" in fields else 0
    n = arr.shape[0]
    kpts = np.zeros((n, 2), np.float32)
    if n:
        kpts[:, 0], kpts[:, 1] = arr["u"], arr["v"]
    desc = (np.asarray(arr["descriptor"], np.float32).reshape(n, d) if d
            else np.zeros((n, 0), np.float32))
    feats = Features(
        keypoints=torch.from_numpy(np.ascontiguousarray(kpts)),
        scores=torch.from_numpy(np.ascontiguousarray(arr["score"], dtype=np.float32)),
        descriptors=torch.from_numpy(np.ascontiguousarray(desc)),
        scales=torch.from_numpy(np.ascontiguousarray(arr["scale"], dtype=np.float32)),
        orientations=torch.from_numpy(np.ascontiguousarray(arr["orientation"], dtype=np.float32)),
    )
    return feats, np.ascontiguousarray(arr["track_id"], dtype=np.uint32)


def matches_to_pointcloud2(header: Any, prev_stamp: Any, kpts_prev: Any, kpts_cur: Any,
                           result: MatchResult, track_ids_cur: np.ndarray | None) -> PointCloud2:
    """Frame-to-frame matches -> ``~/matches`` cloud (layout in module doc).

    ``prev_stamp``: the previous frame's header stamp (Time, (sec, nanosec) or float seconds);
    ``kpts_*``: (N, 2) keypoints of both frames; ``track_ids_cur``: ids of the current keypoints.
    """
    m = result.matches.reshape(-1, 2).astype(np.int64)
    out = np.zeros(m.shape[0], dtype=MATCH_DTYPE)
    if m.shape[0]:
        kp0 = _np(kpts_prev, np.float32).reshape(-1, 2)
        kp1 = _np(kpts_cur, np.float32).reshape(-1, 2)
        i0, i1 = m[:, 0], m[:, 1]
        out["prev_index"], out["cur_index"] = i0, i1
        out["prev_u"], out["prev_v"] = kp0[i0, 0], kp0[i0, 1]
        out["cur_u"], out["cur_v"] = kp1[i1, 0], kp1[i1, 1]
        out["distance"] = np.asarray(result.distances, np.float32).reshape(-1)
        out["inlier"] = np.asarray(result.inliers, bool).reshape(-1)
        if track_ids_cur is not None:
            out["track_id"] = _np(track_ids_cur, np.int64).astype(np.uint32)[i1]
        t = _to_time(prev_stamp)
        out["prev_stamp_sec"], out["prev_stamp_nanosec"] = t.sec, t.nanosec
    fields = [PointField(name=name, offset=int(MATCH_DTYPE.fields[name][1]), datatype=dt, count=1)
              for name, dt in _MATCH_PF]
    return _cloud(header, m.shape[0], fields, MATCH_DTYPE.itemsize, out)


def pointcloud2_to_matches(msg: PointCloud2) -> dict[str, np.ndarray]:
    """``~/matches`` cloud -> dict of column arrays (``matches`` (M, 2) int64 added, ``inlier``
    as bool)."""
    arr, _ = _cloud_array(msg, tuple(MATCH_DTYPE.names))
    out = {name: np.ascontiguousarray(arr[name]) for name in MATCH_DTYPE.names}
    out["inlier"] = out["inlier"].astype(bool)
    out["matches"] = np.stack([out["prev_index"], out["cur_index"]], axis=1).astype(np.int64)
    return out


def loop_candidates_to_pointcloud2(header: Any, candidates: Sequence[Any],
                                   stamps: Mapping[Any, Any]) -> PointCloud2:
    """Loop candidates -> ``~/loop_candidates`` cloud (layout in module doc), in the given order.

    ``candidates``: objects with ``keyframe_id`` (int in [0, 2^32)), ``votes``, ``inliers`` and
    ``score`` (``place_recognition.Candidate``); ``stamps``: keyframe id -> the keyframe image's
    header stamp (Time, (sec, nanosec) or float seconds). Raises ``KeyError`` for a candidate
    without a stamp and ``ValueError`` for an id, vote or inlier count that is not a uint32.
    """
    n = len(candidates)
    out = np.zeros(n, dtype=LOOP_CANDIDATE_DTYPE)
    if n:
        ids = [c.keyframe_id for c in candidates]
        if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in ids):
            raise ValueError(f"keyframe ids must be integers, got {ids}")
        times = [_to_time(stamps[k]) for k in ids]
        cols = {"keyframe_id": np.array(ids, np.int64),
                "votes": np.array([c.votes for c in candidates], np.int64),
                "inliers": np.array([c.inliers for c in candidates], np.int64)}
        for name, col in cols.items():
            if col.min() < 0 or col.max() > _U32_MAX:
                raise ValueError(f"{name} must fit in uint32, got {col.tolist()}")
            out[name] = col
        out["keyframe_stamp_sec"] = np.array([t.sec for t in times], np.int64)
        out["keyframe_stamp_nanosec"] = np.array([t.nanosec for t in times], np.int64)
        out["score"] = np.array([c.score for c in candidates], np.float32)
    fields = [PointField(name=name, offset=int(LOOP_CANDIDATE_DTYPE.fields[name][1]),
                         datatype=dt, count=1) for name, dt in _LOOP_PF]
    return _cloud(header, n, fields, LOOP_CANDIDATE_DTYPE.itemsize, out)


def pointcloud2_to_loop_candidates(msg: PointCloud2) -> dict[str, np.ndarray]:
    """``~/loop_candidates`` cloud -> dict of column arrays (one entry per field name)."""
    arr, _ = _cloud_array(msg, tuple(LOOP_CANDIDATE_DTYPE.names))
    return {name: np.ascontiguousarray(arr[name]) for name in LOOP_CANDIDATE_DTYPE.names}


def image_msg_to_numpy(msg: Image, limits: DecodeLimits = DecodeLimits(),
                       depth_range: tuple[float, float] | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` -> extractor input (raises ``ImageDecodeError``)."""
    return decode_image_msg_fields(msg.encoding, msg.height, msg.width, msg.step,
                                   bool(msg.is_bigendian), msg.data, limits, depth_range)


def compressed_msg_to_numpy(msg: CompressedImage, limits: DecodeLimits = DecodeLimits(),
                            depth_range: tuple[float, float] | None = None) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` -> extractor input (raises ``ImageDecodeError``)."""
    return decode_compressed(msg.data, msg.format, limits, depth_range)


def numpy_to_image_msg(array_: np.ndarray, encoding: str, header: Any = None) -> Image:
    """Array already in ``encoding`` layout (e.g. BGR for ``bgr8``) -> ``sensor_msgs/Image``."""
    f = numpy_to_image_fields(array_, encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.step = f["height"], f["width"], f["step"]
    msg.encoding = encoding
    msg.is_bigendian = 0
    buf = array.array("B")
    buf.frombytes(f["data"])
    msg.data = buf
    return msg


def camera_info_to_K(msg: CameraInfo) -> np.ndarray | None:
    """3x3 intrinsics, or None for an uncalibrated camera (K all zero, fx/fy <= 0, non-finite)."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9:
        return None
    K = k.reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] == 0:
        return None
    return K / K[2, 2]


def motion_to_transform(header: Any, child_frame_id: str,
                        motion: RelativeMotion) -> TransformStamped:
    """Relative motion ``x1 = R x0 + t`` -> TF ``T_parent_child`` with parent = previous camera
    (``header.frame_id``) and child = current camera: rotation ``R^T``, translation ``-R^T t``
    (unit norm: monocular scale is unknown)."""
    R = np.asarray(motion.R, np.float64).reshape(3, 3)
    t = np.asarray(motion.t, np.float64).reshape(3)
    R_pc = R.T
    t_pc = -R.T @ t
    q = Rotation.from_matrix(R_pc).as_quat()  # x, y, z, w
    msg = TransformStamped()
    msg.header = header
    msg.child_frame_id = child_frame_id
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (
        float(v) for v in t_pc)
    (msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z,
     msg.transform.rotation.w) = (float(v) for v in q)
    return msg
