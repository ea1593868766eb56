"""Dataset image folders (KITTI odometry, TUM RGB-D, a plain folder) -> one :class:`Sequence`.

Why a module of its own: turning a folder into a bag needs the same three answers for every
dataset - which files, in which order, at which times, seen by which camera - and each dataset
spells them differently. This module only reads names, text files and calibration; it decodes
no image, so a wrong folder fails in milliseconds.

Layouts (``detect_layout``):

- ``kitti``: ``image_l/`` + ``image_r/`` (stereo, ``P0``/``P1``), ``image_0/`` + ``image_1/``
  (gray stereo, ``P0``/``P1``), ``image_2/`` + ``image_3/`` (colour stereo, ``P2``/``P3``), or
  ``image_0/`` / ``image_2/`` alone (mono); ``calib.txt`` holds 3x4 ``P`` rows, labelled
  (``P0: ...``) or not (row i = ``Pi``); optional ``times.txt`` (seconds, line = frame index).
- ``tum``: ``rgb/`` (+ ``depth/``), ``rgb.txt`` / ``depth.txt`` (``timestamp file`` lines);
  without the lists the file names are the timestamps.
- ``folder``: the images in SRC itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .bags import CameraInfoData
from .commands.extract import IMAGE_SUFFIXES

__all__ = ["LAYOUTS", "TUM_CAMERAS", "LayoutError", "Intrinsics", "CameraCalib", "ImageStream",
           "Sequence", "parse_intrinsics", "parse_numbers", "read_calib_file", "detect_layout",
           "load_sequence", "list_images"]

LAYOUTS = ("kitti", "tum", "folder")

# TUM RGB-D colour cameras (vision.in.tum.de "File Formats" page): fx, fy, cx, cy, d0..d4.
TUM_CAMERAS: dict[str, tuple[float, ...]] = {
    "tum-fr1": (517.3, 516.5, 318.6, 255.3, 0.2624, -0.9531, -0.0054, 0.0026, 1.1633),
    "tum-fr2": (520.9, 521.0, 325.1, 249.7, 0.2312, -0.7849, -0.0033, -0.0001, 0.9172),
    "tum-fr3": (535.4, 539.2, 320.1, 247.6, 0.0, 0.0, 0.0, 0.0, 0.0),
}

# KITTI folder pairs: (left dir, right dir, left P, right P); mono = the left of the first pair
# present.
_KITTI_STEREO = (("image_l", "image_r", "P0", "P1"), ("image_0", "image_1", "P0", "P1"),
                 ("image_2", "image_3", "P2", "P3"))
_KITTI_MONO = (("image_0", "P0"), ("image_2", "P2"), ("image_l", "P0"))
_UNIX_2001 = 1e9  # file names that are numbers above this are Unix timestamps (TUM)


class LayoutError(ValueError):
    """The folder, a list/calibration file or an option cannot describe a sequence."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics and distortion as a user or preset states them."""

    fx: float
    fy: float
    cx: float
    cy: float
    D: tuple[float, ...] = ()

    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class CameraCalib:
    """One camera of the sequence: K, distortion, and for a stereo right camera the ROS
    ``Tx = -fx * baseline`` term of its P. ``source`` says where the numbers came from."""

    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))
    tx: float = 0.0
    source: str = ""
    guessed: bool = False

    def camera_info(self, width: int, height: int) -> CameraInfoData:
        P = np.zeros((3, 4))
        P[:, :3] = self.K
        P[0, 3] = self.tx
        D = np.asarray(self.D, np.float64).reshape(-1)
        model = "rational_polynomial" if D.size == 8 else "plumb_bob"
        return CameraInfoData(int(width), int(height), np.asarray(self.K, np.float64).copy(),
                              P, D.copy(), model)


@dataclass
class ImageStream:
    """The files of one camera topic in playback order; ``stamps`` (seconds, same length) when
    the dataset has them, else None (the writer spaces frames at ``--rate``)."""

    role: str  # mono | left | right | rgb | depth
    files: list[Path]
    stamps: list[float] | None = None


@dataclass
class Sequence:
    """Everything the bag writer needs to know about a dataset folder.

    ``calib`` maps a camera role to its calibration; a role missing from it (plain folders
    without ``--intrinsics``) gets a guessed K from the first image's size. Left/right streams
    are paired by index. ``absolute_stamps``: the stamps are Unix times (TUM) rather than
    offsets from the sequence start (KITTI ``times.txt``).
    """

    layout: str
    kind: str  # mono | stereo | rgbd
    streams: dict[str, ImageStream]
    calib: dict[str, CameraCalib]
    absolute_stamps: bool = False
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# small parsers


def parse_numbers(text: str, what: str) -> list[float]:
    """Comma- or space-separated finite numbers."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise LayoutError(f"bad {what} {text!r}: not a list of numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise LayoutError(f"bad {what} {text!r}: numbers must be finite")
    return values


def parse_intrinsics(text: str, distortion: str | None = None) -> Intrinsics:
    """``"fx,fy,cx,cy"`` (+ optional ``"k1,k2,p1,p2[,k3[,k4,k5,k6]]"``) -> :class:`Intrinsics`."""
    v = parse_numbers(text, "--intrinsics")
    if len(v) != 4:
        raise LayoutError(f"bad --intrinsics {text!r}: expected 4 numbers fx,fy,cx,cy, "
                          f"got {len(v)}")
    if v[0] <= 0 or v[1] <= 0:
        raise LayoutError(f"bad --intrinsics {text!r}: fx and fy must be positive")
    return Intrinsics(*v, D=_parse_distortion(distortion))


def _parse_distortion(text: str | None) -> tuple[float, ...]:
    if text is None:
        return ()
    d = parse_numbers(text, "--distortion")
    if len(d) not in (4, 5, 8):
        raise LayoutError(f"bad --distortion {text!r}: expected 4, 5 or 8 coefficients "
                          f"(k1,k2,p1,p2[,k3[,k4,k5,k6]]), got {len(d)}")
    return tuple(d + [0.0] if len(d) == 4 else d)


def read_calib_file(path: Path) -> dict[str, np.ndarray]:
    """A calibration text file -> ``{"P0": 3x4, ...}`` or ``{"K": 3x3}``.

    Accepted: KITTI rows of 12 numbers, labelled (``P0: ...``; other labels such as ``Tr:`` are
    ignored) or unlabelled (row i = ``Pi``); a 3x3 K (9 numbers, one or three lines); or
    ``fx fy cx cy`` (4 numbers)."""
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"cannot read calibration file {path}: {exc}") from None
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    labelled: dict[str, np.ndarray] = {}
    unlabelled: list[list[float]] = []
    for ln in lines:
        label, sep, rest = (s.strip() for s in ln.partition(":"))
        try:
            values = parse_numbers(rest if sep else ln, f"row {label!r}" if sep else "line")
        except LayoutError as exc:
            raise LayoutError(f"unreadable calibration {path}: {exc}") from None
        if not sep:
            unlabelled.append(values)
        elif re.fullmatch(r"P\d", label):
            if len(values) != 12:
                raise LayoutError(f"unreadable calibration {path}: {label} has {len(values)} "
                                  "numbers, expected 12 (3x4)")
            labelled[label] = np.array(values).reshape(3, 4)
    if labelled:
        return labelled
    flat = [v for row in unlabelled for v in row]
    if unlabelled and all(len(r) == 12 for r in unlabelled):
        return {f"P{i}": np.array(r).reshape(3, 4) for i, r in enumerate(unlabelled)}
    if len(flat) == 9:
        return {"K": np.array(flat).reshape(3, 3)}
    if len(flat) == 4:
        fx, fy, cx, cy = flat
        return {"K": Intrinsics(fx, fy, cx, cy).K()}
    raise LayoutError(f"unreadable calibration {path}: expected KITTI P rows (12 numbers), "
                      "a 3x3 K or fx fy cx cy")


def _natural_key(p: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))


def _float_or_none(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` (not recursive): numerically when every name is a number (TUM
    timestamps), else by name with digit runs compared as numbers (``2.png`` before ``10.png``)."""
    files = [q for q in folder.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES]
    numbers = [_float_or_none(q.stem) for q in files]
    if files and all(n is not None for n in numbers):
        return [q for _, q in sorted(zip(numbers, files), key=lambda t: (t[0], t[1].name))]
    return sorted(files, key=_natural_key)


def _stamps_from_names(files: list[Path]) -> list[float] | None:
    """Unix-time file names (``1311868169.163498.png``) -> stamps, if all of them are."""
    values = [_float_or_none(f.stem) for f in files]
    if files and all(v is not None and v > _UNIX_2001 for v in values):
        return [float(v) for v in values if v is not None]
    return None


# ----------------------------------------------------------------------------------------------
# layouts


def detect_layout(src: Path) -> str:
    if any((src / d).is_dir() for d in ("image_l", "image_0", "image_2")):
        return "kitti"
    if (src / "rgb").is_dir() or (src / "rgb.txt").is_file():
        return "tum"
    return "folder"


def _nonempty(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise LayoutError(f"folder {folder} not found")
    files = list_images(folder)
    if not files:
        raise LayoutError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {folder}")
    return files


def _user_calib(intrinsics: Intrinsics | None, calib_file: Path | None) -> CameraCalib | None:
    if intrinsics is not None:
        return CameraCalib(intrinsics.K(), np.array(intrinsics.D or (0.0,) * 5),
                           source="--intrinsics")
    if calib_file is not None:
        cal = read_calib_file(calib_file)
        K = cal["K"] if "K" in cal else cal[min(cal)][:, :3]
        return CameraCalib(K.copy(), source=str(calib_file))
    return None


def _kitti(src: Path, user: CameraCalib | None, calib_file: Path | None,
           baseline: float | None, mono: bool) -> Sequence:
    pair = next(((lft, rgt, pl, pr) for lft, rgt, pl, pr in _KITTI_STEREO
                 if (src / lft).is_dir() and (src / rgt).is_dir()), None)
    if mono or pair is None:
        left_dir, pl = next((d, p) for d, p in _KITTI_MONO if (src / d).is_dir())
        right_dir = pr = None
    else:
        left_dir, right_dir, pl, pr = pair
    left = _nonempty(src / left_dir)
    notes: list[str] = []
    streams: dict[str, ImageStream] = {}
    if right_dir is not None:
        right = {f.name: f for f in _nonempty(src / right_dir)}
        paired = [f for f in left if f.name in right]
        if not paired:
            raise LayoutError(f"no file name is in both {src / left_dir} and {src / right_dir}")
        if len(paired) < max(len(left), len(right)):
            notes.append(f"{max(len(left), len(right)) - len(paired)} image(s) without a "
                         f"partner in {left_dir}/ or {right_dir}/ left out")
        left = paired
        streams["right"] = ImageStream("right", [right[f.name] for f in paired])
    streams["left" if right_dir else "mono"] = ImageStream("left" if right_dir else "mono", left)
    stamps = _kitti_times(src / "times.txt", left, notes)
    for s in streams.values():
        s.stamps = stamps
    calib = _kitti_calib(src, user, calib_file, pl, pr, baseline, right_dir is not None)
    kind = "stereo" if right_dir else "mono"
    return Sequence("kitti", kind, dict(sorted(streams.items())), calib, False, notes)


def _kitti_times(path: Path, files: list[Path], notes: list[str]) -> list[float] | None:
    """times.txt line i = frame i (the file ``%06d.png``); a snippet of a sequence keeps its
    frames' own times."""
    if not path.is_file():
        return None
    try:
        times = parse_numbers(path.read_text(), f"times file {path}")
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"cannot read {path}: {exc}") from None
    idx = [int(f.stem) if f.stem.isdigit() else -1 for f in files]
    if all(0 <= i < len(times) for i in idx):
        return [times[i] for i in idx]
    if len(times) == len(files):
        return times
    notes.append(f"{path.name} ({len(times)} lines) does not match the {len(files)} images; "
                 "frames are spaced at --rate")
    return None


def _kitti_calib(src: Path, user: CameraCalib | None, calib_file: Path | None, pl: str,
                 pr: str | None, baseline: float | None, stereo: bool) -> dict[str, CameraCalib]:
    if user is not None:
        if not stereo:
            return {"mono": user}
        if baseline is None:
            raise LayoutError("stereo with --intrinsics needs --baseline M (or give the P rows "
                              "with --calib FILE; --mono writes the left camera only)")
        right = CameraCalib(user.K, user.D, -user.K[0, 0] * baseline, user.source)
        return {"left": user, "right": right}
    path = calib_file or src / "calib.txt"
    if not path.is_file():
        raise LayoutError(f"no calibration: {path} not found (pass --calib FILE or "
                          "--intrinsics fx,fy,cx,cy" + (" and --baseline M)" if stereo else ")"))
    cal = read_calib_file(path)
    if "K" in cal:  # a K-only file: the same camera twice, baseline from the option
        return _kitti_calib(src, CameraCalib(cal["K"], source=str(path)), None, pl, pr,
                            baseline, stereo)
    need = [pl] + ([pr] if stereo and pr else [])
    missing = [p for p in need if p not in cal]
    if missing:
        raise LayoutError(f"unreadable calibration {path}: no {'/'.join(missing)} row "
                          f"(has {', '.join(sorted(cal)) or 'nothing usable'})")
    P_left = cal[pl]
    left = CameraCalib(P_left[:, :3].copy(), source=f"{path} {pl}")
    if not stereo:
        return {"mono": left}
    P_right = cal[pr]
    fx = P_right[0, 0]
    # KITTI P rows are relative to camera 0; ROS wants Tx of the right camera relative to the
    # left one: Tx = -fx * B with B = (P_left[0,3] - P_right[0,3]) / fx.
    tx = P_right[0, 3] - P_left[0, 3] if baseline is None else -fx * baseline
    if tx >= 0:
        raise LayoutError(f"unreadable calibration {path}: {pr}[0,3] - {pl}[0,3] = {tx:g} gives "
                          "no positive baseline (expected -fx * baseline)")
    right = CameraCalib(P_right[:, :3].copy(), tx=float(tx), source=f"{path} {pr}")
    return {"left": left, "right": right}


def data_lines(path: Path) -> Iterator[tuple[int, list[str], str]]:
    """(line number, fields, line) of a whitespace-separated text file (TUM lists and
    trajectories), skipping blank lines and ``#`` comments; ``LayoutError`` when unreadable."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"cannot read {path}: {exc}") from None
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            yield n, parts, line


def _tum_list(path: Path, src: Path) -> ImageStream:
    """``rgb.txt`` / ``depth.txt``: ``timestamp filename`` lines, ``#`` comments."""
    files: list[Path] = []
    stamps: list[float] = []
    for n, parts, line in data_lines(path):
        t = _float_or_none(parts[0])
        if len(parts) < 2 or t is None:
            raise LayoutError(f"{path} line {n}: expected 'timestamp filename', got {line!r}")
        files.append(src / parts[1])
        stamps.append(t)
    if not files:
        raise LayoutError(f"{path} lists no images")
    role = "depth" if path.stem == "depth" else "rgb"
    return ImageStream(role, files, stamps)


def _tum_stream(src: Path, name: str) -> ImageStream | None:
    listing = src / f"{name}.txt"
    if listing.is_file():
        return _tum_list(listing, src)
    if not (src / name).is_dir():
        return None
    files = _nonempty(src / name)
    return ImageStream(name, files, _stamps_from_names(files))


def _tum(src: Path, user: CameraCalib | None) -> Sequence:
    rgb = _tum_stream(src, "rgb")
    if rgb is None:
        raise LayoutError(f"{src} has neither rgb.txt nor rgb/ (TUM RGB-D layout)")
    depth = _tum_stream(src, "depth")
    streams = {"rgb": rgb, **({"depth": depth} if depth is not None else {})}
    notes: list[str] = []
    if depth is not None and (rgb.stamps is None) != (depth.stamps is None):
        notes.append("depth frames left out: rgb and depth do not both have timestamps")
        del streams["depth"]
    if user is None:
        m = re.search(r"(?:freiburg|(?<![a-z])fr)([123])", src.resolve().name.lower())
        if m:
            user = preset_calib(f"tum-fr{m.group(1)}")
            notes.append(f"camera {user.source} taken from the folder name")
    calib = {"rgb": user} if user is not None else {}
    absolute = rgb.stamps is not None
    return Sequence("tum", "rgbd" if "depth" in streams else "mono", streams, calib, absolute,
                    notes)


def preset_calib(camera: str) -> CameraCalib:
    if camera not in TUM_CAMERAS:
        raise LayoutError(f"unknown --camera {camera!r} (choose from {', '.join(TUM_CAMERAS)})")
    v = TUM_CAMERAS[camera]
    return CameraCalib(Intrinsics(*v[:4]).K(), np.array(v[4:]), source=camera)


def _folder(src: Path, user: CameraCalib | None) -> Sequence:
    files = _nonempty(src)
    stamps = _stamps_from_names(files)
    return Sequence("folder", "mono", {"mono": ImageStream("mono", files, stamps)},
                    {"mono": user} if user is not None else {}, stamps is not None)


def load_sequence(src: Path, layout: str = "auto", *, intrinsics: Intrinsics | None = None,
                  calib_file: Path | None = None, camera: str | None = None,
                  baseline: float | None = None, mono: bool = False) -> Sequence:
    """Detect (or take) the layout of ``src`` and describe its frames and cameras.

    Calibration, most specific first: ``intrinsics``, ``calib_file``, ``camera`` preset, the
    layout's own (KITTI ``calib.txt``, a ``freiburgN`` TUM folder name); otherwise the role is
    left out of ``Sequence.calib`` and the caller guesses."""
    if not src.is_dir():
        raise LayoutError(f"source folder {src} not found" if not src.exists()
                          else f"source {src} is not a folder")
    if baseline is not None and not (math.isfinite(baseline) and baseline > 0):
        raise LayoutError(f"bad --baseline {baseline}: must be a positive number of metres")
    if calib_file is not None and not calib_file.is_file():
        raise LayoutError(f"calibration file {calib_file} not found")
    chosen = detect_layout(src) if layout == "auto" else layout
    if chosen not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r} (auto, {', '.join(LAYOUTS)})")
    if chosen == "kitti":
        if not any((src / d).is_dir() for d, _ in _KITTI_MONO):
            raise LayoutError(f"{src} has no image_0/, image_2/ or image_l/ (KITTI layout)")
        user = _user_calib(intrinsics, None)
        if user is None and camera is not None:
            user = preset_calib(camera)
        return _kitti(src, user, calib_file, baseline, mono)
    user = _user_calib(intrinsics, calib_file)
    if user is None and camera is not None:
        user = preset_calib(camera)
    if chosen == "tum":
        return _tum(src, user)
    return _folder(src, user)
