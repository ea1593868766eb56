"""An export counts only if the runtime can use it: load it, run it, count its keypoints.

Why: a briefly trained detector can end with every heatmap value under the runtime's detection
threshold; its checkpoint loads fine, and ``extract`` / ``demo`` "succeed" with 0 keypoints on
every frame. So every export (every method, every stage) is written under a staging name, loaded
with the runtime's own ``build_extractor`` (with the keys the checkpoint records, exactly as
``extract`` and the node build it) and run on validation images. Only when the detector finds
keypoints is the file renamed to its final name; otherwise it is renamed to
``<name>.failed.pth`` (kept for inspection, e.g. with a lower threshold), any older file under the
final name is removed, and ``ExportCheckFailed`` says what happened and what to do.

Validation images: up to two held-out images of the training data when the task has them (its
``Task.export_check_images``), else ``generated_image()``, a textured image with corners, blobs
and edges at several scales that every working detector fires on. The export fails when the
detector finds 0 keypoints on *all* of them (a single dark or blank held-out frame must not fail
a good model).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: what a validation image list holds: (name shown in messages, HxW gray or HxWx3 RGB uint8)
NamedImages = Sequence[tuple[str, np.ndarray]]

#: held-out images a check uses at most (each costs one runtime extraction)
MAX_IMAGES = 2


class ExportCheckFailed(RuntimeError):
    """The exported weights detect no keypoints in the runtime; the message is one line."""


@dataclass(frozen=True)
class CheckResult:
    """Keypoints the runtime extractor found per validation image."""

    method: str
    stage: str
    counts: tuple[tuple[str, int], ...]
    threshold: float | None
    seconds: float

    @property
    def ok(self) -> bool:
        return sum(n for _, n in self.counts) > 0

    def describe(self) -> str:
        return ", ".join(f"{name}: {n}" for name, n in self.counts)


def generated_image(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """Gray uint8 image with blocky texture, filled rectangles, lines and discs: corners, blobs and
    edges at several scales, so a detector that works on real frames fires on it. Deterministic
    (own generator: it never touches the global RNGs)."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(height // 12, 2), max(width // 12, 2))).astype(np.uint8)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_NEAREST)
    for _ in range(14):
        x, y = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        w, h = int(rng.integers(8, max(width // 5, 9))), int(rng.integers(8, max(height // 5, 9)))
        cv2.rectangle(img, (x, y), (x + w, y + h), int(rng.integers(0, 256)), -1)
    for _ in range(8):
        p = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        q = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(img, p, q, int(rng.integers(0, 256)), int(rng.integers(1, 4)))
    for _ in range(6):
        c = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(img, c, int(rng.integers(3, max(min(height, width) // 10, 4))),
                   int(rng.integers(0, 256)), -1)
    return cv2.GaussianBlur(img, (3, 3), 0)


def generated_images() -> list[tuple[str, np.ndarray]]:
    """The fallback validation set: one generated image."""
    return [("generated 240x320 texture", generated_image())]


def to_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """A training sample's image ((1|3, H, W) or (H, W[, 3]) in [0, 1] or 0..255) as the HxW /
    HxWx3 uint8 array ``Extractor.extract`` takes."""
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
        a = a * 255.0 if a.size and float(a.max()) <= 1.0 else a
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 (gray methods convert it themselves)."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read validation image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Building an extractor initialises layers from the global RNGs; a check must not move the
    training's random streams (bit-for-bit resume), so all of them are restored afterwards."""
    py, npy = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def run_check(path: str | os.PathLike, images: NamedImages | None,
              device: str | torch.device = "cpu") -> CheckResult:
    """Load ``path`` with the runtime's ``build_extractor`` (method and ``extractor_conf`` from
    the checkpoint, runtime defaults otherwise) and count keypoints on each image."""
    from local_features_ros.registry import build_extractor
    from local_features_ros.weights import load_checkpoint

    t0 = time.monotonic()
    dev = torch.device(device)
    ck = load_checkpoint(path)
    method = ck.get("method") if isinstance(ck, dict) else None
    if not method:
        raise ValueError(f"{path} is not a project checkpoint (no 'method'): cannot check it")
    imgs = list(images or []) or generated_images()
    with preserved_rng(dev):
        extractor = build_extractor(str(method), weights=str(path), device=str(dev))
        counts = tuple((name, len(extractor.extract(img))) for name, img in imgs)
    thr = extractor.conf.get("detection_threshold")
    return CheckResult(str(method), str(ck.get("stage") or ""), counts,
                       None if thr is None else float(thr), time.monotonic() - t0)


def failure_message(result: CheckResult, kept: Path | None, checkpoint: Path | None) -> str:
    """One line: which method/stage, which weights and checkpoint, which images, how many
    keypoints, what to do."""
    stage = f" ({result.stage} stage)" if result.stage else ""
    thr = f" at detection_threshold {result.threshold:g}" if result.threshold is not None else ""
    where = [f"weights kept as {kept}" if kept else "",
             f"checkpoint {checkpoint}" if checkpoint else ""]
    where_s = "; ".join(w for w in where if w)
    return (f"export check failed: {result.method}{stage} detects 0 keypoints on the validation "
            f"image(s) [{result.describe()}]{thr}, so the export was not written"
            f"{' (' + where_s + ')' if where_s else ''}. Train longer (more steps or a larger "
            f"time budget), lower the detection threshold (e.g. --set detection_threshold=0.001 "
            f"with the kept weights), or check the training data and labels")


def staging_path(final: Path) -> Path:
    return final.with_name(f"{final.stem}.unchecked{final.suffix}")


def failed_path(final: Path) -> Path:
    return final.with_name(f"{final.stem}.failed{final.suffix}")


def publish_export(write: Callable[[Path], Path | str | None], final: str | os.PathLike,
                   images: NamedImages | None = None, device: str | torch.device = "cpu",
                   checkpoint: str | os.PathLike | None = None) -> Path | None:
    """``write(staging path)`` (an atomic checkpoint write), check the result with the runtime,
    then rename it to ``final`` (both renames are atomic). Raises ``ExportCheckFailed`` when the
    detector finds no keypoints; returns None when ``write`` exports nothing."""
    final = Path(final)
    written = write(staging_path(final))
    if written is None:
        return None
    written = Path(written)
    try:
        result = run_check(written, images, device)
    except Exception:
        # the runtime cannot even load or run it: keep it for inspection, never publish it
        os.replace(written, failed_path(final))
        final.unlink(missing_ok=True)
        raise
    if not result.ok:
        kept = failed_path(final)
        os.replace(written, kept)
        # an older export under the final name belongs to an earlier state of this run: a user
        # (or the pipeline) picking it up would get weights this run did not produce
        final.unlink(missing_ok=True)
        ckpt = Path(checkpoint) if checkpoint else None
        raise ExportCheckFailed(failure_message(result, kept, ckpt))
    os.replace(written, final)
    failed_path(final).unlink(missing_ok=True)
    logger.info("export check: %s detects [%s] keypoints (%.1f s)", final, result.describe(),
                result.seconds)
    return final


def probe_cost(write: Callable[[Path], Path | str | None], final: str | os.PathLike,
               images: NamedImages | None = None, device: str | torch.device = "cpu") -> float:
    """Seconds one ``publish_export`` takes (write + load + extract), measured on the current
    weights into a scratch file that is removed: a budgeted run reserves this much for its
    final export. Never fails on 0 keypoints (untrained weights are expected here)."""
    t0 = time.monotonic()
    scratch = Path(final).with_name(f".{Path(final).stem}.probe{Path(final).suffix}")
    written = None
    try:
        written = write(scratch)
        if written is not None:
            run_check(written, images, device)
    finally:
        scratch.unlink(missing_ok=True)
        if written is not None:
            Path(written).unlink(missing_ok=True)
    return time.monotonic() - t0
