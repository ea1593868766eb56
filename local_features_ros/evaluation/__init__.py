"""Evaluation protocols and metrics (HPatches, pose pairs, sequences)."""
