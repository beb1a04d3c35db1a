"""message_filters' `ApproximateTimeSynchronizer` behind the interface of the package's own
synchronizer (`zsg_iad_ros.ros.synchronizer`), so that the node treats both backends alike.

message_filters forms the sets; this adapter adds what the node needs around it:
- drops reported through `on_drop(reason, index, msg)`: its queues are compared before and
  after each message, and a message that left them outside an emitted set was dropped (the
  oldest on overflow, or one replaced by a message with the same stamp);
- inputs switched off and on without losing queued messages: the synchronizer is rebuilt over
  the active inputs and every queued message of theirs is offered to it again in (stamp,
  input) order, as the built-in one does; an inactive input's messages wait aside;
- `pending`, `queued_stamps`, `discard` and `release`, on its queues.
It relies on `queues` (one dict stamp [ns] -> message per input), an attribute message_filters'
TimeSynchronizer has had since ROS 1; a version without it is refused at construction.
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, Iterable, List, Optional

from zsg_iad_ros.ros.synchronizer import (DROP_DUPLICATE, DROP_HEADERLESS, DROP_OVERFLOW,
                                          check_sync_args, deliver, find_set, slop_to_ns,
                                          stamp_ns)


class MessageFiltersSync:
    """`module` is the imported message_filters (anything with its `SimpleFilter` and
    `ApproximateTimeSynchronizer(fs, queue_size, slop)`). Headerless messages are refused.

    Thread-safe; callbacks run outside the lock, in the thread that called in.
    """

    def __init__(self, module, n_inputs: int, queue_size: int, slop: float,
                 on_drop: Optional[Callable[[str, int, object], None]] = None):
        check_sync_args(n_inputs, queue_size, slop)
        self._mf = module
        self._n = n_inputs
        self.queue_size = int(queue_size)
        self.slop = float(slop)
        self.slop_ns = slop_to_ns(slop)
        self.on_drop = on_drop
        self._active = [True] * n_inputs
        self._parked: List[Dict[int, object]] = [{} for _ in range(n_inputs)]
        self._callbacks: List[Callable] = []
        self._collected: List[tuple] = []
        self._lock = threading.Lock()
        self._build()

    # -- public API (that of the built-in synchronizer) -----------------------------------
    def register_callback(self, cb: Callable) -> None:
        """`cb(*msgs)` is called with one message per input (None for inactive inputs)."""
        self._callbacks.append(cb)

    def add(self, msg, index: int) -> None:
        stamp = stamp_ns(msg)
        if stamp is None:
            self._dispatch([], [(DROP_HEADERLESS, index, msg)])
            return
        drops: list = []
        with self._lock:
            if self._active[index]:
                sets = self._feed(index, stamp, msg, drops)
            else:
                sets = []
                self._park(index, stamp, msg, drops)
        self._dispatch(sets, drops)

    def set_active(self, index: int, active: bool) -> None:
        with self._lock:
            if self._active[index] == active:
                return
            queued = [self._queue(i) for i in range(self._n)]
            self._active[index] = active
            self._build()
            waiting = []
            for i, q in enumerate(queued):
                if self._active[i]:
                    waiting += [(s, i, m) for s, m in q.items()]
                    self._parked[i] = {}
                else:
                    self._parked[i] = dict(q)
            sets: list = []
            for s, i, m in sorted(waiting, key=lambda w: w[:2]):
                sets += self._feed(i, s, m, [])
        self._dispatch(sets, [])

    def is_active(self, index: int) -> bool:
        return self._active[index]

    def pending(self) -> List[int]:
        with self._lock:
            return [len(self._queue(i)) for i in range(self._n)]

    def queued_stamps(self, index: int) -> List[int]:
        with self._lock:
            return sorted(self._queue(index))

    def discard(self, index: int, stamp: int, reason: str) -> bool:
        with self._lock:
            msg = self._queue(index).pop(stamp, None)
        if msg is None:
            return False
        self._dispatch([], [(reason, index, msg)])
        return True

    def release(self, index: int, stamp: int, without: Iterable[int] = ()) -> bool:
        without = set(without)
        with self._lock:
            queues = [self._queue(i) for i in range(self._n)]
            found = None
            if self._active[index] and stamp in queues[index]:
                among = [i for i in range(self._n)
                         if i != index and self._active[i] and i not in without]
                found = find_set(queues, index, stamp, among, self.slop_ns)
            msgs = None if found is None else tuple(
                queues[i].pop(found[i]) if i in found else None for i in range(self._n))
        self._dispatch([] if msgs is None else [msgs], [])
        return msgs is not None

    # -- internals (lock held) --------------------------------------------------------------
    def _build(self) -> None:
        self._idx = [i for i in range(self._n) if self._active[i]]
        self._filters = [self._mf.SimpleFilter() for _ in self._idx]
        sync = self._mf.ApproximateTimeSynchronizer(self._filters, self.queue_size, self.slop)
        queues = getattr(sync, "queues", None)
        if not (isinstance(queues, list) and len(queues) == len(self._idx)
                and all(isinstance(q, dict) for q in queues)):
            raise RuntimeError("this message_filters' ApproximateTimeSynchronizer keeps no "
                               "per-input `queues`; use sync_backend: builtin")
        sync.registerCallback(self._collect)
        self._sync = sync

    def _collect(self, *msgs) -> None:  # called by message_filters inside _feed
        self._collected.append(msgs)

    def _queue(self, index: int) -> Dict[int, object]:
        if self._active[index]:
            return self._sync.queues[self._idx.index(index)]
        return self._parked[index]

    def _feed(self, index: int, stamp: int, msg, drops: list) -> List[tuple]:
        j = self._idx.index(index)
        queues = self._sync.queues
        before = [dict(q) for q in queues]
        self._collected = []
        self._filters[j].signalMessage(msg)
        sets, self._collected = self._collected, []
        emitted = {id(m) for s in sets for m in s}
        for k, q in enumerate(queues):
            for s, m in before[k].items():
                if q.get(s) is not m and id(m) not in emitted:
                    reason = DROP_DUPLICATE if (k == j and s == stamp) else DROP_OVERFLOW
                    drops.append((reason, self._idx[k], m))
        if id(msg) not in emitted and queues[j].get(stamp) is not msg:
            drops.append((DROP_OVERFLOW, index, msg))  # the oldest stamp itself
        out = []
        for s in sets:
            full = [None] * self._n
            for i, m in zip(self._idx, s):
                full[i] = m
            out.append(tuple(full))
        return out

    def _park(self, index: int, stamp: int, msg, drops: list) -> None:
        queue = self._parked[index]
        if stamp in queue:
            drops.append((DROP_DUPLICATE, index, queue[stamp]))
        queue[stamp] = msg
        while len(queue) > self.queue_size:
            drops.append((DROP_OVERFLOW, index, queue.pop(min(queue))))

    def _dispatch(self, sets: list, drops: list) -> None:
        deliver(sets, drops, self.on_drop, self._callbacks)
