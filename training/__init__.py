"""Offline training for every method; reuses the runtime models in ``local_features_ros``."""
