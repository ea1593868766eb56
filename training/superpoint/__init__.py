"""SuperPoint training: MagicPoint on Synthetic Shapes, Homographic Adaptation, joint training."""

from ..spec import TrainingSpec

TRAINING = TrainingSpec(
    method="superpoint",
    stages={
        "magicpoint": "training.superpoint.magicpoint:MagicPointTask",
        "export": "training.superpoint.homographic_adaptation:run_export",
        "retrain": "training.superpoint.magicpoint:MagicPointRetrainTask",
        "joint": "training.superpoint.joint:JointTask",
        # MagicPoint -> N x (export -> joint) under one time budget (pipeline.py)
        "pipeline": "training.superpoint.pipeline:run_pipeline",
    },
    default_configs={
        "magicpoint": "superpoint_magicpoint_shapes.yaml",
        "export": "superpoint_homographic_adaptation.yaml",
        "retrain": "superpoint_magicpoint_retrain.yaml",
        "joint": "superpoint_joint.yaml",
        "pipeline": "superpoint_pipeline.yaml",
    },
)
