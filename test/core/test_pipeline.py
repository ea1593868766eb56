"""``FeaturePipeline``: one build path and one validated change path for extractor + matcher."""

from __future__ import annotations

import pytest

from conftest import textured_image
from local_features_ros.extractors.base import ConfigError
from local_features_ros.pipeline import FeaturePipeline, PipelineConfig


def test_nn_changes_apply_to_the_live_matcher_and_bad_ones_change_nothing():
    p = FeaturePipeline(PipelineConfig("orb", device="cpu", precision="fp32"))
    assert p.matcher.name == "nn" and p.frontend.matcher is p.matcher
    with pytest.raises(ConfigError, match="ratio"):
        p.apply(matcher={"ratio": 1.5})
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        p.check(verify={"bogus": 1})
    with pytest.raises(ConfigError, match="runtime"):
        p.check(extractor={"patch_size": 15})
    with pytest.raises(ConfigError, match="matcher.type: lightglue"):
        p.check(lightglue={"filter_threshold": 0.2})
    assert p.matcher.conf.ratio == 1.0  # nothing applied
    p.apply(extractor={"max_keypoints": 50}, matcher={"ratio": 0.8}, verify={"min_inliers": 9})
    assert p.extractor.conf["max_keypoints"] == 50
    assert p.matcher.conf.ratio == 0.8 and p.frontend.matcher is p.matcher
    assert p.frontend.verify.min_inliers == 9
    img = textured_image(120, 160)
    feats, first = p.process(img, 0.0, None)
    _, second = p.process(img, 0.1, None)
    assert 0 < len(feats) <= 50 and first.matches is None and len(second.matches) > 20


def test_lightglue_pipeline_runtime_keys_and_startup_errors():
    p = FeaturePipeline(PipelineConfig("aliked", device="cpu", precision="fp32",
                                       extractor={"max_keypoints": 128}, matcher_type="lightglue"))
    assert p.matcher.name == "lightglue" and p.lightglue_conf is p.matcher.conf
    p.apply(lightglue={"filter_threshold": 0.3})
    assert p.matcher.conf.filter_threshold == 0.3
    with pytest.raises(ConfigError, match="restart"):
        p.apply(lightglue={"n_layers": 3})
    p.apply(verify={"min_inliers": 7})  # a verify change keeps LightGlue
    assert p.frontend.matcher is p.matcher and p.matcher.name == "lightglue"
    with pytest.raises(FileNotFoundError, match="matcher.lightglue.weights"):
        FeaturePipeline(PipelineConfig("sift", device="cpu", matcher_type="lightglue"))
    with pytest.raises(ConfigError, match="matcher.type"):
        FeaturePipeline(PipelineConfig("sift", device="cpu", matcher_type="superglue"))


def test_stage_threads_set_torch_threads_per_thread():
    """The frontend stage runs torch on one thread without taking threads from the caller's
    (extraction) thread; the extraction stage gets the count the process had at build time."""
    import threading

    import torch

    p = FeaturePipeline(PipelineConfig("orb", device="cpu", precision="fp32"))
    before = torch.get_num_threads()
    seen: dict[str, int] = {}

    def stage(name: str, enter) -> None:
        enter()
        seen[name] = torch.get_num_threads()

    t = threading.Thread(target=stage, args=("frontend", p.enter_frontend_thread))
    t.start()
    t.join()
    t = threading.Thread(target=stage, args=("extract", p.enter_extract_thread))
    t.start()
    t.join()
    assert seen == {"frontend": 1, "extract": before}
    assert torch.get_num_threads() == before


def test_loop_closure_is_part_of_the_per_frame_work(tmp_path):
    """With loop closure on, ``process_features`` steps it after the frontend: keyframes at the
    set cadence, the revisit loop closes on its first keyframes, the stamps of the candidates'
    keyframes come with them (also when storing the frame evicts one of them), a failing query
    is returned (not raised) and stores nothing, and the database is written by ``save``."""
    import numpy as np

    from local_features_ros.loop_closure import LoopSettings
    from local_features_ros.synthetic.scene import SyntheticScene

    frames = list(SyntheticScene(seed=0).frames(24, kind="revisit"))
    p = FeaturePipeline(PipelineConfig("sift", device="cpu", extractor={"max_keypoints": 400}))
    assert p.loops is None and p.process(frames[0].image, 0.0, None)[1].loops is None
    p.frontend.reset()
    loops = p.open_loops(str(tmp_path / "kf.npz"), max_keyframes=21)
    every2 = LoopSettings(keyframe_every=2, exclude_recent=3)
    got = []
    for i, fr in enumerate(frames):
        settings = every2 if i < 4 else LoopSettings(keyframe_every=1, exclude_recent=3)
        feats, res = p.process(fr.image, float(i), None, loop_stamp=(100 + i, 7),
                               loop_settings=settings)
        assert res.loop_error is None and (i == 0 or res.matches is not None)
        got.append(res.loops)
    # keyframe_every 2 for frames 0..3 (0 and 2 are keyframes), then every frame
    assert [g is None for g in got[:5]] == [False, True, False, True, False]
    assert [g.keyframes for g in got if g is not None][:3] == [1, 2, 3]
    ids = {kf: st for kf, st in loops.recognizer.stamps.items()}
    assert len(loops) == 21 and (100, 7) not in ids.values()  # frame 0 was evicted last
    last = got[-1]
    assert last.candidates and last.candidates[0].keyframe_id == 0  # frame 0: the loop closes
    assert last.stamps[0] == (100, 7) and set(last.stamps) == {c.keyframe_id
                                                                for c in last.candidates}
    assert all(c.inliers >= 15 for c in last.candidates)
    assert np.all(np.diff([c.inliers for c in last.candidates]) <= 0)

    def broken(*_a, **_k):
        raise RuntimeError("query failed")

    loops.recognizer.query = broken
    feats, res = p.process(frames[5].image, 50.0, None, loop_stamp=(150, 0),
                           loop_settings=LoopSettings(keyframe_every=1))
    assert isinstance(res.loop_error, RuntimeError) and res.loops is None
    assert res.matches is not None and len(loops) == 21
    assert (150, 0) not in loops.recognizer.stamps.values()
    assert loops.save() and (tmp_path / "kf.npz").is_file() and not loops.save()


def test_replace_fields_is_the_configs_validated_replace():
    """``replace_fields`` gives a cast, validated copy (``Config.replace``) and leaves the
    original alone; an unknown key is named with the known ones, a bad value with its key."""
    from local_features_ros.geometry import VerifyConfig
    from local_features_ros.pipeline import replace_fields

    v = VerifyConfig()
    assert replace_fields(v, {}) is v
    assert replace_fields(v, {"min_inliers": "9"}).min_inliers == 9 != v.min_inliers
    with pytest.raises(ConfigError, match="unknown config key 'bogus' .*known: .*min_inliers"):
        replace_fields(v, {"bogus": 1})
    with pytest.raises(ConfigError, match="bad value 'many' for 'min_inliers'"):
        replace_fields(v, {"min_inliers": "many"})
