"""local_features_ros: learned local features for ROS 2, every method behind one extractor interface.

The methods declare themselves and the registry finds them: ``local-features methods`` (or
``registry.available_methods()``) lists what is installed.

The core (this package minus ``ros/``) never imports rclpy; ``local_features_ros.ros`` is the
only ROS layer. ``training/`` (a sibling package) reuses these models; the reverse never happens.
"""

import os as _os

# Perception nodes share the CPU with the rest of the robot: OpenMP threads that spin while
# waiting made the frame-to-frame front end 3.3x slower (178 vs 54 ms) on a loaded 2-core CPU;
# passive waiting removes that. Must be set before torch loads its OpenMP runtime; an explicit
# OMP_WAIT_POLICY from the user wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from .types import Features, MatchResult, RelativeMotion  # noqa: E402

__all__ = ["Features", "MatchResult", "RelativeMotion", "__version__"]
