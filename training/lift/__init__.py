"""LIFT training (docs/lfnet_lift.md#lift-training): quadruplet patches from COLMAP SfM and the
staged schedule."""

from ..spec import TrainingSpec

# one stage alone (``stages.<stage>`` merged over the config, init from ``model.init_weights``)
# or the whole schedule desc -> ori -> kp (-> joint) with ``all``
_STAGES = ("desc", "ori", "kp", "joint")

TRAINING = TrainingSpec(
    method="lift",
    stages={**{s: f"{__name__}.task:run_{s}" for s in _STAGES},
            "all": f"{__name__}.task:run_schedule"},
    default_configs={s: "lift_eccv2016.yaml" for s in (*_STAGES, "all")},
)
