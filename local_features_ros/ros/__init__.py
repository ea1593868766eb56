"""ROS 2 layer: the only code in the package that imports rclpy, ROS message packages or
launch, and the only code that imports this package (``test_core_contracts`` scans every import)."""
