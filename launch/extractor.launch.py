"""Launch one ``feature_extractor`` (per camera namespace) with a parameter YAML, optionally rviz2.

    ros2 launch local_features_ros extractor.launch.py method:=superpoint image:=/camera/image_raw
    ros2 launch local_features_ros extractor.launch.py params_file:=/path/orb.yaml namespace:=cam0 \
        image:=/cam0/image_raw camera_info:=/cam0/camera_info rviz:=true

Arguments and defaults come from ``local_features_ros.ros.runner.LAUNCH_ARGS``, the table
``local-features run`` maps to its options, so the launch file and the runner cannot drift apart.
An empty ``method`` keeps the YAML's method; the default YAML's ``method: auto`` is the most
accurate method at camera rate on this machine (ALIKED with CUDA, XFeat on a CPU; the choice and
its reason are logged). ``method:=M`` (or the automatic choice) with the default ``params_file``
loads ``config/M.yaml`` (thresholds are in method units); a relative ``params_file`` is looked up
in ``share/local_features_ros``. ``image/compressed`` is remapped along with ``image``.

The parameters are checked before the node starts (``local_features_ros/ros/validate.py``, the
same check as ``local-features run``/``demo``): an unknown method or key, a wrong type or range, a
missing weights file fails the launch with the reason. ``rviz:=true`` starts rviz2 with
``rviz/extractor.rviz`` rewritten for ``namespace`` and ``image`` (a temporary copy).
"""

import os
import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from local_features_ros.ros.names import NODE_NAME, PACKAGE
from local_features_ros.hardware import AUTO_METHOD, choose_method
from local_features_ros.ros.runner import (DEFAULT_PARAMS_FILE, LAUNCH_ARGS, apply_overrides,
                                           load_node_params, params_file_for, rviz_config,
                                           topic_remaps)
from local_features_ros.ros.validate import node_param_specs, validate_node_params


def _share_dir():
    from ament_index_python.packages import get_package_share_directory

    return get_package_share_directory(PACKAGE)


def _in_share(path):
    """A relative parameter file is looked up in share/local_features_ros."""
    return path if os.path.isabs(path) else os.path.join(_share_dir(), path)


def _truthy(text):
    return str(text).strip().lower() in ("1", "true", "yes", "on")


def _launch_extractor(context, *args, **kwargs):
    """Resolve the arguments, check the parameters, then build the Node (and rviz2)."""
    arg = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGS}
    method = arg["method"].strip()
    if method and method != AUTO_METHOD:
        node_param_specs(method)  # "unknown method 'foo' (available: ...)"
    params_file = _in_share(params_file_for(method, arg["params_file"]))
    overrides = {"use_sim_time": _truthy(arg["use_sim_time"])}
    actions = []
    if os.path.isfile(params_file):  # a missing file is launch_ros's own error
        params = load_node_params(params_file)
        if method == AUTO_METHOD or (not method and params.get("method") == AUTO_METHOD):
            # the hardware's choice, with that method's own YAML when the file is the default
            choice = choose_method(str(params.get("device", "auto")))
            method = choice.method
            actions.append(LogInfo(msg=f"method auto -> {method}: {choice.reason}"))
            if arg["params_file"] == DEFAULT_PARAMS_FILE:
                params_file = _in_share(params_file_for(method, arg["params_file"]))
                params = load_node_params(params_file)
        if method:
            overrides["method"] = method
        validate_node_params(apply_overrides(params, overrides))
    elif method:
        overrides["method"] = method
    actions += [Node(
        package=PACKAGE,
        executable=NODE_NAME,
        name=NODE_NAME,
        namespace=arg["namespace"],
        parameters=[params_file, overrides],
        remappings=topic_remaps(arg["image"], arg["camera_info"]),
        output="screen",
    )]
    if _truthy(arg["rviz"]):
        actions.append(_rviz_node(arg["namespace"], arg["image"]))
    return actions


def _rviz_node(namespace, image):
    """rviz2 showing this node's overlay (and input) in its namespace."""
    with open(os.path.join(_share_dir(), "rviz", "extractor.rviz")) as f:
        text = rviz_config(f.read(), namespace, image)
    fd, path = tempfile.mkstemp(prefix="local_features_ros_", suffix=".rviz")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", path],
                output="screen")


def generate_launch_description():
    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                for a in LAUNCH_ARGS]
    return LaunchDescription(declared + [OpaqueFunction(function=_launch_extractor)])
