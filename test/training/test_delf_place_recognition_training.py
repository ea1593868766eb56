"""DELF training makes the place-recognition API better on a rendered revisit scene.

The untrained network (the engine's seeded initial weights, PCA fitted the same way) and the
trained one rank the same database keyframes for the same queries; training must win by a clear
margin. Setup and numbers: ``training/delf/place_eval.py``, ``docs/training_lift_delf.md``;
``bench/bench_delf_place_recognition.py`` reruns it over seeds and conditions.
"""

from __future__ import annotations

import logging
import time

import pytest
import torch

from local_features_ros.registry import build_extractor
from local_features_ros_training.delf.place_eval import FAST_STEPS, QUERY_LOOP, SCALES, place_conf, \
    render_queries, render_revisit_split, retrieval_score, train_delf, untrained_export

SEED = 0


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: the budget (~80 s, < 90 s) is one core of a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_training_improves_keyframe_retrieval_under_a_revisit(tmp_path):
    t0 = time.perf_counter()
    split = render_revisit_split(tmp_path / "data", seed=SEED)
    assert split.num_places >= 8 and split.num_train_images >= 100
    conf = place_conf(split.train_root, SEED)
    before_w = untrained_export(conf, tmp_path / "untrained")
    run = train_delf(conf, tmp_path / "trained", **FAST_STEPS)
    assert run["finetune"]["finished"] and run["attention"]["finished"]
    nets = {k: build_extractor("delf", weights=w, scales=SCALES)
            for k, w in (("untrained", before_w), ("trained", run["export"]))}
    before, after = (retrieval_score(nets[k], split) for k in ("untrained", "trained"))
    # the same pass at the mapping pass's brightness: viewpoint and noise only
    cam = split.database[0].camera
    same_light = render_queries(SEED, cam.width, cam.height, len(split.queries), QUERY_LOOP, 12.0,
                                1.0)
    before1, after1 = (retrieval_score(nets[k], split, queries=same_light)
                       for k in ("untrained", "trained"))
    log = logging.getLogger(__name__)
    log.info("DELF place recognition (seed %d, %.0f s), revisit at gain 0.85: untrained %s | "
             "trained %s", SEED, time.perf_counter() - t0, before.row(), after.row())
    log.info("same pass at gain 1.0: untrained %s | trained %s", before1.row(), after1.row())
    assert before.num_queries == after.num_queries >= 40
    # seeds 0-4 (docs): success@1 0.21-0.40 -> 0.83-0.96, mean rank 2.8-4.3 -> 1.04-1.44
    assert after.success_at_1 >= before.success_at_1 + 0.3, (before, after)
    assert after.mean_rank <= before.mean_rank - 1.0, (before, after)
    assert after.success_at_1 >= 0.75 and after.recall_at_5 >= 0.95, after
    # without the light change the untrained network is already good (0.81-0.92); training
    # still ranks better (seeds 0-4: success@1 +0.00 .. +0.15, mean rank -0.04 .. -0.27)
    assert after1.success_at_1 >= before1.success_at_1, (before1, after1)
    assert after1.mean_rank < before1.mean_rank, (before1, after1)
