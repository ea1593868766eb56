"""SuperPoint training: MagicPoint on Synthetic Shapes, Homographic Adaptation, joint training."""

from ..spec import TrainingSpec

TRAINING = TrainingSpec(
    method="superpoint",
    stages={
        "magicpoint": f"{__name__}.magicpoint:MagicPointTask",
        "export": f"{__name__}.homographic_adaptation:run_export",
        "retrain": f"{__name__}.magicpoint:MagicPointRetrainTask",
        "joint": f"{__name__}.joint:JointTask",
        # MagicPoint -> N x (export -> joint) under one time budget (pipeline.py)
        "pipeline": f"{__name__}.pipeline:run_pipeline",
    },
    default_configs={
        "magicpoint": "superpoint_magicpoint_shapes.yaml",
        "export": "superpoint_homographic_adaptation.yaml",
        "retrain": "superpoint_magicpoint_retrain.yaml",
        "joint": "superpoint_joint.yaml",
        "pipeline": "superpoint_pipeline.yaml",
    },
)
