"""``local-features`` subcommands that belong to the training stack (found via entry points)."""
