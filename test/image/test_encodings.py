"""cv_bridge-equivalent decoding: every encoding against hand-built data or OpenCV's own codes."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from local_features_ros.image.encodings import (
    DecodeLimits,
    ImageDecodeError,
    decode_compressed,
    decode_image_msg_fields,
    encode_compressed,
    image_to_numpy,
    numpy_to_image_fields,
    to_network_input,
)


def fields(arr: np.ndarray, encoding: str, pad: int = 0, big: bool = False) -> dict:
    """Hand-made message fields: rows of ``arr`` with ``pad`` junk bytes appended."""
    a = np.ascontiguousarray(arr)
    if big:
        a = a.astype(a.dtype.newbyteorder(">"))
    rows = a.shape[0]
    row = a.reshape(rows, -1).view(np.uint8).reshape(rows, -1)
    junk = np.full((rows, pad), 0xAB, np.uint8)
    data = np.concatenate([row, junk], axis=1).tobytes()
    return dict(encoding=encoding, height=rows, width=a.shape[1], step=row.shape[1] + pad,
                is_bigendian=big, data=data)


def decode(f: dict, **kw) -> np.ndarray:
    return decode_image_msg_fields(f["encoding"], f["height"], f["width"], f["step"],
                                   f["is_bigendian"], f["data"], **kw)


@pytest.fixture
def rgb(rng) -> np.ndarray:
    return rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def test_mono8_and_mono16_scaling() -> None:
    m8 = np.array([[0, 1, 2], [127, 128, 255]], np.uint8)
    out = decode(fields(m8, "mono8"))
    assert out.dtype == np.uint8 and np.array_equal(out, m8)
    m16 = np.array([[0, 257, 65535], [1000, 128, 129]], np.uint16)
    # cv_bridge: x * 255 / 65535 = x / 257, rounded: 1000/257 = 3.89 -> 4; 128/257 = 0.498 -> 0
    expected = np.array([[0, 1, 255], [4, 0, 1]], np.uint8)
    assert np.array_equal(decode(fields(m16, "mono16")), expected)


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "8UC4"])
def test_8bit_colour_orders(rgb, enc) -> None:
    if enc.startswith("rgb"):
        src = rgb
    else:
        src = rgb[..., ::-1]  # BGR (generic 8UC3 is BGR like OpenCV)
    if enc in ("rgba8", "bgra8", "8UC4"):
        src = np.concatenate([src, np.full(rgb.shape[:2] + (1,), 77, np.uint8)], axis=2)
    out = decode(fields(src, enc))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.array_equal(out, rgb)


@pytest.mark.parametrize("enc", ["rgb16", "bgr16", "rgba16", "bgra16"])
def test_16bit_colour_scaled_like_cv_bridge(rgb, enc) -> None:
    src = rgb.astype(np.uint16) * 257  # exact multiples: /257 must give rgb back
    if enc.startswith("bgr"):
        src = src[..., ::-1]
    if enc.endswith("a16"):
        src = np.concatenate([src, np.full(rgb.shape[:2] + (1,), 65535, np.uint16)], axis=2)
    assert np.array_equal(decode(fields(src, enc)), rgb)


def mosaic(pattern: str, colour: tuple[int, int, int], h: int = 8, w: int = 8,
           dtype=np.uint8) -> np.ndarray:
    """ROS Bayer pattern names the 2x2 tile read row by row from the top-left pixel."""
    idx = {"r": 0, "g": 1, "b": 2}
    tile = np.array([[colour[idx[pattern[0]]], colour[idx[pattern[1]]]],
                     [colour[idx[pattern[2]]], colour[idx[pattern[3]]]]], dtype)
    return np.tile(tile, (h // 2, w // 2))


@pytest.mark.parametrize("pattern,code", [("rggb", cv2.COLOR_BayerBG2RGB),
                                          ("bggr", cv2.COLOR_BayerRG2RGB),
                                          ("gbrg", cv2.COLOR_BayerGR2RGB),
                                          ("grbg", cv2.COLOR_BayerGB2RGB)])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_name_shift(rng, pattern, code, bits) -> None:
    dtype = np.uint8 if bits == 8 else np.uint16
    raw = rng.integers(0, 256 if bits == 8 else 65536, (8, 10), dtype=dtype)
    out = decode(fields(raw, f"bayer_{pattern}{bits}"))
    ref = cv2.cvtColor(raw, code)
    if bits == 16:
        ref = np.rint(ref / 257.0).astype(np.uint8)
    assert np.array_equal(out, ref)
    # independent check of the mapping: a uniform colour scene mosaicked with the ROS pattern
    # must demosaic back to that colour (a wrong shift swaps R and B or mixes G in)
    colour = (200, 100, 30)
    scale = 1 if bits == 8 else 257
    scene = mosaic(pattern, tuple(c * scale for c in colour), dtype=dtype)
    out = decode(fields(scene, f"bayer_{pattern}{bits}"))
    assert np.abs(out[2:-2, 2:-2].astype(int) - np.array(colour)).max() <= 1


def bt601(y: int, u: int, v: int) -> np.ndarray:
    """BT.601 video range (Y in 16..235), what camera YUV 4:2:2 / 4:2:0 streams carry."""
    c = 1.164 * (y - 16)
    r = c + 1.596 * (v - 128)
    g = c - 0.391 * (u - 128) - 0.813 * (v - 128)
    b = c + 2.018 * (u - 128)
    return np.clip(np.array([r, g, b]), 0, 255)


@pytest.mark.parametrize("enc,code", [("yuv422", cv2.COLOR_YUV2RGB_UYVY),
                                      ("uyvy", cv2.COLOR_YUV2RGB_UYVY),
                                      ("yuv422_yuy2", cv2.COLOR_YUV2RGB_YUY2),
                                      ("yuyv", cv2.COLOR_YUV2RGB_YUY2)])
def test_yuv422(rng, enc, code) -> None:
    raw = rng.integers(0, 256, (4, 6, 2), dtype=np.uint8)
    assert np.array_equal(decode(fields(raw, enc)), cv2.cvtColor(raw, code))
    y, u, v = 120, 90, 200
    uyvy = code == cv2.COLOR_YUV2RGB_UYVY
    pair = [u, y, v, y] if uyvy else [y, u, y, v]  # byte order of two pixels
    buf = np.tile(np.array(pair, np.uint8), 4 * 3).reshape(4, 6, 2)
    out = decode(fields(buf, enc))
    assert np.abs(out.astype(float) - bt601(y, u, v)).max() <= 2


@pytest.mark.parametrize("enc,code", [("nv12", cv2.COLOR_YUV2RGB_NV12),
                                      ("nv21", cv2.COLOR_YUV2RGB_NV21)])
def test_nv12_nv21(rng, enc, code) -> None:
    h, w = 4, 6
    raw = rng.integers(0, 256, (h * 3 // 2, w), dtype=np.uint8)
    f = fields(raw, enc)
    f["height"] = h  # the message height is the image height; the buffer holds 1.5x rows
    out = decode(f)
    assert out.shape == (h, w, 3)
    assert np.array_equal(out, cv2.cvtColor(raw, code))
    y, u, v = 150, 60, 180
    chroma = [u, v] if enc == "nv12" else [v, u]
    buf = np.concatenate([np.full((h, w), y, np.uint8),
                          np.tile(np.array(chroma, np.uint8), (h // 2, w // 2))])
    f = fields(buf, enc)
    f["height"] = h
    assert np.abs(decode(f).astype(float) - bt601(y, u, v)).max() <= 2


def test_16uc1_depth_min_max_and_range() -> None:
    d = np.array([[0, 1000], [2000, 3000]], np.uint16)  # 0 = no reading (REP 118)
    out = decode(fields(d, "16UC1"))
    assert out.dtype == np.float32
    assert np.allclose(out, [[0, 0], [0.5, 1.0]])
    out = decode(fields(d, "16UC1"), depth_range=(0.0, 4000.0))
    assert np.allclose(out, [[0, 0.25], [0.5, 0.75]])


def test_depth_range_clips_and_validates() -> None:
    d = np.array([[0.5, 1.0, 2.0, 5.0]], np.float32)
    out = decode(fields(d, "32FC1"), depth_range=(1.0, 3.0))
    assert np.allclose(out, [[0.0, 0.0, 0.5, 1.0]])
    for bad in ((3.0, 1.0), (0.0, float("inf"))):
        with pytest.raises(ImageDecodeError) as e:
            decode(fields(d, "32FC1"), depth_range=bad)
        assert e.value.reason == "bad_depth"
    assert np.array_equal(decode(fields(np.full((2, 2), 7, np.uint16), "16UC1")), np.zeros((2, 2)))


def test_32fc1_nan_inf_become_zero() -> None:
    d = np.array([[np.nan, 1.0, 2.0], [np.inf, 3.0, -np.inf]], np.float32)
    out = decode(fields(d, "32FC1"))
    assert np.all(np.isfinite(out))
    assert np.allclose(out, [[0, 0, 0.5], [0, 1, 0]])
    with pytest.raises(ImageDecodeError) as e:
        decode(fields(np.full((2, 2), np.nan, np.float32), "32FC1"))
    assert e.value.reason == "bad_depth"


@pytest.mark.parametrize("enc,dtype,ch", [("mono8", np.uint8, 1), ("rgb8", np.uint8, 3),
                                          ("mono16", np.uint16, 1), ("32FC1", np.float32, 1)])
def test_row_padding_is_dropped(rng, enc, dtype, ch) -> None:
    shape = (5, 7) if ch == 1 else (5, 7, ch)
    a = (rng.random(shape) * 200).astype(dtype)
    tight = image_to_numpy(**_args(fields(a, enc)))
    for pad in (1, 3, 8):  # odd pads misalign multi-byte rows on purpose
        padded = image_to_numpy(**_args(fields(a, enc, pad=pad)))
        assert np.array_equal(padded, a) and np.array_equal(tight, a)


def _args(f: dict) -> dict:
    return {k: f[k] for k in ("encoding", "height", "width", "step", "is_bigendian", "data")}


@pytest.mark.parametrize("enc", ["mono16", "16UC1"])
def test_big_endian(enc) -> None:
    a = np.array([[1, 256, 258], [65535, 4660, 0]], np.uint16)
    f = fields(a, enc, big=True)
    # byte level: 258 = 0x0102 is stored 01 02 when big-endian
    assert f["data"][4:6] == b"\x01\x02"
    arr = image_to_numpy(**_args(f))
    assert arr.dtype.isnative and np.array_equal(arr, a)
    assert np.array_equal(decode(f), decode(fields(a, enc)))
    f = fields(a, enc, pad=1, big=True)
    assert np.array_equal(image_to_numpy(**_args(f)), a)


def test_size_and_step_mismatch() -> None:
    a = np.zeros((4, 5, 3), np.uint8)
    f = fields(a, "rgb8")
    with pytest.raises(ImageDecodeError) as e:
        decode({**f, "step": 14})  # < 5 * 3
    assert e.value.reason == "size_mismatch"
    with pytest.raises(ImageDecodeError) as e:
        decode({**f, "data": f["data"][:-1]})
    assert e.value.reason == "size_mismatch"
    with pytest.raises(ImageDecodeError) as e:
        decode({**f, "height": 5})
    assert e.value.reason == "size_mismatch"


def test_empty_too_large_one_pixel_unknown() -> None:
    with pytest.raises(ImageDecodeError) as e:
        decode_image_msg_fields("mono8", 0, 0, 0, False, b"")
    assert e.value.reason == "empty"
    with pytest.raises(ImageDecodeError) as e:
        decode_image_msg_fields("rgb8", 3, 0, 0, False, b"")
    assert e.value.reason == "empty"
    out = decode_image_msg_fields("rgb8", 1, 1, 3, False, bytes([10, 20, 30]))
    assert out.shape == (1, 1, 3) and out.tolist() == [[[10, 20, 30]]]
    with pytest.raises(ImageDecodeError) as e:
        decode_image_msg_fields("mono8", 20, 20, 20, False, bytes(400),
                                limits=DecodeLimits(max_pixels=399))
    assert e.value.reason == "too_large"
    assert decode_image_msg_fields("mono8", 20, 20, 20, False, bytes(400),
                                   limits=DecodeLimits(max_pixels=400)).shape == (20, 20)
    for enc in ("rgb9", "jpeg", "bayer_xyzw8", "32FC0"):
        with pytest.raises(ImageDecodeError) as e:
            decode_image_msg_fields(enc, 2, 2, 2, False, bytes(4))
        assert e.value.reason == "unknown_encoding"


def test_default_limits_admit_8k() -> None:
    assert DecodeLimits().max_pixels >= 7680 * 4320
    # the header check rejects an oversized JPEG before decoding it
    with pytest.raises(ImageDecodeError) as e:
        decode_compressed(encode_compressed(np.zeros((64, 80), np.uint8)), "jpeg",
                          DecodeLimits(max_pixels=64 * 80 - 1))
    assert e.value.reason == "too_large"


def test_compressed_round_trip_rgb_and_gray(rgb) -> None:
    big = cv2.resize(rgb, (32, 24), interpolation=cv2.INTER_NEAREST)
    png = cv2.imencode(".png", big[..., ::-1])[1].tobytes()  # on disk: BGR
    assert np.array_equal(decode_compressed(png, "png"), big)
    assert np.array_equal(decode_compressed(encode_compressed(big, "png")), big)
    gray = big[..., 0]
    assert np.array_equal(decode_compressed(encode_compressed(gray, "png")), gray)
    g16 = gray.astype(np.uint16) * 257
    assert np.array_equal(decode_compressed(cv2.imencode(".png", g16)[1].tobytes()), gray)
    jpg = decode_compressed(encode_compressed(big, "jpeg", 95))
    assert jpg.shape == big.shape and np.abs(jpg.astype(int) - big).mean() < 20


def test_corrupt_and_truncated_compressed(rgb) -> None:
    with pytest.raises(ImageDecodeError) as e:
        decode_compressed(b"\xff\xd8\xff\xe0" + bytes(range(200)), "jpeg")
    assert e.value.reason == "corrupt"
    with pytest.raises(ImageDecodeError) as e:
        decode_compressed(b"", "jpeg")
    assert e.value.reason == "corrupt"
    png = encode_compressed(cv2.resize(rgb, (64, 48)), "png")
    with pytest.raises(ImageDecodeError) as e:
        decode_compressed(png[: len(png) // 2], "png")
    assert e.value.reason == "corrupt"


def test_compressed_depth_16uc1() -> None:
    depth = np.array([[0, 500, 1000], [1500, 2000, 2500]], np.uint16)
    payload = struct.pack("<iff", 0, 0.0, 0.0) + cv2.imencode(".png", depth)[1].tobytes()
    out = decode_compressed(payload, "16UC1; compressedDepth png")
    assert np.allclose(out, [[0, 0, 0.25], [0.5, 0.75, 1.0]])


def test_numpy_to_image_fields_round_trip(rgb) -> None:
    f = numpy_to_image_fields(rgb, "rgb8")
    assert (f["height"], f["width"], f["step"], f["is_bigendian"]) == (6, 8, 24, 0)
    assert np.array_equal(image_to_numpy(**_args(f)), rgb)
    d = np.arange(12, dtype=">u2").reshape(3, 4)  # big-endian input is written little-endian
    f = numpy_to_image_fields(d, "16UC1")
    assert f["step"] == 8 and f["data"][:4] == b"\x00\x00\x01\x00"
    nv = np.zeros((6, 4), np.uint8)
    assert numpy_to_image_fields(nv, "nv12")["height"] == 4
    with pytest.raises(ValueError):
        numpy_to_image_fields(rgb, "mono8")
    with pytest.raises(ValueError):
        numpy_to_image_fields(rgb.astype(np.uint16), "rgb8")


def test_to_network_input_rejects_wrong_array() -> None:
    with pytest.raises(ImageDecodeError):
        to_network_input("rgb8", np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageDecodeError):
        to_network_input("mono8", np.zeros((4, 4), np.uint16))
    with pytest.raises(ImageDecodeError) as e:
        to_network_input("16UC3", np.zeros((4, 4, 3), np.uint16))
    assert e.value.reason == "unknown_encoding"
