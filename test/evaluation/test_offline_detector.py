"""Offline evaluation with the real core detector on a handful of synthetic parts."""
import json

import numpy as np
import pytest

from zsg_iad_ros.evaluation.offline import default_detector_factory, evaluate_samples
from zsg_iad_ros.evaluation.summary import write_outputs

synthetic = pytest.importorskip("zsg_iad_ros.data.synthetic")
pytest.importorskip("zsg_iad_ros.core.detector")

CATEGORY = "cast_metal"


@pytest.fixture(scope="module")
def samples():
    defects = [d for d in ("crack", "hole", "bump", "contamination")
               if d in synthetic.applicable_defects(CATEGORY)]
    assert len(defects) >= 2
    out = [synthetic.generate_sample(CATEGORY, "good", seed, size=128) for seed in range(7)]
    out += [synthetic.generate_sample(CATEGORY, d, 50 + i, size=128)
            for i, d in enumerate(defects)]
    return out


def test_offline_evaluation_with_the_detector(samples, tmp_path):
    factory = default_detector_factory(device="cpu", image_size=128)
    rec = evaluate_samples(samples, factory, progress_every=0, name="synthetic")
    run = rec["runs"]["all"].draws[0]
    # The recorded scores are the detector's own, in stream order, a held part's those of its
    # revision: rerun by hand and compare.
    det = factory(("rgb", "sensor", "geometry"))
    direct, first = {}, {}
    for s in samples:
        first[id(s.frame)] = direct[id(s.frame)] = det.detect(s.frame).pred_score
        direct.update({id(f): d.pred_score for f, d in det.revise_held()})
    np.testing.assert_allclose([r.pred_score for r in run],
                               [direct[id(s.frame)] for s in samples], rtol=0, atol=1e-6)
    assert [r.revised for r in run] == [direct[id(s.frame)] != first[id(s.frame)]
                                        for s in samples]
    assert sum(r.revised for r in run) == 7  # the warm-up: parts 3-7 make the history
    overall = rec["configs"]["all"]["overall"]
    assert overall["n_samples"] == len(samples)
    assert 0.0 <= overall["image_auroc"] <= 1.0 and 0.0 <= overall["aupro"] <= 1.0
    assert overall["latency_ms"]["total"]["n"] == len(samples)
    assert rec["configs"]["all"]["model_id"].startswith("rgb:mobilenetv2")

    paths = write_outputs(rec, str(tmp_path))
    data = json.loads(open(paths["metrics"]).read())
    assert data["configs"]["all"]["overall"]["n_defective"] == len(samples) - 7
    assert "| cast_metal |" in open(paths["summary"]).read()
    for png in data["figures"]:
        assert (tmp_path / png).stat().st_size > 5000


def test_cli_detector_options_reach_the_detector():
    from zsg_iad_ros.evaluation.cli import build_parser, detector_options
    parser = build_parser()
    args = parser.parse_args(["real", "--dataset", "mulsen", "--out", "x", "--fusion", "max",
                              "--image-size", "128", "--device", "cpu"])
    opts = detector_options(args)
    assert opts == {"backbone": "auto", "device": "cpu", "image_size": 128, "fusion": "max"}
    det = default_detector_factory(**opts)(("rgb", "sensor"))
    assert det.config.fusion == "max" and det.config.image_size == 128
    # unset options keep the detector's defaults
    args = parser.parse_args(["real", "--dataset", "mulsen", "--out", "x"])
    assert "fusion" not in detector_options(args) and "variation" not in detector_options(args)
    args = parser.parse_args(["offline", "a.mcap", "--out", "x", "--references", "4",
                              "--variation", "--variation-grid", "256"])
    cfg = default_detector_factory(**detector_options(args))(("rgb",)).config
    assert cfg.variation and cfg.variation_grid == 256
    args = parser.parse_args(["offline", "a.mcap", "--out", "x", "--symmetry", "off"])
    assert default_detector_factory(**detector_options(args))(("rgb",)).config.symmetry == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["real", "--dataset", "mulsen", "--out", "x", "--fusion", "mean"])
