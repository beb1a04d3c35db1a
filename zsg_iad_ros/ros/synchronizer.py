"""Approximate-time synchronizer that forms the same sets as message_filters' Python
`ApproximateTimeSynchronizer`, for installs that lack message_filters (the PyPI ROS wheels).

It knows nothing of ROS types: any object with `header.stamp` (`sec`/`nanosec`, or rclpy
`Time` with `nanoseconds`) works, so it is tested with hand-made stamped objects and no graph.

Semantics (those of message_filters, set for set):
- one queue per input keyed by stamp, in arrival order; a repeated stamp replaces the queued
  message in place; above `queue_size` the oldest stamp is dropped (possibly the new message);
- when a message arrives, the queued messages of every other input within `slop` of it
  (inclusive) are its candidates, closest first, equally close ones in queue order; the
  combinations are tried in that order and the first whose stamps spread *strictly less* than
  `slop` is emitted and removed from the queues. Nothing else is removed: messages older than
  an emitted set stay queued (they may still pair with a late partner) until the queue drops
  them. `slop` is converted to nanoseconds as rclpy's `Duration(seconds=slop)` does.
- headerless messages are refused unless `allow_headerless` (then stamped with the wall clock
  on arrival, as message_filters' ROS clock without simulated time).

Additions, none of which changes the sets above:
- every drop is reported through `on_drop(reason, index, msg)`;
- `set_active(index, False)` stops waiting for an input (a modality declared missing): sets
  then carry None for it. Its queued messages are kept and it is matched again once
  reactivated. Every switch re-offers the queued messages of the active inputs in (stamp,
  input) order, so pending sets without (or with) the switched input form at once;
- `queued_stamps`, `release` (emit a waiting message without some inputs) and `discard` let
  a caller close or drop a waiting part itself (`zsg_iad_ros.ros.parts`).
`zsg_iad_ros.ros.message_filters_sync` gives message_filters the same interface.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

#: drop reasons reported through on_drop.
DROP_OVERFLOW = "sync_queue_overflow"
DROP_DUPLICATE = "duplicate_stamp"
DROP_HEADERLESS = "headerless"
#: used by callers of `discard` for a message that can no longer form a set.
DROP_STALE = "unsynchronized"

S_TO_NS = 1_000_000_000


def stamp_ns(msg) -> Optional[int]:
    """Header stamp of `msg` in integer nanoseconds, or None when it has none."""
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    if stamp is None:
        return None
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    return int(stamp.sec) * S_TO_NS + int(stamp.nanosec)


def slop_to_ns(slop: float) -> int:
    """Seconds to integer nanoseconds, truncated as rclpy's Duration(seconds=...)."""
    return int(slop * S_TO_NS)


def check_sync_args(n_inputs: int, queue_size: int, slop: float) -> None:
    if n_inputs < 1:
        raise ValueError(f"n_inputs must be >= 1, got {n_inputs}")
    if queue_size < 1:
        raise ValueError(f"queue_size must be >= 1, got {queue_size}")
    if not slop >= 0.0:
        raise ValueError(f"slop must be >= 0 s, got {slop}")


def find_set(queues: Sequence[Dict[int, object]], index: int, stamp: int,
             among: Iterable[int], slop_ns: int) -> Optional[Dict[int, int]]:
    """message_filters' search for the message at `stamp` on input `index`: the stamps,
    {input: stamp}, of the first combination with one message of each input in `among` whose
    stamps spread strictly less than `slop_ns`, or None.

    Candidates are the queued stamps within slop_ns of `stamp` (inclusive), closest first,
    equally close ones in queue (insertion) order; combinations are tried in that order."""
    candidates = []
    among = list(among)
    for i in among:
        near = [s for s in queues[i] if abs(s - stamp) <= slop_ns]
        if not near:
            return None
        near.sort(key=lambda s: abs(s - stamp))  # stable: ties keep queue order
        candidates.append(near)
    for combo in itertools.product(*candidates):
        stamps = dict(zip(among, combo))
        stamps[index] = stamp
        if max(stamps.values()) - min(stamps.values()) < slop_ns:
            return stamps
    return None


def deliver(sets: list, drops: list, on_drop: Optional[Callable], callbacks: list) -> None:
    """What both synchronizer backends do with a step's outcome: report each drop
    (reason, input index, message) to `on_drop`, then hand each matched set to every callback."""
    if on_drop is not None:
        for reason, index, msg in drops:
            on_drop(reason, index, msg)
    for msgs in sets:
        for cb in callbacks:
            cb(*msgs)


class ApproximateTimeSynchronizer:
    """Group messages of `n_inputs` streams whose stamps spread less than `slop` seconds.

    Thread-safe; callbacks run outside the lock, in the thread that called `add`.
    """

    def __init__(self, n_inputs: int, queue_size: int, slop: float,
                 allow_headerless: bool = False,
                 on_drop: Optional[Callable[[str, int, object], None]] = None):
        check_sync_args(n_inputs, queue_size, slop)
        self.queue_size = int(queue_size)
        self.slop_ns = slop_to_ns(slop)
        self.allow_headerless = allow_headerless
        self.on_drop = on_drop
        self._queues: List[Dict[int, object]] = [{} for _ in range(n_inputs)]
        self._active = [True] * n_inputs
        self._callbacks: List[Callable] = []
        self._lock = threading.Lock()

    # -- public API -----------------------------------------------------------------------
    def register_callback(self, cb: Callable) -> None:
        """`cb(*msgs)` is called with one message per input (None for inactive inputs)."""
        self._callbacks.append(cb)

    def add(self, msg, index: int) -> None:
        """Offer `msg` arriving on input `index`."""
        stamp = stamp_ns(msg)
        if stamp is None:
            if not self.allow_headerless:
                self._emit([], [(DROP_HEADERLESS, index, msg)])
                return
            stamp = time.time_ns()
        drops: list = []
        with self._lock:
            matched = self._insert(index, stamp, msg, drops)
        self._emit(matched, drops)

    def set_active(self, index: int, active: bool) -> None:
        """Wait for input `index` again (True) or stop waiting for it (False); its queued
        messages are kept either way, and pending sets are formed again at once."""
        with self._lock:
            if self._active[index] == active:
                return
            self._active[index] = active
            matched = self._reoffer()
        self._emit(matched, [])

    def is_active(self, index: int) -> bool:
        return self._active[index]

    def pending(self) -> List[int]:
        """Number of queued messages per input."""
        with self._lock:
            return [len(q) for q in self._queues]

    def queued_stamps(self, index: int) -> List[int]:
        """Stamps [ns] queued on input `index`, oldest first."""
        with self._lock:
            return sorted(self._queues[index])

    def discard(self, index: int, stamp: int, reason: str) -> bool:
        """Remove the message queued on `index` at `stamp`, reporting it dropped for `reason`.
        Returns False when no such message is queued."""
        with self._lock:
            msg = self._queues[index].pop(stamp, None)
        if msg is None:
            return False
        self._emit([], [(reason, index, msg)])
        return True

    def release(self, index: int, stamp: int, without: Iterable[int] = ()) -> bool:
        """Emit the message queued on `index` at `stamp` in a set that leaves out the inputs
        `without` (None in the set), when the other active inputs have partners for it.
        Returns False (and leaves the queues alone) when no such set exists."""
        with self._lock:
            matched = self._match(index, stamp, set(without)) \
                if self._active[index] and stamp in self._queues[index] else []
        self._emit(matched, [])
        return bool(matched)

    # -- internals (lock held) --------------------------------------------------------------
    def _insert(self, index: int, stamp: int, msg, drops: list) -> List[tuple]:
        queue = self._queues[index]
        if stamp in queue:
            drops.append((DROP_DUPLICATE, index, queue[stamp]))
        queue[stamp] = msg  # a repeated stamp keeps its place in the queue
        while len(queue) > self.queue_size:
            oldest = min(queue)
            drops.append((DROP_OVERFLOW, index, queue.pop(oldest)))
        if not self._active[index] or stamp not in queue:
            return []
        return self._match(index, stamp)

    def _match(self, index: int, stamp: int, without=()) -> List[tuple]:
        among = [i for i in range(len(self._queues))
                 if i != index and self._active[i] and i not in without]
        found = find_set(self._queues, index, stamp, among, self.slop_ns)
        if found is None:
            return []
        return [tuple(self._queues[i].pop(found[i]) if i in found else None
                      for i in range(len(self._queues)))]

    def _reoffer(self) -> List[tuple]:
        active = [i for i, a in enumerate(self._active) if a]
        waiting = sorted(((s, i, m) for i in active for s, m in self._queues[i].items()),
                         key=lambda w: w[:2])
        for i in active:
            self._queues[i].clear()
        matched = []
        for stamp, i, msg in waiting:
            matched += self._insert(i, stamp, msg, [])
        return matched

    def _emit(self, matched: list, drops: list) -> None:
        deliver(matched, drops, self.on_drop, self._callbacks)
