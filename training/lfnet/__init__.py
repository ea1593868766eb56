"""LF-Net training (methods.md §3.2): two-branch scheme with depth/pose-warped targets."""
