"""SuperPoint training: MagicPoint on Synthetic Shapes, Homographic Adaptation, joint training."""
