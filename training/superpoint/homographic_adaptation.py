"""Stage 2: pseudo-ground-truth keypoints by Homographic Adaptation
(docs/method_facts/training_superpoint.md#stage-2-homographic-adaptation).

Why: MagicPoint trained on shapes misses many real-image interest points and is not repeatable
under viewpoint change. Running it on N random warps of each real image and aggregating the
un-warped heatmaps gives labels that are both denser and more repeatable; those labels train the
joint model (and optionally a second MagicPoint round).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import cv2
import numpy as np
import torch

from ..budget import Deadline, RecentMax
from ..data.homographies import compute_valid_mask, homography_conf, sample_homography, warp_image
from ..data.image_folder import list_images, read_gray, resize_crop, sample_name, scaled_tiles
from ..export_check import ExportCheckFailed
from .teachers import DEFAULT_TEACHER, build_teacher

logger = logging.getLogger(__name__)

#: the labels' metadata (``labels/<this>``): the teacher's record (``teachers.Teacher.record``)
TEACHER_FILE = "teacher.json"

DEFAULT_HA: dict[str, Any] = {
    "num": 100,  # identity + 99 random homographies
    "aggregation": "sum",  # sum (mean over the views that see a pixel) | max
    # where the warps run: cv2 (CPU, one view at a time) | torch (batched on the model's device)
    # | auto (torch on CUDA, else cv2). On a GPU the cv2 warps, not the network, bound the export.
    "backend": "auto",
    "valid_border_margin": 3,
    "homographies": {"translation": True, "rotation": True, "scaling": True, "perspective": True,
                     "scaling_amplitude": 0.2, "perspective_amplitude_x": 0.2,
                     "perspective_amplitude_y": 0.2, "patch_ratio": 0.85, "allow_artifacts": True,
                     "max_angle": 3.141592653589793},
}


def box_nms(prob: np.ndarray, size: int = 4, iou: float = 0.1, min_prob: float = 0.015,
            keep_top_k: int = 0) -> np.ndarray:
    """Greedy NMS over ``size`` x ``size`` boxes centred on pixels with ``prob >= min_prob``
    (highest first; a box is dropped if its IoU with a kept box exceeds ``iou``). Returns the
    suppressed map: kept pixels keep their probability, the rest are 0."""
    ys, xs = np.nonzero(prob >= min_prob)
    out = np.zeros_like(prob)
    if len(ys) == 0:
        return out
    scores = prob[ys, xs]
    order = np.argsort(-scores, kind="stable")
    ys, xs, scores = ys[order].astype(np.float64), xs[order].astype(np.float64), scores[order]
    alive = np.ones(len(ys), bool)
    s = float(size)
    area = s * s
    kept = []
    for i in range(len(ys)):
        if not alive[i]:
            continue
        kept.append(i)
        if keep_top_k and len(kept) >= keep_top_k:
            break
        ov = np.clip(s - np.abs(xs[i + 1:] - xs[i]), 0, None) * np.clip(s - np.abs(ys[i + 1:] - ys[i]), 0, None)
        alive[i + 1:] &= ov / (2 * area - ov) <= iou
    k = np.array(kept, int)
    out[ys[k].astype(int), xs[k].astype(int)] = scores[k]
    return out


def _views(conf: Mapping[str, Any] | None, shape: tuple[int, ...], rng: np.random.Generator
           ) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Resolved HA config and its views: identity + ``num - 1`` sampled homographies (both
    backends draw them the same way from the same ``rng``)."""
    c = {**DEFAULT_HA, **(conf or {})}
    if c["aggregation"] not in ("sum", "max"):
        raise ValueError(f"aggregation must be sum or max, got '{c['aggregation']}'")
    hparams = homography_conf({**DEFAULT_HA["homographies"], **c.get("homographies", {})})
    h, w = shape[:2]
    return c, [np.eye(3)] + [sample_homography((h, w), rng, **hparams).H
                             for _ in range(int(c["num"]) - 1)]


class _ChunkTimer:
    """Stops adding batches of views once the next batch (estimated as the slowest one so far)
    would not fit ``time_left()``; the first batch (it holds the identity view) always runs.
    Why: under a time budget one image with 100 views can cost more than the whole stage."""

    def __init__(self, time_left: Callable[[], float] | None, stats: dict[str, int] | None):
        self.time_left = time_left
        self.stats = stats
        self.slowest = 0.0
        self.views = 0
        self._t = 0.0

    def go(self, start: int) -> bool:
        if start > 0 and self.time_left is not None and self.time_left() < self.slowest:
            return False
        self._t = time.monotonic()
        return True

    def done(self, n_views: int) -> None:
        self.slowest = max(self.slowest, time.monotonic() - self._t)
        self.views += n_views
        if self.stats is not None:
            self.stats["views"] = self.views


def _seconds_until(deadline: float) -> Callable[[], float]:
    """``time_left`` for one image: seconds until a ``time.monotonic()`` deadline."""
    return lambda: deadline - time.monotonic()


def homographic_adaptation(prob_fn: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray,
                           rng: np.random.Generator, conf: Mapping[str, Any] | None = None,
                           batch_size: int = 16, time_left: Callable[[], float] | None = None,
                           stats: dict[str, int] | None = None) -> np.ndarray:
    """Aggregated keypoint probability ``(H, W)`` for a gray float image in [0, 1].

    ``prob_fn``: ``(B, 1, H, W)`` -> ``(B, H, W)`` heatmaps. For each homography the image is
    warped (bilinear), the heatmap masked by the eroded valid mask, warped back (bilinear) and
    multiplied by the eroded back-warped count mask; ``sum`` divides the summed heatmaps by the
    summed counts, ``max`` keeps the per-pixel maximum.

    ``time_left``: seconds this image may still take; batches of views that would not fit are
    left out (the aggregate is over the views done). ``stats["views"]``: the views used.
    """
    c, Hs = _views(conf, image.shape, rng)
    h, w = image.shape
    num, margin = len(Hs), int(c["valid_border_margin"])
    agg = np.zeros((h, w), np.float32)
    counts = np.zeros((h, w), np.float32)
    timer = _ChunkTimer(time_left, stats)
    for start in range(0, num, batch_size):
        if not timer.go(start):
            break
        chunk = Hs[start:start + batch_size]
        warped = np.stack([warp_image(image.astype(np.float32), H) for H in chunk])
        probs = prob_fn(torch.from_numpy(warped)[:, None]).cpu().numpy()
        for H, p in zip(chunk, probs):
            p = p * compute_valid_mask((h, w), H, margin)
            Hinv = np.linalg.inv(H)
            back = warp_image(p.astype(np.float32), Hinv)
            count = compute_valid_mask((h, w), Hinv, margin)
            back *= count
            if c["aggregation"] == "sum":
                agg += back
            else:
                agg = np.maximum(agg, back)
            counts += count
        timer.done(len(chunk))
    if c["aggregation"] == "sum":
        return np.where(counts > 0, agg / np.maximum(counts, 1e-9), 0.0).astype(np.float32)
    return agg


def _torch_warp(images: torch.Tensor, H: torch.Tensor, mode: str) -> torch.Tensor:
    """``cv2.warpPerspective`` of ``(B, 1, h, w)`` by ``(B, 3, 3)`` (source px -> warped px) with a
    zero border: pixel centres at integer coordinates, as in ``warp_image``.

    Why not kornia's ``warp_perspective`` (equal within float noise, tested): this runs on the
    bare torch image of the GPU training recipe, which has no kornia."""
    b, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device, dtype=H.dtype),
                            torch.arange(w, device=images.device, dtype=H.dtype), indexing="ij")
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones_like(xs).reshape(-1)])
    src = torch.linalg.inv(H) @ pts  # (B, 3, h*w): where each output pixel reads
    src = src[:, :2] / src[:, 2:3]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=H.device,
                         dtype=H.dtype)
    grid = (src.transpose(1, 2) * scale - 1.0).reshape(b, h, w, 2).to(images.dtype)
    return torch.nn.functional.grid_sample(images, grid, mode=mode, padding_mode="zeros",
                                           align_corners=True)


def _torch_valid_mask(H: torch.Tensor, shape: tuple[int, int], erode_radius: int,
                      device: torch.device) -> torch.Tensor:
    """``compute_valid_mask`` for a batch: warped ones (nearest), eroded with the same elliptic
    kernel and anchor as ``cv2.erode`` (outside the image counts as valid)."""
    from ..data.homographies import erosion_kernel

    ones = torch.ones((H.shape[0], 1, *shape), device=device)
    mask = _torch_warp(ones, H, "nearest")
    k = erosion_kernel(int(erode_radius))
    if k is None:
        return mask[:, 0]
    kh, kw = k.shape
    ay, ax = kh // 2, kw // 2  # cv2's default anchor: the kernel centre
    ker = torch.from_numpy(k.astype(np.float32)).to(device)[None, None]
    hit = torch.nn.functional.conv2d(
        torch.nn.functional.pad(1.0 - mask, (ax, kw - 1 - ax, ay, kh - 1 - ay)), ker)
    return (hit < 0.5).float()[:, 0]


def homographic_adaptation_torch(prob_fn: Callable[[torch.Tensor], torch.Tensor],
                                 image: np.ndarray, rng: np.random.Generator,
                                 conf: Mapping[str, Any] | None = None, batch_size: int = 16,
                                 device: torch.device | str = "cpu",
                                 time_left: Callable[[], float] | None = None,
                                 stats: dict[str, int] | None = None) -> np.ndarray:
    """``homographic_adaptation`` with the warps batched on ``device`` (same homographies from
    the same ``rng``, same masks and aggregation; bilinear/nearest sampling within float error of
    OpenCV's; same ``time_left`` / ``stats``)."""
    c, Hs = _views(conf, image.shape, rng)
    h, w = image.shape
    num, margin = len(Hs), int(c["valid_border_margin"])
    device = torch.device(device)
    img = torch.from_numpy(np.ascontiguousarray(image, np.float32)).to(device)[None, None]
    agg = torch.zeros((h, w), device=device)
    counts = torch.zeros((h, w), device=device)
    timer = _ChunkTimer(time_left, stats)
    for start in range(0, num, batch_size):
        if not timer.go(start):
            break
        Hb = torch.from_numpy(np.stack(Hs[start:start + batch_size])).to(device)  # float64
        Hinv = torch.linalg.inv(Hb)
        warped = _torch_warp(img.expand(len(Hb), -1, -1, -1), Hb, "bilinear")
        probs = prob_fn(warped).to(device).float() * _torch_valid_mask(Hb, (h, w), margin, device)
        back = _torch_warp(probs[:, None], Hinv, "bilinear")[:, 0]
        count = _torch_valid_mask(Hinv, (h, w), margin, device)
        back = back * count
        agg = agg + back.sum(0) if c["aggregation"] == "sum" else torch.maximum(agg, back.amax(0))
        counts = counts + count.sum(0)
        if device.type == "cuda" and time_left is not None:
            torch.cuda.synchronize(device)  # the batch's real cost, for the time budget
        timer.done(len(Hb))
    if c["aggregation"] == "sum":
        agg = torch.where(counts > 0, agg / counts.clamp_min(1e-9), torch.zeros_like(agg))
    return agg.cpu().numpy().astype(np.float32)


def detect_labels(prob: np.ndarray, det: Mapping[str, Any], min_prob: float, threshold: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Labels of an aggregated map: box NMS (``detection.nms``, ``iou``, ``top_k``) over pixels
    ``>= min_prob``, then ``>= threshold``. Returns ``points`` (N, 2) as (row, col) and their
    probabilities (every teacher goes through this one step)."""
    nms = box_nms(prob, int(det.get("nms", 4)), float(det.get("iou", 0.1)), float(min_prob),
                  int(det.get("top_k", 0)))
    rc = np.argwhere(nms >= float(threshold))
    return rc, nms[rc[:, 0], rc[:, 1]]


def _render_scene_frames(conf: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Rendered synthetic-scene frames as extra unlabeled training images."""
    from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene

    n = int(conf.get("frames", 0))
    if n <= 0:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    cam = PinholeCamera.default(int(conf.get("width", 320)), int(conf.get("height", 240)))
    files = []
    for seed in conf.get("seeds", [0]):
        scene = SyntheticScene(seed=int(seed), camera=cam)
        for kind in conf.get("kinds", ["orbit"]):
            for f in scene.frames(n, kind):
                p = out_dir / f"scene{seed}_{kind}_{f.index:04d}.png"
                if not p.is_file():
                    cv2.imwrite(str(p), cv2.cvtColor(f.image, cv2.COLOR_RGB2GRAY))
                files.append(p)
    return files


def _samples(files: list[Path], size: list[int], tile_scales: list[float]
             ) -> list[tuple[Path, str, Callable[[], np.ndarray]]]:
    """(source, label name, loader) per exported image: one resize-crop per file, or with
    ``data.tile_scales`` one entry per tile (the tiles of a file are cut once, lazily)."""
    out: list[tuple[Path, str, Callable[[], np.ndarray]]] = []
    for f in files:
        name = sample_name(f, f.parent.parent)
        if not tile_scales:
            out.append((f, name, lambda f=f: resize_crop(read_gray(f), size)[0]))
            continue
        tiles = scaled_tiles(read_gray(f), size, tile_scales)
        for suffix, tile in tiles:
            out.append((f, f"{name}__{suffix}", lambda tile=tile: tile))
    return out


def run_export(conf: Mapping[str, Any], out: Path, resume: bool = False) -> dict[str, Any]:
    """Write ``out/images/<name>.png`` (resized gray) and ``out/labels/<name>.npz`` (``points`` as
    (row, col), ``prob`` of each point, ``views`` used) for every image; existing labels are
    skipped on resume.

    ``max_time_s`` (> 0) is the stage's wall-time budget, counted from this call (teacher and
    image loading included). ``min_images`` images are always labelled (the next stage needs a
    batch): each gets an equal share of the budget left and uses as many of its views as fit
    that share (at least one batch of ``batch_size``, which holds the identity). Further images
    are labelled only while a whole image (all views) still fits. An image and its label are
    written together, so a joint stage can train on whatever was exported.

    Raises ``ExportCheckFailed`` when the teacher labels 0 keypoints in every image (a joint stage
    trained on such labels learns to detect nothing)."""
    from ..config import save_config

    max_time = float(conf.get("max_time_s", 0) or 0)
    budget = Deadline(max_time)
    out = Path(out)
    data = conf.get("data", {})
    ha = {**DEFAULT_HA, **conf.get("homography_adaptation", {})}
    det = conf.get("detection", {})
    size = [int(v) for v in data.get("resize", [240, 320])]
    out.mkdir(parents=True, exist_ok=True)
    save_config(dict(conf), out / "config.yaml")
    roots = list(data.get("image_dirs") or [])
    steps = data.get("frame_step", 1) or 1
    steps = [int(v) for v in steps] if isinstance(steps, (list, tuple)) else [int(steps)] * len(roots)
    if len(steps) != len(roots) or min(steps, default=1) < 1:
        raise ValueError("data.frame_step must be >= 1, or a list of those, one per image_dirs entry")
    files = [f for root, st in zip(roots, steps) for f in list_images([root], 0)[::st]]
    scene = data.get("synthetic_scene") or {}
    files += _render_scene_frames(scene, out / "scene_frames")
    per_dir_max = int(data.get("max_images", 0) or 0)
    if per_dir_max:
        files = files[:per_dir_max]
    if not files:
        raise ValueError("no images to export (data.image_dirs / data.synthetic_scene.frames)")
    device = torch.device(conf.get("device", "cpu") if conf.get("device", "auto") != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    weights = conf.get("model", {}).get("weights")
    name = str(conf.get("teacher") or DEFAULT_TEACHER)
    if name == DEFAULT_TEACHER and not weights:
        raise ValueError("model.weights must name the MagicPoint checkpoint to adapt")
    teacher = build_teacher(name, weights, device, conf.get("teacher_detection") or {})
    prob_fn = teacher.prob_fn
    min_prob, threshold = teacher.thresholds(det)
    record = teacher.record()
    backend = str(ha.get("backend", "auto"))
    if backend not in ("auto", "cv2", "torch"):
        raise ValueError(f"homography_adaptation.backend must be auto, cv2 or torch, got '{backend}'")
    use_torch = backend == "torch" or (backend == "auto" and device.type == "cuda")
    (out / "images").mkdir(exist_ok=True)
    (out / "labels").mkdir(exist_ok=True)
    # the labels' metadata: who labelled them (a resumed export must not mix teachers)
    meta = out / "labels" / TEACHER_FILE
    if resume and meta.is_file():
        before = json.loads(meta.read_text())
        if {k: before.get(k) for k in ("name", "kind", "weights")} != \
                {k: record[k] for k in ("name", "kind", "weights")}:
            raise ValueError(f"{out} holds labels of teacher {before.get('name')} "
                             f"({before.get('weights')}); resuming with {record['name']} would mix "
                             "teachers: use another --out")
    tmp_meta = meta.with_suffix(".tmp")
    tmp_meta.write_text(json.dumps(record, indent=1))
    tmp_meta.replace(meta)
    seed = int(conf.get("seed", 0))
    manifest = []
    t0 = time.time()
    n_done = n_skip = 0
    total_pts = 0
    num_views = int(ha["num"])
    fewer_views: list[int] = []  # views used by images the budget cut short
    tile_scales = [float(v) for v in (data.get("tile_scales") or [])]
    samples = _samples(files, size, tile_scales)
    min_images = int(conf.get("min_images", 0) or 0)
    per_view = RecentMax(window=5)  # seconds per view of recent images (I/O included)
    post_cost = RecentMax(window=5)  # labelling (box NMS) + writing one image
    stopped_early = False
    # Under a time budget, visit the samples in a seeded random order so that a stopped export
    # holds a fair share of every source (not only the first folder). Each sample keeps its own
    # random stream (keyed by its index), so its labels do not depend on the order.
    order = (np.random.default_rng(seed).permutation(len(samples)) if max_time > 0
             else np.arange(len(samples)))
    for i in (int(j) for j in order):
        f, name, load = samples[i]
        required = max(min_images - (n_done + n_skip), 0)
        time_left = None
        if budget.enabled and required == 0 and (n_done or n_skip) and \
                not budget.fits(per_view.value * num_views):
            stopped_early = True
            logger.warning("export: time budget (%.0f s) used after %d of %d images", max_time,
                           n_done + n_skip, len(samples))
            break
        lab = out / "labels" / f"{name}.npz"
        manifest.append({"name": name, "source": str(f)})
        if resume and lab.is_file():
            n_skip += 1
            total_pts += len(np.load(lab)["points"])
            continue
        if budget.enabled:
            # a required image may use its share of what is left; any other one what is left
            # (less what labelling and writing an image took so far)
            time_left = _seconds_until(time.monotonic() + budget.left() / max(required, 1)
                                       - post_cost.value)
        t_img = time.monotonic()
        img = load()
        rng = np.random.default_rng([seed, i])
        stats: dict[str, int] = {}
        if use_torch:
            prob = homographic_adaptation_torch(prob_fn, img.astype(np.float32) / 255.0, rng, ha,
                                                int(conf.get("batch_size", 16)), device,
                                                time_left=time_left, stats=stats)
        else:
            prob = homographic_adaptation(prob_fn, img.astype(np.float32) / 255.0, rng, ha,
                                          int(conf.get("batch_size", 16)), time_left=time_left,
                                          stats=stats)
        views = int(stats.get("views", num_views))
        if views < num_views:
            fewer_views.append(views)
        t_post = time.monotonic()
        rc, scores = detect_labels(prob, det, min_prob, threshold)
        cv2.imwrite(str(out / "images" / f"{name}.png"), img)
        tmp = out / "labels" / f".{name}.tmp.npz"
        np.savez_compressed(tmp, points=rc.astype(np.float32), prob=scores,
                            teacher=np.array(record["name"]), views=np.array(views))
        tmp.replace(lab)
        post_cost.add(time.monotonic() - t_post)
        n_done += 1
        total_pts += len(rc)
        per_view.add((time.monotonic() - t_img) / max(views, 1))
        if n_done % 10 == 0:
            logger.info("exported %d/%d images (%.1fs/image, %.0f points/image)", n_done + n_skip,
                        len(samples), (time.time() - t0) / n_done, total_pts / n_done)
    if fewer_views:
        logger.warning("export: the time budget (%.0f s) left %d image(s) fewer than %d views "
                       "(%d-%d); give the stage more time for full Homographic Adaptation",
                       max_time, len(fewer_views), num_views, min(fewer_views), max(fewer_views))
    with open(out / "manifest.json", "w") as fh:
        json.dump(manifest, fh, indent=1)
    if n_done + n_skip > 0 and total_pts == 0:
        raise ExportCheckFailed(
            f"export check failed: teacher {record['name']} ({record.get('weights') or 'built in'}) "
            f"labels 0 keypoints in all {n_done + n_skip} images of {out / 'labels'} (min prob "
            f"{min_prob:g}, threshold {threshold:g}), so a joint stage would learn to detect "
            "nothing. Train the teacher longer (more steps or a larger time budget), lower "
            "detection.min_prob / detection.detection_threshold, or check the images")
    return {"images": len(samples), "exported": n_done, "skipped": n_skip, "teacher": record,
            "stopped_early": stopped_early, "views_min": min(fewer_views, default=num_views),
            "mean_points": total_pts / max(n_done + n_skip, 1), "labels_dir": str(out / "labels"),
            "images_dir": str(out / "images")}
