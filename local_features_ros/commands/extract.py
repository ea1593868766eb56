"""``local-features extract``: images or folders of images -> one ``<stem>.npz`` of features each.

File contract (design.md "Contracts"): ``keypoints`` (N, 2) float32 [x, y] in original-image
pixels, ``scores`` (N,), ``scales`` (N,), ``orientations`` (N,) radians, ``descriptors`` (N, D)
float32, ``image_size`` [width, height] — exactly ``Features.numpy()``.

Every input is checked (exists, has an image header OpenCV can decode, no two outputs with the
same stem) before the model is built, so a typo fails in a second with a one-line reason instead
of after a long run; a file that is corrupt past its header fails when it is reached.
``--skip-bad`` instead skips unreadable files, lists them on stderr and exits 0 when at least one
image worked (a folder from a robot's disk often holds a truncated last frame).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from ._common import add_extractor_arguments, parse_settings

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


def read_image(path: Path) -> np.ndarray:
    """cv2 read as stored (8/16 bit, gray or colour) and BGR(A) -> RGB, as extractors expect."""
    import cv2

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


def main(args: argparse.Namespace) -> int:
    from ..registry import build_extractor, get_extractor_class

    conf: dict[str, Any] = parse_settings(args.settings)
    get_extractor_class(args.method)  # unknown method fails before any file work
    images = collect_images(args.inputs)
    import cv2

    bad: list[tuple[Path, str]] = []
    for p in list(images):  # fail fast (header check only) before loading a model
        if not cv2.haveImageReader(str(p)):
            reason = f"cannot read image {p} (not an image format OpenCV can decode)"
            if not args.skip_bad:
                raise ValueError(reason)
            bad.append((p, "not an image format OpenCV can decode"))
            images.remove(p)
    out_dir = Path(args.out).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeError(f"cannot create output folder {out_dir}: {exc}") from exc
    extractor = build_extractor(args.method, weights=args.weights, device=args.device,
                                precision=args.precision, **conf)
    total = written = 0
    for p in images:
        try:
            feats = extractor.extract(read_image(p))
        except ValueError as exc:  # corrupt past the header, empty, unsupported layout
            if not args.skip_bad:
                raise
            bad.append((p, str(exc)))
            continue
        target = out_dir / f"{p.stem}.npz"
        try:
            write_npz(target, feats.numpy())
        except OSError as exc:
            raise RuntimeError(f"cannot write {target}: {exc}") from exc
        total += len(feats)
        written += 1
        logger.info("%s: %d keypoints", p.name, len(feats))
    print(f"wrote {written} feature file(s) to {out_dir} ({total} keypoints, method {args.method})")
    if bad:
        print(f"skipped {len(bad)} bad image(s):", file=sys.stderr)
        for p, reason in bad:
            print(f"  {p}: {reason}", file=sys.stderr)
    return 0 if written > 0 else 1
