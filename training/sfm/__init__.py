"""Geometric training data: SfM models, per-scene indexes, pairs with depth-warped correspondences.

Used by the D2-Net and LF-Net trainers; the official data facts they follow are in
docs/method_facts/sfm.md. Sources: COLMAP models, MegaDepth-style scene folders, rosbags (poses
from a topic or SfM on the frames) and the synthetic renderer.
"""
