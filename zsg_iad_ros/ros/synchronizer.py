"""Approximate-time synchronizer with the semantics of message_filters' Python
`ApproximateTimeSynchronizer`, for installs that lack message_filters (the PyPI ROS wheels).

It knows nothing of ROS types: any object with `header.stamp` (`sec`/`nanosec`, or rclpy
`Time` with `nanoseconds`) works, so it is tested with hand-made stamped objects and no graph.

Semantics (as message_filters): one queue per input keyed by stamp, at most `queue_size`
entries, the oldest dropped on overflow and a repeated stamp replacing the queued message; when
a message arrives, the candidates of every other input within `slop` of it are tried, closest
first, and the first combination whose stamps all lie within `slop` of each other is emitted
and removed from the queues. Headerless messages are refused unless `allow_headerless` (then
they are stamped with the wall clock on arrival).

Differences, each so that every message is accounted for:
- spread <= slop matches (message_filters requires < slop, so slop=0 never matched);
- `drop_stale` (default on): after a set is emitted, queued messages older than it on each
  input can no longer form a newer set and are dropped ('unsynchronized');
- every drop is reported through `on_drop(reason, index, msg)`;
- inputs can be deactivated (`set_active`) when a modality stops arriving: they are then not
  waited for and are passed as None in the emitted tuple.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Callable, Dict, List, Optional

#: drop reasons reported through on_drop.
DROP_OVERFLOW = "sync_queue_overflow"
DROP_DUPLICATE = "duplicate_stamp"
DROP_STALE = "unsynchronized"
DROP_HEADERLESS = "headerless"
DROP_INACTIVE = "modality_inactive"


def stamp_ns(msg) -> Optional[int]:
    """Header stamp of `msg` in integer nanoseconds, or None when it has none."""
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    if stamp is None:
        return None
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class ApproximateTimeSynchronizer:
    """Group messages of `n_inputs` streams whose stamps lie within `slop` seconds.

    Thread-safe; callbacks run outside the lock, in the thread that called `add`.
    """

    def __init__(self, n_inputs: int, queue_size: int, slop: float,
                 allow_headerless: bool = False, drop_stale: bool = True,
                 on_drop: Optional[Callable[[str, int, object], None]] = None):
        if n_inputs < 1:
            raise ValueError(f"n_inputs must be >= 1, got {n_inputs}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not slop >= 0.0:
            raise ValueError(f"slop must be >= 0 s, got {slop}")
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(slop * 1e9))
        self.allow_headerless = allow_headerless
        self.drop_stale = drop_stale
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
        with self._lock:
            drops = []
            if not self._active[index]:
                drops.append((DROP_INACTIVE, index, msg))
                matched = []
            else:
                queue = self._queues[index]
                if stamp in queue:
                    drops.append((DROP_DUPLICATE, index, queue[stamp]))
                queue[stamp] = msg
                while len(queue) > self.queue_size:
                    oldest = min(queue)
                    drops.append((DROP_OVERFLOW, index, queue.pop(oldest)))
                matched = self._match(index, stamp, drops) if stamp in queue else []
        self._emit(matched, drops)

    def set_active(self, index: int, active: bool) -> None:
        """Wait for input `index` again (True) or stop waiting for it (False).

        Deactivating drops its queued messages and retries the others' pending messages.
        """
        with self._lock:
            if self._active[index] == active:
                return
            self._active[index] = active
            drops = [(DROP_INACTIVE, index, m) for m in self._queues[index].values()]
            self._queues[index].clear()
            matched = [] if active else self._rematch(drops)
        self._emit(matched, drops)

    def is_active(self, index: int) -> bool:
        return self._active[index]

    def pending(self) -> List[int]:
        """Number of queued messages per input."""
        with self._lock:
            return [len(q) for q in self._queues]

    def clear(self) -> List[int]:
        """Empty all queues (no drop callbacks); returns how many messages each held."""
        with self._lock:
            counts = [len(q) for q in self._queues]
            for q in self._queues:
                q.clear()
            return counts

    # -- internals (lock held) --------------------------------------------------------------
    def _match(self, index: int, stamp: int, drops: list) -> List[tuple]:
        others = [i for i in range(len(self._queues)) if i != index and self._active[i]]
        candidates = []
        for i in others:
            near = sorted((abs(s - stamp), s) for s in self._queues[i]
                          if abs(s - stamp) <= self.slop_ns)
            if not near:
                return []
            candidates.append([s for _, s in near])
        for combo in itertools.product(*candidates):
            stamps = dict(zip(others, combo))
            stamps[index] = stamp
            if max(stamps.values()) - min(stamps.values()) <= self.slop_ns:
                msgs = tuple(self._queues[i].pop(stamps[i]) if i in stamps else None
                             for i in range(len(self._queues)))
                if self.drop_stale:
                    for i, s in stamps.items():
                        for old in [t for t in self._queues[i] if t < s]:
                            drops.append((DROP_STALE, i, self._queues[i].pop(old)))
                return [msgs]
        return []

    def _rematch(self, drops: list) -> List[tuple]:
        active = [i for i, a in enumerate(self._active) if a]
        if not active:
            return []
        first = active[0]
        matched = []
        for stamp in sorted(self._queues[first]):
            if stamp in self._queues[first]:
                matched += self._match(first, stamp, drops)
        return matched

    def _emit(self, matched: list, drops: list) -> None:
        if self.on_drop is not None:
            for reason, index, msg in drops:
                self.on_drop(reason, index, msg)
        for msgs in matched:
            for cb in self._callbacks:
                cb(*msgs)
