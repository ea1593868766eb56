"""Extractors: one module per method; see ``registry.METHODS``."""
