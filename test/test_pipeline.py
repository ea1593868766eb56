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
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
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
