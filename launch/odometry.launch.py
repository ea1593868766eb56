"""Launch ``visual_odometry`` (stereo or RGB-D) with ``config/odometry.yaml``.

    ros2 launch local_features_ros odometry.launch.py mode:=stereo \
        left:=/camera/left/image_rect right:=/camera/right/image_rect \
        left_info:=/camera/left/camera_info right_info:=/camera/right/camera_info
    ros2 launch local_features_ros odometry.launch.py mode:=rgbd rgb:=/camera/color/image_raw \
        depth:=/camera/aligned_depth_to_color/image_raw rgb_info:=/camera/color/camera_info

``local-features odometry --bag BAG`` starts the same node with the same YAML where
``ros2 launch`` is not installed. An empty topic argument keeps the node-relative name.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGS = {
    "params_file": ("config/odometry.yaml", "parameter YAML (relative: in share/local_features_ros)"),
    "mode": ("stereo", "stereo | rgbd"),
    "method": ("", "feature method; empty = the YAML's (auto)"),
    "namespace": ("", "namespace of the node"),
    "left": ("", "stereo: left rectified image topic"),
    "right": ("", "stereo: right rectified image topic"),
    "left_info": ("", "stereo: left CameraInfo topic"),
    "right_info": ("", "stereo: right CameraInfo topic"),
    "rgb": ("", "rgbd: colour image topic"),
    "depth": ("", "rgbd: depth image aligned to the colour image (16UC1 mm or 32FC1 m)"),
    "rgb_info": ("", "rgbd: colour CameraInfo topic"),
    "use_sim_time": ("false", "follow /clock (bag replay)"),
}
REMAPS = {"left": "left/image_rect", "right": "right/image_rect", "left_info": "left/camera_info",
          "right_info": "right/camera_info", "rgb": "rgb/image", "depth": "depth/image",
          "rgb_info": "rgb/camera_info"}


def _launch(context, *args, **kwargs):
    import os

    from ament_index_python.packages import get_package_share_directory

    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGS}
    params_file = arg["params_file"]
    if not os.path.isabs(params_file):
        params_file = os.path.join(get_package_share_directory("local_features_ros"), params_file)
    overrides = {"mode": arg["mode"],
                 "use_sim_time": arg["use_sim_time"].strip().lower() in ("1", "true", "yes")}
    if arg["method"].strip():
        overrides["method"] = arg["method"].strip()
    return [Node(package="local_features_ros", executable="visual_odometry",
                 name="visual_odometry", namespace=arg["namespace"],
                 parameters=[params_file, overrides],
                 remappings=[(REMAPS[k], arg[k]) for k in REMAPS if arg[k]], output="screen")]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=d, description=h)
         for name, (d, h) in ARGS.items()] + [OpaqueFunction(function=_launch)])
