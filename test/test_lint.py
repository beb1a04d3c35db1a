"""The usual ROS package linters, offline: flake8 (ament_flake8's 99 columns, config in
.flake8) over the Python sources, and package.xml checked against the package_format3 rules
(REP 149) that can be checked without the XSD at hand."""
from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# REP 149 / package_format3.xsd: fixed head order, then dependencies in any order, export last.
HEAD = ("name", "version", "description", "maintainer", "license")
OPTIONAL_HEAD = ("url", "author")
DEPENDS = ("buildtool_depend", "buildtool_export_depend", "build_depend", "build_export_depend",
           "depend", "exec_depend", "test_depend", "doc_depend", "conflict", "replace",
           "group_depend", "member_of_group")


def test_flake8_clean():
    targets = [p for p in ("zsg_iad_ros", "test", "scripts", "launch", "benchmarks")
               if (ROOT / p).exists()]
    proc = subprocess.run([sys.executable, "-m", "flake8", "--config", str(ROOT / ".flake8"),
                           *targets], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"flake8 found problems:\n{proc.stdout}{proc.stderr}"


def test_flake8_config_matches_ament():
    cfg = (ROOT / ".flake8").read_text()
    assert re.search(r"^max-line-length\s*=\s*99$", cfg, re.M)


def test_package_xml_follows_format3():
    tree = ET.parse(ROOT / "package.xml")  # raises on malformed XML
    root = tree.getroot()
    assert root.tag == "package" and root.get("format") == "3"
    tags = [c.tag for c in root if isinstance(c.tag, str)]
    # head: name, version, description, maintainer+, license+, url*, author*
    i = 0
    for tag in HEAD:
        assert tags[i] == tag, f"expected <{tag}> at position {i}, found <{tags[i]}>"
        i += 1
        while tag in ("maintainer", "license") and tags[i] == tag:
            i += 1
    while tags[i] in OPTIONAL_HEAD:
        i += 1
    rest = tags[i:]
    if "export" in rest:
        assert rest.index("export") == len(rest) - 1, "<export> must come last"
        rest = rest[:-1]
    unknown = [t for t in rest if t not in DEPENDS]
    assert not unknown, f"tags not allowed by format 3: {unknown}"
    for tag in ("name", "version", "description"):
        assert tags.count(tag) == 1
    name = root.findtext("name")
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
    assert re.fullmatch(r"\d+\.\d+\.\d+", root.findtext("version"))
    assert root.findtext("description").strip()
    for m in root.findall("maintainer"):
        assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", m.get("email", "")), m.get("email")
    deps = [(c.tag, c.text.strip()) for c in root if c.tag in DEPENDS]
    assert len(deps) == len(set(deps)), "duplicate dependency"
    assert root.find("export/build_type").text == "ament_cmake"


def test_package_xml_agrees_with_cmake():
    root = ET.parse(ROOT / "package.xml").getroot()
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"project\((\w+)\)", cmake).group(1) == root.findtext("name")
    depends = {c.text for c in root.findall("depend")}
    depends |= {c.text for c in root.findall("build_depend")}
    buildtools = {c.text for c in root.findall("buildtool_depend")}
    for pkg in re.findall(r"find_package\((\w+) REQUIRED\)", cmake):
        assert pkg in depends | buildtools, f"{pkg} found by CMake but not declared"
    msg_deps = re.search(r"DEPENDENCIES ([\w ]+)", cmake).group(1).split()
    assert set(msg_deps) <= depends
    if "rosidl_generate_interfaces" in cmake:
        assert root.findtext("member_of_group") == "rosidl_interface_packages"
