"""Rendered 3D scenes with exact depth and poses (tests, demo, training data)."""
