"""DELF training (methods.md §5.4): landmark/place datasets, two-step training, PCA fit."""
