"""Launch the inspection node (and optionally reject_gate) on a ROS 2 install (Jazzy/Kilted).

    ros2 launch zsg_iad_ros inspect.launch.py rgb_topic:=/cam/color/image_raw \
        sensor_topic:=/thermal/image_raw depth_topic:=/cam/depth/points \
        camera_info_topic:=/cam/color/camera_info device:=cuda with_reject_gate:=true
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "zsg_iad_ros"


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "inspect.yaml")
    args = [
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the nodes and their relative topics"),
        DeclareLaunchArgument("rgb_topic", default_value="rgb/image_raw",
                              description="RGB sensor_msgs/Image (rgb8, bgr8)"),
        DeclareLaunchArgument("sensor_topic", default_value="sensor/image_raw",
                              description="thermal or X-ray sensor_msgs/Image"),
        DeclareLaunchArgument("depth_topic", default_value="depth/points",
                              description="depth sensor_msgs/PointCloud2"),
        DeclareLaunchArgument("camera_info_topic", default_value="rgb/camera_info",
                              description="sensor_msgs/CameraInfo of the RGB camera"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="parameters YAML for inspection_node and reject_gate"),
        DeclareLaunchArgument("device", default_value="auto",
                              description="torch device: auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("model", default_value="builtin",
                              description="backbone: builtin, or a transformers id / local path"),
        DeclareLaunchArgument("sensor_type", default_value="thermal",
                              description="second sensor kind: thermal or xray"),
        DeclareLaunchArgument("with_reject_gate", default_value="false",
                              description="also start reject_gate (pass/reject/repair)"),
    ]
    cfg = LaunchConfiguration
    inspection = Node(
        package=PACKAGE, executable="inspection_node", name="inspection_node",
        namespace=cfg("namespace"), output="screen", emulate_tty=True,
        parameters=[cfg("params_file"), {
            "rgb_topic": cfg("rgb_topic"), "sensor_topic": cfg("sensor_topic"),
            "depth_topic": cfg("depth_topic"), "camera_info_topic": cfg("camera_info_topic"),
            "device": cfg("device"), "backbone": cfg("model"), "sensor_type": cfg("sensor_type"),
        }])
    gate = Node(
        package=PACKAGE, executable="reject_gate", name="reject_gate",
        namespace=cfg("namespace"), output="screen", parameters=[cfg("params_file")],
        condition=IfCondition(cfg("with_reject_gate")))
    return LaunchDescription(args + [inspection, gate])
