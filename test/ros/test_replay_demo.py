"""Bag player into a live graph, and the demo command end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from zsg_ros_testkit import WAIT_S

from zsg_iad_ros.data.bags import TOPIC_RGB, iter_bag_messages, write_bag
from zsg_iad_ros.data.synthetic import generate_sample
from zsg_iad_ros.ros import conversions as conv
from zsg_iad_ros.ros.replay import BagPlayer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "parts"
    samples = [generate_sample("brushed_metal", "good", 300 + k, size=64) for k in range(2)]
    samples.append(generate_sample("brushed_metal", "hole", 8, size=64))
    write_bag(path, samples)
    return path


def test_player_publishes_recorded_stamps_into_the_node(make_graph, small_bag):
    g = make_graph()
    recorded = [conv.stamp_to_ns(m.header.stamp)
                for _t, _ty, _ts, m in iter_bag_messages(small_bag, [TOPIC_RGB])]

    def lockstep(_stamp):
        assert g.wait(lambda: g.node.accounting()["frames_pending"] == 0
                      and g.node.accounting()["frames_received"] >= player.parts, WAIT_S)

    player = BagPlayer(str(small_bag), rate=0.0, namespace=g.ns, before_part=lockstep)
    try:
        assert player.wait_for_subscribers([(TOPIC_RGB, "sensor_msgs/msg/Image")], 10.0)
        counts = player.play()
        assert counts[TOPIC_RGB] == 3 and player.parts == 3
        assert g.wait(lambda: len(g.messages("report")) == 3)
        got = sorted(conv.stamp_to_ns(r.header.stamp) for r in g.messages("report"))
        assert got == sorted(recorded)
    finally:
        player.destroy_node()


def test_demo_command_saves_outputs_and_prints_summary(small_bag, tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, ROS_DOMAIN_ID=str((int(os.environ["ROS_DOMAIN_ID"]) + 1) % 200))
    # run from the repository root, as the README does
    proc = subprocess.run([sys.executable, "-m", "zsg_iad_ros.ros.demo", "--bag", str(small_bag),
                           "--out", str(out), "--device", "cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == 3 and all("stamp" in ln and "->" in ln for ln in lines)
    assert "parts in: 3   reports out: 3" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"]["frames_processed"] == 3
    # flags tallied against the bag's ground truth: 2 good parts and 1 with a hole
    t = summary["against_truth"]
    assert t["good"] == 2 and t["defective"] == 1
    assert (f"{t['defective_flagged']} of 1 defective parts, {t['good_flagged']} of 2 good "
            f"parts") in proc.stdout
    for kind in ("report.json", "mask.png", "overlay.png"):
        assert len(list(out.glob(f"*_{kind}"))) == 3, kind
