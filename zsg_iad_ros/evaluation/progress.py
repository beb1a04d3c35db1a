"""Progress of an evaluation on the terminal: parts done / total, rate and ETA.

One meter covers a whole run (every configuration and draw), whether the parts are scored in
this process or by Ray workers that report whole shards at a time. Output goes to stderr and is
throttled: on a terminal one line is rewritten in place at most once per `min_interval_s`; in a
log (not a terminal) a line is printed each time another `every` parts are done, again at most
once per `min_interval_s`. `close()` always prints the final line, so a log keeps the totals.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional


class ProgressMeter:
    """Counts parts done (and failed) out of `total`; `every=0` makes it silent."""

    def __init__(self, total: int, label: str, every: int = 25, min_interval_s: float = 1.0,
                 stream=None, clock: Callable[[], float] = time.monotonic):
        if total < 0 or every < 0 or min_interval_s < 0:
            raise ValueError("total, every and min_interval_s must be >= 0")
        self.total, self.label, self.every = int(total), label, int(every)
        self.min_interval_s = float(min_interval_s)
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.count = 0
        self.failed = 0
        self.stage = ""
        self.t0 = clock()
        self._last_print: Optional[float] = None
        self._printed_count = 0
        self._closed = False
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())

    def update(self, n: int = 1, failed: int = 0, stage: Optional[str] = None) -> None:
        """`n` more parts done, `failed` of them lost (e.g. a shard whose worker died)."""
        self.count += n
        self.failed += failed
        if stage is not None:
            self.stage = stage
        if not self.every:
            return
        now = self.clock()
        if self._last_print is not None and now - self._last_print < self.min_interval_s:
            return
        if not self.tty and self.count // self.every == self._printed_count // self.every:
            return
        self._emit(now, final=False)

    def close(self) -> None:
        """Print the final line (once)."""
        if self.every and not self._closed:
            self._emit(self.clock(), final=True)
        self._closed = True

    def line(self, now: Optional[float] = None) -> str:
        elapsed = (self.clock() if now is None else now) - self.t0
        rate = self.count / elapsed if elapsed > 0 else 0.0
        text = f"[{self.label}] {self.count}/{self.total} parts"
        if self.stage:
            text += f" ({self.stage})"
        if self.failed:
            text += f", {self.failed} failed"
        text += f", {rate:.2f} parts/s"
        if self.count >= self.total:
            return text + f", done in {elapsed:.0f} s"
        eta = f"{(self.total - self.count) / rate:.0f} s" if rate > 0 else "?"
        return text + f", ETA {eta}"

    def _emit(self, now: float, final: bool) -> None:
        text = self.line(now)
        if self.tty:
            # Rewrite one line in place; pad so a shorter line hides the previous one.
            self.stream.write("\r" + text.ljust(79) + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._last_print = now
        self._printed_count = self.count
