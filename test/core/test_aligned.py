"""Aligned comparison (DetectorConfig.variation): parts of one product, in any pose, compared in
register with their references. A good part turned by any angle stays normal; the same product
with a tooth missing is flagged where the tooth is missing (patch memory alone cannot see it:
every remaining patch looks like a normal one). Textures and unregistered frames keep the
feature memory alone."""
import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from zsg_iad_ros.data.synthetic import generate_sample

DESIGN = 11                 # one gear design: every seed is the same product in another pose
REF_SEEDS = (1, 2, 3, 4)
TEST_SEEDS = tuple(range(20, 28))


def gear(defect, seed):
    return generate_sample("gear", defect, seed, design=DESIGN)


@pytest.fixture(scope="module")
def taught(detector_factory):
    det = detector_factory(variation=True)
    det.teach([gear("good", s).frame for s in REF_SEEDS])
    return det


@pytest.fixture(scope="module")
def good_scores(taught):
    out = []
    for s in TEST_SEEDS[:5]:  # each seed turns the part by a random angle in [0, 360)
        r = taught.detect(gear("good", s).frame, update_memory=False)
        assert "aligned" in r.timings_ms  # compared in register, not skipped
        out.append(r)
    return out


def test_turned_good_parts_stay_normal(good_scores):
    assert not any(r.is_anomalous for r in good_scores), [r.pred_score for r in good_scores]


def test_missing_tooth_stands_out_where_it_is_missing(taught, good_scores):
    worst_good = max(r.pred_score for r in good_scores)
    flagged = 0
    for s in TEST_SEEDS:
        part = gear("missing_part", s)
        r = taught.detect(part.frame, update_memory=False)
        assert r.pred_score > worst_good, (s, r.pred_score, worst_good)
        v, u = np.unravel_index(np.argmax(r.anomaly_map), r.anomaly_map.shape)
        near = ndimage.binary_dilation(part.gt_mask, iterations=16)
        assert near[v, u], (s, (u, v))
        if r.is_anomalous:
            flagged += 1
            assert any(near[int(g.centroid_px[1]), int(g.centroid_px[0])] for g in r.regions)
    # the default threshold (5 % false alarms, widened for 4 references) is conservative:
    # measured 3 of these 8 flagged, every one above every good part
    assert flagged >= 3


def test_texture_streams_and_unregistered_frames_keep_the_feature_memory(detector_factory):
    plain, aligned = detector_factory(), detector_factory(variation=True)
    refs = [generate_sample("wood", "good", s).frame for s in REF_SEEDS]
    for det in (plain, aligned):
        det.teach(refs)
    assert "wood" not in aligned._aligned  # a texture has no pose to align
    assert aligned.variation_status["wood"].startswith("off: a texture")
    assert plain.variation_status == {}  # variation off: nothing to report
    part = generate_sample("wood", "good", 30).frame
    a, b = plain.detect(part, update_memory=False), aligned.detect(part, update_memory=False)
    assert a.pred_score == pytest.approx(b.pred_score) and "aligned" not in b.timings_ms
    # frames whose modalities are not pixel-registered cannot share one registration
    loose = [dataclasses.replace(gear("good", s).frame, registered=False) for s in REF_SEEDS]
    aligned.teach(loose)
    assert "gear" not in aligned._aligned
    assert "not pixel-registered" in aligned.variation_status["gear"]
    aligned.teach([gear("good", REF_SEEDS[0]).frame])
    assert aligned.variation_status["gear"] == "off: needs 2 or more references"
    aligned.teach([gear("good", s).frame for s in REF_SEEDS])
    assert "gear" in aligned._aligned and aligned.variation_status["gear"] == "on"
    aligned.reset("gear")
    assert "gear" not in aligned._aligned and "gear" not in aligned.variation_status


def test_parts_register_on_the_xray_where_the_colour_image_misregisters(detector_factory):
    """The bundled cell's capsule references: under the lamp, shading and the cast shadow move
    over each turned capsule, and one reference registers on its colour image in a wrong pose
    (cap where the body should be; its leave-one-out deviation is tens of spread units, the
    others' a few). On the X-ray, which sees no lighting, all four agree, so the stream
    registers parts there, and a cap shifted along the body stands out in register."""
    from zsg_iad_ros.data.make_sample_replay import DESIGN, reference_samples

    refs = [s.frame for s in reference_samples() if s.category == "capsule"]
    det = detector_factory(variation=True)
    det.teach(refs)
    assert det.registered_on("capsule") == "sensor"
    assert detector_factory().registered_on("capsule") is None  # variation off

    def scores(defect):
        return [det.detect(generate_sample("capsule", defect, s, size=160, design=DESIGN).frame,
                           update_memory=False).pred_score for s in TEST_SEEDS]
    good, shifted = scores("good"), scores("misalignment")
    threshold = det.threshold_for("capsule")
    # measured: all 8 shifted caps flagged (6 when registered on the colour image), 2 of the
    # 8 good capsules flagged too (the lamp's shading left in the colour model)
    assert sum(s >= threshold for s in shifted) >= 7, shifted
    assert sum(s >= threshold for s in good) <= 2, good
    assert np.median(shifted) > np.median(good) + 0.3, (shifted, good)
