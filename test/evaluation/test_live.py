"""Live evaluation: a tiny bag replayed into the inspection node over a real rclpy graph
(Fast DDS) must give the same scores and maps as the offline evaluation of the same bag.

Needs the node (zsg_iad_ros.ros.inspection_node), the bag writer and the detector.
"""
import os

# Before rclpy initialises: a DDS domain of our own, discovery on this host only.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + (os.getpid() + 97) % 200))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")

import dataclasses  # noqa: E402
import json  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("rclpy")
bags = pytest.importorskip("zsg_iad_ros.data.bags")
synthetic = pytest.importorskip("zsg_iad_ros.data.synthetic")
pytest.importorskip("zsg_iad_ros.ros.inspection_node")

from zsg_iad_ros.evaluation.cli import main as cli_main  # noqa: E402
from zsg_iad_ros.core.detector import Detector  # noqa: E402
from zsg_iad_ros.evaluation.live import (detector_config_from_params, evaluate_live,  # noqa: E402
                                         node_parameters)
from zsg_iad_ros.evaluation.offline import evaluate_bags  # noqa: E402
# Reliable inputs and a queue that holds the whole bag: this test is about agreement, so no
# part may be dropped however slow the shared machine is.
PARAMS = {"sync_backend": "builtin", "device": "cpu", "input_qos_reliability": "reliable",
          "queue_size": 20}
from zsg_iad_ros.evaluation.summary import write_outputs  # noqa: E402


@pytest.fixture(scope="module")
def tiny_bag(tmp_path_factory):
    cat = "cast_metal"
    defects = [d for d in ("crack", "missing_part") if d in synthetic.applicable_defects(cat)]
    samples = [synthetic.generate_sample(cat, "good", s, size=96) for s in range(3)]
    samples += [synthetic.generate_sample(cat, d, 40 + i, size=96) for i, d in enumerate(defects)]
    path = str(tmp_path_factory.mktemp("bag") / "tiny")
    bags.write_bag(path, samples, rate_hz=5.0)
    return path, samples


def test_live_replay_matches_offline(tiny_bag, tmp_path):
    path, samples = tiny_bag
    rec = evaluate_live(path, rate=1.0, timeout_s=90.0, namespace="/ev_" + uuid.uuid4().hex[:8],
                        params=PARAMS)
    live = rec["live"]
    n = len(samples)
    assert live["parts_published"] == n
    assert live["parts_received"] == n and live["drops"] == 0
    assert live["node_accounting"]["frames_processed"] == n
    assert live["end_to_end_latency_ms"]["n"] == n
    assert live["end_to_end_latency_ms"]["p50"] > 0
    agree = live["offline_agreement"]
    assert agree["compared"] == n
    assert agree["max_abs_score_diff"] < 1e-5
    assert agree["max_abs_map_diff"] < 1e-5
    assert agree["decision_agreement"] == 1.0
    overall = rec["configs"]["all"]["overall"]
    assert overall["n_samples"] == n and overall["n_defective"] == n - 3
    # The ground truth travelled through the bag and matched the reports by stamp.
    live_scores = {r.sample_id: r.pred_score for r in rec["runs"]["all"].draws[0]}
    assert set(live_scores) == {s.sample_id for s in samples}

    # The offline evaluation of the same bag (read directly, no graph) gives the same scores.
    cfg = detector_config_from_params(node_parameters(samples, PARAMS))

    def factory(modalities):
        return Detector(dataclasses.replace(cfg, modalities=tuple(modalities)))
    off = evaluate_bags([path], factory, progress_every=0)
    off_scores = {r.sample_id: r.pred_score for r in off["runs"]["all"].draws[0]}
    assert set(off_scores) == set(live_scores)
    for sid, score in off_scores.items():
        assert abs(min(max(score, 0.0), 1.0) - live_scores[sid]) < 1e-5, sid
    assert rec["configs"]["all"]["overall"]["image_auroc"] == pytest.approx(
        off["configs"]["all"]["overall"]["image_auroc"])

    paths = write_outputs(rec, str(tmp_path))
    data = json.loads(open(paths["metrics"]).read())
    assert data["live"]["drops"] == 0
    assert "Live replay" in open(paths["summary"]).read()


def test_cli_offline_on_a_bag(tiny_bag, tmp_path, capsys):
    path, samples = tiny_bag
    assert cli_main(["offline", path, "--out", str(tmp_path), "--device", "cpu",
                     "--no-plots", "--progress-every", "0"]) == 0
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["configs"]["all"]["overall"]["n_samples"] == len(samples)
    rows = data["configs"]["all"]["per_sample"]
    assert [r["sample_id"] for r in rows] == [s.sample_id for s in samples]  # recorded order
    assert sum(r["label"] for r in rows) == len(samples) - 3
    assert "| cast_metal |" in capsys.readouterr().out
