"""``local-features extract``: images or folders of images -> one ``<stem>.npz`` of features each.

File contract (docs/ARCHITECTURE.md#contracts): ``keypoints`` (N, 2) float32 [x, y] in
original-image pixels, ``scores`` (N,), ``scales`` (N,), ``orientations`` (N,) radians,
``descriptors`` (N, D) float32, ``image_size`` [width, height] — exactly ``Features.numpy()``.

Every input is checked (exists, has an image header OpenCV can decode, no two outputs with the
same stem) before the model is built, so a typo fails in a second with a one-line reason instead
of after a long run; a file that is corrupt past its header fails when it is reached.
``--skip-bad`` instead skips unreadable files, lists them on stderr and exits 0 when at least one
image worked (a folder from a robot's disk often holds a truncated last frame).

Exit statuses (``_common.py``): 2 when a setting, an input, the output folder or the weights are
wrong (nothing is written); 1 when the run started and failed: an image corrupt past its header
(without ``--skip-bad``), no image readable, or a learned method with trained weights that found
0 keypoints in every image. An image with 0 keypoints gets a warning line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ._common import (RUN_FAILED, add_extractor_arguments, extractor_options, fail, run_command,
                      warn, warn_ignored_weights)

logger = logging.getLogger(__name__)

HELP = "extract features from images (files or folders) into DIR/<stem>.npz"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_extractor_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable/corrupt images (listed on stderr; exit 0 if at least "
                             "one image worked) instead of stopping at the first one")


def collect_images(inputs: list[str]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted, not recursive)."""
    images: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {p}")
            images.extend(found)
        elif p.is_file():
            images.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    stems: dict[str, Path] = {}
    for p in images:
        if p.stem in stems:
            raise ValueError(f"two inputs would write {p.stem}.npz: {stems[p.stem]} and {p}")
        stems[p.stem] = p
    return images


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines (``[ERROR:0@0.2] ... readHeader``) while decoding: a
    corrupt file is reported once, by the caller, on one line."""
    import cv2

    level = cv2.getLogLevel()
    cv2.setLogLevel(0)  # silent
    try:
        yield
    finally:
        cv2.setLogLevel(level)


def read_image(path: Path) -> np.ndarray:
    """cv2 read as stored (8/16 bit, gray or colour) and BGR(A) -> RGB, as extractors expect."""
    import cv2

    with quiet_opencv():
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError(f"cannot read image {path} (unknown format or corrupt file)")
    if img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        img = img[..., 0]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic write (temp file + rename): an interrupted run never leaves half a file."""
    from ..atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def zero_keypoints_hint(extractor: Any) -> str:
    """What usually makes ``extractor`` find nothing, for the 0-keypoint warning."""
    threshold = extractor.conf.get("detection_threshold")
    if not extractor.is_learned:
        return (f"detection_threshold={threshold}; a flat, blurred or tiny image has no "
                "corners, or lower the threshold with --set detection_threshold=...")
    return (f"detection_threshold={threshold}: lower it with --set detection_threshold=..., "
            f"and check that the weights ({extractor.weights_source}) are trained "
            f"{extractor.name} weights")


def all_empty_is_failure(extractor: Any, counts: list[int]) -> bool:
    """True when every image gave 0 keypoints with trained weights of a learned method.

    Why a failure (status 1) rather than a warning: a trained network that finds nothing in any
    image almost always has the wrong weights, threshold or input, and a pipeline reading the
    empty files would go on silently. A classical detector on flat images, or an untrained
    network (``weights=random``, tests), can legitimately find nothing: warnings only."""
    return (bool(counts) and not any(counts) and bool(extractor.is_learned)
            and extractor.weights_source != "random")


@dataclass
class ExtractJob:
    """What ``prepare`` checked and built: the work of ``extract_all``."""

    extractor: Any
    images: list[Path]
    out_dir: Path
    bad: list[tuple[Path, str]] = field(default_factory=list)


def prepare(args: argparse.Namespace) -> ExtractJob:
    """Check settings, inputs and output folder, then build the model (any error: status 2)."""
    import cv2

    options = extractor_options(args, args.method)  # unknown method/key/value before file work
    warn_ignored_weights("extract", options)
    images = collect_images(args.inputs)
    bad: list[tuple[Path, str]] = []
    for p in list(images):  # fail fast (header check only) before loading a model
        if not cv2.haveImageReader(str(p)):
            if not args.skip_bad:
                raise ValueError(f"cannot read image {p} (not an image format OpenCV can decode)")
            bad.append((p, "not an image format OpenCV can decode"))
            images.remove(p)
    out_dir = Path(args.out).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from exc
    return ExtractJob(options.build(), images, out_dir, bad)


def extract_all(args: argparse.Namespace, job: ExtractJob) -> int:
    """Extract and write every image; warn about empty ones (see ``all_empty_is_failure``)."""
    extractor, bad = job.extractor, job.bad
    counts: list[int] = []
    for p in job.images:
        try:
            feats = extractor.extract(read_image(p))
        except ValueError as exc:  # corrupt past the header, empty, unsupported layout
            if not args.skip_bad:
                raise
            bad.append((p, str(exc)))
            continue
        target = job.out_dir / f"{p.stem}.npz"
        try:
            write_npz(target, feats.numpy())
        except OSError as exc:
            raise RuntimeError(f"cannot write {target}: {exc.strerror or exc}") from exc
        counts.append(len(feats))
        logger.info("%s: %d keypoints", p.name, len(feats))
        if len(feats) == 0:
            warn("extract", f"{args.method} found 0 keypoints in {p} "
                            f"({zero_keypoints_hint(extractor)})")
    print(f"wrote {len(counts)} feature file(s) to {job.out_dir} ({sum(counts)} keypoints, "
          f"method {args.method})")
    if bad:
        print(f"skipped {len(bad)} bad image(s):", file=sys.stderr)
        for p, reason in bad:
            print(f"  {p}: {reason}", file=sys.stderr)
    if not counts:
        return fail("extract", f"no image could be read ({len(bad)} skipped)", RUN_FAILED)
    if all_empty_is_failure(extractor, counts):
        return fail("extract", f"{args.method} found 0 keypoints in every image ({len(counts)}) "
                    f"with the weights {extractor.weights_source}: the files are written but "
                    "empty; check detection_threshold and the weights", RUN_FAILED)
    return 0


def main(args: argparse.Namespace) -> int:
    return run_command("extract", lambda: prepare(args), lambda job: extract_all(args, job))
