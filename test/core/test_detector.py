"""Detector behaviour on synthetic parts: a defect planted in ONE modality is found where it was
planted (and attributed to that modality), normal parts are not flagged, missing modalities are
handled, the API validates its input."""
import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from zsg_iad_ros.core.detector import Detector, DetectorConfig, ModelLoadError
from zsg_iad_ros.core.frame import SCAN_CURVATURE, Frame
from zsg_iad_ros.data.synthetic import generate_sample

CAT = "wood"                 # thermal cell, surface part
CAT_XRAY = "ceramic_tile"    # X-ray cell
CAT_RGB = "moulded_plastic"  # plain surface: a stain on wood would hide among the dark rings
GOOD_SEEDS = (14, 15, 16)
REF_SEEDS = (900, 901, 902, 903)


def disk(center, r, size=256):
    v, u = np.mgrid[0:size, 0:size]
    return (u - center[0]) ** 2 + (v - center[1]) ** 2 <= r * r


def plant(frame: Frame, modality: str, center=(170, 90), r=10) -> tuple:
    """Copy of `frame` with a defect in ONE modality; returns (frame, mask)."""
    m = disk(center, r)
    f = dataclasses.replace(frame)
    if modality == "rgb":       # dark stain
        rgb = f.rgb.astype(np.float32)
        rgb[m] *= 0.45
        f.rgb = rgb.astype(np.uint8)
    elif modality == "sensor":  # +2 K hot spot / denser inclusion
        s = f.sensor.copy()
        s[m] = s[m] + 2.0 if f.sensor_type == "thermal" else s[m] * 0.8
        f.sensor = s
    else:                       # 3 mm dent: points pushed away from the camera along their ray
        p = f.points.copy()
        v, u = np.mgrid[0:256, 0:256]
        prof = np.exp(-((u - center[0]) ** 2 + (v - center[1]) ** 2) / (2 * (r / 1.5) ** 2))
        p *= (1 + 0.003 / p[..., 2:3] * prof[..., None]).astype(np.float32)
        f.points = p
    return f, m


@pytest.fixture(scope="module")
def taught(detector_factory):
    det = detector_factory()
    det.teach([generate_sample(CAT, "good", s).frame for s in REF_SEEDS])
    det.teach([generate_sample(CAT_RGB, "good", s).frame for s in REF_SEEDS])
    return det


def found_where_planted(det, mask):
    """Part flagged, peak of the anomaly map within two patches (16 px) of the planted mask,
    and most of the predicted mask there."""
    v, u = np.unravel_index(np.argmax(det.anomaly_map), det.anomaly_map.shape)
    near = ndimage.binary_dilation(mask, iterations=16)
    return det.is_anomalous and near[v, u] and (det.pred_mask & near).sum() > 0.5 * \
        det.pred_mask.sum()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_same_findings_as_on_cpu(detector_factory):
    """The whole detector on CUDA (fp16 networks) finds each planted defect where the CPU run
    finds it, passes the good parts, and gives the same scores up to fp16 rounding."""
    refs = [generate_sample(CAT, "good", s).frame for s in REF_SEEDS]
    dets = {d: detector_factory(device=d) for d in ("cpu", "cuda")}
    for det in dets.values():
        det.teach(refs)
    parts = [(generate_sample(CAT, "good", s).frame, None) for s in GOOD_SEEDS]
    parts += [plant(generate_sample(CAT, "good", 7).frame, m) for m in ("sensor", "geometry")]
    for frame, mask in parts:
        cpu, gpu = (dets[d].detect(frame, update_memory=False) for d in ("cpu", "cuda"))
        corr = float(np.corrcoef(cpu.anomaly_map.ravel(), gpu.anomaly_map.ravel())[0, 1])
        print(f"planted {mask is not None}: score cpu {cpu.pred_score:.4f} "
              f"cuda {gpu.pred_score:.4f}, map correlation {corr:.4f}")
        assert gpu.anomaly_map.shape == cpu.anomaly_map.shape
        assert abs(gpu.pred_score - cpu.pred_score) < 0.05 and corr > 0.95
        if mask is None:
            assert not gpu.is_anomalous and not cpu.is_anomalous
        else:
            assert found_where_planted(gpu, mask), (gpu.pred_score, gpu.threshold)


@pytest.mark.parametrize("modality", ["rgb", "sensor", "geometry"])
def test_defect_in_one_modality_found_where_planted(taught, modality):
    good = generate_sample(CAT_RGB if modality == "rgb" else CAT, "good", 7).frame
    frame, mask = plant(good, modality)
    r = taught.detect(frame, update_memory=False)
    assert found_where_planted(r, mask), (r.pred_score, r.threshold, r.modality_scores)
    # the modality that shows it carries the evidence; the blind ones stay normal
    assert r.modality_scores[modality] >= r.threshold
    for other in set(r.modality_scores) - {modality}:
        assert r.modality_scores[other] < r.threshold
    region = max(r.regions, key=lambda x: x.area_px)
    assert modality in region.modalities
    x, y, w, h = region.bbox_xywh
    assert x <= 170 <= x + w and y <= 90 <= y + h
    assert r.hypotheses and r.hypotheses[0].sentence
    if modality != "rgb":
        assert region.centroid_3d is not None and 0.2 < region.centroid_3d[2] < 1.0


def with_scan_curvature(frame: Frame, seed: int, blob=None) -> Frame:
    """Copy of `frame` carrying a scanner's curvature map: a plain surface's low, noisy
    curvature, raised inside `blob` (a defect only the scan's own curvature shows)."""
    c = 0.1 + 0.02 * np.random.default_rng(seed).standard_normal(frame.shape)
    if blob is not None:
        c[blob] = 0.6
    return dataclasses.replace(frame, extra_maps={SCAN_CURVATURE: c.astype(np.float32)})


def test_scan_curvature_read_by_the_geometry_modality(detector_factory):
    """Where the frame carries the scanner's own curvature, the geometry modality reads it: a
    defect only that map shows is found where it lies and attributed to the geometry, and
    normal parts pass."""
    det = detector_factory()
    det.teach([with_scan_curvature(generate_sample(CAT, "good", s).frame, s) for s in REF_SEEDS])
    mask = disk((170, 90), 10)
    for seed in GOOD_SEEDS:
        good = generate_sample(CAT, "good", seed).frame
        normal = det.detect(with_scan_curvature(good, seed), update_memory=False)
        assert not normal.is_anomalous, (seed, normal.pred_score, normal.modality_scores)
        r = det.detect(with_scan_curvature(good, seed, mask), update_memory=False)
        assert found_where_planted(r, mask), (seed, r.pred_score, r.modality_scores)
        assert r.modality_scores["geometry"] >= r.threshold
        assert "geometry" in max(r.regions, key=lambda x: x.area_px).modalities
    bad = with_scan_curvature(good, 0)
    bad.extra_maps[SCAN_CURVATURE] = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=SCAN_CURVATURE):
        det.detect(bad)


@pytest.mark.parametrize("angle", [90.0, 180.0, 270.0])
def test_3d_location_follows_a_turned_part(taught, angle):
    """The same part with the same defect, turned about the optical axis by a known angle: the
    region's 3D centroid is where the defect lies in the turned cloud, not where it lay before."""
    from zsg_iad_ros.data.transforms import rotate_sample
    good = generate_sample(CAT, "good", 7)
    frame, mask = plant(good.frame, "sensor")
    turned = rotate_sample(dataclasses.replace(good, frame=frame, gt_mask=mask), angle)
    r = taught.detect(turned.frame, update_memory=False)
    assert found_where_planted(r, turned.gt_mask), (r.pred_score, r.threshold)
    region = max(r.regions, key=lambda x: x.area_px)
    truth = np.nanmean(turned.frame.points[turned.gt_mask], axis=0)
    before = np.nanmean(frame.points[mask], axis=0)
    assert np.linalg.norm(truth - before) > 0.03  # the turn moved the defect by centimetres
    assert np.linalg.norm(np.asarray(region.centroid_3d) - truth) < 0.005  # found within 5 mm


def test_part_score_is_the_documented_fusion_of_modality_scores(taught):
    """Stouffer's sum of the modalities' calibrated scores over sqrt(3): one feature view each
    by default."""
    from zsg_iad_ros.core import scoring as sc
    assert taught.views == {}
    frame, _ = plant(generate_sample(CAT, "good", 7).frame, "sensor")
    r = taught.detect(frame, update_memory=False)
    c = [sc.unsquash(v) for v in r.modality_scores.values()]
    assert len(c) == 3
    assert r.pred_score == pytest.approx(sc.squash(sum(c) / np.sqrt(3)), abs=1e-5)
    assert r.threshold == pytest.approx(sc.squash(sc.calibrated_threshold(0.05, 1)))


RGB_VIEWS = {"rgb": "mobilenetv2+patchstats"}


def test_feature_views_are_votes_discounted_by_their_agreement(detector_factory):
    """With two feature views of RGB (network and patch statistics), each view is a vote in
    Stouffer's sum: the two views' sum divided by its deviation on normal parts, taken from
    their correlation over the references' scores; the modality's reported score is that
    quotient, the threshold stays Stouffer's, and a planted defect is found where it was
    planted."""
    from zsg_iad_ros.core import scoring as sc
    det = detector_factory(grounding=False, modality_backbones=RGB_VIEWS)
    assert det.views == {"rgb": ["rgb+patchstats"]}
    det.teach([generate_sample(CAT, "good", s).frame for s in REF_SEEDS])
    frame, mask = plant(generate_sample(CAT, "good", 7).frame, "sensor")
    scored = det._score(det._validate(frame), {})
    r = det.detect(frame, update_memory=False)
    c = {m: sc.unsquash(v) for m, v in r.modality_scores.items()}
    assert len(c) == 3
    state = det._streams[frame.stream]
    cal = [state[k].taught.scores for k in ("rgb", "rgb+patchstats")]
    assert len(cal[0]) == len(cal[1]) == 16  # 4 references x 4 orientations, in one order
    w = np.sqrt(2 + 2 * float(np.clip(np.corrcoef(cal)[0, 1], 0, 1)))
    views = scored["cscores"]["rgb"] + scored["views"]["rgb+patchstats"]
    assert c["rgb"] == pytest.approx(views / w, abs=1e-4)
    fused = (views + c["sensor"] + c["geometry"]) / np.sqrt(w * w + 2)
    assert r.pred_score == pytest.approx(sc.squash(fused), abs=1e-5)
    assert r.threshold == pytest.approx(sc.squash(sc.calibrated_threshold(0.05, 1)))
    assert found_where_planted(r, mask)


def test_feature_views_are_left_out_where_parts_are_scored_against_their_own_surface(
        detector_factory):
    """With the own-image score on (surfaces), RGB's patch-statistics view is not scored: the
    part's score is Stouffer's over the three modalities alone, and a planted defect is still
    found where it was planted."""
    from zsg_iad_ros.core import scoring as sc
    det = detector_factory(grounding=False, intra_image="on", modality_backbones=RGB_VIEWS)
    det.teach([generate_sample(CAT_RGB, "good", s).frame for s in REF_SEEDS])
    frame, mask = plant(generate_sample(CAT_RGB, "good", 7).frame, "rgb")
    r = det.detect(frame, update_memory=False)
    c = [sc.unsquash(v) for v in r.modality_scores.values()]
    assert r.pred_score == pytest.approx(sc.squash(sum(c) / np.sqrt(3)), abs=1e-5)
    assert found_where_planted(r, mask)
    assert not det.detect(generate_sample(CAT_RGB, "good", 14).frame).is_anomalous


def test_backbone_spec_joins_feature_views(detector_factory):
    det = detector_factory(grounding=False, backbone="patchstats+builtin",
                           modalities=("rgb", "sensor"))
    assert det.views == {"rgb": ["rgb+builtin"], "sensor": ["sensor+builtin"]}
    frame = generate_sample(CAT, "good", 7).frame
    det.teach([generate_sample(CAT, "good", s).frame for s in REF_SEEDS])
    r = det.detect(frame, update_memory=False)
    assert set(r.modality_scores) == {"rgb", "sensor"} and not r.is_anomalous
    state = det._streams[frame.stream]
    assert state["rgb+builtin"].taught is not None and state["rgb+builtin"].pinned
    for bad in ("patchstats+", "patchstats+patchstats"):
        with pytest.raises(ValueError, match="joins"):
            detector_factory(grounding=False, backbone=bad)


def test_max_fusion_scores_the_highest_modality(detector_factory):
    det = detector_factory(grounding=False, fusion="max")
    det.teach([generate_sample(CAT, "good", s).frame for s in REF_SEEDS])
    frame, mask = plant(generate_sample(CAT, "good", 7).frame, "sensor")
    r = det.detect(frame, update_memory=False)
    from zsg_iad_ros.core import scoring as sc
    assert r.pred_score == pytest.approx(max(r.modality_scores.values()), abs=1e-6)
    terms = 3 + sum(len(v) for v in det.views.values())  # Bonferroni over the feature views
    assert r.threshold == pytest.approx(sc.squash(sc.calibrated_threshold(0.05, terms, "max")))
    assert found_where_planted(r, mask)


def test_normal_parts_not_flagged(taught):
    for seed in GOOD_SEEDS:
        r = taught.detect(generate_sample(CAT, "good", seed).frame, update_memory=False)
        assert not r.is_anomalous, (seed, r.pred_score, r.modality_scores)
        assert not r.pred_mask.any() and not r.regions
        assert r.confident


def test_detection_fully_filled(taught):
    s = generate_sample(CAT, "hole", 21)
    r = taught.detect(s.frame, update_memory=False)
    assert r.anomaly_map.shape == (256, 256) and r.anomaly_map.dtype == np.float32
    assert 0 <= r.anomaly_map.min() and r.anomaly_map.max() <= 1
    assert r.pred_mask.dtype == bool and 0 <= r.pred_score <= 1
    assert set(r.modality_maps) == {"rgb", "sensor", "geometry"}
    assert r.modalities_present == {"rgb": True, "sensor": True, "geometry": True}
    for k in ("preprocess", "geometry", "features", "scoring", "grounding", "postprocess",
              "report", "total"):
        assert k in r.timings_ms
    # backbone='auto': an ImageNet CNN on RGB, patch statistics on the smooth fields
    assert r.model_id.startswith("rgb:mobilenetv2") and "sensor:patchstats" in r.model_id
    assert r.report is not None and r.report["decision"] in ("anomalous", "normal")
    assert r.rule_results
    assert r.is_anomalous and (r.pred_mask & s.gt_mask).any()
    assert (r.anomaly_map[r.pred_mask] >= r.threshold).all()


def test_xray_cell_inclusion(detector_factory):
    det = detector_factory()
    det.teach([generate_sample(CAT_XRAY, "good", s).frame for s in REF_SEEDS])
    frame, mask = plant(generate_sample(CAT_XRAY, "good", 5).frame, "sensor", (80, 170))
    r = det.detect(frame, update_memory=False)
    assert found_where_planted(r, mask)
    assert r.modality_scores["sensor"] >= r.threshold


@pytest.mark.parametrize("missing", ["rgb", "sensor", "geometry"])
def test_each_modality_missing(taught, missing):
    # a sensor defect still found when another modality is absent
    planted = "geometry" if missing == "sensor" else "sensor"
    frame, mask = plant(generate_sample(CAT, "good", 7).frame, planted)
    setattr(frame, {"rgb": "rgb", "sensor": "sensor", "geometry": "points"}[missing], None)
    r = taught.detect(frame, update_memory=False)
    assert missing not in r.modality_scores and missing not in r.modality_maps
    assert r.modalities_present[missing] is False and r.missing_modalities == [missing]
    assert found_where_planted(r, mask)
    assert r.anomaly_map.shape == (256, 256)


@pytest.mark.parametrize("only", ["rgb", "sensor", "geometry"])
def test_only_one_modality(detector_factory, only):
    key = {"rgb": "rgb", "sensor": "sensor", "geometry": "points"}[only]
    cat = CAT_RGB if only == "rgb" else CAT
    goods = [generate_sample(cat, "good", s).frame for s in REF_SEEDS]

    def strip(f):
        return dataclasses.replace(f, **{k: None for k in ("rgb", "sensor", "points")
                                         if k != key})
    det = detector_factory(grounding=False)
    det.teach([strip(f) for f in goods])
    frame, mask = plant(generate_sample(cat, "good", 7).frame, only)
    r = det.detect(strip(frame), update_memory=False)
    assert list(r.modality_scores) == [only]
    assert found_where_planted(r, mask)
    ok = det.detect(strip(generate_sample(cat, "good", 15).frame), update_memory=False)
    assert not ok.is_anomalous


def test_no_modality_gives_unconfident_empty_detection(taught):
    r = taught.detect(Frame(rgb=None, sensor=None, points=None,
                            intrinsics=generate_sample(CAT, "good", 1).frame.intrinsics))
    assert not r.confident and r.pred_score == 0 and not r.pred_mask.any()


def test_streaming_cold_start_and_memory(detector_factory):
    det = detector_factory(grounding=False, min_history=3)
    first = det.detect(generate_sample(CAT, "good", 31).frame)
    assert not first.confident  # no memory, no history
    # 2 parts bootstrap the memory, then the history calibrates; a short history widens the
    # scale (small-sample factor), so 8 parts of it are fed before a modest defect is expected
    for s in range(32, 42):
        r = det.detect(generate_sample(CAT, "good", s).frame)
    assert r.confident
    frame, mask = plant(generate_sample(CAT, "good", 35).frame, "sensor")
    r = det.detect(frame)
    assert found_where_planted(r, mask)
    # the defective part is not admitted to memory
    n = len(det._streams[CAT]["sensor"].memory)
    det.detect(frame)
    assert len(det._streams[CAT]["sensor"].memory) == n
    det.reset(CAT)
    assert CAT not in det._streams


def test_untaught_stream_calibrated_by_its_first_parts(detector_factory):
    """Before its history can calibrate it, an untaught stream is calibrated by its first
    memory parts scored against each other (leave-one-out, as references would be): from the
    fourth part on, normal parts and defective ones lie on one scale, defects above, and a
    defect in the sixth and seventh parts is flagged (each part's own statistics, the cold
    start, flagged neither)."""
    det = detector_factory(grounding=False)
    normal, defective = [], []
    for s in range(40, 47):
        frame = generate_sample(CAT, "good", s).frame
        if s >= 43:  # parts 4..7: the memory holds 3..6 parts, no history calibration yet
            bad, _ = plant(frame, "sensor")
            d = det.detect(bad, update_memory=False)
            assert not d.confident
            defective.append(d)
        r = det.detect(frame)
        if s >= 43:
            assert not r.confident and not r.is_anomalous
            normal.append(r.pred_score)
        st = det._streams[CAT]["sensor"]
        assert (st.provisional is not None) == (41 <= s < 46), s  # parts 2..6 give one
        if st.provisional is not None:  # the kept pair minima give the whole leave-one-out
            whole = det._leave_one_out_stats([[f] for f, _ in st.early],
                                             [[e] for _, e in st.early])
            assert st.provisional.loc == pytest.approx(whole.loc, rel=1e-5)
            assert st.provisional.scale == pytest.approx(whole.scale, rel=1e-5)
    assert min(d.pred_score for d in defective) > max(normal), (defective, normal)
    assert all(d.is_anomalous for d in defective[-2:]), [d.pred_score for d in defective]
    for s in range(47, 50):  # the history takes over and the early parts are let go
        r = det.detect(generate_sample(CAT, "good", s).frame)
    assert r.confident and not st.early and not st.early_minima and st.provisional is None


def test_warm_up_parts_are_held_and_revised_once_the_stream_is_calibrated(detector_factory):
    """An untaught stream's first parts are scored before its history calibrates it (not
    confident). Each is held and scored again once it does, against the memory without its own
    entry: a defective first part, which the memory admits to bootstrap itself, is then flagged
    where its defect lies, the good parts of the warm-up are not, and memory and history stay
    as they were."""
    det = detector_factory(grounding=False)
    first, mask = plant(generate_sample(CAT, "good", 40).frame, "sensor")
    frames = [first] + [generate_sample(CAT, "good", s).frame for s in range(41, 50)]
    revised = {}
    for i, frame in enumerate(frames):
        d = det.detect(frame)
        assert d.confident == (i >= 7) and not d.revision, i  # parts 3-7 make the history
        st = det._streams[CAT]["sensor"]
        if i == 0:
            assert len(st.memory) == 1  # the defective part bootstraps the memory
        memory, history = list(st.memory), list(st.raw_scores)
        out = det.revise_held()
        assert [id(e) for e in st.memory] == [id(e) for e in memory]
        assert list(st.raw_scores) == history
        revised.update({id(f): r for f, r in out})
        assert bool(out) == (i == 6), i  # all at once, when the history is there
        assert det.held_parts(CAT) == (i + 1 if i < 6 else 0)
    assert set(revised) == {id(f) for f in frames[:7]}
    assert all(r.confident and r.revision for r in revised.values())
    assert revised[id(first)].is_anomalous and found_where_planted(revised[id(first)], mask)
    assert not any(revised[id(f)].is_anomalous for f in frames[1:7])
    assert det.unrevised == {}


def test_warm_up_parts_let_go_unrevised_are_counted(detector_factory):
    det = detector_factory(grounding=False)
    for s in range(60, 63):
        det.detect(generate_sample(CAT, "good", s).frame)
    assert det.held_parts() == 3 and det.revise_held() == []  # not calibrated yet
    det.reset(CAT)
    assert det.held_parts() == 0 and det.unrevised == {CAT: 3}
    off = detector_factory(grounding=False, revise_warm_up=False)
    off.detect(generate_sample(CAT, "good", 60).frame)
    assert off.held_parts() == 0 and off.revise_held() == []
    # a part whose second scoring fails keeps its first report; the others are revised
    frames = [generate_sample(CAT, "good", s).frame for s in range(41, 48)]
    for frame in frames:
        det.detect(frame)
    scored = det._detect

    def failing(frame, update_memory):
        if frame is frames[2]:
            raise RuntimeError("scoring failed")
        return scored(frame, update_memory)
    det._detect = failing
    out = det.revise_held()
    assert [id(f) for f, _ in out] == [id(f) for f in frames[:2] + frames[3:]]
    assert det.held_parts() == 0 and det.unrevised == {CAT: 4}


def test_threshold_override(taught):
    frame = generate_sample(CAT, "good", GOOD_SEEDS[0]).frame
    taught.set_threshold(0.0)
    try:
        r = taught.detect(frame, update_memory=False)
        assert r.threshold == 0.0 and r.is_anomalous
    finally:
        taught.set_threshold(None)
    r = taught.detect(frame, update_memory=False)
    assert 0 < r.threshold < 1 and not r.is_anomalous
    with pytest.raises(ValueError):
        taught.set_threshold(1.5)


def test_config_from_dict_and_validation():
    cfg = DetectorConfig.from_dict({"image_size": 128, "threshold": None,
                                    "modalities": ["rgb", "geometry"]})
    assert cfg.image_size == 128 and cfg.threshold is None
    assert cfg.modalities == ("rgb", "geometry")
    with pytest.raises(ValueError, match="unknown detector config key"):
        DetectorConfig.from_dict({"imagesize": 3})
    with pytest.raises(ValueError, match="modalities"):
        DetectorConfig.from_dict({"modalities": ["lidar"]})
    with pytest.raises(ValueError, match="fusion"):
        DetectorConfig.from_dict({"fusion": "mean"})
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA"):
            Detector(DetectorConfig(device="cuda"))


def test_bad_input_clear_errors(taught):
    good = generate_sample(CAT, "good", 1).frame
    with pytest.raises(ValueError, match="rgb"):
        taught.detect(dataclasses.replace(good, rgb=np.zeros((256, 256), np.uint8)))
    with pytest.raises(ValueError, match="sensor"):
        taught.detect(dataclasses.replace(good, sensor=np.zeros((4, 256, 3), np.float32)))
    with pytest.raises(ValueError, match="intrinsics"):
        taught.detect(dataclasses.replace(good, points=np.zeros((100, 3), np.float32),
                                          intrinsics=None))
    with pytest.raises(ValueError, match="no valid point"):
        taught.detect(dataclasses.replace(good, points=np.full((256, 256, 3), np.nan,
                                                               np.float32)))
    with pytest.raises(TypeError):
        taught.detect("not a frame")
    with pytest.raises(ValueError, match="1..8"):
        taught.teach([])


def test_memory_admits_only_typical_parts(detector_factory):
    """Once calibrated, a part enters memory only while its fused c stays below
    memory_admit_below: a defect under the decision threshold must not become 'normal'."""
    sizes = {}
    for admit in (1e9, -1e9):  # everything typical enough / nothing typical enough
        det = detector_factory(grounding=False, min_history=3, memory_admit_below=admit)
        for s in range(50, 58):
            det.detect(generate_sample(CAT, "good", s).frame)
        sizes[admit] = len(det._streams[CAT]["sensor"].memory)
    assert sizes[-1e9] < sizes[1e9]
    assert sizes[-1e9] >= 2  # the bootstrap parts and the uncalibrated ones still enter


def _lit(frame: Frame, gain: float, tilt: float) -> Frame:
    """The part under another lamp: brighter or darker overall, and brighter to one side."""
    f = dataclasses.replace(frame)
    u = np.linspace(-1.0, 1.0, f.rgb.shape[1])[None, :, None]
    f.rgb = np.clip(f.rgb.astype(np.float32) * gain * (1 + tilt * u), 0, 255).astype(np.uint8)
    return f


@pytest.mark.parametrize("taught_refs", [False, True])
def test_own_image_score_on_parts_lit_differently(detector_factory, taught_refs):
    """intra_image: each part is also scored against its own surface, calibrated apart (from
    the stream's history, or from the taught references) and fused with the patch memory's
    score. Parts under changing light pass; a stain is found where it was planted."""
    rng = np.random.default_rng(0)

    def part(seed):
        return _lit(generate_sample(CAT_RGB, "good", seed).frame, rng.uniform(0.6, 1.3),
                    rng.uniform(-0.4, 0.4))

    det = detector_factory(modalities=("rgb",), grounding=False, min_history=3,
                           intra_image="on", target_false_alarm_rate=0.01)
    if taught_refs:
        det.teach([part(s) for s in REF_SEEDS])
        assert det._streams[CAT_RGB]["rgb:intra"].taught is not None
    normal = [det.detect(part(s)) for s in range(40, 56)]
    assert not any(r.is_anomalous for r in normal[4:])
    assert len(det._streams[CAT_RGB]["rgb:intra"].raw_scores) >= 8
    for seed in (60, 61):
        frame, mask = plant(part(seed), "rgb", r=8)
        assert found_where_planted(det.detect(frame), mask)


def test_own_image_score_auto_on_untaught_surfaces_only(detector_factory):
    """intra_image 'auto': an untaught stream of surfaces (moulded plastic) is scored against
    its own patches too, a stream of objects (bottles) is not; streams decide after
    min_history parts; taught streams are left to their references."""
    det = detector_factory(modalities=("rgb",), grounding=False, min_history=3)
    assert det.config.intra_image == "auto"
    for cat, surface in ((CAT_RGB, True), ("bottle", False)):
        decided = []
        for s in range(70, 74):
            det.detect(generate_sample(cat, "good", s).frame)
            decided.append(det.own_image_scored(cat))
        assert decided == [None, None, surface, surface]
    det.teach([generate_sample(CAT_RGB, "good", s).frame for s in REF_SEEDS[:2]])
    assert det.own_image_scored(CAT_RGB) is False
    assert "rgb:intra" not in det._streams[CAT_RGB]
    det.reset(CAT_RGB)
    assert det.own_image_scored(CAT_RGB) is None
    with pytest.raises(ValueError, match="intra_image"):
        DetectorConfig(intra_image="yes").validate()


def test_grounding_blend_weight_follows_the_features_it_is_for(detector_factory, taught):
    """The recorded blend weight was chosen with the built-in network's maps: it applies
    there; with other features the anomaly map is the calibrated score map alone, unless
    grounding_weight says otherwise."""
    import json

    builtin = detector_factory(backbone="builtin")
    recorded = json.loads(builtin.grounding_meta["config"])["grounding_weight"]
    assert recorded > 0 and builtin._grounding_weight == recorded
    assert taught._grounding_weight == 0.0
    assert detector_factory(grounding_weight=0.4)._grounding_weight == 0.4
    # the map is the max of the modality maps, and the stain's peak is where it was planted
    frame, mask = plant(generate_sample(CAT_RGB, "good", 7).frame, "rgb")
    r = taught.detect(frame, update_memory=False)
    assert found_where_planted(r, mask)
    fused = np.max(np.stack(list(r.modality_maps.values())), 0)
    assert np.allclose(r.anomaly_map, np.clip(fused, 0, 1), atol=1e-5)
