"""What `launch/inspect.launch.py` does, as plain functions (tested without `launch`).

- `LAUNCH_ARGUMENTS`: the cell settings, each with the description `ros2 launch zsg_iad_ros
  inspect.launch.py --show-args` prints. A launch argument that sets a parameter overrides the
  parameters file only when it is given (its default is empty).
- `cell_setup(values, share_dir)`: one parameters file per run, written from `params_file`:
  for each node the sections that apply to it, merged in file order as rcl does (later
  sections win), then the given arguments, under a `/**/<node>` key that applies in any
  namespace. A section keyed by the bare node name (`inspection_node:`) applies under any
  namespace too (rcl alone would apply it only at the root, so `namespace:=line1` would
  silently run on defaults). Plus the environment for the Fast DDS profile.
Errors (`LaunchSetupError`) name the argument or the file and say what is wrong.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

PACKAGE = "zsg_iad_ros"
NODE = "inspection_node"
GATE = "reject_gate"
#: the shipped single-host Fast DDS profile, under share/<package>/config
SINGLE_HOST_PROFILE = "fastdds_single_host.xml"
#: Fast DDS 2 (Humble, Jazzy) reads only FASTRTPS_..., Fast DDS 3 (Kilted on) FASTDDS_...
#: (and warns that FASTRTPS_... is deprecated)
FASTRTPS_DISTROS = ("humble", "iron", "jazzy")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


class LaunchSetupError(ValueError):
    """A launch argument or parameters file that cannot be used; the message says which."""


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    description: str
    default: str = ""  # "" = not given: the parameters file decides
    parameter: Optional[str] = None  # the inspection_node parameter it sets
    kind: type = str  # str, bool or float


LAUNCH_ARGUMENTS = (
    LaunchArgument("namespace", "namespace of the nodes and of their relative topics, e.g. "
                   "line1 (the parameters file applies in any namespace)"),
    LaunchArgument("params_file", "parameters YAML for inspection_node and reject_gate; its "
                   "sections keyed inspection_node, /**/inspection_node or /** apply in any "
                   "namespace (default: the installed config/inspect.yaml)"),
    LaunchArgument("fastdds_profile", "Fast DDS profile for the nodes started here and the "
                   "processes launched after them: 'single_host' = the installed "
                   f"config/{SINGLE_HOST_PROFILE} (shared memory sized for large clouds, "
                   "loopback only; give it to the camera drivers too), a path to an XML "
                   "profile, or empty = the middleware's defaults"),
    LaunchArgument("with_reject_gate", "also start reject_gate (pass/reject/repair decisions)",
                   "false", kind=bool),
    LaunchArgument("rgb_topic", "RGB sensor_msgs/Image topic (file: rgb/image_raw)",
                   parameter="rgb_topic"),
    LaunchArgument("sensor_topic", "thermal or X-ray sensor_msgs/Image topic "
                   "(file: sensor/image_raw)", parameter="sensor_topic"),
    LaunchArgument("depth_topic", "depth sensor_msgs/PointCloud2 topic (file: depth/points)",
                   parameter="depth_topic"),
    LaunchArgument("camera_info_topic", "CameraInfo topic of the RGB camera "
                   "(file: rgb/camera_info)", parameter="camera_info_topic"),
    LaunchArgument("sensor_type", "second sensor: thermal or xray (file: thermal)",
                   parameter="sensor_type"),
    LaunchArgument("registered", "true when the thermal/X-ray image and the cloud are "
                   "pixel-aligned with the RGB image, false otherwise (file: true)",
                   parameter="registered", kind=bool),
    LaunchArgument("device", "torch device: auto, cpu, cuda or cuda:N (file: auto)",
                   parameter="device"),
    LaunchArgument("backbone", "feature backbone: auto (per modality), mobilenetv2, "
                   "efficientnet_lite0, dinov2_s_onnx, builtin, patchstats, a transformers hub id "
                   "or a local checkpoint directory, or several joined by + (file: auto)",
                   parameter="backbone"),
    LaunchArgument("reference_path", "bag of known-good parts taught at start, with the "
                   "limit samples (known-defective parts) for target_miss_rate (file: none)",
                   parameter="reference_path"),
    LaunchArgument("target_miss_rate", "with limit samples in reference_path: share of them "
                   "that may pass, the threshold lowered to match; 0 = off (file: 0)",
                   parameter="target_miss_rate", kind=float),
    LaunchArgument("threshold", "decision threshold on pred_score in [0, 1], or -1 = "
                   "calibrated automatically (file: -1)", parameter="threshold", kind=float),
    LaunchArgument("input_qos_reliability", "best_effort (sensor data QoS) or reliable; see "
                   "docs/ROS.md for large clouds (file: best_effort)",
                   parameter="input_qos_reliability"),
)
_BY_NAME = {a.name: a for a in LAUNCH_ARGUMENTS}


@dataclass(frozen=True)
class CellSetup:
    namespace: str
    params_files: Dict[str, str]  # node name -> parameters file written for it
    env: Dict[str, str]  # environment for the nodes and later processes
    overrides: Dict[str, Any]  # the inspection_node parameters the arguments set

    def summary(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self.overrides.items()) or "none"
        profile = next(iter(self.env.values()), "middleware defaults")
        return (f"namespace '{self.namespace or '/'}'; parameters {self.params_files[NODE]}; "
                f"launch-argument overrides: {given}; Fast DDS profile: {profile}")


def default_params_file(share_dir: str) -> str:
    return os.path.join(share_dir, "config", "inspect.yaml")


def parse_bool(name: str, text: str) -> bool:
    if text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise LaunchSetupError(f"launch argument {name}:={text!r} must be true or false")


def parameter_overrides(values: Dict[str, str]) -> Dict[str, Any]:
    """inspection_node parameters from the launch arguments that were given (non-empty)."""
    from zsg_iad_ros.ros.params import INSPECTION_PARAMS, ParamError, parse_threshold
    specs = {s.name: s for s in INSPECTION_PARAMS}
    out: Dict[str, Any] = {}
    for arg in LAUNCH_ARGUMENTS:
        text = values.get(arg.name, "")
        if arg.parameter is None or text == "":
            continue
        if arg.kind is bool:
            value = parse_bool(arg.name, text)
        elif arg.kind is float:
            try:
                value = float(text)
            except ValueError:
                raise LaunchSetupError(f"launch argument {arg.name}:={text!r} must be a "
                                       "number") from None
            try:
                if arg.parameter == "threshold":
                    parse_threshold(value)
            except ParamError as e:
                raise LaunchSetupError(f"launch argument {arg.name}:={text!r}: {e}") from None
        else:
            value = text
        choices = specs[arg.parameter].choices
        if choices and value not in choices:
            raise LaunchSetupError(f"launch argument {arg.name}:={text!r} must be one of "
                                   f"{', '.join(choices)}")
        out[arg.parameter] = value
    return out


def node_fqn(namespace: str, name: str) -> str:
    ns = namespace.strip("/")
    return f"/{ns}/{name}" if ns else f"/{name}"


def key_matches(key: str, fqn: str) -> bool:
    """Whether a parameters-file node key applies to the node `fqn` (rcl's rules: `*` one
    name token, `**` any number; a bare node name here applies in any namespace)."""
    if "/" not in key.strip("/") and not key.startswith("/"):
        key = f"/**/{key}"
    pattern = [t for t in key.split("/") if t]
    tokens = [t for t in fqn.split("/") if t]

    def match(p: int, t: int) -> bool:
        if p == len(pattern):
            return t == len(tokens)
        if pattern[p] == "**":
            return any(match(p + 1, u) for u in range(t, len(tokens) + 1))
        return t < len(tokens) and pattern[p] in ("*", tokens[t]) and match(p + 1, t + 1)
    return match(0, 0)


def _sections(path: str) -> List[tuple]:
    """(node key, parameters) of a parameters file in file order; nested namespace mappings
    are joined with '/' as rcl does."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise LaunchSetupError(f"params_file {path} does not exist")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise LaunchSetupError(f"params_file {path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise LaunchSetupError(f"params_file {path} holds no node sections "
                               "('<node>: ros__parameters: ...')")
    out: List[tuple] = []

    def walk(prefix: str, node: dict):
        for key, value in node.items():
            name = f"{prefix}/{key}" if prefix else str(key)
            if not isinstance(value, dict):
                raise LaunchSetupError(f"params_file {path}: '{name}' is not a mapping")
            if "ros__parameters" in value:
                params = value["ros__parameters"]
                if not isinstance(params, dict):
                    raise LaunchSetupError(f"params_file {path}: '{name}: ros__parameters' is "
                                           "not a mapping")
                out.append((name, params))
            else:
                walk(name, value)
    walk("", doc)
    return out


def node_parameters(path: str, namespace: str, names: Sequence[str]) -> Dict[str, dict]:
    """Per node name: its parameters from `path` (the matching sections merged in file
    order). LaunchSetupError when nothing in the file applies to the first node."""
    sections = _sections(path)
    out = {}
    for name in names:
        fqn = node_fqn(namespace, name)
        merged: dict = {}
        for key, params in sections:
            if key_matches(key, fqn):
                merged.update(params)
        out[name] = merged
    if sections and not any(key_matches(k, node_fqn(namespace, names[0])) for k, _ in sections):
        keys = ", ".join(k for k, _ in sections)
        raise LaunchSetupError(
            f"params_file {path} has no section for {node_fqn(namespace, names[0])} (its "
            f"sections: {keys}); key it {names[0]}, /**/{names[0]} or /**")
    return out


def profile_variable(distro: str) -> str:
    """The environment variable through which rmw_fastrtps of ROS_DISTRO `distro` loads an
    XML profile."""
    if distro.strip().lower() in FASTRTPS_DISTROS:
        return "FASTRTPS_DEFAULT_PROFILES_FILE"
    return "FASTDDS_DEFAULT_PROFILES_FILE"


def profile_env(value: str, share_dir: str) -> Dict[str, str]:
    """Environment that makes Fast DDS load the profile `value` ('' = none)."""
    if value.strip().lower() in ("",) + _FALSE:
        return {}
    if value.strip().lower() in ("single_host", "true"):
        path = os.path.join(share_dir, "config", SINGLE_HOST_PROFILE)
    else:
        path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(path):
        raise LaunchSetupError(f"fastdds_profile {value!r}: {path} does not exist")
    rmw = os.environ.get("RMW_IMPLEMENTATION", "")
    if rmw and "fastrtps" not in rmw:
        raise LaunchSetupError(f"fastdds_profile is a Fast DDS profile, but RMW_IMPLEMENTATION "
                               f"is {rmw}: unset it or use rmw_fastrtps_cpp")
    return {profile_variable(os.environ.get("ROS_DISTRO", "")): path}


def cell_setup(values: Dict[str, str], share_dir: str,
               out_dir: Optional[str] = None) -> CellSetup:
    """Everything the launch file needs from the launch argument values (text, '' = not
    given). Writes the parameters files into `out_dir` (a new temporary folder if None)."""
    unknown = set(values) - set(_BY_NAME)
    if unknown:
        raise LaunchSetupError(f"unknown launch arguments: {', '.join(sorted(unknown))}")
    namespace = values.get("namespace", "").strip().strip("/")
    params_file = values.get("params_file") or default_params_file(share_dir)
    overrides = parameter_overrides(values)
    names = [NODE] + ([GATE] if parse_bool("with_reject_gate",
                                           values.get("with_reject_gate") or "false") else [])
    per_node = node_parameters(params_file, namespace, names)
    per_node[NODE].update(overrides)
    out_dir = out_dir or tempfile.mkdtemp(prefix=f"{PACKAGE}_launch_")
    files = {}
    for name, params in per_node.items():
        path = os.path.join(out_dir, f"{name}.params.yaml")
        with open(path, "w") as f:
            f.write(f"# written by {PACKAGE} inspect.launch.py from {params_file}\n")
            yaml.safe_dump({f"/**/{name}": {"ros__parameters": params}}, f, sort_keys=False)
        files[name] = path
    env = profile_env(values.get("fastdds_profile", ""), share_dir)
    return CellSetup(namespace=namespace, params_files=files, env=env, overrides=overrides)
