"""The message_filters backend adapter (used where a ROS install provides message_filters).

message_filters is not installable here, so a minimal module with its Python API
(`SimpleFilter`, `ApproximateTimeSynchronizer(fs, queue_size, slop)`) is put in its place;
the test checks the adapter's own logic: inputs fed through SimpleFilters, sets expanded back
to (rgb, sensor, depth) with None for inactive inputs, rebuild on deactivate/reactivate."""
from __future__ import annotations

import types
from types import SimpleNamespace

import pytest

from zsg_iad_ros.ros import inspection_node
from zsg_iad_ros.ros.synchronizer import ApproximateTimeSynchronizer as Builtin


def _api_module():
    class SimpleFilter:
        def __init__(self):
            self.callbacks = {}

        def registerCallback(self, cb, *args):  # noqa: N802 - message_filters' name
            self.callbacks[len(self.callbacks)] = (cb, args)

        def signalMessage(self, *msg):  # noqa: N802
            for cb, args in self.callbacks.values():
                cb(*(msg + args))

    class ApproximateTimeSynchronizer(SimpleFilter):
        def __init__(self, fs, queue_size, slop, allow_headerless=False):
            super().__init__()
            self._sync = Builtin(len(fs), queue_size, slop, allow_headerless)
            self._sync.register_callback(lambda *m: self.signalMessage(*m))
            for i, f in enumerate(fs):
                f.registerCallback(self._sync.add, i)

    return types.SimpleNamespace(SimpleFilter=SimpleFilter,
                                 ApproximateTimeSynchronizer=ApproximateTimeSynchronizer)


def msg(t):
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=t, nanosec=0)), t=t)


@pytest.fixture
def adapter(monkeypatch):
    monkeypatch.setattr(inspection_node, "message_filters", _api_module())
    sets = []
    a = inspection_node._MessageFiltersSync(3, 5, 0.05,
                                            lambda *m: sets.append([x and x.t for x in m]))
    return a, sets


def test_adapter_emits_full_sets(adapter):
    a, sets = adapter
    for i in range(3):
        a.add(msg(1), i)
    assert sets == [[1, 1, 1]] and a.pending() is None


def test_adapter_rebuilds_without_a_missing_input_and_with_it_again(adapter):
    a, sets = adapter
    a.set_active(1, False)
    assert not a.is_active(1)
    a.add(msg(2), 1)  # ignored while inactive
    a.add(msg(2), 0)
    a.add(msg(2), 2)
    assert sets == [[2, None, 2]]
    a.set_active(1, True)
    a.add(msg(3), 0)
    a.add(msg(3), 2)
    assert len(sets) == 1
    a.add(msg(3), 1)
    assert sets[-1] == [3, 3, 3]
