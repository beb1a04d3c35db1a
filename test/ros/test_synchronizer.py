"""The built-in approximate-time synchronizer, with hand-made stamped objects and no graph.

It must form the same sets as message_filters' Python ApproximateTimeSynchronizer: the
sequences of message_filters' own test_approxsync.py (pairs; scrambled sequences of length
1..9; headerless partners), the three cases where an earlier version differed, and the edge
cases of its queues. Every expectation is worked out by hand from the stamps."""
import random
import time
from types import SimpleNamespace

import pytest

from zsg_iad_ros.ros.synchronizer import (DROP_DUPLICATE, DROP_HEADERLESS, DROP_OVERFLOW,
                                          DROP_STALE, ApproximateTimeSynchronizer, slop_to_ns,
                                          stamp_ns)


def msg(t: float, tag: str = ""):
    sec = int(t)
    return SimpleNamespace(header=SimpleNamespace(
        stamp=SimpleNamespace(sec=sec, nanosec=int(round((t - sec) * 1e9)))), tag=tag)


def msg_ns(ns: int, tag: str):
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(nanoseconds=ns)),
                           tag=tag)


class Recorder:
    def __init__(self, n=3, queue_size=5, slop=0.05, **kw):
        self.sets, self.drops = [], []
        self.sync = ApproximateTimeSynchronizer(
            n, queue_size, slop, on_drop=lambda r, i, m: self.drops.append((r, i, m.tag)), **kw)
        self.sync.register_callback(lambda *m: self.sets.append(
            tuple(None if x is None else x.tag for x in m)))

    def add(self, index, t, tag=None):
        self.sync.add(msg(t, tag or f"{index}@{t}"), index)


def upstream_orders(rng: random.Random, n: int):
    """The two arrival orders message_filters' scrambled-sequence test draws for length n: it
    draws n data values per sequence, then random.sample of each sequence (consumed here in
    the same pattern, so with random.seed(0) these are its sequences)."""
    for _ in range(2 * n):
        rng.random()
    return rng.sample(range(n), n), rng.sample(range(n), n)


# -- message_filters' test_approxsync.py sequences -----------------------------------------
def test_upstream_pairs_of_equal_stamps_pair_at_once():
    r = Recorder(n=2, queue_size=1, slop=0.1)
    for t in range(10):
        r.add(0, float(t))
        assert len(r.sets) == t
        r.add(1, float(t))
        assert r.sets[-1] == (f"0@{float(t)}", f"1@{float(t)}")
    assert r.drops == [] and r.sync.pending() == [0, 0]


def test_upstream_scrambled_sequences_recombine():
    rng = random.Random(0)
    for n in range(1, 10):
        order0, order1 = upstream_orders(rng, n)
        r = Recorder(n=2, queue_size=n, slop=0.1)
        for t in order0:
            r.add(0, float(t))
        assert r.sets == []
        for t in order1:
            r.add(1, float(t))
        # stamps 1 s apart, slop 0.1 s: each second-input message finds exactly its partner,
        # whatever came before (an older one left waiting is not dropped)
        assert r.sets == [(f"0@{float(t)}", f"1@{float(t)}") for t in order1], n
        assert r.drops == [] and r.sync.pending() == [0, 0]


def test_upstream_headerless_partners_take_the_closest_stamp():
    rng = random.Random(0)
    for n in range(1, 10):
        now = time.time_ns()
        order0, _ = upstream_orders(rng, n)
        r = Recorder(n=2, queue_size=n, slop=10.0, allow_headerless=True)
        for t in order0:
            r.sync.add(msg_ns(now + t * 1_000_000_000, f"0@{t}"), 0)
        assert r.sets == []
        for k in range(n):
            r.sync.add(SimpleNamespace(tag=f"h{k}"), 1)  # stamped on arrival, just after now
        # each headerless message pairs with the closest remaining stamp: now, now+1 s, ...
        assert r.sets == [(f"0@{k}", f"h{k}") for k in range(n)], n
        assert r.drops == []


# -- the three differences of an earlier version ---------------------------------------------
def test_a_set_does_not_drop_older_queued_messages():
    r = Recorder(n=2, queue_size=2, slop=0.1)
    r.add(0, 1.0)
    r.add(0, 0.0)
    r.add(1, 1.0)
    assert r.sets == [("0@1.0", "1@1.0")] and r.sync.pending() == [1, 0]
    r.add(1, 0.0)  # 0.0 waited behind the newer set and still pairs
    assert r.sets[-1] == ("0@0.0", "1@0.0")
    assert r.drops == []


def test_b_spread_must_be_strictly_below_slop():
    for late, expected in ((0.050, []), (0.049, [("0@0.0", "1@0.049", "2@0.0")])):
        r = Recorder(n=3, queue_size=1, slop=0.05)
        r.add(1, late)
        r.add(2, 0.0)
        r.add(0, 0.0)
        assert r.sets == expected, late  # a spread equal to the slop forms no set
        assert r.drops == []


def test_c_equally_close_candidates_keep_queue_order():
    for first, second in ((1.04, 0.96), (0.96, 1.04)):
        r = Recorder(n=2, queue_size=5, slop=0.05)
        r.add(1, first)
        r.add(1, second)
        r.add(0, 1.0)  # both 0.04 s away: the one queued first is taken
        assert r.sets == [("0@1.0", f"1@{first}")]


# -- queues ------------------------------------------------------------------------------------
def test_exact_match_emits_once_and_empties_queues():
    r = Recorder()
    r.add(0, 1.0)
    r.add(1, 1.0)
    assert r.sets == []
    r.add(2, 1.0)
    assert r.sets == [("0@1.0", "1@1.0", "2@1.0")]
    assert r.sync.pending() == [0, 0, 0]
    assert r.drops == []


def test_closest_candidate_first_and_outside_slop_never():
    r = Recorder(slop=0.05)
    r.add(0, 1.00)
    r.add(1, 1.03)
    r.add(1, 1.01)
    r.add(2, 0.98)
    # for 0.98: rgb 1.00 (0.02 away), input 1: 1.01 (0.03) before 1.03 (0.05); spread 0.03
    assert r.sets == [("0@1.0", "1@1.01", "2@0.98")]
    assert r.sync.queued_stamps(1) == [1_030_000_000]  # left waiting, not dropped
    r2 = Recorder(slop=0.05)
    r2.add(0, 2.0)
    r2.add(1, 2.0)
    r2.add(2, 2.08)  # outside slop of both
    assert r2.sets == [] and r2.sync.pending() == [1, 1, 1]


def test_spread_of_whole_set_must_fit_in_slop():
    r = Recorder(slop=0.05)
    r.add(0, 1.00)
    r.add(1, 1.04)
    r.add(2, 0.96)  # each within slop of rgb but 0.08 apart from each other
    assert r.sets == []


def test_later_candidate_combination_is_tried_when_the_closest_fails():
    r = Recorder(slop=0.05)
    r.add(1, 1.03)
    r.add(1, 0.98)
    r.add(2, 1.04)
    r.add(0, 1.0)
    # candidates for rgb 1.00: input 1 [0.98, 1.03], input 2 [1.04]; (0.98, 1.04) spreads
    # 0.06, (1.03, 1.04) spreads 0.04
    assert r.sets == [("0@1.0", "1@1.03", "2@1.04")]


def test_queue_overflow_drops_oldest_and_a_silent_input_never_completes():
    r = Recorder(queue_size=3)
    for k in range(5):
        r.add(0, float(k))
        r.add(1, float(k))
    assert r.sets == []
    assert r.sync.pending() == [3, 3, 0]
    assert [(d[0], d[2]) for d in r.drops if d[1] == 0] == [(DROP_OVERFLOW, "0@0.0"),
                                                            (DROP_OVERFLOW, "0@1.0")]
    r.add(2, 4.0)
    assert r.sets == [("0@4.0", "1@4.0", "2@4.0")]


def test_an_overflowing_new_message_that_is_the_oldest_is_dropped_itself():
    r = Recorder(n=2, queue_size=1, slop=0.1)
    r.add(0, 2.0)
    r.add(0, 1.0)  # oldest stamp of a full queue: dropped at once
    assert r.drops == [(DROP_OVERFLOW, 0, "0@1.0")]
    r.add(1, 1.0)
    assert r.sets == [] and r.sync.queued_stamps(0) == [2_000_000_000]


def test_repeated_stamp_replaces_in_place():
    r = Recorder(n=2, queue_size=5, slop=0.05)
    r.add(1, 1.04, "a")
    r.add(1, 0.96)
    r.add(1, 1.04, "b")  # replaces "a" and keeps its place ahead of 0.96
    assert r.drops == [(DROP_DUPLICATE, 1, "a")]
    r.add(0, 1.0)
    assert r.sets == [("0@1.0", "b")]


def test_headerless_is_refused_unless_allowed():
    r = Recorder()
    r.sync.add(SimpleNamespace(tag="nohdr"), 1)
    assert r.drops == [(DROP_HEADERLESS, 1, "nohdr")]
    r1 = Recorder(n=1, allow_headerless=True)
    r1.sync.add(SimpleNamespace(tag="nohdr"), 0)
    assert r1.sets == [("nohdr",)]


def test_zero_slop_never_forms_a_set():
    for n in (1, 2):  # a spread of 0 is not below a slop of 0, even alone (message_filters)
        r = Recorder(n=n, slop=0.0)
        for i in range(n):
            r.add(i, 1.0)
        assert r.sets == [] and r.sync.pending() == [1] * n
    r1 = Recorder(n=1, slop=0.01)
    r1.add(0, 1.0)
    assert r1.sets == [("0@1.0",)]


# -- switching inputs off and on, release and discard --------------------------------------
def test_deactivated_input_is_not_waited_for_and_keeps_its_queue():
    r = Recorder()
    r.add(2, 0.5)
    r.add(0, 1.0)
    r.add(1, 1.0)
    r.add(0, 2.0)
    r.add(1, 2.0)
    r.sync.set_active(2, False)  # the sets waiting for input 2 form at once
    assert r.sets == [("0@1.0", "1@1.0", None), ("0@2.0", "1@2.0", None)]
    assert r.sync.pending() == [0, 0, 1]  # its own queued message is kept
    r.add(2, 3.0)  # queued while inactive, not matched, not dropped
    r.add(0, 3.0)
    r.add(1, 3.0)
    assert r.sets[-1] == ("0@3.0", "1@3.0", None) and r.drops == []
    r.sync.set_active(2, True)
    r.add(0, 0.5)
    r.add(1, 0.5)
    assert r.sets[-1] == ("0@0.5", "1@0.5", "2@0.5")  # its kept message pairs again
    r.add(1, 4.0)
    r.add(0, 4.0)
    assert len(r.sets) == 4
    r.add(2, 4.0)
    assert r.sets[-1] == ("0@4.0", "1@4.0", "2@4.0")


def test_messages_queued_while_inactive_wait_for_partners_once_reactivated():
    r = Recorder()
    r.sync.set_active(1, False)
    r.add(1, 1.0)
    r.add(2, 1.0)
    r.add(0, 1.0)
    assert r.sets == [("0@1.0", None, "2@1.0")] and r.sync.pending() == [0, 1, 0]
    r.sync.set_active(1, True)  # its message at 1.0 waits again; nothing to pair with yet
    assert len(r.sets) == 1 and r.sync.pending() == [0, 1, 0]
    r.add(0, 1.01)
    r.add(2, 1.02)
    assert r.sets[-1] == ("0@1.01", "1@1.0", "2@1.02") and r.drops == []


def test_release_emits_a_partial_set_and_discard_drops():
    r = Recorder()
    r.add(0, 1.0)
    r.add(1, 1.01)
    r.add(0, 2.0)
    assert not r.sync.release(0, 1_000_000_000)  # input 2 still required
    assert r.sync.release(0, 1_000_000_000, without=[2])
    assert r.sets == [("0@1.0", "1@1.01", None)]
    assert not r.sync.release(0, 2_000_000_000, without=[2])  # input 1 has nothing near
    assert r.sync.is_active(2)  # release changes no input's state
    assert r.sync.discard(0, 2_000_000_000, DROP_STALE)
    assert not r.sync.discard(0, 2_000_000_000, DROP_STALE)
    assert r.drops == [(DROP_STALE, 0, "0@2.0")] and r.sync.pending() == [0, 0, 0]


def test_stamp_forms_slop_conversion_and_bad_arguments():
    assert stamp_ns(msg(1.5)) == 1_500_000_000
    assert stamp_ns(SimpleNamespace(header=SimpleNamespace(
        stamp=SimpleNamespace(nanoseconds=7)))) == 7
    assert stamp_ns(object()) is None
    assert slop_to_ns(0.05) == 50_000_000 and slop_to_ns(0.3) == 300_000_000
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeSynchronizer(3, 0, 0.1)
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimeSynchronizer(3, 5, -1.0)
    with pytest.raises(ValueError, match="n_inputs"):
        ApproximateTimeSynchronizer(0, 5, 0.1)
