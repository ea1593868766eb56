"""``local-features images-to-bag``: a KITTI / TUM RGB-D / plain image folder -> a rosbag2 bag.

Why: datasets ship as image folders, the node and the bag tools replay rosbag2 bags. The bag is
written with ``rosbags`` (no ROS install, no rclpy). Layout detection and calibration live in
:mod:`local_features_ros.image_folders`; this module reads the pixels, times the frames and
writes the messages through :class:`local_features_ros.bags.CameraBagWriter`.

Every failure is one line ``local-features images-to-bag: error: ...`` and exit status 2.
Unreadable image files are skipped, counted and listed (the command fails only when none of the
camera images could be read).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bags import BagError, CameraBagWriter, CameraInfoData, guess_K
from ..image_folders import (LAYOUTS, TUM_CAMERAS, CameraCalib, LayoutError, Sequence,
                             load_sequence, parse_intrinsics)

logger = logging.getLogger(__name__)

HELP = ("turn a KITTI / TUM RGB-D / plain image folder into a rosbag2 bag (Image and/or "
        "CompressedImage + CameraInfo)")
PROG = "local-features images-to-bag"
DEFAULT_RATE = 10.0
DEFAULT_EPOCH = 1_700_000_000.0  # 2023-11-14T22:13:20Z: start of bags with relative times

# role -> (image topic, camera_info topic or None)
TOPICS: dict[str, tuple[str, str | None]] = {
    "mono": ("/camera/image_raw", "/camera/camera_info"),
    "left": ("/stereo/left/image_raw", "/stereo/left/camera_info"),
    "right": ("/stereo/right/image_raw", "/stereo/right/camera_info"),
    "rgb": ("/camera/rgb/image_raw", "/camera/rgb/camera_info"),
    "depth": ("/camera/depth/image", None),
}
_ENCODINGS = {(np.dtype(np.uint8), 1): "mono8", (np.dtype(np.uint8), 3): "bgr8",
              (np.dtype(np.uint8), 4): "bgra8", (np.dtype(np.uint16), 1): "mono16",
              (np.dtype(np.uint16), 3): "bgr16", (np.dtype(np.uint16), 4): "bgra16"}


class Unreadable(ValueError):
    """One image file that cannot go into the bag (skipped and counted)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("src", metavar="SRC", help="dataset folder (KITTI odometry, TUM RGB-D or plain images)")
    a("out", metavar="OUT", help="rosbag2 folder to create")
    a("--layout", default="auto", choices=("auto",) + LAYOUTS, help="default: detect")
    a("--intrinsics", metavar="FX,FY,CX,CY", help="pinhole intrinsics in pixels")
    a("--distortion", metavar="K1,K2,P1,P2[,K3]", help="plumb_bob distortion (with --intrinsics)")
    a("--calib", metavar="FILE", help="calibration file: KITTI P rows, a 3x3 K or fx fy cx cy "
      "(KITTI default: SRC/calib.txt)")
    a("--camera", choices=sorted(TUM_CAMERAS), help="TUM RGB-D camera preset")
    a("--baseline", type=float, metavar="M", help="stereo baseline in metres (with --intrinsics)")
    a("--mono", action="store_true", help="KITTI stereo folder: write the left camera only")
    a("--rate", type=float, metavar="HZ", help=f"frame rate (default: the dataset's timestamps, "
      f"else {DEFAULT_RATE:g})")
    a("--start-time", type=float, metavar="SECONDS", help="stamp of the first frame (Unix "
      f"seconds; default: the first timestamp if absolute, else {DEFAULT_EPOCH:.0f})")
    a("--frames", type=int, metavar="N", help="write at most N frames")
    a("--format", default="raw", choices=("raw", "compressed", "both"),
      help="Image, CompressedImage or both (default raw)")
    a("--compressed", action="store_true", help="same as --format both")
    a("--compression", default="jpeg", choices=("jpeg", "png"), help="CompressedImage codec")
    a("--jpeg-quality", type=int, default=90, metavar="Q", help="1..100 (default 90)")
    a("--encoding", default="auto", choices=("auto", "mono8", "bgr8", "rgb8"),
      help="Image encoding (default: the file's: mono8 gray, bgr8 colour, mono16 16-bit gray)")
    a("--depth-metres", action="store_true", help="TUM depth as 32FC1 metres (default 16UC1 mm)")
    a("--depth-scale", type=float, default=5000.0, metavar="UNITS",
      help="depth PNG units per metre (TUM: 5000)")
    a("--frame-id", default="camera_optical_frame", help="header frame_id")
    a("--right-frame-id", default=None, help="stereo right frame_id (default FRAME_ID_right)")
    a("--storage", default="sqlite3", choices=("sqlite3", "mcap"))
    a("--overwrite", action="store_true", help="replace OUT if it is an existing bag")


@dataclass(frozen=True)
class Options:
    """The validated options the writer needs."""

    raw: bool
    compressed: bool
    compression: str
    jpeg_quality: int
    encoding: str
    frames: int | None
    frame_ids: dict[str, str]
    depth_metres: bool
    depth_scale: float


@dataclass(frozen=True)
class Job:
    """One moment to write: the camera images of a frame (``primary``) or one depth image."""

    stamp: float
    files: dict[str, Path]
    primary: bool


@dataclass
class Stats:
    """What was written, for the summary and the warnings."""

    frames: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    guessed: dict[str, np.ndarray] = field(default_factory=dict)
    depth_rounded: bool = False
    first: float | None = None
    last: float | None = None


# ----------------------------------------------------------------------------------------------
# timing


def plan_jobs(seq: Sequence, rate: float | None, start_time: float | None) -> list[Job]:
    """Stamps for every frame, in playback order. An explicit ``rate`` re-times the frames
    (depth keeps its place between the colour frames); otherwise the dataset's timestamps are
    used, absolute ones as they are and relative ones (KITTI) from ``DEFAULT_EPOCH``."""
    cams = [r for r in ("mono", "left", "right", "rgb") if r in seq.streams]
    primary = seq.streams[cams[0]]
    n = len(primary.files)
    if rate is not None or primary.stamps is None:
        base = DEFAULT_EPOCH if start_time is None else start_time
        new = [base + i / (rate or DEFAULT_RATE) for i in range(n)]
    else:
        t0 = primary.stamps[0]
        base = start_time if start_time is not None else t0 if seq.absolute_stamps \
            else DEFAULT_EPOCH + t0
        new = [t - t0 + base for t in primary.stamps]
    jobs = [Job(new[i], {r: seq.streams[r].files[i] for r in cams}, True) for i in range(n)]
    depth = seq.streams.get("depth")
    if depth is not None and depth.stamps is not None and primary.stamps is not None:
        order = np.argsort(primary.stamps, kind="stable")
        old_t = np.asarray(primary.stamps, np.float64)[order]
        new_t = np.asarray(new, np.float64)[order]
        for f, t in zip(depth.files, depth.stamps):
            # Linear in time between colour frames; plain shift when the timing is unchanged.
            s = float(np.interp(t, old_t, new_t)) if rate is not None else t - old_t[0] + new_t[0]
            jobs.append(Job(s, {"depth": f}, False))
    jobs.sort(key=lambda j: (j.stamp, not j.primary))
    return jobs


# ----------------------------------------------------------------------------------------------
# pixels


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """The file's pixels as stored and their ROS encoding (gray+alpha loses the alpha)."""
    import cv2

    try:
        buf = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None or img.size == 0:
        raise Unreadable("not a decodable image (corrupt or unknown format)")
    if img.ndim == 3 and img.shape[2] in (1, 2):
        img = img[..., 0]
    channels = 1 if img.ndim == 2 else img.shape[2]
    enc = _ENCODINGS.get((img.dtype, channels))
    if enc is None:
        raise Unreadable(f"unsupported pixels: {channels} channel(s) of {img.dtype}")
    return np.ascontiguousarray(img), enc


def _to_8bit(a: np.ndarray) -> np.ndarray:
    return np.rint(a / 257.0).astype(np.uint8) if a.dtype == np.uint16 else a


def convert(img: np.ndarray, enc: str, target: str) -> tuple[np.ndarray, str]:
    """Stored pixels -> ``target`` encoding (``auto`` keeps them); 16 bit is scaled by /257."""
    import cv2

    if target in ("auto", enc):
        return img, enc
    a = _to_8bit(img)
    if target == "mono8":
        return (a if a.ndim == 2 else cv2.cvtColor(a, cv2.COLOR_BGR2GRAY if a.shape[2] == 3
                                                   else cv2.COLOR_BGRA2GRAY)), target
    bgr = (cv2.cvtColor(a, cv2.COLOR_GRAY2BGR) if a.ndim == 2
           else cv2.cvtColor(a, cv2.COLOR_BGRA2BGR) if a.shape[2] == 4 else a)
    return (np.ascontiguousarray(bgr[..., ::-1]) if target == "rgb8" else bgr), target


def compress(img: np.ndarray, enc: str, codec: str, quality: int,
             source: Path | None = None) -> tuple[bytes, str]:
    """JPEG/PNG payload and image_transport's format string (``"bgr8; jpeg compressed bgr8"``).
    JPEG is 8-bit without alpha; a JPEG file is copied as it is (no second lossy pass)."""
    import cv2

    a = np.ascontiguousarray(img[..., ::-1]) if enc.startswith("rgb") else img
    if codec == "jpeg":
        a = _to_8bit(a)
        if a.ndim == 3 and a.shape[2] == 4:
            a = cv2.cvtColor(a, cv2.COLOR_BGRA2BGR)
        target = "mono8" if a.ndim == 2 else "bgr8"
        fmt = f"{enc}; jpeg compressed {target}"
        if source is not None and source.suffix.lower() in (".jpg", ".jpeg") and \
                enc in ("mono8", "bgr8"):
            return source.read_bytes(), fmt
        ok, out = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        target = enc.replace("rgb", "bgr")
        fmt = f"{enc}; png compressed {target}"
        ok, out = cv2.imencode(".png", a)
    if not ok:
        raise Unreadable(f"OpenCV could not encode it as {codec}")
    return out.tobytes(), fmt


def depth_image(path: Path, metres: bool, scale: float) -> tuple[np.ndarray, str, bool]:
    """A 16-bit depth PNG -> (array, encoding, rounded). REP 118: 16UC1 is millimetres,
    32FC1 metres with NaN for no depth; ``rounded`` when whole millimetres lost precision."""
    img, enc = read_image(path)
    if enc != "mono16":
        raise Unreadable(f"depth must be a 16-bit single-channel image, got {enc}")
    if metres:
        d = img.astype(np.float32) / np.float32(scale)
        d[img == 0] = np.nan
        return d, "32FC1", False
    mm = img.astype(np.float64) * (1000.0 / scale)
    out = np.rint(mm)
    if out.max(initial=0) > 65535:
        raise Unreadable("depth exceeds 65.535 m, the 16UC1 range; use --depth-metres")
    return out.astype(np.uint16), "16UC1", bool(np.any(out != mm))


# ----------------------------------------------------------------------------------------------
# writing


def _camera_info(seq: Sequence, role: str, img: np.ndarray, infos: dict[str, CameraInfoData],
                 stats: Stats) -> CameraInfoData:
    h, w = img.shape[:2]
    if role not in infos:
        calib = seq.calib.get(role)
        if calib is None:
            calib = CameraCalib(guess_K(w, h), source="guess", guessed=True)
            stats.guessed[role] = calib.K
        infos[role] = calib.camera_info(w, h)
    info = infos[role]
    if (info.width, info.height) != (w, h):
        raise Unreadable(f"size {w}x{h} differs from the first frame's "
                         f"{info.width}x{info.height}")
    return info


@dataclass(frozen=True)
class _Ready:
    """One image ready to write: pixels, encoding, optional (payload, format), CameraInfo."""

    image: np.ndarray
    encoding: str
    payload: tuple[bytes, str] | None
    info: CameraInfoData | None


def _prepare(seq: Sequence, role: str, path: Path, opts: Options,
             infos: dict[str, CameraInfoData], stats: Stats) -> _Ready:
    """Everything that can fail for one file, before any message of its frame is written."""
    if role == "depth":
        d, enc, rounded = depth_image(path, opts.depth_metres, opts.depth_scale)
        stats.depth_rounded |= rounded
        return _Ready(d, enc, None, None)
    img, enc = convert(*read_image(path), opts.encoding)
    info = _camera_info(seq, role, img, infos, stats)
    payload = (compress(img, enc, opts.compression, opts.jpeg_quality,
                        path if opts.encoding == "auto" else None) if opts.compressed else None)
    return _Ready(img, enc, payload, info)


def write_bag(seq: Sequence, jobs: list[Job], out: Path, opts: Options, storage: str,
              overwrite: bool) -> tuple[Stats, dict[str, int]]:
    stats = Stats()
    infos: dict[str, CameraInfoData] = {}
    with CameraBagWriter(out, storage=storage, overwrite=overwrite) as bag:
        for job in jobs:
            if opts.frames is not None and stats.frames >= opts.frames:
                break
            frame: dict[str, _Ready] = {}
            for role, path in job.files.items():
                try:
                    frame[role] = _prepare(seq, role, path, opts, infos, stats)
                except Unreadable as exc:
                    stats.skipped.append((path, str(exc)))
            if len(frame) < len(job.files):  # a stereo pair needs both images
                continue
            for role, ready in frame.items():
                topic, info_topic = TOPICS[role]
                fid = opts.frame_ids[role]
                if opts.raw or role == "depth":
                    bag.image(topic, job.stamp, ready.image, ready.encoding, fid)
                if ready.payload is not None:
                    bag.compressed(topic + "/compressed", job.stamp, *ready.payload, fid)
                if info_topic is not None and ready.info is not None:
                    bag.camera_info(info_topic, job.stamp, ready.info, fid)
            stats.frames += job.primary
            stats.first = job.stamp if stats.first is None else stats.first
            stats.last = job.stamp
        if stats.frames == 0:
            raise LayoutError(f"none of the {len(stats.skipped)} image file(s) could be read "
                              f"(first: {stats.skipped[0][0]}: {stats.skipped[0][1]})"
                              if stats.skipped else "no frames to write")
        counts = dict(bag.counts)
    return stats, counts


def _options(args: argparse.Namespace) -> Options:
    if args.frames is not None and args.frames < 1:
        raise LayoutError(f"bad --frames {args.frames}: must be at least 1")
    if args.rate is not None and not (np.isfinite(args.rate) and args.rate > 0):
        raise LayoutError(f"bad --rate {args.rate}: must be a positive number of Hz")
    if not 1 <= args.jpeg_quality <= 100:
        raise LayoutError(f"bad --jpeg-quality {args.jpeg_quality}: must be 1..100")
    if not (np.isfinite(args.depth_scale) and args.depth_scale > 0):
        raise LayoutError(f"bad --depth-scale {args.depth_scale}: must be positive")
    if args.start_time is not None and not (np.isfinite(args.start_time)
                                            and args.start_time >= 0):
        raise LayoutError(f"bad --start-time {args.start_time}: must be >= 0 seconds")
    if not args.frame_id:
        raise LayoutError("--frame-id must not be empty")
    fmt = "both" if args.compressed and args.format == "raw" else args.format
    right = args.right_frame_id or f"{args.frame_id}_right"
    ids = {"mono": args.frame_id, "left": args.frame_id, "right": right, "rgb": args.frame_id,
           "depth": args.frame_id}
    return Options(fmt in ("raw", "both"), fmt in ("compressed", "both"), args.compression,
                   args.jpeg_quality, args.encoding, args.frames, ids, args.depth_metres,
                   args.depth_scale)


def _size(path: Path) -> str:
    n = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _say(kind: str, text: str) -> None:
    print(f"{PROG}: {kind}: {text}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    opts = _options(args)
    if args.distortion is not None and args.intrinsics is None:
        raise LayoutError("--distortion needs --intrinsics")
    intr = parse_intrinsics(args.intrinsics, args.distortion) if args.intrinsics else None
    seq = load_sequence(Path(args.src).expanduser(), args.layout, intrinsics=intr,
                        calib_file=Path(args.calib).expanduser() if args.calib else None,
                        camera=args.camera, baseline=args.baseline, mono=args.mono)
    for note in seq.notes:
        _say("note", note)
    out = Path(args.out).expanduser()
    jobs = plan_jobs(seq, args.rate, args.start_time)
    stats, counts = write_bag(seq, jobs, out, opts, args.storage, args.overwrite)
    for role, K in stats.guessed.items():
        _say("WARNING", f"no intrinsics for {TOPICS[role][0]}: GUESSED fx=fy={K[0, 0]:g} "
             f"(1.2 x the long side), cx={K[0, 2]:g} cy={K[1, 2]:g} (image centre); pass "
             "--intrinsics fx,fy,cx,cy or --calib FILE for real values")
    if stats.skipped:
        _say("warning", f"skipped {len(stats.skipped)} image file(s): " + "; ".join(
            f"{p}: {r}" for p, r in stats.skipped[:5]) + (" ..." if len(stats.skipped) > 5
                                                           else ""))
    if stats.depth_rounded:
        _say("note", "depth rounded to whole millimetres (16UC1); --depth-metres keeps it exact")
    duration = (stats.last or 0.0) - (stats.first or 0.0)
    topics = ", ".join(f"{t} ({n})" for t, n in sorted(counts.items()))
    guess = " INTRINSICS GUESSED," if stats.guessed else ""
    print(f"wrote {out}: {stats.frames} frames ({seq.layout} {seq.kind}),{guess} "
          f"{len(counts)} topics [{topics}], {duration:.3f} s, {_size(out)}, {args.storage}")
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:
        _say("error", "interrupted (no bag written)")
        return 130
    except (LayoutError, BagError, OSError, ValueError) as exc:
        _say("error", str(exc))
        return 2
    except Exception as exc:  # never a traceback for a user; -v shows it
        logger.debug("images-to-bag failed", exc_info=True)
        _say("error", f"{type(exc).__name__}: {exc}")
        return 2
