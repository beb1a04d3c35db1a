"""The miss-rate operating point: known-defective parts (limit samples) lower a stream's
threshold so that defects like them are caught, never raise it, and are forgotten when the
stream is taught again."""
import numpy as np
import pytest

from zsg_iad_ros.core import scoring as sc
from zsg_iad_ros.core.detector import Detector, DetectorConfig
from zsg_iad_ros.data.synthetic import generate_sample

DESIGN, SIZE = 7, 128


def _frames(kind, seeds):
    return [generate_sample("gear", kind, s, size=SIZE, design=DESIGN).frame for s in seeds]


def test_miss_rate_threshold_is_an_order_statistic():
    # n = 4 cannot promise 10 %: the smallest score, and the bound it does promise (1 / 5)
    assert sc.miss_rate_threshold([0.3, 0.1, 0.5, 0.2], 0.1) == (0.1, 0.2)
    # n = 19: the 2nd smallest lets a new defect pass with probability 2 / 20
    t, bound = sc.miss_rate_threshold(np.arange(19.0)[::-1], 0.1)
    assert (t, bound) == (1.0, 0.1)
    with pytest.raises(ValueError):
        sc.miss_rate_threshold([], 0.1)


@pytest.mark.parametrize("fusion", ["stouffer", "max"])
def test_false_alarm_rate_at_inverts_the_calibrated_threshold(fusion):
    for rate in (0.01, 0.05, 0.2):
        c = sc.calibrated_threshold(rate, 3, fusion)
        assert sc.false_alarm_rate_at(c, 3, fusion) == pytest.approx(rate)


def test_config_and_order_are_checked():
    with pytest.raises(ValueError, match="target_miss_rate"):
        DetectorConfig(target_miss_rate=1.5).validate()
    det = Detector(DetectorConfig(device="cpu", target_miss_rate=0.2))
    with pytest.raises(ValueError, match="teach its known-good parts first"):
        det.teach_defects(_frames("void", [300]))


@pytest.fixture(scope="module")
def taught():
    det = Detector(DetectorConfig(device="cpu", target_miss_rate=0.2))
    det.teach(_frames("good", range(100, 104)))
    return det


def test_limit_samples_lower_the_threshold_and_catch_defects_like_them(taught):
    det = taught
    far = det.operating_point("gear")["threshold"]
    good, voids = _frames("good", range(200, 208)), _frames("void", range(200, 208))
    caught_before = sum(det.detect(f, update_memory=False).is_anomalous for f in voids)

    scores = det.teach_defects(_frames("void", range(300, 304)))
    op = det.operating_point("gear")
    assert op["limit_samples"] == 4 and op["miss_rate_bound"] == pytest.approx(0.2)
    assert op["threshold"] == pytest.approx(min(scores)) and op["threshold"] < far
    assert op["false_alarm_rate"] > det.config.target_false_alarm_rate  # the price, stated
    assert det.threshold_for("gear") == op["threshold"]
    assert det.threshold_for("other stream") == far  # per stream
    # every limit sample is flagged again; more of the new voids are caught; good parts pass
    assert all(det.detect(f, update_memory=False).is_anomalous
               for f in _frames("void", range(300, 304)))
    caught_after = sum(det.detect(f, update_memory=False).is_anomalous for f in voids)
    assert caught_after >= caught_before + 2
    assert not any(det.detect(f, update_memory=False).is_anomalous for f in good)


def test_strong_limit_samples_never_raise_the_threshold_and_teaching_forgets_them(taught):
    det = taught
    scores = det.teach_defects(_frames("crack", range(200, 203)))
    op = det.operating_point("gear")
    assert min(scores) > op["false_alarm_threshold"]  # plain cracks: all above it
    assert op["miss_threshold"] == min(scores)
    assert op["threshold"] == op["false_alarm_threshold"]
    assert op["false_alarm_rate"] == det.config.target_false_alarm_rate
    det.teach(_frames("good", range(100, 104)))
    assert det.operating_point("gear")["limit_samples"] == 0


def test_without_target_miss_rate_limit_samples_change_nothing():
    det = Detector(DetectorConfig(device="cpu"))
    det.teach(_frames("good", range(100, 104)))
    before = det.threshold_for("gear")
    det.teach_defects(_frames("void", range(300, 304)))
    assert det.threshold_for("gear") == before
    assert det.operating_point("gear")["miss_threshold"] is None
