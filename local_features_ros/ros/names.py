"""Names shared by the node, the runner and the launch file (no imports: safe anywhere)."""

#: The ROS package (share directory, ``ros2 run`` / ``ros2 launch`` package name).
PACKAGE = "local_features_ros"
#: The extractor node's name (and its executable's).
NODE_NAME = "feature_extractor"
