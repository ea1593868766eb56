"""LF-Net training (docs/lfnet_lift.md#lf-net-training): two-branch scheme with depth/pose-warped
targets."""

from ..spec import TrainingSpec

TRAINING = TrainingSpec(
    method="lfnet",
    stages={"train": f"{__name__}.task:LFNetTask"},
    default_configs={"train": "lfnet_sfm.yaml"},
)
