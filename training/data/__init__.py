"""Datasets and augmentations shared by the method trainers."""
