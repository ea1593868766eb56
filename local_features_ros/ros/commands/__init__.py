"""``local-features`` subcommands that start or talk to ROS nodes (``run``, ``demo``); ``cli.py``
names them by module path, so nothing outside ``ros/`` imports them."""
