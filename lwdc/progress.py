"""Progress of a loop: a tqdm bar on a terminal, plain lines elsewhere.

tqdm redraws its bar with carriage returns, which a log file or a CI console keeps as one line per redraw (a
flood). When the stream is not a terminal, ``progress`` prints a plain line at each quarter of the loop instead,
and only when some seconds have passed since the last line, so a quick epoch prints nothing and a long one a few
lines. ``LWDC_PROGRESS=bar|lines|off`` overrides the choice.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, TextIO

__all__ = ["progress", "LineProgress"]


class LineProgress:
    """Iterates ``iterable``; at each ``every`` fraction of ``total`` (and at least ``min_interval`` seconds after
    the previous line) writes ``desc: 50% (40/80, 12s, loss=1.234)``."""

    def __init__(self, iterable: Iterable, total: int | None, desc: str, initial: int = 0, stream: TextIO | None = None,
                 every: float = 0.25, min_interval: float = 10.0):
        self.iterable, self.total, self.desc, self.n = iterable, total, desc, initial
        self.stream = stream if stream is not None else sys.stderr
        self.every, self.min_interval = every, min_interval
        self.postfix = ""
        self.start = self.last = time.perf_counter()
        self.next_mark = (int(initial / total / every) + 1) * every if total else None

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1
            if self.total and self.n / self.total >= self.next_mark - 1e-9:
                while self.next_mark <= self.n / self.total + 1e-9:
                    self.next_mark += self.every
                now = time.perf_counter()
                if now - self.last >= self.min_interval and self.n < self.total:
                    self.last = now
                    self.stream.write(f"{self.desc}: {100 * self.n / self.total:.0f}% ({self.n}/{self.total}, "
                                      f"{now - self.start:.0f}s{', ' + self.postfix if self.postfix else ''})\n")
                    self.stream.flush()

    def close(self) -> None:
        pass


class _Off:
    def __init__(self, iterable: Iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass


def progress(iterable: Iterable, *, total: int | None, desc: str, enabled: bool = True, initial: int = 0,
             stream: TextIO | None = None):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, ``LineProgress`` when it is not, nothing when
    ``enabled`` is false; all three have ``set_postfix`` and ``close``."""
    mode = os.environ.get("LWDC_PROGRESS", "").strip().lower()
    if not enabled or mode == "off":
        return _Off(iterable)
    stream = stream if stream is not None else sys.stderr
    notebook = "ipykernel" in sys.modules          # tqdm.auto draws a widget there, no carriage returns
    tty = mode == "bar" or (mode != "lines" and (notebook or (hasattr(stream, "isatty") and stream.isatty())))
    if tty:
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, file=stream)
    return LineProgress(iterable, total, desc, initial, stream)
