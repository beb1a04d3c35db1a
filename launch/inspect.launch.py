"""Launch the inspection node (and optionally reject_gate) on a ROS 2 install (Jazzy/Kilted).

    ros2 launch zsg_iad_ros inspect.launch.py --show-args      # every cell setting, described
    ros2 launch zsg_iad_ros inspect.launch.py namespace:=line1 params_file:=cell.yaml \
        rgb_topic:=/cam/color/image_raw depth_topic:=/cam/depth/points registered:=false \
        device:=cuda fastdds_profile:=single_host with_reject_gate:=true

Arguments that set a parameter override the parameters file only when given. The logic lives
in zsg_iad_ros.ros.launch_args (tested without launch); this file only wires it.
"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from zsg_iad_ros.ros.launch_args import (LAUNCH_ARGUMENTS, PACKAGE, cell_setup,
                                         default_params_file)


def _setup(context):
    share = get_package_share_directory(PACKAGE)
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    cell = cell_setup(values, share)
    # the profile reaches the nodes below and whatever this launch starts after them
    actions = [SetEnvironmentVariable(k, v) for k, v in cell.env.items()]
    actions.append(LogInfo(msg=f"{PACKAGE}: {cell.summary()}"))
    for name in cell.params_files:
        actions.append(Node(package=PACKAGE, executable=name, name=name,
                            namespace=cell.namespace, output="screen", emulate_tty=True,
                            parameters=[cell.params_files[name]]))
    return actions


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    defaults = {"params_file": default_params_file(share)}
    args = [DeclareLaunchArgument(a.name, default_value=defaults.get(a.name, a.default),
                                  description=a.description) for a in LAUNCH_ARGUMENTS]
    return LaunchDescription(args + [OpaqueFunction(function=_setup)])
