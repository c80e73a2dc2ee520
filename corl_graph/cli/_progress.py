"""A small progress bar on stderr (no dependency): redraws in place on a terminal, prints a
line per 10% otherwise (CI logs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """A progress line for long CLI steps: a bar on a terminal, plain lines otherwise.

    >>> p = Progress(4, "demo", stream=sys.stdout, tty=False); p.advance(4)
    demo 4/4 (100%)
    """

    def __init__(
        self, total: int, label: str, *, stream: TextIO | None = None, tty: bool | None = None
    ):
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._started = time.perf_counter()
        self._last_decile = -1

    def advance(self, n: int = 1) -> None:
        self.done += n
        frac = min(self.done / self.total, 1.0)
        if self._tty:
            bar = "#" * int(frac * 30)
            rate = self.done / max(time.perf_counter() - self._started, 1e-9)
            self._stream.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {rate:.0f}/s")
            if self.done >= self.total:
                self._stream.write("\n")
        elif int(frac * 10) > self._last_decile:
            self._last_decile = int(frac * 10)
            self._stream.write(f"{self.label} {self.done}/{self.total} ({frac:.0%})\n")
        self._stream.flush()
