"""The message_filters backend (`MessageFiltersSync`, what `sync_backend: auto` picks on a ROS
install) behaves as the built-in synchronizer: same sets, same drops, same queue kept when a
modality is switched off and on, same accounting in the node.

message_filters is not installable here. A stand-in with its Python API (`SimpleFilter`,
`ApproximateTimeSynchronizer(fs, queue_size, slop)` keeping `queues`) whose sets come from the
built-in synchronizer tests the adapter's own logic; where the real message_filters is
importable, the same comparisons run against it on random sequences."""
from __future__ import annotations

import random
import types
from types import SimpleNamespace

import pytest
from zsg_ros_testkit import good_part, header

from zsg_iad_ros.ros import inspection_node
from zsg_iad_ros.ros.message_filters_sync import MessageFiltersSync
from zsg_iad_ros.ros.synchronizer import (DROP_DUPLICATE, DROP_HEADERLESS, DROP_OVERFLOW,
                                          DROP_STALE)
from zsg_iad_ros.ros.synchronizer import ApproximateTimeSynchronizer as Builtin


def api_stand_in():
    class SimpleFilter:
        def __init__(self):
            self.callbacks = {}

        def registerCallback(self, cb, *args):  # noqa: N802 - message_filters' name
            self.callbacks[len(self.callbacks)] = (cb, args)

        def signalMessage(self, *msg):  # noqa: N802
            for cb, args in self.callbacks.values():
                cb(*(msg + args))

    class ApproximateTimeSynchronizer(SimpleFilter):
        def __init__(self, fs, queue_size, slop):
            super().__init__()
            self._sync = Builtin(len(fs), queue_size, slop)
            self.queues = self._sync._queues  # message_filters' attribute, same layout
            self._sync.register_callback(self.signalMessage)
            for i, f in enumerate(fs):
                f.registerCallback(self._sync.add, i)

    return types.SimpleNamespace(SimpleFilter=SimpleFilter,
                                 ApproximateTimeSynchronizer=ApproximateTimeSynchronizer)


def msg(t: float, tag: str = ""):
    return SimpleNamespace(header=header(t), tag=tag or f"{t}")


class Recorder:
    """Sets and drops of one synchronizer, as tags."""

    def __init__(self, make):
        self.sets, self.drops = [], []
        self.sync = make(lambda r, i, m: self.drops.append((r, i, m.tag)))
        self.sync.register_callback(lambda *m: self.sets.append(
            tuple(None if x is None else x.tag for x in m)))


def adapter_on(module, n=3, queue_size=5, slop=0.05):
    return Recorder(lambda on_drop: MessageFiltersSync(module, n, queue_size, slop,
                                                       on_drop=on_drop))


def builtin(n=3, queue_size=5, slop=0.05):
    return Recorder(lambda on_drop: Builtin(n, queue_size, slop, on_drop=on_drop))


@pytest.fixture
def mf():
    return api_stand_in()


def test_full_sets_pending_and_queued_stamps(mf):
    r = adapter_on(mf)
    r.sync.add(msg(1.0, "a"), 0)
    r.sync.add(msg(1.0, "b"), 1)
    assert r.sync.pending() == [1, 1, 0] and r.sync.queued_stamps(0) == [1_000_000_000]
    r.sync.add(msg(1.0, "c"), 2)
    assert r.sets == [("a", "b", "c")] and r.sync.pending() == [0, 0, 0]


def test_switching_a_modality_off_keeps_the_others_queue(mf):
    # rgb@2.0 and depth@2.0 wait for the sensor; it is declared missing: the part forms
    r = adapter_on(mf)
    r.sync.add(msg(2.0, "rgb"), 0)
    r.sync.add(msg(2.0, "depth"), 2)
    r.sync.set_active(1, False)
    assert r.sets == [("rgb", None, "depth")] and not r.sync.is_active(1)
    r.sync.add(msg(3.0, "sensor3"), 1)  # kept aside while inactive
    assert r.sync.pending() == [0, 1, 0] and r.drops == []
    r.sync.set_active(1, True)
    r.sync.add(msg(3.0, "rgb3"), 0)
    r.sync.add(msg(3.0, "depth3"), 2)
    assert r.sets[-1] == ("rgb3", "sensor3", "depth3")


def test_drops_are_reported_as_by_the_builtin(mf):
    r = adapter_on(mf, n=2, queue_size=2)
    r.sync.add(msg(1.0, "a"), 0)
    r.sync.add(msg(1.0, "a2"), 0)  # same stamp: replaces
    r.sync.add(msg(2.0, "b"), 0)
    r.sync.add(msg(3.0, "c"), 0)  # overflow: the oldest goes
    r.sync.add(msg(0.5, "d"), 0)  # older than all of a full queue: dropped itself
    r.sync.add(SimpleNamespace(tag="nohdr"), 1)
    assert r.drops == [(DROP_DUPLICATE, 0, "a"), (DROP_OVERFLOW, 0, "a2"),
                       (DROP_OVERFLOW, 0, "d"), (DROP_HEADERLESS, 1, "nohdr")]
    assert r.sync.discard(0, 2_000_000_000, DROP_STALE)
    assert r.drops[-1] == (DROP_STALE, 0, "b") and r.sync.pending() == [1, 0]


def test_release_closes_a_part_without_a_modality(mf):
    r = adapter_on(mf)
    r.sync.add(msg(1.0, "rgb"), 0)
    r.sync.add(msg(1.01, "sensor"), 1)
    assert not r.sync.release(0, 1_000_000_000)
    assert r.sync.release(0, 1_000_000_000, without=[2])
    assert r.sets == [("rgb", "sensor", None)] and r.sync.is_active(2)


def test_a_message_filters_without_queues_is_refused():
    legacy = api_stand_in()

    class NoQueues(legacy.ApproximateTimeSynchronizer):
        def __init__(self, *a):
            super().__init__(*a)
            del self.queues

    legacy.ApproximateTimeSynchronizer = NoQueues
    with pytest.raises(RuntimeError, match="sync_backend: builtin"):
        MessageFiltersSync(legacy, 3, 5, 0.05)


# -- the same sets and drops as the built-in one, on random sequences ----------------------
def random_operations(rng: random.Random, parts: int = 40):
    """Parts 0.1 s apart, modalities jittered by up to 30 ms, some lost, arrivals locally out
    of order, repeated stamps; now and then a modality switched off or on, a waiting RGB
    released or discarded."""
    arrivals = []
    for k in range(parts):
        for i in range(3):
            if i and rng.random() < 0.15:
                continue
            t = round(1.0 + 0.1 * k + (rng.uniform(-0.03, 0.03) if i else 0.0), 3)
            arrivals.append((k + rng.uniform(-1.5, 1.5), i, t))
    arrivals.sort()
    ops = []
    for n, (_, i, t) in enumerate(arrivals):
        ops.append(("add", i, t, f"{i}@{t}#{n}"))
        if rng.random() < 0.05:
            ops.append(("add", i, t, f"{i}@{t}#{n}dup"))
        u = rng.random()
        if u < 0.06:
            ops.append(("set_active", rng.choice([1, 2]), rng.random() < 0.5))
        elif u < 0.09:
            ops.append(("release", rng.choice([(), (1,), (2,), (1, 2)])))
        elif u < 0.11:
            ops.append(("discard",))
    return ops


def run(rec, ops):
    """Apply `ops`; per operation, the sets formed and the drops (as a sorted list)."""
    trace = []
    for op in ops:
        n_sets, n_drops = len(rec.sets), len(rec.drops)
        sync = rec.sync
        if op[0] == "add":
            sync.add(msg(op[2], op[3]), op[1])
        elif op[0] == "set_active":
            sync.set_active(op[1], op[2])
        elif sync.queued_stamps(0):
            oldest = sync.queued_stamps(0)[0]
            if op[0] == "release":
                sync.release(0, oldest, op[1])
            else:
                sync.discard(0, oldest, DROP_STALE)
        trace.append((rec.sets[n_sets:], sorted(rec.drops[n_drops:])))
    return trace


@pytest.mark.parametrize("seed", range(40))
def test_adapter_matches_builtin_on_random_sequences(mf, seed):
    rng = random.Random(seed)
    queue_size, ops = rng.randint(2, 10), random_operations(rng)
    assert run(adapter_on(mf, queue_size=queue_size), ops) == \
        run(builtin(queue_size=queue_size), ops)


def real_message_filters():
    return pytest.importorskip("message_filters", reason="message_filters needs a ROS install")


def test_builtin_forms_message_filters_sets_on_random_sequences():  # pragma: no cover
    real = real_message_filters()
    for seed in range(300):
        rng = random.Random(seed)
        queue_size = rng.randint(2, 10)
        ops = [op for op in random_operations(rng) if op[0] == "add"]
        filters = [real.SimpleFilter() for _ in range(3)]
        upstream = real.ApproximateTimeSynchronizer(filters, queue_size, 0.05)
        got = []
        upstream.registerCallback(lambda *m: got.append(tuple(x.tag for x in m)))
        ours = builtin(queue_size=queue_size)
        for _, i, t, tag in ops:
            filters[i].signalMessage(msg(t, tag))
            ours.sync.add(msg(t, tag), i)
            assert got == ours.sets, (seed, tag)


def test_adapter_on_message_filters_matches_builtin():  # pragma: no cover
    real = real_message_filters()
    for seed in range(100):
        rng = random.Random(seed)
        queue_size, ops = rng.randint(2, 10), random_operations(rng)
        assert run(adapter_on(real, queue_size=queue_size), ops) == \
            run(builtin(queue_size=queue_size), ops), seed


# -- the node on this backend ------------------------------------------------------------------
def test_node_on_message_filters_backend_reports_missing_modality_and_pending(
        make_graph, monkeypatch, mf):
    monkeypatch.setattr(inspection_node, "message_filters", mf)
    g = make_graph({"sync_backend": "message_filters", "allow_missing_modalities": True,
                    "missing_timeout_s": 0.5})
    assert g.node._sync_backend == "message_filters"
    rgb, sensor, points, _ = good_part(64)
    g.publish(1.0, rgb, sensor, points)
    assert all(m.present for m in g.wait_report(1.0).modality_scores)
    g.publish(2.0, rgb, None, points)  # rgb@2.0 and depth@2.0 wait; the sensor never comes
    r2 = g.wait_report(2.0)
    assert {m.name: m.present for m in r2.modality_scores} == {
        "rgb": True, "sensor": False, "geometry": True}
    acc = g.settle()
    assert acc["frames_pending"] == 0 and acc["frames_processed"] == 2
    assert acc["frames_received"] == acc["frames_processed"] + acc["frames_dropped"]
