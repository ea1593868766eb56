"""local_features_ros: learned local features (SuperPoint, D2-Net, LF-Net, LIFT, DELF) for ROS 2.

The core (this package minus ``ros/``) never imports rclpy; ``local_features_ros.ros`` is the
only ROS layer. ``training/`` (a sibling package) reuses these models; the reverse never happens.
"""

__version__ = "0.1.0"

from .types import Features, MatchResult, RelativeMotion  # noqa: E402

__all__ = ["Features", "MatchResult", "RelativeMotion", "__version__"]
