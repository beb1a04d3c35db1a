"""Approximate-time synchronizer edge cases, with hand-made stamped objects and no graph."""
from types import SimpleNamespace

import pytest

from zsg_iad_ros.ros.synchronizer import (DROP_DUPLICATE, DROP_HEADERLESS, DROP_INACTIVE,
                                          DROP_OVERFLOW, DROP_STALE, ApproximateTimeSynchronizer,
                                          stamp_ns)


def msg(t: float, tag: str = ""):
    sec = int(t)
    return SimpleNamespace(header=SimpleNamespace(
        stamp=SimpleNamespace(sec=sec, nanosec=int(round((t - sec) * 1e9)))), tag=tag)


class Recorder:
    def __init__(self, n=3, queue_size=5, slop=0.05, **kw):
        self.sets, self.drops = [], []
        self.sync = ApproximateTimeSynchronizer(
            n, queue_size, slop, on_drop=lambda r, i, m: self.drops.append((r, i, m.tag)), **kw)
        self.sync.register_callback(lambda *m: self.sets.append(
            tuple(None if x is None else x.tag for x in m)))

    def add(self, index, t, tag=None):
        self.sync.add(msg(t, tag or f"{index}@{t}"), index)


def test_exact_match_emits_once_and_empties_queues():
    r = Recorder()
    r.add(0, 1.0)
    r.add(1, 1.0)
    assert r.sets == []
    r.add(2, 1.0)
    assert r.sets == [("0@1.0", "1@1.0", "2@1.0")]
    assert r.sync.pending() == [0, 0, 0]
    assert r.drops == []


def test_within_slop_matches_closest_and_outside_slop_does_not():
    r = Recorder(slop=0.05)
    r.add(0, 1.00)
    r.add(1, 1.03)
    r.add(1, 1.01)
    r.add(2, 0.98)
    # closest candidates first: 1.01 rather than 1.03; spread 0.03 <= slop
    assert r.sets == [("0@1.0", "1@1.01", "2@0.98")]
    r2 = Recorder(slop=0.05)
    r2.add(0, 2.0)
    r2.add(1, 2.0)
    r2.add(2, 2.08)  # outside slop of both
    assert r2.sets == []
    assert r2.sync.pending() == [1, 1, 1]


def test_spread_of_whole_set_must_fit_in_slop():
    r = Recorder(slop=0.05)
    r.add(0, 1.00)
    r.add(1, 1.04)
    r.add(2, 0.96)  # each within slop of rgb but 0.08 apart from each other
    assert r.sets == []


def test_out_of_order_arrival_still_matches_and_older_leftovers_are_dropped():
    r = Recorder()
    r.add(0, 2.0)
    r.add(0, 1.0)
    r.add(1, 1.0)
    r.add(1, 2.0)
    r.add(2, 2.0)  # completes 2.0 first
    assert r.sets == [("0@2.0", "1@2.0", "2@2.0")]
    # 1.0 on inputs 0 and 1 can no longer form a newer set: dropped as unsynchronized
    assert sorted(r.drops) == [(DROP_STALE, 0, "0@1.0"), (DROP_STALE, 1, "1@1.0")]
    assert r.sync.pending() == [0, 0, 0]


def test_queue_overflow_drops_oldest_and_silent_topic_never_emits():
    r = Recorder(queue_size=3)
    for k in range(5):
        r.add(0, float(k))
        r.add(1, float(k))
    assert r.sets == []  # input 2 silent
    assert r.sync.pending() == [3, 3, 0]
    assert [(d[0], d[2]) for d in r.drops if d[1] == 0] == [(DROP_OVERFLOW, "0@0.0"),
                                                            (DROP_OVERFLOW, "0@1.0")]
    r.add(2, 4.0)
    assert r.sets == [("0@4.0", "1@4.0", "2@4.0")]


def test_duplicate_stamp_replaces_and_headerless_is_refused():
    r = Recorder()
    r.add(0, 1.0, "first")
    r.add(0, 1.0, "second")
    assert r.drops == [(DROP_DUPLICATE, 0, "first")]
    r.sync.add(SimpleNamespace(tag="nohdr"), 1)
    assert r.drops[-1] == (DROP_HEADERLESS, 1, "nohdr")


def test_headerless_allowed_gets_wall_clock_stamp():
    r = Recorder(n=1, allow_headerless=True)
    r.sync.add(SimpleNamespace(tag="nohdr"), 0)
    assert r.sets == [("nohdr",)]


def test_deactivated_input_is_not_waited_for_and_pending_sets_complete():
    r = Recorder()
    r.add(0, 1.0)
    r.add(1, 1.0)
    r.add(0, 2.0)
    r.add(1, 2.0)
    r.sync.set_active(2, False)  # sensor 2 stopped arriving
    assert r.sets == [("0@1.0", "1@1.0", None), ("0@2.0", "1@2.0", None)]
    r.add(0, 3.0)
    r.add(1, 3.0)
    assert r.sets[-1] == ("0@3.0", "1@3.0", None)
    r.add(2, 3.5)  # not reactivated: counted, not queued
    assert r.drops[-1] == (DROP_INACTIVE, 2, "2@3.5")
    r.sync.set_active(2, True)
    r.add(0, 4.0)
    r.add(1, 4.0)
    assert len(r.sets) == 3
    r.add(2, 4.0)
    assert r.sets[-1] == ("0@4.0", "1@4.0", "2@4.0")


def test_stamp_forms_and_bad_arguments():
    assert stamp_ns(msg(1.5)) == 1_500_000_000
    assert stamp_ns(SimpleNamespace(header=SimpleNamespace(
        stamp=SimpleNamespace(nanoseconds=7)))) == 7
    assert stamp_ns(object()) is None
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeSynchronizer(3, 0, 0.1)
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimeSynchronizer(3, 5, -1.0)
