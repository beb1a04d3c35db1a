"""Zero-shot split protocol: disjoint, covering every modality, deterministic."""
import pytest

from zsg_iad_ros.core.frame import GEOMETRY, RGB, SENSOR, THERMAL, XRAY
from zsg_iad_ros.data.splits import (AUX_CATEGORIES, AUX_DEFECTS, HELDOUT_DEFECTS,
                                     TEST_CATEGORIES, iter_split, split_specs)
from zsg_iad_ros.data.synthetic import CATEGORIES, DEFECT_TYPES


def test_disjoint():
    assert not set(AUX_CATEGORIES) & set(TEST_CATEGORIES)
    assert not set(AUX_DEFECTS) & set(HELDOUT_DEFECTS)
    aux = split_specs("aux", 2, 10)
    test = split_specs("test", 2, 10)
    assert {s.category for s in aux} == set(AUX_CATEGORIES)
    assert {s.category for s in test} == set(TEST_CATEGORIES)
    assert {s.defect_type for s in aux} - {"good"} <= set(AUX_DEFECTS)
    assert {s.defect_type for s in test} - {"good"} == set(HELDOUT_DEFECTS)


def test_every_modality_has_a_heldout_exclusive_defect():
    exclusive = {}
    for d in HELDOUT_DEFECTS:
        spec = DEFECT_TYPES[d]
        for st in (THERMAL, XRAY):
            shows = spec.shows_in(st)
            if len(shows) == 1:
                exclusive.setdefault(shows[0] if shows[0] != SENSOR else st, d)
    assert set(exclusive) == {RGB, GEOMETRY, THERMAL, XRAY}
    sensors = {CATEGORIES[c].sensor_type for c in TEST_CATEGORIES}
    assert sensors == {THERMAL, XRAY}


def test_counts_and_determinism():
    a = split_specs("test", 3, 8, seed=1)
    assert a == split_specs("test", 3, 8, seed=1)
    assert a != split_specs("test", 3, 8, seed=2)
    for c in TEST_CATEGORIES:
        mine = [s for s in a if s.category == c]
        assert sum(s.defect_type == "good" for s in mine) == 3
        assert sum(s.defect_type != "good" for s in mine) == 8
    keys = [(s.category, s.seed) for s in a]
    assert len(set(keys)) == len(keys)  # no part rendered twice


def test_iter_split_renders_in_order():
    specs = split_specs("aux", 1, 1)
    samples = list(iter_split("aux", 1, 1, size=64))
    assert [(s.category, s.defect_type) for s in samples] == \
        [(s.category, s.defect_type) for s in specs]
    assert all(s.frame.rgb.shape == (64, 64, 3) for s in samples)


def test_bad_split():
    with pytest.raises(ValueError):
        split_specs("train", 1, 1)
    with pytest.raises(ValueError):
        split_specs("aux", -1, 1)


def test_one_design_per_object_and_board_category():
    specs = split_specs("test", 2, 3, seed=1, one_design=True)
    assert "pcb" in TEST_CATEGORIES
    for cat in TEST_CATEGORIES:
        designs = {s.design for s in specs if s.category == cat}
        seeds = {s.seed for s in specs if s.category == cat}
        if CATEGORIES[cat].kind == "object" or cat == "pcb":
            assert len(designs) == 1 and None not in designs and not designs & seeds
        else:
            assert designs == {None}
    plain = split_specs("test", 2, 3, seed=1)
    assert [(s.category, s.defect_type, s.seed) for s in plain] == \
        [(s.category, s.defect_type, s.seed) for s in specs]  # the same parts otherwise
    assert all(s.design is None for s in plain)
