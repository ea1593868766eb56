"""ament_python build of local_features_ros (colcon / ``ros2 run``) and plain pip install."""

from glob import glob

from setuptools import find_packages, setup

package_name = "local_features_ros"
# the card's top-level training/ folder installs under the project's namespace, so that a robot's
# site-packages never gains a package called "training"
training_name = f"{package_name}_training"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, f"{package_name}.*"])
    + [training_name] + [f"{training_name}.{p}" for p in find_packages("training")],
    package_dir={training_name: "training"},
    package_data={package_name: ["data/weights/*.pth", "data/weights/*.md"],
                  training_name: ["configs/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml")),
        (f"share/{package_name}/rviz", glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="local_features_ros maintainers",
    maintainer_email="maintainers@local-features-ros.invalid",
    description="Learned local features for ROS 2 with a training stack",
    license="BSD-3-Clause",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "local-features = local_features_ros.cli:main",
            "feature_extractor = local_features_ros.ros.extractor_node:main",
            "visual_odometry = local_features_ros.ros.odometry_node:main",
            "bag_player = local_features_ros.ros.bag_player:main",
            "synthetic_camera = local_features_ros.ros.synthetic_camera:main",
        ],
        "local_features_ros.commands": [
            "train = local_features_ros_training.commands.train",
            "bag-to-dataset = local_features_ros_training.commands.bag_to_dataset",
        ],
    },
)
