"""D2-Net training (docs/method_facts/training_d2net.md): stride-8 training network sharing
weights with the stride-4 runtime network, soft detection, margin ranking loss with hardest
negatives."""

from ..spec import TrainingSpec

TRAINING = TrainingSpec(
    method="d2net",
    stages={"train": f"{__name__}.task:D2NetTask"},
    default_configs={"train": "d2net_megadepth.yaml"},
)
