"""cv_bridge semantics on raw ``sensor_msgs/Image`` fields, without cv_bridge or rclpy.

Why a module of its own: the node, the bag reader and the training tools all receive the same raw
fields (``encoding, height, width, step, is_bigendian, data``) and must turn them into the one
image contract the extractors accept (``(H, W)`` gray or ``(H, W, 3)`` RGB, uint8 or float32 in
[0, 1]). cv_bridge is not available without a ROS install, its Python side breaks on big-endian
data under NumPy 2, and it refuses to turn depth images into anything displayable, so the rules
are re-stated here (docs/method_facts/ros_encodings.md):

- Validation as cv_bridge: ``step < width * bytes_per_pixel`` or ``height * step != len(data)`` is
  an error; rows may be padded (``step`` is the row stride, padding is dropped).
- Endianness: the message's ``is_bigendian`` picks the dtype byte order; data is converted to the
  host order with a dtype-level cast (no ``ndarray.newbyteorder``, removed in NumPy 2).
- Colour: RGB output; ``bgr*`` are swapped, alpha is dropped; 16-bit colour/mono is scaled to
  8 bit by ``/257`` (cv_bridge's ``x * 255 / 65535``, rounded).
- Bayer: OpenCV's names are shifted by one pixel w.r.t. ROS: ``bayer_rggb`` ->
  ``COLOR_BayerBG2RGB``, ``bayer_bggr`` -> ``BayerRG``, ``bayer_gbrg`` -> ``BayerGR``,
  ``bayer_grbg`` -> ``BayerGB``.
- YUV: ``yuv422``/``uyvy`` = UYVY, ``yuv422_yuy2``/``yuyv`` = YUY2 (2 bytes per pixel);
  ``nv12``/``nv21`` are ``height * 3 / 2`` rows of ``step`` bytes (Y plane then interleaved chroma).
- Generic OpenCV types (``8UC1``, ``16UC1``, ``32FC1``, ...): one channel of 8 bit is gray;
  ``8UC3``/``8UC4`` are treated as BGR(A) like OpenCV does; 16/32/64-bit single-channel images are
  depth-like and become float32 in [0, 1] (see :func:`normalize_depth`). Other generic layouts are
  rejected.
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "ImageDecodeError",
    "DecodeLimits",
    "EncodingInfo",
    "encoding_info",
    "SUPPORTED_ENCODINGS",
    "BAYER_CODES",
    "image_to_numpy",
    "to_network_input",
    "normalize_depth",
    "decode_image_msg_fields",
    "decode_compressed",
    "numpy_to_image_fields",
    "encode_compressed",
]


class ImageDecodeError(ValueError):
    """An image message that cannot be turned into a network input.

    ``reason`` is a short tag for counters/diagnostics: ``unknown_encoding``, ``size_mismatch``,
    ``empty``, ``too_large``, ``corrupt`` or ``bad_depth``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class DecodeLimits:
    """Guards against absurd inputs. Images with more than ``max_pixels`` pixels are rejected
    (``too_large``); the default admits 8192 x 8192, so an 8k camera frame is decoded and the
    extractor's ``resize_max_edge`` shrinks it."""

    max_pixels: int = 8192 * 8192


@dataclass(frozen=True)
class EncodingInfo:
    """What one encoding name means in memory."""

    name: str
    dtype: np.dtype  # element type (native order)
    channels: int  # elements per pixel
    kind: str  # mono | color | bayer | yuv422 | nv | generic


_COLOR = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "rgb16": (np.uint16, 3), "bgr16": (np.uint16, 3), "rgba16": (np.uint16, 4),
    "bgra16": (np.uint16, 4),
}
# ROS Bayer pattern -> OpenCV conversion code (OpenCV names the pattern of the 2nd row/col).
BAYER_CODES = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
_YUV422 = {"yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
           "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuyv": cv2.COLOR_YUV2RGB_YUY2}
_NV = {"nv12": cv2.COLOR_YUV2RGB_NV12, "nv21": cv2.COLOR_YUV2RGB_NV21}
_GENERIC_DEPTH = {"8U": np.uint8, "8S": np.int8, "16U": np.uint16, "16S": np.int16,
                  "32S": np.int32, "32F": np.float32, "64F": np.float64}
_GENERIC_RE = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)(?:C([1-9][0-9]*))?$")

SUPPORTED_ENCODINGS: tuple[str, ...] = (
    ("mono8", "mono16") + tuple(_COLOR)
    + tuple(f"bayer_{p}{b}" for p in BAYER_CODES for b in (8, 16))
    + tuple(_YUV422) + tuple(_NV)
    + ("8UC1", "8UC3", "8UC4", "16UC1", "16SC1", "32SC1", "32FC1", "64FC1")
)


def encoding_info(encoding: str) -> EncodingInfo:
    """Element type, channel count and class of an encoding (``unknown_encoding`` otherwise)."""
    enc = encoding.strip()
    low = enc.lower()
    if low == "mono8":
        return EncodingInfo(low, np.dtype(np.uint8), 1, "mono")
    if low == "mono16":
        return EncodingInfo(low, np.dtype(np.uint16), 1, "mono")
    if low in _COLOR:
        dt, ch = _COLOR[low]
        return EncodingInfo(low, np.dtype(dt), ch, "color")
    m = re.fullmatch(r"bayer_(rggb|bggr|gbrg|grbg)(8|16)", low)
    if m:
        return EncodingInfo(low, np.dtype(np.uint8 if m.group(2) == "8" else np.uint16), 1, "bayer")
    if low in _YUV422:
        return EncodingInfo(low, np.dtype(np.uint8), 2, "yuv422")
    if low in _NV:
        return EncodingInfo(low, np.dtype(np.uint8), 1, "nv")
    m = _GENERIC_RE.match(enc.upper())
    if m:
        ch = int(m.group(2) or 1)
        return EncodingInfo(enc.upper(), np.dtype(_GENERIC_DEPTH[m.group(1)]), ch, "generic")
    raise ImageDecodeError("unknown_encoding", f"unsupported image encoding {encoding!r}")


def _rows(info: EncodingInfo, height: int) -> int:
    """Rows of ``step`` bytes in the buffer (NV12/NV21 carry the chroma plane below the luma)."""
    if info.kind == "nv":
        return height + height // 2
    return height


def _as_bytes(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Any buffer -> 1-D uint8 array without copying."""
    if isinstance(data, np.ndarray):
        arr = data.reshape(-1)
        return arr if arr.dtype == np.uint8 else arr.view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def image_to_numpy(encoding: str, height: int, width: int, step: int, is_bigendian: bool,
                   data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Raw message fields -> array in the message's own encoding (cv_bridge ``passthrough``).

    Shape ``(H, W)`` for one channel, ``(H, W, C)`` otherwise; NV12/NV21 give ``(H * 3 / 2, W)``.
    Row padding is dropped, multi-byte data is in host byte order. The result is a view of
    ``data`` whenever no byte swap is needed.
    """
    info = encoding_info(encoding)
    height, width, step = int(height), int(width), int(step)
    if height < 0 or width < 0 or step < 0:
        raise ImageDecodeError("size_mismatch", f"negative size h={height} w={width} step={step}")
    if info.kind == "nv" and (height % 2 or width % 2):
        raise ImageDecodeError("size_mismatch", f"{info.name} needs even width and height, "
                                                f"got {width}x{height}")
    row_bytes = width * info.channels * info.dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError("size_mismatch", f"step {step} < width*bytes_per_pixel {row_bytes} "
                                                f"for {width} px of {info.name}")
    buf = _as_bytes(data)
    rows = _rows(info, height)
    if rows * step != buf.size:
        raise ImageDecodeError("size_mismatch", f"data has {buf.size} bytes, expected "
                                                f"{rows} rows * step {step} = {rows * step}")
    order = ">" if is_bigendian else "<"
    dt = info.dtype.newbyteorder(order) if info.dtype.itemsize > 1 else info.dtype
    if rows == 0 or width == 0:
        shape = (rows, width) if info.channels == 1 else (rows, width, info.channels)
        return np.zeros(shape, dtype=info.dtype)
    arr = buf.reshape(rows, step)[:, :row_bytes].view(dt)
    if info.channels > 1:
        arr = arr.reshape(rows, width, info.channels)
    if dt.itemsize > 1 and not dt.isnative:
        arr = arr.astype(info.dtype)  # byte swap into host order (NumPy 2 safe)
    return arr


def _to_u8(arr: np.ndarray) -> np.ndarray:
    """16 -> 8 bit exactly as cv_bridge: ``x * 255 / 65535`` (= x / 257), rounded."""
    if arr.dtype == np.uint8:
        return arr
    # round(x * 255 / 65535) = round(x / 257), never a tie for integer x; OpenCV does it in one pass
    return cv2.convertScaleAbs(arr, alpha=1.0 / 257.0)


def normalize_depth(array: np.ndarray, depth_range: tuple[float, float] | None = None,
                    zero_is_invalid: bool = False) -> np.ndarray:
    """Single-channel depth-like image -> float32 in [0, 1] for a network.

    Invalid pixels (NaN, +-inf, and 0 when ``zero_is_invalid``: REP 118 uses 0 for "no reading"
    in integer depth) become 0. Valid pixels map linearly from ``depth_range`` = (near, far),
    clipped, or from the min/max of the valid pixels when no range is given (a constant image maps
    to 0). No valid pixel at all -> ``ImageDecodeError('bad_depth')``.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ImageDecodeError("bad_depth", f"depth image must be (H, W), got {a.shape}")
    f = a  # integer depth stays integer until the final scaling (one float pass, not three)
    if a.dtype.kind == "f":
        valid = np.isfinite(a)
        if zero_is_invalid:
            valid &= a != 0
    else:
        valid = a != 0 if zero_is_invalid else np.ones(a.shape, dtype=bool)
    if depth_range is not None:
        lo, hi = (float(v) for v in depth_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ImageDecodeError("bad_depth", f"depth_range must be finite (near, far) with "
                                                f"far > near, got {depth_range}")
        if not valid.any():
            raise ImageDecodeError("bad_depth", "depth image has no valid pixel")
    else:
        # one masked pass instead of boolean-index copies (8k depth frames)
        lo, hi, _, _ = cv2.minMaxLoc(f, mask=valid.view(np.uint8))
        if not valid.any():
            raise ImageDecodeError("bad_depth", "depth image has no valid pixel")
    if not hi > lo:
        return np.zeros(a.shape, dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.subtract(f, lo, dtype=np.float32)
        out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    np.copyto(out, 0.0, where=~valid)
    return out


def to_network_input(encoding: str, array: np.ndarray,
                     depth_range: tuple[float, float] | None = None) -> np.ndarray:
    """Array in ``encoding`` (as :func:`image_to_numpy` gives it) -> extractor input.

    Returns ``(H, W)`` uint8 gray for mono/8-bit generic, ``(H, W, 3)`` uint8 RGB for colour,
    Bayer and YUV encodings, and ``(H, W)`` float32 in [0, 1] for depth-like generic encodings
    (16UC1, 32FC1, ...; see :func:`normalize_depth`, ``depth_range`` applies to them only).
    The result may be a read-only view of the message buffer (rgb8, mono8): copy before writing.
    """
    info = encoding_info(encoding)
    a = np.asarray(array)
    if info.channels == 1 and a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    expected_ndim = 2 if info.channels == 1 else 3
    if a.ndim != expected_ndim or (a.ndim == 3 and a.shape[2] != info.channels):
        raise ImageDecodeError("size_mismatch", f"array of shape {a.shape} does not hold "
                                                f"{info.channels}-channel {info.name}")
    if a.dtype != info.dtype:
        raise ImageDecodeError("size_mismatch", f"array dtype {a.dtype} does not match {info.name} "
                                                f"({info.dtype})")
    kind, name = info.kind, info.name
    if kind == "mono":
        return np.ascontiguousarray(_to_u8(a))
    if kind == "color":
        a = np.ascontiguousarray(_to_u8(a))
        if info.channels == 3:
            return cv2.cvtColor(a, cv2.COLOR_BGR2RGB) if name.startswith("bgr") else a
        # cvtColor: numpy channel reversal / alpha slicing copies are ~50x slower on 8k frames
        return cv2.cvtColor(a, cv2.COLOR_BGRA2RGB if name.startswith("bgr") else cv2.COLOR_RGBA2RGB)
    if kind == "bayer":
        code = BAYER_CODES[name[6:10]]
        return _to_u8(cv2.cvtColor(np.ascontiguousarray(a), code))
    if kind == "yuv422":
        return cv2.cvtColor(np.ascontiguousarray(a), _YUV422[name])
    if kind == "nv":
        return cv2.cvtColor(np.ascontiguousarray(a), _NV[name])
    # generic OpenCV types
    if info.channels == 1:
        if a.dtype == np.uint8:
            return np.ascontiguousarray(a)
        return normalize_depth(a, depth_range, zero_is_invalid=a.dtype.kind in "iu")
    if a.dtype == np.uint8 and info.channels in (3, 4):  # OpenCV's BGR(A) convention -> RGB
        code = cv2.COLOR_BGR2RGB if info.channels == 3 else cv2.COLOR_BGRA2RGB
        return cv2.cvtColor(np.ascontiguousarray(a), code)
    raise ImageDecodeError("unknown_encoding", f"generic encoding {name} ({info.channels} "
                                               f"channels of {info.dtype}) is not an image the "
                                               f"extractors can use")


def _check_size(height: int, width: int, limits: DecodeLimits) -> None:
    if height <= 0 or width <= 0:
        raise ImageDecodeError("empty", f"image has no pixels ({width}x{height})")
    if height * width > limits.max_pixels:
        raise ImageDecodeError("too_large", f"{width}x{height} = {height * width} px exceeds "
                                            f"max_pixels {limits.max_pixels}")


def decode_image_msg_fields(encoding: str, height: int, width: int, step: int,
                            is_bigendian: bool, data: bytes | bytearray | memoryview | np.ndarray,
                            limits: DecodeLimits = DecodeLimits(),
                            depth_range: tuple[float, float] | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` fields -> extractor input; rejects empty and oversized images
    before touching the data."""
    encoding_info(encoding)  # unknown encodings first: the clearest reason
    _check_size(int(height), int(width), limits)
    arr = image_to_numpy(encoding, height, width, step, is_bigendian, data)
    return to_network_input(encoding, arr, depth_range)


def _compressed_dims(buf: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG IHDR or JPEG SOF header, without decoding (None if unknown)."""
    b = buf.tobytes() if buf.size < 64 else buf[: min(buf.size, 1 << 16)].tobytes()
    if b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 24 and b[12:16] == b"IHDR":
        w, h = struct.unpack(">II", b[16:24])
        return int(w), int(h)
    if b[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(b):
            if b[i] != 0xFF:
                return None
            marker = b[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            seg = struct.unpack(">H", b[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", b[i + 5:i + 9])
                return int(w), int(h)
            i += 2 + seg
    return None


def _decode_compressed_depth(buf: np.ndarray, fmt: str, limits: DecodeLimits,
                             depth_range: tuple[float, float] | None) -> np.ndarray:
    """``compressed_depth_image_transport`` payload: 12-byte header (int32 format, float32
    depthQuantA, depthQuantB) + PNG. 16UC1: the PNG is the depth. 32FC1: the PNG holds
    ``A / d + B`` quantised inverse depth (0 = invalid), so ``d = A / (v - B)``."""
    if buf.size <= 12:
        raise ImageDecodeError("corrupt", "compressedDepth payload shorter than its header")
    _, quant_a, quant_b = struct.unpack("<iff", buf[:12].tobytes())
    png = buf[12:]
    dims = _compressed_dims(png)
    if dims is not None:
        _check_size(dims[1], dims[0], limits)
    img = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 2:
        raise ImageDecodeError("corrupt", "compressedDepth PNG could not be decoded")
    if "32fc1" in fmt.lower():
        v = img.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(v > 0, quant_a / (v - quant_b), np.nan).astype(np.float32)
        return to_network_input("32FC1", depth, depth_range)
    if img.dtype != np.uint16:
        raise ImageDecodeError("corrupt", f"compressedDepth 16UC1 PNG decoded as {img.dtype}")
    return to_network_input("16UC1", img, depth_range)


def decode_compressed(data: bytes | bytearray | memoryview | np.ndarray, format: str = "",
                      limits: DecodeLimits = DecodeLimits(),
                      depth_range: tuple[float, float] | None = None) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` payload (JPEG/PNG/...) -> extractor input.

    Decoded with ``cv2.imdecode(IMREAD_UNCHANGED)``; 3/4-channel results are BGR(A) (how
    image_transport encodes them) and are returned as RGB; 16-bit results are scaled by /257.
    ``compressedDepth`` payloads (format contains "compressedDepth") are decoded as well.
    """
    buf = _as_bytes(data)
    if buf.size == 0:
        raise ImageDecodeError("corrupt", "compressed image has no data")
    if "compresseddepth" in format.lower():
        return _decode_compressed_depth(buf, format, limits, depth_range)
    dims = _compressed_dims(buf)
    if dims is not None:
        _check_size(dims[1], dims[0], limits)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageDecodeError("corrupt", f"could not decode {buf.size}-byte compressed image "
                                          f"(format {format!r})")
    _check_size(img.shape[0], img.shape[1], limits)
    ch = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype == np.uint8:
        enc = {1: "mono8", 3: "bgr8", 4: "bgra8"}.get(ch)
    elif img.dtype == np.uint16:
        enc = {1: "mono16", 3: "bgr16", 4: "bgra16"}.get(ch)
    else:
        enc = None
    if enc is None:
        raise ImageDecodeError("unknown_encoding", f"decoded image has {ch} channels of "
                                                   f"{img.dtype}")
    return to_network_input(enc, img if ch > 1 else img.reshape(img.shape[:2]))


def numpy_to_image_fields(array: np.ndarray, encoding: str) -> dict:
    """Array in ``encoding`` -> ``sensor_msgs/Image`` fields (tight ``step``, little-endian).

    The array must already be in the encoding's layout (e.g. BGR order for ``bgr8``); dtype and
    channel count are checked against the encoding, NV12/NV21 arrays are ``(H * 3 / 2, W)``.
    """
    info = encoding_info(encoding)
    a = np.asarray(array)
    if info.channels == 1 and a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if info.channels == 1:
        ok_shape = a.ndim == 2
    else:
        ok_shape = a.ndim == 3 and a.shape[2] == info.channels
    if not ok_shape:
        raise ValueError(f"array of shape {a.shape} does not hold {info.channels}-channel "
                         f"{encoding}")
    if a.dtype.kind != info.dtype.kind or a.dtype.itemsize != info.dtype.itemsize:
        raise ValueError(f"array dtype {a.dtype} does not match {encoding} ({info.dtype})")
    rows, width = int(a.shape[0]), int(a.shape[1])
    height = rows
    if info.kind == "nv":
        if rows % 3 or width % 2:
            raise ValueError(f"{encoding} array must be (H*3/2, W) with even H and W, "
                             f"got {a.shape}")
        height = rows * 2 // 3
    a = np.ascontiguousarray(a, dtype=info.dtype.newbyteorder("<"))
    return {
        "height": height,
        "width": width,
        "step": width * info.channels * info.dtype.itemsize,
        "is_bigendian": 0,
        "encoding": encoding,
        "data": a.tobytes(),
    }


def encode_compressed(array_rgb_or_gray: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """RGB or gray image -> JPEG/PNG bytes as image_transport would publish them (BGR on disk)."""
    a = np.asarray(array_rgb_or_gray)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] == 3:
        a = np.ascontiguousarray(a[..., ::-1])
    elif a.ndim == 3 and a.shape[2] == 4:
        a = cv2.cvtColor(a, cv2.COLOR_RGBA2BGRA)
    elif a.ndim != 2:
        raise ValueError(f"expected (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    f = fmt.lower().lstrip(".")
    if f in ("jpeg", "jpg"):
        ok, out = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif f == "png":
        ok, out = cv2.imencode(".png", a)
    else:
        raise ValueError(f"unsupported compressed format {fmt!r} (jpeg or png)")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {a.shape} {a.dtype} image as {fmt}")
    return out.tobytes()
