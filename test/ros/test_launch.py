"""launch/inspect.launch.py and the plain functions behind it (zsg_iad_ros.ros.launch_args):
arguments and their descriptions, parameters files under any namespace, arguments overriding
the file only when given, the Fast DDS profile. The parameters files written here are loaded
by rcl itself (an rclpy node in a namespace). Where `launch` / `launch_ros` are installed, the
launch file itself is built and run through its setup."""
from __future__ import annotations

import ast
import importlib.util
import py_compile
from pathlib import Path

import pytest
import rclpy
import yaml

from zsg_iad_ros.ros import launch_args as la
from zsg_iad_ros.ros.params import INSPECTION_PARAMS

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "inspect.launch.py"
SHARE = str(ROOT)  # laid out as the installed share/zsg_iad_ros: config/, launch/
CELL_SETTINGS = ("namespace", "params_file", "fastdds_profile", "with_reject_gate",
                 "registered", "sensor_type", "device", "backbone", "reference_path",
                 "target_miss_rate", "threshold", "rgb_topic", "sensor_topic", "depth_topic",
                 "camera_info_topic", "input_qos_reliability")
DEFAULTS = {s.name: s.default for s in INSPECTION_PARAMS}


def loaded_parameters(params_file: str, namespace: str, name: str = la.NODE) -> dict:
    """The parameters rcl gives node `name` in `namespace` from `params_file`."""
    node = rclpy.create_node(name, namespace=namespace or "/", cli_args=[
        "--ros-args", "--params-file", params_file],
        automatically_declare_parameters_from_overrides=True)
    try:
        return {k: p.value for k, p in node._parameters.items()
                if k not in ("use_sim_time", "start_type_description_service")}
    finally:
        node.destroy_node()


def setup(tmp_path, **values):
    return la.cell_setup({k: str(v) for k, v in values.items()}, SHARE, str(tmp_path))


# -- the launch file ---------------------------------------------------------------------------
def test_launch_file_is_thin_and_declares_every_argument(tmp_path):
    py_compile.compile(str(LAUNCH), cfile=str(tmp_path / "l.pyc"), doraise=True)
    tree = ast.parse(LAUNCH.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "zsg_iad_ros.ros.launch_args" for a in n.names}
    assert {"LAUNCH_ARGUMENTS", "cell_setup", "default_params_file"} <= imported
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name)}
    assert {"DeclareLaunchArgument", "OpaqueFunction", "Node"} <= calls
    assert len(LAUNCH.read_text().splitlines()) < 60
    for exe in (la.NODE, la.GATE):
        assert (ROOT / "scripts" / exe).stat().st_mode & 0o111


def test_every_cell_setting_is_an_argument_with_a_description():
    names = [a.name for a in la.LAUNCH_ARGUMENTS]
    assert len(names) == len(set(names)) and set(CELL_SETTINGS) <= set(names)
    for a in la.LAUNCH_ARGUMENTS:
        assert len(a.description) > 20, a.name
        if a.parameter is not None:
            assert a.parameter in DEFAULTS and a.default == "", a.name  # given or not at all


@pytest.mark.skipif(importlib.util.find_spec("launch") is None
                    or importlib.util.find_spec("launch_ros") is None,
                    reason="launch / launch_ros are not installed here")
def test_launch_description_builds_and_sets_up_a_cell(tmp_path):  # pragma: no cover
    from launch import LaunchContext
    from launch.actions import SetEnvironmentVariable
    from launch_ros.actions import Node
    spec = importlib.util.spec_from_file_location("inspect_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    desc = mod.generate_launch_description()
    declared = {a.name: a for a in desc.get_launch_arguments()}
    assert set(declared) == {a.name for a in la.LAUNCH_ARGUMENTS}
    assert all(declared[a.name].description == a.description for a in la.LAUNCH_ARGUMENTS)
    context = LaunchContext()
    context.launch_configurations.update({a.name: a.default for a in la.LAUNCH_ARGUMENTS})
    context.launch_configurations.update({
        "params_file": declared["params_file"].default_value[0].perform(context),
        "namespace": "line1", "with_reject_gate": "true", "fastdds_profile": "single_host",
        "sensor_type": "xray"})
    actions = mod._setup(context)
    assert len([a for a in actions if isinstance(a, Node)]) == 2
    assert len([a for a in actions if isinstance(a, SetEnvironmentVariable)]) == 1


# -- parameters files under any namespace ----------------------------------------------------
def test_shipped_file_applies_under_any_namespace(tmp_path):
    for ns in ("", "line1", "/plant/line2"):
        cell = setup(tmp_path, namespace=ns)
        assert loaded_parameters(cell.params_files[la.NODE], ns) == DEFAULTS, ns
        assert cell.overrides == {}


def test_arguments_override_the_file_only_when_given(tmp_path):
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump({"inspection_node": {"ros__parameters": {
        "sensor_type": "xray", "device": "cpu", "rgb_topic": "/cam/color/image_raw",
        "registered": False, "sync_slop_s": 0.02}}}))
    cell = setup(tmp_path, namespace="line1", params_file=custom)
    got = loaded_parameters(cell.params_files[la.NODE], "line1")
    assert got == {"sensor_type": "xray", "device": "cpu", "rgb_topic": "/cam/color/image_raw",
                   "registered": False, "sync_slop_s": 0.02}
    cell = setup(tmp_path, namespace="line1", params_file=custom, sensor_type="thermal",
                 registered="true", threshold="1", backbone="/models/dinov2")
    got = loaded_parameters(cell.params_files[la.NODE], "line1")
    assert got["sensor_type"] == "thermal" and got["registered"] is True
    assert got["threshold"] == 1.0 and got["backbone"] == "/models/dinov2"
    assert got["device"] == "cpu" and got["sync_slop_s"] == 0.02  # from the file
    assert cell.overrides == {"sensor_type": "thermal", "registered": True, "threshold": 1.0,
                              "backbone": "/models/dinov2"}


def test_sections_merge_in_file_order_as_rcl_does(tmp_path):
    f = tmp_path / "layers.yaml"
    f.write_text("""
/**:
  ros__parameters: {device: cpu, queue_size: 3}
/**/inspection_node:
  ros__parameters: {queue_size: 4, stream: gears}
/line1/inspection_node:
  ros__parameters: {stream: line1_gears}
/line2/inspection_node:
  ros__parameters: {stream: not_this_line}
/**/reject_gate:
  ros__parameters: {unknown_action: reject}
line1:
  reject_gate:
    ros__parameters: {max_repair_regions: 1}
""")
    cell = setup(tmp_path, namespace="line1", params_file=f, with_reject_gate="true")
    node = loaded_parameters(cell.params_files[la.NODE], "line1")
    assert node == {"device": "cpu", "queue_size": 4, "stream": "line1_gears"}
    gate = loaded_parameters(cell.params_files[la.GATE], "line1", la.GATE)
    assert gate == {"device": "cpu", "queue_size": 3, "unknown_action": "reject",
                    "max_repair_regions": 1}


def test_node_key_matching():
    fqn = "/plant/line1/inspection_node"
    for key, expected in (("inspection_node", True), ("/**/inspection_node", True),
                          ("/**", True), ("/plant/*/inspection_node", True),
                          ("/*/inspection_node", False), ("/inspection_node", False),
                          ("/plant/line1/inspection_node", True), ("/**/reject_gate", False),
                          ("plant/line1/inspection_node", True)):
        assert la.key_matches(key, fqn) is expected, key
    assert la.key_matches("/inspection_node", "/inspection_node")


def test_bad_files_and_arguments_say_what_is_wrong(tmp_path, monkeypatch):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(la.LaunchSetupError, match=f"params_file {missing} does not exist"):
        setup(tmp_path, params_file=missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("inspection_node: [unclosed")
    with pytest.raises(la.LaunchSetupError, match="bad.yaml is not valid YAML"):
        setup(tmp_path, params_file=bad)
    other = tmp_path / "other.yaml"
    other.write_text("camera_driver:\n  ros__parameters: {fps: 10}\n")
    with pytest.raises(la.LaunchSetupError, match="no section for /line1/inspection_node .*"
                                                  "camera_driver"):
        setup(tmp_path, params_file=other, namespace="line1")
    flat = tmp_path / "flat.yaml"
    flat.write_text("inspection_node:\n  ros__parameters: 5\n")
    with pytest.raises(la.LaunchSetupError, match="ros__parameters' is not a mapping"):
        setup(tmp_path, params_file=flat)
    for name, value, why in (("registered", "maybe", "true or false"),
                             ("threshold", "high", "must be a number"),
                             ("threshold", "1.5", r"\[0, 1\] or -1"),
                             ("sensor_type", "lidar", "thermal, xray")):
        with pytest.raises(la.LaunchSetupError, match=f"{name}:='{value}'.*{why}"):
            setup(tmp_path, **{name: value})
    with pytest.raises(la.LaunchSetupError, match="unknown launch arguments: model"):
        setup(tmp_path, model="builtin")


def test_fastdds_profile_argument(tmp_path, monkeypatch):
    shipped = str(ROOT / "config" / la.SINGLE_HOST_PROFILE)
    monkeypatch.delenv("RMW_IMPLEMENTATION", raising=False)
    monkeypatch.setenv("ROS_DISTRO", "kilted")
    assert setup(tmp_path).env == {}
    assert setup(tmp_path, fastdds_profile="single_host").env == {
        "FASTDDS_DEFAULT_PROFILES_FILE": shipped}
    monkeypatch.setenv("ROS_DISTRO", "jazzy")  # Fast DDS 2 reads the older variable only
    assert setup(tmp_path, fastdds_profile=shipped).env == {
        "FASTRTPS_DEFAULT_PROFILES_FILE": shipped}
    with pytest.raises(la.LaunchSetupError, match="does not exist"):
        setup(tmp_path, fastdds_profile=str(tmp_path / "none.xml"))
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_cyclonedds_cpp")
    with pytest.raises(la.LaunchSetupError, match="rmw_cyclonedds_cpp"):
        setup(tmp_path, fastdds_profile="single_host")


def test_shipped_profile_is_installed_and_names_its_transports():
    text = (ROOT / "config" / la.SINGLE_HOST_PROFILE).read_text()
    assert "<type>SHM</type>" in text and "<address>127.0.0.1</address>" in text
    assert "<useBuiltinTransports>false</useBuiltinTransports>" in text
    size = int(text.split("<segment_size>")[1].split("<")[0])
    assert size >= 32 * 2**20  # several 640x480 clouds in flight
    assert "install(DIRECTORY launch config" in (ROOT / "CMakeLists.txt").read_text()


# -- the shipped parameters file and the docs ----------------------------------------------
def test_params_file_matches_declared_parameters():
    cfg = yaml.safe_load((ROOT / "config" / "inspect.yaml").read_text())
    assert set(cfg) == {"/**/inspection_node", "/**/reject_gate"}
    assert cfg["/**/inspection_node"]["ros__parameters"] == DEFAULTS
    assert set(cfg["/**/reject_gate"]["ros__parameters"]) == {
        "unknown_action", "non_repairable_types", "max_repair_area_px", "max_repair_regions"}


def test_docs_list_every_parameter_and_launch_argument():
    doc = (ROOT / "docs" / "ROS.md").read_text()
    missing = [s.name for s in INSPECTION_PARAMS if f"`{s.name}`" not in doc]
    assert not missing, f"docs/ROS.md does not list {missing}"
    missing = [a.name for a in la.LAUNCH_ARGUMENTS if f"`{a.name}`" not in doc]
    assert not missing, f"docs/ROS.md does not list the launch arguments {missing}"
