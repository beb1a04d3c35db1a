"""A region's defect type must fit the evidence: an internal defect needs the second sensor that
can see it, and a region only that sensor sees is internal (or a subsurface crack), not a dent
or a stain. Otherwise a cell's reject gate would send a part with a hidden void to repair."""
import pytest

from zsg_iad_ros.core.prompts import DEFECT_SENTENCES, INTERNAL_TYPES, type_fits_evidence


@pytest.mark.parametrize("defect_type, modalities, sensor_type, fits", [
    ("void", ["sensor"], "xray", True),
    ("void", ["sensor"], "thermal", False),      # a thermal camera does not see a void
    ("void", ["rgb", "geometry"], "xray", False),  # the X-ray did not flag it
    ("hot_spot", ["sensor"], "thermal", True),
    ("hot_spot", ["sensor", "rgb"], "xray", False),
    ("dent", ["sensor"], "xray", False),         # only the X-ray sees it: not a surface dent
    ("crack", ["sensor"], "xray", True),         # a subsurface crack
    ("dent", ["geometry"], "xray", True),
    ("stain", ["rgb", "sensor"], "thermal", True),
    ("dent", [], "xray", True),                  # no modality named: nothing to contradict
])
def test_type_fits_evidence(defect_type, modalities, sensor_type, fits):
    assert type_fits_evidence(defect_type, modalities, sensor_type) is fits


def test_every_internal_type_has_sentences():
    assert set(INTERNAL_TYPES) <= set(DEFECT_SENTENCES)


def test_a_void_only_the_xray_sees_is_reported_as_an_internal_defect(detector_factory):
    """The bundled cell's gear with a hidden void (X-ray only): flagged, and its region typed
    as an internal defect (the grounding sentences alone called it a dent)."""
    from zsg_iad_ros.data.make_sample_replay import reference_samples, replay_samples

    det = detector_factory(variation=True)
    det.teach([s.frame for s in reference_samples() if s.category == "gear"])
    void = next(s for s in replay_samples() if s.defect_type == "void")
    r = det.detect(void.frame, update_memory=False)
    assert r.is_anomalous and r.regions
    for g in r.regions:
        assert g.modalities == ["sensor"], g
        assert g.defect_type in INTERNAL_TYPES and "xray" in INTERNAL_TYPES[g.defect_type], g
