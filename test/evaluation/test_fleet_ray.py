"""Offline evaluation fanned out on a local Ray (2 CPUs): the same tables as the single-process
run, unreadable bags skipped by name, a dead worker retried once, and no Ray at all with
--workers 1.

Most runs use a test double with per-stream history (as the detector keeps per-stream memory),
so that a part scored out of order, with another stream's history or with memory carried where
it should not be, gets another score; one run uses the real detector through the CLI.
"""
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import ray

from zsg_iad_ros.core.frame import Detection, Frame, Sample
from zsg_iad_ros.data.bags import write_bag
from zsg_iad_ros.evaluation.cli import main as cli_main
from zsg_iad_ros.evaluation.fleet import evaluate_bags_on_ray
from zsg_iad_ros.evaluation.offline import evaluate_bags
from zsg_iad_ros.evaluation.results import to_json

H = W = 32


@pytest.fixture(scope="module")
def ray_local():
    temp_dir = tempfile.mkdtemp(prefix="zsg-ray-test-")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
             logging_level=logging.WARNING)
    # The test doubles below travel to the workers by value: this module is not importable
    # there (pytest imports it from its path).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


# ------------------------------------------------------------------------------ test doubles

def toy_sample(i, category, defect):
    rng = np.random.default_rng(i)
    rgb = np.full((H, W, 3), 120, np.uint8) + rng.integers(0, 9, (H, W, 3), dtype=np.uint8)
    sensor = 300 + rng.normal(0, 0.2, (H, W)).astype(np.float32)
    gt = np.zeros((H, W), bool)
    if defect != "good":
        y, x = 4 + (i * 7) % 20, 4 + (i * 5) % 20
        gt[y:y + 5, x:x + 5] = True
        rgb[gt] = 150 + (i * 13) % 100
    return Sample(frame=Frame(rgb=rgb, sensor=sensor, stream=category),
                  label=int(defect != "good"), category=category, defect_type=defect, gt_mask=gt,
                  sample_id=f"{category}-{defect}-{i}")


class StreamHistoryScorer:
    """Per stream, the raw scores seen so far (taught references first) shift the next score."""

    def __init__(self, modalities):
        self.modalities = tuple(modalities)
        self.history = {}
        self.model_id, self.device = "stream-history-double", "cpu"

    def raw(self, frame):
        maps = {}
        if "rgb" in self.modalities:
            g = frame.rgb.astype(np.float32).mean(-1)
            maps["rgb"] = np.clip(np.abs(g - np.median(g)) / 100.0, 0, 1)
        if "sensor" in self.modalities:
            maps["sensor"] = np.clip(np.abs(frame.sensor - np.median(frame.sensor)), 0, 1)
        amap = np.maximum.reduce(list(maps.values())).astype(np.float32)
        return float(amap.max()), amap, maps

    def teach(self, frames):
        self.history[frames[0].stream] = [self.raw(f)[0] for f in frames]

    def detect(self, frame):
        raw, amap, maps = self.raw(frame)
        seen = self.history.setdefault(frame.stream, [])
        score = float(np.clip(raw - 0.5 * np.mean(seen[-3:] or [0.0]) + 0.01 * len(seen), 0, 1))
        seen.append(raw)
        return Detection(anomaly_map=amap, pred_mask=amap > 0.5, pred_score=score,
                         threshold=0.3, modality_scores={m: float(v.max())
                                                         for m, v in maps.items()},
                         modalities_present=frame.present, modality_maps=maps,
                         timings_ms={"total": 1.0})


class FaultyScorers:
    """Factory of StreamHistoryScorers whose worker process dies on a part of `die_always`
    every time, on a part of `die_once` the first time only, and which raise on `raise_on`;
    attempts are counted in files under `marks` (shared by the workers)."""

    def __init__(self, marks, die_always="tile", die_once="plate", raise_on="bolt"):
        self.marks, self.die_always, self.die_once = marks, die_always, die_once
        self.raise_on = raise_on

    def attempts(self, stream):
        path = os.path.join(self.marks, stream)
        return len(open(path).read()) if os.path.exists(path) else 0

    def __call__(self, modalities):
        scorer = StreamHistoryScorer(modalities)
        detect = scorer.detect
        started = set()

        def faulty_detect(frame):
            s = frame.stream
            if s in (self.die_always, self.die_once, self.raise_on) and s not in started:
                started.add(s)  # one mark per attempt (per fresh scorer), not per part
                first = self.attempts(s) == 0
                with open(os.path.join(self.marks, s), "a") as f:
                    f.write("x")
                if s == self.raise_on:
                    raise ValueError(f"no model for part type {s}")
                if s == self.die_always or first:
                    os._exit(3)  # the worker process dies, as on a segfault or OOM kill
            return detect(frame)
        scorer.detect = faulty_detect
        return scorer


# ------------------------------------------------------------------------------ bags

def _write(path, samples):
    write_bag(str(path), samples)
    return str(path)


def _corrupt_copy(src, dst):
    shutil.copytree(src, dst)
    storage = [f for f in os.listdir(dst) if f.endswith(".mcap")][0]
    with open(os.path.join(dst, storage), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(dst, storage)) // 2)
    return str(dst)


@pytest.fixture(scope="module")
def toy_bags(tmp_path_factory):
    """Three bags sharing the streams 'plate' and 'tile', a truncated copy of one, and a file
    that is no bag at all."""
    root = tmp_path_factory.mktemp("toy_bags")
    bags = []
    for b in range(3):
        samples = []
        for k, cat in enumerate(("plate", "tile")):
            if b == 2 and cat == "tile":
                continue
            seed = 100 * b + 10 * k
            samples += [toy_sample(seed + i, cat, "good") for i in range(3)]
            samples += [toy_sample(seed + 5, cat, "stain")]
        bags.append(_write(root / f"shift{b}", samples))
    broken = _corrupt_copy(bags[0], root / "shift9_truncated")
    garbage = root / "junk.mcap"
    garbage.write_bytes(os.urandom(700))
    return bags[:2] + [broken, str(garbage), bags[2]]


def comparable(record):
    """The record as JSON, without what depends on where and how fast it ran."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()
                    if k not in ("latency_ms", "execution", "figures")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(to_json({k: v for k, v in record.items() if k != "runs"}))


def assert_same(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=0, abs_tol=1e-6), (path, a, b)
    else:
        assert a == b, (path, a, b)


# ------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("options", [
    {"stream_memory": "carry"},
    {"stream_memory": "per-bag", "references": 1, "draws": 2, "order_seed": 4,
     "ablate_modalities": True}], ids=["carry", "per-bag-teach-shuffled-ablation"])
def test_ray_tables_equal_the_single_process_tables(ray_local, toy_bags, options):
    single = evaluate_bags(toy_bags, StreamHistoryScorer, progress_every=0, **options)
    fanned = evaluate_bags_on_ray(toy_bags, StreamHistoryScorer, workers=2, progress_every=0,
                                  **options)
    assert_same(comparable(single), comparable(fanned))
    for name, run in single["runs"].items():
        for d, results in enumerate(run.draws):
            assert ([(r.index, r.pred_score) for r in results]
                    == [(r.index, r.pred_score) for r in fanned["runs"][name].draws[d]])
    inputs = fanned["inputs"]
    assert inputs["bags"] == {"found": 5, "evaluated": 3, "skipped": 2, "failed": 0}
    # 8 + 8 + 4 parts read; the truncated bag's 8 from its metadata; the junk file's unknown
    assert inputs["parts"] == {"evaluated": 20, "skipped": 8, "skipped_bags_of_unknown_size": 1,
                               "failed": 0}
    skipped = {b["name"]: b["reason"] for b in inputs["not_evaluated"]}
    assert set(skipped) == {"shift9_truncated", "junk.mcap"}
    assert all("ReaderError" in why for why in skipped.values())
    assert inputs["execution"]["shards"] == (2 if options["stream_memory"] == "carry"
                                             else 3 * 2 * 5)


def test_stream_memory_modes_differ_so_the_comparison_above_can_fail(toy_bags):
    carry = evaluate_bags(toy_bags, StreamHistoryScorer, progress_every=0)
    per_bag = evaluate_bags(toy_bags, StreamHistoryScorer, progress_every=0,
                            stream_memory="per-bag")
    a = [r.pred_score for r in carry["runs"]["all"].draws[0]]
    b = [r.pred_score for r in per_bag["runs"]["all"].draws[0]]
    assert a[:8] == b[:8] and a[8:] != b[8:]  # the first bag starts empty either way


def test_dead_worker_is_retried_once_then_its_bags_reported(ray_local, tmp_path):
    samples = []
    for k, cat in enumerate(("plate", "tile", "bolt", "gear")):
        samples += [toy_sample(50 * k + i, cat, "good") for i in range(2)]
        samples += [toy_sample(50 * k + 9, cat, "dent")]
    bag = _write(tmp_path / "mixed", samples)
    only_gear = _write(tmp_path / "gear_only", [toy_sample(300 + i, "gear", d)
                                                for i, d in enumerate(("good", "dent"))])
    marks = tmp_path / "marks"
    marks.mkdir()
    factory = FaultyScorers(str(marks))
    record = evaluate_bags_on_ray([bag, only_gear], factory, workers=2, progress_every=0)
    assert factory.attempts("plate") == 2  # died once, retried, then scored
    assert factory.attempts("tile") == 2   # died, retried once, died again: given up
    assert factory.attempts("bolt") == 1   # an error in the task is not retried
    overall = record["configs"]["all"]["overall"]
    assert overall["n_samples"] == 3 + 5  # plate, and gear from both bags
    scored = {r.sample_id.split("-")[0] for r in record["runs"]["all"].draws[0]}
    assert scored == {"plate", "gear"}
    inputs = record["inputs"]
    assert inputs["parts"]["failed"] == 6 and inputs["parts"]["evaluated"] == 14 - 6
    assert inputs["bags"] == {"found": 2, "evaluated": 1, "skipped": 0, "failed": 1}
    [failed] = inputs["not_evaluated"]
    assert failed["name"] == "mixed" and failed["status"] == "failed"
    assert "stream 'tile'" in failed["reason"] and "worker died" in failed["reason"]
    assert "stream 'bolt'" in failed["reason"] and "no model for part type bolt" in \
        failed["reason"]
    assert inputs["execution"]["failed_shards"] == 2


class BrokenModel:
    def __init__(self, modalities):
        raise ValueError("weights file is truncated")


def test_a_run_where_every_shard_fails_is_an_error(ray_local, toy_bags):
    with pytest.raises(RuntimeError, match="every shard .* failed: .*weights file is truncated"):
        evaluate_bags_on_ray(toy_bags, BrokenModel, workers=2, progress_every=0)


def test_cli_with_two_workers_matches_one_worker_on_generated_bags(ray_local, tmp_path,
                                                                   capsys):
    from zsg_iad_ros.data.splits import iter_split

    folder = tmp_path / "bags"
    folder.mkdir()
    for seed in (1, 2):
        parts = [s for s in iter_split("test", 1, 1, seed=seed, size=64)
                 if s.category in ("cast_metal", "pcb")]
        _write(folder / f"cell_{seed}", parts)
    _corrupt_copy(folder / "cell_1", folder / "cell_3_broken")
    common = [str(folder), "--image-size", "64", "--progress-every", "0", "--device", "cpu"]
    assert cli_main(["offline", *common, "--out", str(tmp_path / "one"), "--no-plots"]) == 0
    assert cli_main(["offline", *common, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped bag") == 2 and "cell_3_broken" in err
    one = json.load(open(tmp_path / "one" / "metrics.json"))
    two = json.load(open(tmp_path / "two" / "metrics.json"))
    assert one["configs"]["all"]["overall"]["n_samples"] == 8
    assert_same(comparable(one), comparable(two))
    for out in ("one", "two"):
        summary = (tmp_path / out / "summary.md").read_text()
        assert "| cell_3_broken | skipped | 4 | ReaderError" in summary
        assert "Parts: 8 evaluated, 4 skipped, 0 failed" in summary
    assert "local Ray" not in two["inputs"]["execution"]["engine"]  # reused the test's Ray
    for png in two["figures"]:
        assert (tmp_path / "two" / png).stat().st_size > 5000


def test_one_worker_never_imports_ray(toy_bags, tmp_path):
    code = f"""
import json, sys
import numpy as np
from zsg_iad_ros.core.frame import Detection
from zsg_iad_ros.evaluation import offline
class Flat:
    def __init__(self, modalities):
        pass
    def detect(self, frame):
        amap = np.zeros(frame.shape, np.float32)
        return Detection(anomaly_map=amap, pred_mask=amap > 0, pred_score=0.0, threshold=0.5,
                         modality_scores={{}}, modalities_present=frame.present)
offline.default_detector_factory = lambda **kw: Flat
from zsg_iad_ros.evaluation.cli import main
rc = main(["offline", *{toy_bags!r}, "--out", {str(tmp_path / "o")!r}, "--no-plots"])
print(json.dumps({{"rc": rc, "ray": "ray" in sys.modules}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"rc": 0, "ray": False}
    assert "skipped bag" in proc.stderr and (tmp_path / "o" / "metrics.json").exists()


def test_cli_refuses_bad_worker_options(tmp_path, capsys):
    bag = str(tmp_path)
    for argv, message in ((["--workers", "0"], "--workers must be >= 1"),
                          (["--ray-address", "auto"], "give --workers N > 1")):
        with pytest.raises(SystemExit):
            cli_main(["offline", bag, "--out", str(tmp_path / "o"), *argv])
        assert message in capsys.readouterr().err
