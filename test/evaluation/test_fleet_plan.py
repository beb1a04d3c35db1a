"""Fan-out pieces that need neither Ray nor the detector: finding bags, cutting a run into
shards along streams, and the progress meter."""
import io
import os

import pytest

from zsg_iad_ros.evaluation.bagset import (SKIPPED, BagOutcome, find_bags, inputs_record,
                                           recorded_parts)
from zsg_iad_ros.evaluation.offline import plan_evaluation
from zsg_iad_ros.evaluation.progress import ProgressMeter
from zsg_iad_ros.evaluation.shards import BagScan, PartRecord, plan_shards

# ------------------------------------------------------------------------------ finding bags


def _bag_dir(path, parts=3):
    os.makedirs(path)
    with open(os.path.join(path, "metadata.yaml"), "w") as f:
        f.write("rosbag2_bagfile_information:\n  topics_with_message_count:\n")
        for count, topic in ((parts, "/ground_truth"), (parts + 1, "/rgb/image_raw")):
            f.write(f"  - message_count: {count}\n    topic_metadata:\n      name: {topic}\n")
    open(os.path.join(path, "x_0.mcap"), "wb").close()


def test_find_bags_expands_folders_and_globs_in_order(tmp_path):
    root = tmp_path / "shift"
    _bag_dir(root / "cell_b")
    _bag_dir(root / "cell_a")
    _bag_dir(root / "line2" / "cell_c")
    (root / "loose.mcap").write_bytes(b"")
    (root / "notes.txt").write_text("not a bag")
    found = find_bags([str(root)])
    # Sorted walk; a bag folder's own storage file is not listed again; other files ignored.
    assert [os.path.relpath(p, root) for p in found] == [
        "loose.mcap", "cell_a", "cell_b", os.path.join("line2", "cell_c")]
    assert find_bags([str(root / "cell_*"), str(root / "cell_a")]) == [
        str(root / "cell_a"), str(root / "cell_b")]  # duplicates dropped, order kept


def test_find_bags_names_every_argument_without_bags(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as e:
        find_bags([str(tmp_path / "missing"), str(tmp_path / "empty"),
                   str(tmp_path / "none_*")])
    msg = str(e.value)
    assert "bag not found" in msg and "missing" in msg
    assert "no bag in folder" in msg and "empty" in msg
    assert "no path matches" in msg and "none_*" in msg


def test_recorded_parts_reads_the_metadata(tmp_path):
    _bag_dir(tmp_path / "b", parts=7)
    assert recorded_parts(str(tmp_path / "b")) == 7  # ground truth count, not the largest
    assert recorded_parts(str(tmp_path / "b" / "x_0.mcap")) is None
    (tmp_path / "b" / "metadata.yaml").write_text("{broken")
    assert recorded_parts(str(tmp_path / "b")) is None


def test_inputs_record_counts_parts_of_every_kind():
    outcomes = [BagOutcome("/d/a", "evaluated", 4), BagOutcome("/d/b", "failed", 6, "died"),
                BagOutcome("/d/c", SKIPPED, 5, "bad magic"), BagOutcome("/d/e", SKIPPED, None,
                                                                        "no metadata")]
    rec = inputs_record(outcomes, failed_parts=2, execution={"workers": 2, "engine": "x"})
    assert rec["bags"] == {"found": 4, "evaluated": 1, "skipped": 2, "failed": 1}
    assert rec["parts"] == {"evaluated": 8, "skipped": 5, "skipped_bags_of_unknown_size": 1,
                            "failed": 2}
    assert [b["name"] for b in rec["not_evaluated"]] == ["b", "c", "e"]


# ------------------------------------------------------------------------------ shards

def _scan(path, streams, labels=None):
    labels = labels or [0] * len(streams)
    return BagScan(path, [PartRecord(s, s, lab, f"{os.path.basename(path)}-{k}",
                                     {"rgb": True, "sensor": k == 0, "geometry": False})
                          for k, (s, lab) in enumerate(zip(streams, labels))])


SCANS = [_scan("/bags/a", ["gear", "pcb", "gear"]), _scan("/bags/b", ["pcb", "gear"])]
PARTS = [p for s in SCANS for p in s.parts]


def _plan(**kw):
    return plan_evaluation(PARTS, [p.present for p in PARTS], **kw)


def test_carry_shards_one_stream_across_bags_in_scoring_order():
    plan = _plan()
    shards = plan_shards(SCANS, plan, "carry")
    assert [(s.stream, s.score) for s in shards] == [("gear", [0, 2, 4]), ("pcb", [1, 3])]
    gear = shards[0]
    assert gear.locations == {0: ("/bags/a", 0), 2: ("/bags/a", 2), 4: ("/bags/b", 1)}
    assert gear.bags() == ["/bags/a", "/bags/b"] and gear.sample_ids[4] == "b-1"
    assert gear.examples == 4 and gear.modalities == ("rgb", "sensor")
    shuffled = plan_shards(SCANS, _plan(order_seed=5), "carry")
    order = _plan(order_seed=5).order
    for s in shuffled:  # each stream keeps the global (shuffled) order of its parts
        assert s.score == [i for i in order if PARTS[i].stream == s.stream]


def test_per_bag_shards_and_their_references():
    labels = [[0, 0, 1], [0, 0]]
    scans = [_scan(s.path, [p.stream for p in s.parts], lab) for s, lab in zip(SCANS, labels)]
    parts = [p for s in scans for p in s.parts]
    plan = plan_evaluation(parts, [p.present for p in parts], references=1, draws=2,
                           ablate_modalities=True)
    shards = plan_shards(scans, plan, "per-bag")
    assert {s.config for s in shards} == {"all", "without_rgb", "without_sensor"}
    bag_of = {i: "/bags/a" if i < 3 else "/bags/b" for i in range(5)}
    for d in range(2):
        expected = {(bag_of[i], parts[i].stream) for i in plan.scored(d)}
        for config in ("all", "without_rgb", "without_sensor"):
            assert sorted((s.bag, s.stream) for s in shards
                          if s.draw == d and s.config == config) == sorted(expected)
    for s in shards:
        refs = plan.references[s.draw]
        assert s.bag in ("/bags/a", "/bags/b")
        assert all(parts[i].stream == s.stream for i in s.score)
        assert all(s.locations[i][0] == s.bag for i in s.score)
        # Only the shard's own stream is taught; a reference may sit in the other bag.
        assert s.references == {s.stream: refs[s.stream]}
        assert not set(s.score) & set(refs[s.stream])
        assert s.examples == (4 if (s.config, s.draw) == ("all", 0) else 0)


def test_unreadable_scans_are_not_planned():
    with pytest.raises(ValueError, match="unreadable bag /bags/x"):
        plan_shards([BagScan("/bags/x", error="ReaderError: bad")], _plan(), "carry")
    with pytest.raises(ValueError, match="stream_memory"):
        plan_shards(SCANS, _plan(), "sometimes")


# ------------------------------------------------------------------------------ progress

class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_in_a_log_is_throttled_and_ends_with_the_totals():
    clock, out = Clock(), io.StringIO()
    meter = ProgressMeter(100, "bags", every=10, min_interval_s=1.0, stream=out, clock=clock)
    for _ in range(30):  # 30 parts in 0.3 s: one line (at 10), the rest throttled
        clock.t += 0.01
        meter.update()
    clock.t = 2.0
    meter.update(5, failed=5, stage="3/9 shards")  # 35: crossed 30, interval passed
    meter.update()  # 36: throttled
    clock.t = 10.0
    meter.update(64)
    meter.close()
    meter.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[bags] 10/100 parts, 100.00 parts/s, ETA 1 s")
    assert lines[1] == "[bags] 35/100 parts (3/9 shards), 5 failed, 17.50 parts/s, ETA 4 s"
    assert lines[2] == "[bags] 100/100 parts (3/9 shards), 5 failed, 10.00 parts/s, done in 10 s"
    assert len(lines) == 4 and lines[3] == lines[2]  # close() repeats the final line once


def test_progress_on_a_terminal_rewrites_one_line_and_can_be_silent():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    clock, out = Clock(), Tty()
    meter = ProgressMeter(4, "x", every=25, stream=out, clock=clock)
    for t in (0.5, 0.6, 1.7, 1.8):
        clock.t = t
        meter.update()
    meter.close()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and "\n" not in text[:-1]
    assert "4/4 parts" in text.split("\r")[-1]
    quiet = io.StringIO()
    meter = ProgressMeter(4, "x", every=0, stream=quiet)
    meter.update(4)
    meter.close()
    assert quiet.getvalue() == ""


def test_ablation_adds_each_modality_alone_when_three_are_present():
    present = [{"rgb": True, "sensor": True, "geometry": k != 1} for k in range(len(PARTS))]
    plan = plan_evaluation(PARTS, present, ablate_modalities=True)
    assert dict(plan.configs) == {
        "all": ("rgb", "sensor", "geometry"),
        "without_rgb": ("sensor", "geometry"), "without_sensor": ("rgb", "geometry"),
        "without_geometry": ("rgb", "sensor"),
        "only_rgb": ("rgb",), "only_sensor": ("sensor",), "only_geometry": ("geometry",)}
    # with two modalities "only one" would repeat "without the other"
    assert [c for c, _ in _plan(ablate_modalities=True).configs] == [
        "all", "without_rgb", "without_sensor"]
