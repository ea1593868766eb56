"""DELF training (docs/method_facts/training_delf.md): landmark/place datasets, two-step
training, PCA fit."""

from ..spec import TrainingSpec

TRAINING = TrainingSpec(
    method="delf",
    stages={
        "finetune": f"{__name__}.task:DelfFinetuneTask",
        "attention": f"{__name__}.task:DelfAttentionTask",
        "pca": f"{__name__}.task:run_pca",
    },
    default_configs={"finetune": "delf_finetune.yaml", "attention": "delf_attention.yaml",
                     "pca": "delf_pca.yaml"},
)
