"""Parts from synchronized sets, and when a modality counts as missing for a part.

A part is announced by its RGB image (input 0: always required, its header is the output
header). The synchronizer (the built-in one or message_filters through its adapter) forms the
sets; on top of it, with `allow_missing`:

- a part whose set has not formed `missing_timeout_s` after its RGB arrived closes without
  the modalities that have nothing queued within the slop of it: they are missing for that
  part. If its RGB still cannot form a set (partners there, but spread over the slop) it is
  dropped as `unsynchronized`;
- a modality that has sent nothing since a part began waiting for it `missing_timeout_s` ago
  has stopped: the waiting parts close without it, and the next parts are not held for it
  (this clock survives RGB images the synchronizer's queue drops, so a fast stream does not
  starve behind a dead modality);
- parts are held for it again as soon as a message of it arrives, or once no part has closed
  without it for `missing_timeout_s` (the cell paused: one lost cloud does not cost the next
  part of a triggered cell its cloud).
Time between parts never makes a modality missing: only a part that lacks it does. Timing
starts with the first RGB image, so a slow model load or a long pause costs nothing.
Without `allow_missing`, parts wait for every modality (message_filters' behaviour) and the
synchronizer's queue drops what cannot be completed.

`drop_stale` (off by default, as in message_filters): once a set forms, queued messages older
than it are dropped as `unsynchronized` instead of waiting for a late partner.

Plain Python with the clock passed in (`now`, monotonic seconds), so tests run it on a
simulated clock.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from zsg_iad_ros.ros.synchronizer import DROP_STALE, stamp_ns

MISSING = "missing"  #: a modality stopped: parts are no longer held for it
RESUMED = "resumed"  #: parts are held for a modality again (`reason`: arrived or pause)
RELEASED = "released"  #: a part closed without the inputs `without` after waiting
DROPPED = "dropped"  #: a part's RGB could form no set in time and was dropped


@dataclass(frozen=True)
class PartEvent:
    kind: str
    index: Optional[int] = None  # the input concerned (missing / resumed)
    stamp: Optional[int] = None  # RGB stamp [ns] of the part (released / dropped)
    without: Tuple[int, ...] = ()  # inputs a released part lacks
    reason: str = ""
    waited_s: float = 0.0


class PartAssembler:
    """Wraps a synchronizer with the interface of `zsg_iad_ros.ros.synchronizer`
    (`add`, `set_active`, `is_active`, `queued_stamps`, `release`, `discard`, `slop_ns`).

    Feed every valid message through `offer`, call `expire` periodically (e.g. every 0.1 s);
    both return the `PartEvent`s worth logging. Thread-safe.
    """

    def __init__(self, sync, *, missing_timeout_s: float, allow_missing: bool = True,
                 drop_stale: bool = False, optional: Sequence[int] = (1, 2)):
        self.sync = sync
        self.missing_timeout_s = float(missing_timeout_s)
        self.allow_missing = allow_missing
        self.drop_stale = drop_stale
        self._optional = tuple(optional)
        self._lock = threading.RLock()
        self._now = 0.0
        self._callbacks: List[Callable] = []
        self._arrival: Dict[int, float] = {}  # queued RGB stamp -> its arrival
        self._last_arrival: Dict[int, float] = {}  # input -> arrival of its last message
        self._unserved_since: Dict[int, float] = {}  # input -> a part waits for it since
        self._closed_without: Dict[int, float] = {}  # input -> a part last closed without it
        sync.register_callback(self._on_set)

    def register_callback(self, cb: Callable) -> None:
        """`cb(*msgs)` for every part: one message per input, None for a missing one."""
        self._callbacks.append(cb)

    # -- feeding ------------------------------------------------------------------------------
    def offer(self, msg, index: int, now: float) -> List[PartEvent]:
        events = []
        with self._lock:
            self._now = now
            if not self.sync.is_active(index):
                self.sync.set_active(index, True)
                events.append(PartEvent(RESUMED, index=index, reason="arrived"))
            self._last_arrival[index] = now
            self._unserved_since.pop(index, None)
            if index == 0:
                stamp = stamp_ns(msg)
                if stamp is not None and stamp not in self.sync.queued_stamps(0):
                    self._arrival[stamp] = now  # a repeated stamp keeps the first arrival
            self.sync.add(msg, index)
        return events

    def expire(self, now: float) -> List[PartEvent]:
        """Close the parts that waited `missing_timeout_s`; stop and resume waiting for
        modalities (see the module docstring)."""
        events: List[PartEvent] = []
        with self._lock:
            self._now = now
            queued = self.sync.queued_stamps(0)
            self._arrival = {s: t for s, t in self._arrival.items() if s in queued}
            if not self.allow_missing:
                return events
            timeout = self.missing_timeout_s
            for i in self._optional:  # parts paused: hold the next ones for it again
                if not self.sync.is_active(i) and \
                        now - self._closed_without.get(i, -math.inf) >= timeout:
                    self.sync.set_active(i, True)
                    events.append(PartEvent(RESUMED, index=i, reason="pause"))
            for i in self._optional:  # stopped modalities
                if not self.sync.is_active(i):
                    continue
                last = self._last_arrival.get(i, -math.inf)
                waiting = [self._arrival[s] for s in queued
                           if s in self._arrival and self._arrival[s] > last
                           and not self._has_partner(i, s)]
                if waiting and i not in self._unserved_since:
                    self._unserved_since[i] = min(waiting)
                since = self._unserved_since.get(i)
                if since is not None and now - since >= timeout:
                    del self._unserved_since[i]
                    self._closed_without[i] = now
                    events.append(PartEvent(MISSING, index=i, waited_s=now - since))
                    self.sync.set_active(i, False)  # the parts waiting for it close now
            for stamp, arrived in sorted(self._arrival.items(), key=lambda a: a[1]):
                if now - arrived < timeout or stamp not in self.sync.queued_stamps(0):
                    continue
                without = tuple(i for i in self._optional if self.sync.is_active(i)
                                and not self._has_partner(i, stamp))
                if self.sync.release(0, stamp, without):
                    events.append(PartEvent(RELEASED, stamp=stamp, without=without,
                                            waited_s=now - arrived))
                else:
                    self.sync.discard(0, stamp, DROP_STALE)
                    events.append(PartEvent(DROPPED, stamp=stamp, waited_s=now - arrived))
                self._arrival.pop(stamp, None)
        return events

    # -- internals ----------------------------------------------------------------------------
    def _has_partner(self, index: int, stamp: int) -> bool:
        """A message of `index` could still join the part at `stamp` (spread < slop)."""
        slop = self.sync.slop_ns
        return any(abs(s - stamp) < slop for s in self.sync.queued_stamps(index))

    def _on_set(self, *msgs) -> None:
        stale = []
        with self._lock:
            rgb_stamp = stamp_ns(msgs[0])
            self._arrival.pop(rgb_stamp, None)
            for i in self._optional:
                if msgs[i] is None:
                    self._closed_without[i] = self._now
            if self.drop_stale:
                for i, m in enumerate(msgs):
                    if m is not None:
                        s = stamp_ns(m)
                        stale += [(i, q) for q in self.sync.queued_stamps(i) if q < s]
            for i, q in stale:
                self.sync.discard(i, q, DROP_STALE)
            for cb in self._callbacks:
                cb(*msgs)
