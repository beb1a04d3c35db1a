"""When a modality counts as missing: per part, never for the time between parts. Runs the
part assembler on a simulated clock (arrival times in seconds, `expire` every 0.1 s) over
both synchronizer backends."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from test_message_filters_backend import api_stand_in
from zsg_ros_testkit import header

from zsg_iad_ros.ros.message_filters_sync import MessageFiltersSync
from zsg_iad_ros.ros.parts import DROPPED, MISSING, RELEASED, RESUMED, PartAssembler
from zsg_iad_ros.ros.synchronizer import ApproximateTimeSynchronizer

RGB, SENSOR, DEPTH = 0, 1, 2
NAMES = ("rgb", "sensor", "depth")


class Cell:
    """A synchronizer + part assembler fed on a simulated clock."""

    def __init__(self, backend, timeout=2.0, queue_size=10, slop=0.05, **kw):
        self.drops, self.parts, self.events = [], [], []
        on_drop = lambda r, i, m: self.drops.append((r, NAMES[i], m.t))  # noqa: E731
        if backend == "builtin":
            sync = ApproximateTimeSynchronizer(3, queue_size, slop, on_drop=on_drop)
        else:
            sync = MessageFiltersSync(api_stand_in(), 3, queue_size, slop, on_drop=on_drop)
        self.assembler = PartAssembler(sync, missing_timeout_s=timeout, **kw)
        self.assembler.register_callback(lambda *m: self.parts.append(
            tuple(None if x is None else x.t for x in m)))
        self.now = 0.0

    def run(self, arrivals, until=None, tick=0.1):
        """`arrivals`: (arrival time [s], input, stamp [s]); `expire` runs every `tick`."""
        arrivals = sorted(arrivals)
        end = until if until is not None else arrivals[-1][0] + 10.0
        k = 0
        while self.now <= end + 1e-9:
            while k < len(arrivals) and arrivals[k][0] <= self.now + 1e-9:
                _, i, t = arrivals[k]
                m = SimpleNamespace(header=header(t), t=t)
                self.events += self.assembler.offer(m, i, arrivals[k][0])
                k += 1
            self.events += self.assembler.expire(self.now)
            self.now = round(self.now + tick, 6)

    def kinds(self, kind):
        return [e for e in self.events if e.kind == kind]


def part(at, stamp, delays=(0.0, 0.02, 0.04), skip=()):
    """Arrivals of one part: RGB at `at`, the others `delays` later (negative: before)."""
    return [(at + d, i, stamp) for i, d in enumerate(delays) if i not in skip]


@pytest.fixture(params=["builtin", "message_filters"])
def backend(request):
    return request.param


@pytest.mark.parametrize("gap", [0.2, 5.0, 60.0])
@pytest.mark.parametrize("delays", [(0.0, 0.02, 0.04), (0.0, -0.03, 0.3), (0.5, 0.0, 0.1)])
def test_parts_any_time_apart_get_every_modality_sent(backend, gap, delays):
    cell = Cell(backend)
    arrivals = [a for k in range(6) for a in part(100.0 + gap * k, 10.0 + k, delays)]
    cell.run(arrivals)
    assert cell.parts == [(10.0 + k,) * 3 for k in range(6)]
    assert cell.drops == [] and cell.events == []


def test_a_modality_that_stops_is_missing_from_every_part_that_follows(backend):
    cell = Cell(backend)
    arrivals = [a for k in range(6)
                for a in part(5.0 * k, float(k), skip=(SENSOR,) if k >= 2 else ())]
    cell.run(arrivals)
    assert cell.parts == [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)] + [
        (float(k), None, float(k)) for k in range(2, 6)]
    assert cell.drops == []
    # each triggered part waits its own timeout: the pause before it resumed the waiting
    assert [e.index for e in cell.kinds(MISSING)] == [SENSOR] * 4
    assert [e.reason for e in cell.kinds(RESUMED)] == ["pause"] * 4


def test_a_stream_is_not_held_behind_a_dead_modality(backend):
    # 10 Hz, queue of 10: RGB images overflow the queue before any waited 2 s; the clock
    # of the dead modality keeps running across them
    cell = Cell(backend, timeout=2.0, queue_size=10)
    arrivals = [a for k in range(60) for a in part(0.1 * k, 0.1 * k, skip=(DEPTH,))]
    cell.run(arrivals, until=7.5)
    waited = [p for p in cell.parts if p[2] is None]
    assert len(cell.kinds(MISSING)) == 1 and not cell.kinds(RESUMED)
    dropped = [d for d in cell.drops if d[1] == "rgb"]
    assert all(r == "sync_queue_overflow" for r, _, _ in cell.drops)
    assert len(dropped) <= 11  # only while the first RGB image waited
    assert len(waited) + len(dropped) == 60  # every part inspected or counted
    assert all(p[1] == p[0] for p in waited)  # with the sensor image it had


def test_one_lost_cloud_costs_only_its_own_part(backend):
    # triggered parts 5 s apart whose cloud follows the RGB image by 0.3 s
    cell = Cell(backend)
    arrivals = [a for k in range(4)
                for a in part(5.0 * k, float(k), (0.0, 0.02, 0.3),
                              skip=(DEPTH,) if k == 1 else ())]
    cell.run(arrivals)
    assert cell.parts == [(0.0, 0.0, 0.0), (1.0, 1.0, None), (2.0, 2.0, 2.0), (3.0, 3.0, 3.0)]
    assert cell.drops == []


def test_a_part_whose_partner_was_refused_closes_without_it_alone(backend):
    # the cloud of the part at 6.0 never came (refused), the next parts are complete: 6.0
    # is inspected without depth after its timeout, depth is not declared stopped
    cell = Cell(backend, timeout=1.0)
    arrivals = part(0.0, 6.0, skip=(DEPTH,)) + part(0.2, 7.0) + part(0.4, 8.0)
    cell.run(arrivals, until=3.0)
    assert cell.parts == [(7.0, 7.0, 7.0), (8.0, 8.0, 8.0), (6.0, 6.0, None)]
    assert [(e.kind, e.without) for e in cell.events] == [(RELEASED, (DEPTH,))]
    assert cell.assembler.sync.is_active(DEPTH)


def test_partners_spread_over_the_slop_drop_the_part_after_its_timeout(backend):
    cell = Cell(backend, timeout=1.0, slop=0.05)
    cell.run([(0.0, SENSOR, 0.96), (0.0, DEPTH, 1.04), (0.0, RGB, 1.0)], until=2.0)
    assert cell.parts == []
    assert cell.drops == [("unsynchronized", "rgb", 1.0)]
    assert [e.kind for e in cell.events] == [DROPPED]


def test_without_allow_missing_parts_wait_for_every_modality(backend):
    cell = Cell(backend, allow_missing=False, queue_size=2)
    arrivals = [a for k in range(4) for a in part(5.0 * k, float(k), skip=(SENSOR,))]
    cell.run(arrivals)
    assert cell.parts == [] and cell.events == []
    assert [d[:2] for d in cell.drops] == [("sync_queue_overflow", "rgb"),
                                           ("sync_queue_overflow", "depth")] * 2


def test_drop_stale_drops_what_is_older_than_a_formed_set(backend):
    arrivals = part(0.0, 1.0, skip=(DEPTH,)) + part(0.5, 2.0)
    plain = Cell(backend, timeout=100.0)
    plain.run(arrivals, until=2.0)
    assert plain.parts == [(2.0, 2.0, 2.0)] and plain.drops == []  # 1.0 still waits
    stale = Cell(backend, timeout=100.0, drop_stale=True)
    stale.run(arrivals, until=2.0)
    assert stale.parts == [(2.0, 2.0, 2.0)]
    assert sorted(stale.drops) == [("unsynchronized", "rgb", 1.0),
                                   ("unsynchronized", "sensor", 1.0)]


def test_a_modality_arriving_again_is_waited_for_at_once(backend):
    cell = Cell(backend, timeout=1.0)
    # the sensor image comes just before the RGB image: the first part it is back for has it
    stream = [a for k in range(20) for a in part(0.25 * k, 0.25 * k, (0.0, -0.02, 0.04),
                                                 skip=(SENSOR,) if 4 <= k < 12 else ())]
    cell.run(stream, until=8.0)
    assert [e.kind for e in cell.events] == [MISSING, RESUMED]
    assert cell.events[1].reason == "arrived"
    full = [p for p in cell.parts if None not in p]
    assert len(full) == 12 and len(cell.parts) == 20 and cell.drops == []


def test_the_timeout_can_change_at_runtime(backend):
    cell = Cell(backend, timeout=100.0)
    cell.run(part(0.0, 1.0, skip=(SENSOR,)), until=1.0)
    assert cell.parts == []
    cell.assembler.missing_timeout_s = 0.5
    cell.run([], until=2.0)
    assert cell.parts == [(1.0, None, 1.0)]


def test_nothing_happens_between_parts(backend):
    cell = Cell(backend, timeout=0.05)
    cell.run(part(0.0, 1.0), until=0.1, tick=0.01)
    cell.run([], until=3600.0, tick=10.0)
    assert cell.parts == [(1.0, 1.0, 1.0)] and cell.events == [] and cell.drops == []
