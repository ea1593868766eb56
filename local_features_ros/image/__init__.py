"""Image decoding (cv_bridge semantics without cv_bridge) and network-input preparation."""
