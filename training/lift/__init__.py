"""LIFT training (methods.md §4.4): quadruplet patches from COLMAP SfM and the staged schedule."""
