"""launch/inspect.launch.py: loads where `launch` is installed, otherwise compiles and declares
the expected arguments with the expected defaults (read from its syntax tree)."""
from __future__ import annotations

import ast
import importlib.util
import py_compile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "inspect.launch.py"
EXPECTED = {"rgb_topic": "rgb/image_raw", "sensor_topic": "sensor/image_raw",
            "depth_topic": "depth/points", "camera_info_topic": "rgb/camera_info",
            "device": "auto", "model": "builtin", "with_reject_gate": "false"}


def _declared_arguments(tree) -> dict:
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            name = node.args[0].value
            kw = {k.arg: k.value for k in node.keywords}
            default = kw.get("default_value")
            out[name] = default.value if isinstance(default, ast.Constant) else ast.dump(default)
            assert isinstance(kw.get("description"), ast.Constant), f"{name} lacks a description"
    return out


def test_launch_file_compiles_and_declares_its_arguments(tmp_path):
    py_compile.compile(str(LAUNCH), cfile=str(tmp_path / "l.pyc"), doraise=True)
    args = _declared_arguments(ast.parse(LAUNCH.read_text()))
    for name, default in EXPECTED.items():
        assert args.get(name) == default, name
    # params_file defaults to the installed config/inspect.yaml
    assert args["params_file"] == "Name(id='default_params', ctx=Load())"
    text = LAUNCH.read_text()
    assert 'get_package_share_directory(PACKAGE), "config", "inspect.yaml"' in text
    # the nodes it starts are installed executables of this package
    assert 'executable="inspection_node"' in text and 'executable="reject_gate"' in text
    for exe in ("inspection_node", "reject_gate"):
        assert (ROOT / "scripts" / exe).stat().st_mode & 0o111


@pytest.mark.skipif(importlib.util.find_spec("launch") is None
                    or importlib.util.find_spec("launch_ros") is None,
                    reason="launch / launch_ros are not installed here")
def test_launch_description_builds():  # pragma: no cover - needs a ROS install
    spec = importlib.util.spec_from_file_location("inspect_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    desc = mod.generate_launch_description()
    names = {a.name for a in desc.get_launch_arguments()}
    assert set(EXPECTED) <= names


def test_params_file_matches_declared_parameters():
    from zsg_iad_ros.ros.params import INSPECTION_PARAMS
    cfg = yaml.safe_load((ROOT / "config" / "inspect.yaml").read_text())
    node = cfg["inspection_node"]["ros__parameters"]
    assert node == {s.name: s.default for s in INSPECTION_PARAMS}
    assert set(cfg["reject_gate"]["ros__parameters"]) == {
        "unknown_action", "non_repairable_types", "max_repair_area_px", "max_repair_regions"}


def test_docs_list_every_parameter():
    from zsg_iad_ros.ros.params import INSPECTION_PARAMS
    doc = (ROOT / "docs" / "ROS.md").read_text()
    missing = [s.name for s in INSPECTION_PARAMS if f"`{s.name}`" not in doc]
    assert not missing, f"docs/ROS.md does not list {missing}"
