"""HPatches-style homography protocol: MMA, homography accuracy, repeatability, localisation error.

Why its own reader: the same code runs on the official HPatches sequences (``<seq>/1.ppm .. 6.ppm`` +
``H_1_k``), on a single sequence folder, and on Oxford-affine style flat folders
(``graf1.ppm``, ``graf2.ppm``, ``graf_H_1_2``), so the numbers of docs/evaluation.md and the CI
fixtures share it.

Features are used exactly as ``Extractor.extract`` returns them (no resizing or top-k here) and
matched by mutual nearest neighbour on L2 distance (``local_features_ros.matching``), or by the
``matcher`` object given (``local_features_ros.matchers``: ``nn`` | ``lightglue``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np

from . import metrics

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".ppm", ".png", ".jpg", ".jpeg", ".pgm", ".bmp", ".tif", ".tiff")


# ---------------------------------------------------------------------------------------- shared helpers
def read_image(path: str | Path) -> np.ndarray:
    """Image file -> RGB (or gray) uint8 numpy array, as ``Extractor.extract`` expects."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    if img.dtype not in (np.uint8, np.uint16):
        img = img.astype(np.float32)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


@dataclass
class NumpyFeatures:
    """Features as float arrays (what the metrics need), plus the image size (W, H)."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]
    raw: Any = None  # the original ``Features`` (the frontend wants it)

    def __len__(self) -> int:
        return len(self.keypoints)


def extract_numpy(extractor: Any, image: np.ndarray) -> NumpyFeatures:
    """Run ``extractor.extract`` and keep the result as numpy (fp32, CPU)."""
    feats = extractor.extract(image)
    d = feats.numpy()
    h, w = image.shape[:2]
    return NumpyFeatures(d["keypoints"], d["descriptors"], d["scores"], (w, h), raw=feats)


def mutual_nn_matches(f0: NumpyFeatures, f1: NumpyFeatures) -> np.ndarray:
    """Mutual-nearest-neighbour matches on L2 distance, ``(M, 2)`` int64, via the project matcher."""
    if len(f0) == 0 or len(f1) == 0:
        return np.zeros((0, 2), np.int64)
    import torch

    from ..matching import MatcherConfig, match_descriptors

    res = match_descriptors(torch.from_numpy(f0.descriptors), torch.from_numpy(f1.descriptors),
                            MatcherConfig(mutual=True))
    return np.asarray(res.matches, np.int64).reshape(-1, 2)


def features_of(f: NumpyFeatures) -> Any:
    """The ``Features`` behind ``f`` (rebuilt from the arrays when there is no ``raw``)."""
    if f.raw is not None:
        return f.raw
    import torch

    from ..types import Features

    return Features(keypoints=torch.from_numpy(np.asarray(f.keypoints, np.float32).reshape(-1, 2)),
                    scores=torch.from_numpy(np.asarray(f.scores, np.float32).reshape(-1)),
                    descriptors=torch.from_numpy(np.asarray(f.descriptors, np.float32)
                                                 .reshape(len(f.keypoints), -1)),
                    image_size=tuple(int(v) for v in f.image_size))


def match_features(f0: NumpyFeatures, f1: NumpyFeatures, matcher: Any = None) -> np.ndarray:
    """``(M, 2)`` int64 matches: ``matcher.match`` (a ``matchers`` object), or mutual NN on L2
    when ``matcher`` is None (the protocols' default)."""
    if matcher is None:
        return mutual_nn_matches(f0, f1)
    if len(f0) == 0 or len(f1) == 0:
        return np.zeros((0, 2), np.int64)
    res = matcher.match(features_of(f0), features_of(f1))
    return np.asarray(res.matches, np.int64).reshape(-1, 2)


def matching_protocol(matcher: Any = None) -> str:
    return "mutual nearest neighbour, L2" if matcher is None else matcher.describe()


# ---------------------------------------------------------------------------------------- dataset
@dataclass
class HomographyPair:
    sequence: str
    image0: Path
    image1: Path
    H_0to1: np.ndarray


def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def _sequence_pairs(folder: Path) -> list[HomographyPair]:
    """``1.ext .. k.ext`` + ``H_1_k`` (HPatches)."""
    pairs = []
    ref = _find_image(folder, "1")
    for hfile in sorted(folder.glob("H_1_*"), key=lambda p: int(p.name.split("_")[-1])):
        k = hfile.name.split("_")[-1]
        img = _find_image(folder, k)
        if ref is None or img is None:
            raise FileNotFoundError(f"{hfile} has no matching images 1.* and {k}.* in {folder}")
        pairs.append(HomographyPair(folder.name, ref, img, np.loadtxt(hfile).reshape(3, 3)))
    return pairs


def _flat_pairs(folder: Path) -> list[HomographyPair]:
    """``<name>_H_1_k`` + ``<name>1.ext`` + ``<name>k.ext`` (Oxford affine)."""
    pairs = []
    for hfile in sorted(folder.glob("*_H_*_*")):
        m = re.fullmatch(r"(.+)_H_(\d+)_(\d+)", hfile.name)
        if not m:
            continue
        name, a, b = m.groups()
        i0, i1 = _find_image(folder, f"{name}{a}"), _find_image(folder, f"{name}{b}")
        if i0 is None or i1 is None:
            raise FileNotFoundError(f"{hfile}: images {name}{a}.* / {name}{b}.* not found")
        pairs.append(HomographyPair(name, i0, i1, np.loadtxt(hfile).reshape(3, 3)))
    return pairs


def load_homography_pairs(root: str | Path) -> list[HomographyPair]:
    """All pairs under ``root`` (a sequence folder, a folder of sequences, or a flat folder)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"HPatches folder not found: {root}")
    pairs = _sequence_pairs(root) if any(root.glob("H_1_*")) else []
    pairs += _flat_pairs(root)
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if any(sub.glob("H_1_*")):
            pairs += _sequence_pairs(sub)
    if not pairs:
        raise ValueError(f"no homography pairs (H_1_k or <name>_H_a_b files) found in {root}")
    return pairs


# ---------------------------------------------------------------------------------------- protocol
@dataclass
class HPatchesConfig:
    mma_thresholds: tuple[int, ...] = metrics.MMA_THRESHOLDS
    homography_thresholds: tuple[int, ...] = metrics.HOMOGRAPHY_THRESHOLDS
    ransac_reproj_thresh: float = 3.0  # px, cv2.findHomography RANSAC
    repeatability_thresh: float = 3.0  # px


def evaluate_pair(f0: NumpyFeatures, f1: NumpyFeatures, matches: np.ndarray, H: np.ndarray,
                  cfg: HPatchesConfig) -> dict[str, Any]:
    """All per-pair numbers of the protocol for one pair of feature sets and their matches."""
    errors = metrics.match_errors_homography(f0.keypoints, f1.keypoints, matches, H)
    mma = metrics.matching_accuracy(errors, cfg.mma_thresholds)
    H_est = None
    if len(matches) >= 4:
        H_est = metrics.estimate_homography(f0.keypoints[matches[:, 0]],
                                            f1.keypoints[matches[:, 1]], cfg.ransac_reproj_thresh)
    corner = metrics.homography_corner_error(H_est, H, f0.image_size)
    rep = metrics.repeatability(f0.keypoints, f1.keypoints, H, f0.image_size, f1.image_size,
                                cfg.repeatability_thresh)
    return {
        "mma": mma,
        "corner_error": corner,
        "homography_correct": {str(e): bool(corner <= e) for e in cfg.homography_thresholds},
        "repeatability": rep.repeatability,
        "localization_error": rep.localization_error,
        "features": [len(f0), len(f1)],
        "matches": int(len(matches)),
    }


def aggregate(per_pair: list[dict[str, Any]], num_features: list[int],
              cfg: HPatchesConfig) -> dict[str, Any]:
    """Means over pairs (MMA, accuracy) and over defined values (repeatability, MLE)."""
    n = len(per_pair)

    def nanmean(vals: Iterable[float]) -> float | None:
        v = np.array([x for x in vals if x is not None and np.isfinite(x)], np.float64)
        return float(v.mean()) if len(v) else None

    return {
        "mma": {str(t): float(np.mean([p["mma"][str(t)] for p in per_pair]))
                for t in cfg.mma_thresholds},
        "homography_accuracy": {str(e): float(np.mean([p["homography_correct"][str(e)]
                                                       for p in per_pair]))
                                for e in cfg.homography_thresholds},
        "repeatability": nanmean(p["repeatability"] for p in per_pair),
        "localization_error": nanmean(p["localization_error"] for p in per_pair),
        "features": float(np.mean(num_features)) if num_features else 0.0,
        "matches": float(np.mean([p["matches"] for p in per_pair])),
        "num_pairs": n,
    }


def evaluate_hpatches(root: str | Path, extract: Callable[[np.ndarray], NumpyFeatures],
                      cfg: HPatchesConfig | None = None, matcher: Any = None) -> dict[str, Any]:
    """Run the protocol on every pair under ``root``; ``extract`` maps an image to features;
    ``matcher``: a ``matchers`` object (None = mutual NN on L2)."""
    cfg = cfg or HPatchesConfig()
    pairs = load_homography_pairs(root)
    cache: dict[Path, NumpyFeatures] = {}

    def feats(path: Path) -> NumpyFeatures:
        if path not in cache:
            cache[path] = extract(read_image(path))
        return cache[path]

    per_pair = []
    for p in pairs:
        cv2.setRNGSeed(0)  # RANSAC: same numbers on every run
        f0, f1 = feats(p.image0), feats(p.image1)
        matches = match_features(f0, f1, matcher)
        r = evaluate_pair(f0, f1, matches, p.H_0to1, cfg)
        r.update(sequence=p.sequence, image0=p.image0.name, image1=p.image1.name)
        per_pair.append(r)
        logger.info("%s %s->%s: %d/%d features, %d matches, MMA@3 %.3f, corner err %.2f px",
                    p.sequence, p.image0.name, p.image1.name, len(f0), len(f1), len(matches),
                    r["mma"]["3"] if "3" in r["mma"] else float("nan"), r["corner_error"])
    out = aggregate(per_pair, [len(f) for f in cache.values()], cfg)
    # Split by HPatches sequence type (i_* illumination, v_* viewpoint) when the names say so.
    for kind in ("i", "v"):
        sub = [p for p in per_pair if p["sequence"].startswith(f"{kind}_")]
        if sub and len(sub) < len(per_pair):
            imgs = {(p["sequence"], p["image0"]) for p in sub} | {(p["sequence"], p["image1"])
                                                                   for p in sub}
            out.setdefault("by_type", {})[kind] = aggregate(sub, [0] * len(imgs), cfg)
            out["by_type"][kind].pop("features")
    out["protocol"] = {
        "matching": matching_protocol(matcher),
        "mma": "fraction of matches with |H_gt x0 - x1| <= t px, mean over pairs",
        "homography": f"cv2.findHomography RANSAC {cfg.ransac_reproj_thresh} px; mean corner "
                      "error vs ground truth <= eps (SuperPoint)",
        "repeatability": f"{cfg.repeatability_thresh} px, common visible region, both directions",
    }
    out["per_pair"] = per_pair
    return out
