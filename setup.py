"""pip install -e . gives the ROS-free core (detector, data, evaluation, training) with console
entry points, for machines and jobs without a ROS build. The ROS package itself is built by
colcon from CMakeLists.txt (build type ament_cmake); colcon ignores this file."""
from setuptools import find_packages, setup

setup(
    name="zsg_iad_ros",
    version="0.1.0",
    packages=find_packages(include=["zsg_iad_ros", "zsg_iad_ros.*"]),
    include_package_data=True,
    package_data={"zsg_iad_ros": ["weights/*", "resources/*", "resources/sample_replay/*",
                                  "resources/sample_reference/*"]},
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "zsg-evaluate = zsg_iad_ros.evaluation.cli:main",
            "zsg-generate = zsg_iad_ros.data.cli:main",
            "zsg-train-grounding = zsg_iad_ros.training.train_grounding:main",
        ],
    },
)
