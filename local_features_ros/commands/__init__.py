"""Subcommands of ``local-features`` (one module each, imported lazily by ``cli.py``)."""
