"""Does DELF training help loop closure? Place recognition on a rendered revisit scene.

Why this module: the DELF trainer optimises classification losses, but what the robot uses is
``KeyframeDatabase`` voting on the extractor's local descriptors. This renders a scene with exact
poses, trains the three DELF steps on place-labelled frames and scores the database's ranking of
the keyframes for queries from another pass, for the untrained network (the engine's seeded
initial weights, with a PCA fitted the same way) and the trained one on the *same* queries.
Shared by ``test/training/test_delf_place_recognition_training.py`` and
``bench/bench_delf_place_recognition.py``.

Split (all from one ``SyntheticScene`` seed):

- database: ``n_database`` keyframes of the default ``revisit`` loop (the mapping pass);
- queries: ``n_query`` frames of another loop (``QUERY_LOOP``: tighter ellipse, turned further
  inward), with image noise and a global brightness gain (the revisit pass, other light);
- training: the database loop plus the ``TRAIN_LOOPS`` (never the query loop), every training
  frame of those loops at a random gain in ``train_gain`` (passes under varying light), labelled
  by place with ``datasets.place_labels`` (radius / angle), places with < 2 frames dropped.

A query succeeds when the keyframe with most votes is within ``radius`` and ``max_angle_deg`` of
the query's pose; ``mean_rank`` is the mean position of the first such keyframe in the vote
ranking (keyframes without a vote come last, in id order).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from local_features_ros.synthetic.scene import PinholeCamera, RenderedFrame, SyntheticScene

from .datasets import place_labels

#: the revisit pass: inside the mapping loop and looking further inward (not in training)
QUERY_LOOP: dict[str, float] = {"a": 3.5, "b": 2.2, "inward_deg": 40.0}
#: other passes for training (the mapping loop is ``revisit``'s default a 4.2, b 2.8, 25 deg)
TRAIN_LOOPS: tuple[dict[str, float], ...] = (
    {"a": 3.85, "b": 2.5, "inward_deg": 32.0},
    {"a": 4.5, "b": 3.1, "inward_deg": 20.0},
    {"a": 3.2, "b": 1.9, "inward_deg": 30.0},
    {"a": 4.0, "b": 2.3, "inward_deg": 45.0},
)


@dataclass
class RevisitSplit:
    """Rendered database / query frames and the place-labelled training folder."""

    database: list[RenderedFrame]
    queries: list[RenderedFrame]
    train_root: Path
    num_places: int
    num_train_images: int
    radius: float
    max_angle_deg: float


@dataclass
class RetrievalScore:
    """Ranking quality of ``KeyframeDatabase`` votes over the queries that have a true match."""

    success_at_1: float
    mean_rank: float
    recall_at_5: float
    num_queries: int
    ranks: list[int] = field(default_factory=list)

    def row(self) -> str:
        return (f"success@1 {self.success_at_1:.3f}  mean rank {self.mean_rank:.2f}  "
                f"recall@5 {self.recall_at_5:.3f}  ({self.num_queries} queries)")


def with_gain(image: np.ndarray, gain: float) -> np.ndarray:
    """A global illumination change of an 8-bit image (exposure / light level)."""
    return np.clip(image.astype(np.float32) * float(gain), 0, 255).astype(np.uint8)


def render_queries(seed: int, width: int, height: int, n: int,
                   loop: Mapping[str, float] = QUERY_LOOP, noise: float = 12.0,
                   gain: float = 0.85) -> list[RenderedFrame]:
    """Frames of a ``revisit`` loop with image noise and a global gain (a pass under other
    light); the bench also scores gain 1 (viewpoint and noise only) with the same network."""
    cam = PinholeCamera.default(int(width), int(height))
    scene = SyntheticScene(seed=int(seed), camera=cam, noise_std=float(noise))
    frames = list(scene.frames(int(n), "revisit", **dict(loop)))
    for f in frames:
        f.image = with_gain(f.image, gain)
    return frames


def render_revisit_split(out_dir: str | Path, seed: int = 0, width: int = 128, height: int = 96,
                         n_database: int = 24, n_query: int = 48, frames_per_loop: int = 24,
                         train_loops: Sequence[Mapping[str, float]] = TRAIN_LOOPS,
                         query_loop: Mapping[str, float] = QUERY_LOOP, query_noise: float = 12.0,
                         query_gain: float = 0.85, train_gain: tuple[float, float] = (0.7, 1.3),
                         radius: float = 1.5, max_angle_deg: float = 40.0) -> RevisitSplit:
    """Render the split (module docstring) and write the training frames as
    ``out_dir/places/place_XXX/NNNN.png`` (the ``folder`` layout of ``datasets.py``)."""
    cam = PinholeCamera.default(int(width), int(height))
    clean = SyntheticScene(seed=int(seed), camera=cam)
    database = list(clean.frames(int(n_database), "revisit"))
    queries = render_queries(seed, width, height, n_query, query_loop, query_noise, query_gain)
    rng = np.random.default_rng([int(seed), 99])
    train = [(f.image, f.T_world_cam) for f in database]
    for loop in train_loops:
        for f in clean.frames(int(frames_per_loop), "revisit", **dict(loop)):
            train.append((with_gain(f.image, float(rng.uniform(*train_gain))), f.T_world_cam))
    labels = place_labels(np.stack([T for _, T in train]), radius, max_angle_deg)
    counts = np.bincount(labels)
    root = Path(out_dir) / "places"
    n_img = 0
    for k, ((img, _), lab) in enumerate(zip(train, labels)):
        if counts[lab] < 2:
            continue
        d = root / f"place_{int(lab):03d}"
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{k:04d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        n_img += 1
    return RevisitSplit(database, queries, root, int((counts >= 2).sum()), n_img, float(radius),
                        float(max_angle_deg))


def true_matches(database: Sequence[RenderedFrame], query: RenderedFrame, radius: float,
                 max_angle_deg: float) -> np.ndarray:
    """Keyframes within ``radius`` of the query's position and ``max_angle_deg`` of its optical
    axis (the same place test as the training labels)."""
    T = np.stack([f.T_world_cam for f in database])
    near = np.linalg.norm(T[:, :3, 3] - query.T_world_cam[:3, 3], axis=1) <= radius
    facing = T[:, :3, 2] @ query.T_world_cam[:3, 2] >= math.cos(math.radians(max_angle_deg))
    return near & facing


def retrieval_score(extractor: Any, split: RevisitSplit, knn: int = 5,
                    queries: Sequence[RenderedFrame] | None = None) -> RetrievalScore:
    """Database keyframes -> ``KeyframeDatabase``; every query's vote ranking (no RANSAC: the
    votes are what the descriptors decide) scored against the true matches."""
    from local_features_ros.place_recognition import KeyframeDatabase

    db = KeyframeDatabase(knn=int(knn))
    for i, f in enumerate(split.database):
        db.add(i, extractor.extract(f.image))
    ranks = []
    for q in (split.queries if queries is None else queries):
        ok = true_matches(split.database, q, split.radius, split.max_angle_deg)
        if not ok.any():
            continue
        votes = db.votes(extractor.extract(q.image))
        order = sorted(range(len(split.database)), key=lambda i: (-votes.get(i, 0), i))
        ranks.append(next(r for r, i in enumerate(order, 1) if ok[i]))
    if not ranks:
        raise ValueError("no query has a database keyframe at the same place")
    r = np.asarray(ranks)
    return RetrievalScore(float(np.mean(r == 1)), float(r.mean()), float(np.mean(r <= 5)),
                          len(ranks), ranks)


#: pyramid of the extractor in training (PCA) and evaluation: ~72 features per 128 x 96 image
SCALES: list[float] = [0.7071, 1.0]
#: per-step ``train`` overrides of the fast run (~65 s on one core; Adam 1e-3: at the full-size
#: default 1e-4 the backbone needs ~1000 steps from random weights to help retrieval; with 200
#: finetune steps only the robustness to light improves, not the viewpoint-only ranking)
FAST_STEPS: dict[str, dict[str, Any]] = {"finetune": {"max_steps": 350, "lr": 1e-3},
                                         "attention": {"max_steps": 50, "lr": 1e-3}}


def place_conf(train_root: str | Path, seed: int = 0) -> dict[str, Any]:
    """DELF config for the split: small crops (48 px finetune, 88 px attention), all features
    kept (the PCA and the database see every pyramid cell), no validation."""
    return {"data": {"folder": str(train_root), "val_fraction": 0.0,
                     "finetune": {"resize": 56, "crop": 48},
                     "attention": {"resize": 96, "crop": 88, "min_downscale": 0.7071}},
            "model": {"delf": {"scales": list(SCALES)}, "init_weights": None},
            "train": {"seed": int(seed), "batch_size": 8, "grad_clip": 10.0, "log_every": 1000,
                      "val_every": 10 ** 9, "val_batches": 0, "checkpoint_every": 10 ** 9,
                      "device": "cpu"},
            "pca": {"max_per_image": 1000, "max_edge": 0}}


def train_delf(conf: Mapping[str, Any], out: str | Path, finetune: Mapping[str, Any],
               attention: Mapping[str, Any]) -> dict[str, Any]:
    """The three DELF steps into ``out/{finetune,attention,pca}``: ``finetune`` / ``attention``
    are ``train`` overrides of each step (steps, lr); the PCA step uses ``conf`` as is."""
    from ..config import merge
    from ..engine import Trainer
    from .task import DelfAttentionTask, DelfFinetuneTask, run_pca

    out = Path(out)
    c1 = merge(conf, {"train": dict(finetune)})
    r1 = Trainer(DelfFinetuneTask(c1), c1, out / "finetune").fit()
    c2 = merge(conf, {"train": dict(attention), "model": {"init_weights": r1["export"]}})
    r2 = Trainer(DelfAttentionTask(c2), c2, out / "attention").fit()
    c3 = merge(conf, {"model": {"init_weights": r2["export"]}})
    r3 = run_pca(c3, out / "pca")
    return {"finetune": r1, "attention": r2, "pca": r3, "export": r3["export"]}


def untrained_export(conf: Mapping[str, Any], out: str | Path) -> str:
    """The untrained baseline: the weights the finetune step starts from (the engine seeds with
    ``train.seed`` before building the model), exported, with the PCA fitted as after training."""
    from local_features_ros.weights import save_checkpoint

    from ..config import merge
    from ..engine import seed_everything
    from .task import DelfFinetuneTask, run_pca

    out = Path(out)
    task = DelfFinetuneTask(copy.deepcopy(dict(conf)))
    seed_everything(int(conf.get("train", {}).get("seed", 0)))
    model = task.build_model()
    init = save_checkpoint(out / "init" / "delf.pth", "delf", model.delf.state_dict(),
                           config=dict(model.delf.conf), stage="init")
    return run_pca(merge(conf, {"model": {"init_weights": str(init)}}), out / "pca")["export"]
