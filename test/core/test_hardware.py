"""The hardware-aware choices: how many CPU threads a pipelined node gives its extraction."""

from __future__ import annotations

import threading

import torch

from local_features_ros.hardware import cpu_cores, extraction_threads


def test_extraction_keeps_one_core_for_the_matching_stage():
    """Without OMP_NUM_THREADS the network gets all cores but one, and at least one thread."""
    assert extraction_threads({}, cores=2).threads == 1
    assert extraction_threads({}, cores=8).threads == 7
    assert extraction_threads({}, cores=1).threads == 1
    choice = extraction_threads({}, cores=4)
    assert "4 cores" in choice.reason and "matching" in choice.reason


def test_omp_num_threads_wins_and_nonsense_is_ignored():
    assert extraction_threads({"OMP_NUM_THREADS": "3"}, cores=8).threads == 3
    assert extraction_threads({"OMP_NUM_THREADS": "3"}, cores=8).reason == "OMP_NUM_THREADS=3"
    assert extraction_threads({"OMP_NUM_THREADS": "0"}, cores=8).threads == 1
    # OpenMP ignores a value it cannot read; so does the choice
    assert extraction_threads({"OMP_NUM_THREADS": "many"}, cores=8).threads == 7
    assert extraction_threads({"OMP_NUM_THREADS": " "}, cores=8).threads == 7


def test_cores_follow_the_process_affinity():
    import os

    if hasattr(os, "sched_getaffinity"):
        assert cpu_cores() == len(os.sched_getaffinity(0))
    assert cpu_cores() >= 1


def test_pipeline_gives_its_extract_thread_the_chosen_count():
    """``extract_threads`` is set before the extractor is built and is what a thread that
    extracts gets; the frontend thread of an ``nn`` pipeline runs one torch thread."""
    from local_features_ros.pipeline import FeaturePipeline, PipelineConfig

    before = torch.get_num_threads()
    seen: dict[str, int] = {}
    try:
        pipe = FeaturePipeline(PipelineConfig("orb", extract_threads=2))
        assert torch.get_num_threads() == 2

        def run(name, enter):
            torch.set_num_threads(5)
            enter()
            seen[name] = torch.get_num_threads()

        for name, enter in (("extract", pipe.enter_extract_thread),
                            ("frontend", pipe.enter_frontend_thread)):
            t = threading.Thread(target=run, args=(name, enter))
            t.start()
            t.join()
    finally:
        torch.set_num_threads(before)
    assert seen == {"extract": 2, "frontend": 1}
