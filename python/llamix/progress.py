"""A minimal progress bar: drawn on a terminal's stderr, silent when piped or asked to be quiet."""
from __future__ import annotations

import os
import sys
import time


class Progress:
    """``with Progress(total, "quantize") as p: ... p.update(n)``; prints nothing unless stderr is a TTY."""

    def __init__(self, total: float, desc: str = "", unit: str = "", quiet: bool | None = None, stream=None):
        self.total = max(float(total), 1e-12)
        self.desc = desc
        self.unit = unit
        self.done = 0.0
        self.stream = stream or sys.stderr
        if quiet is None:
            quiet = bool(os.environ.get("LLAMIX_QUIET")) or not getattr(self.stream, "isatty", lambda: False)()
        self.quiet = quiet
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, n: float = 1, note: str = "") -> None:
        self.done += n
        now = time.perf_counter()
        if not self.quiet and (now - self._last_draw > 0.1 or self.done >= self.total):
            self._last_draw = now
            self._draw(now, note)

    def _draw(self, now: float, note: str) -> None:
        frac = min(self.done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        elapsed = now - self._start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        self.stream.write(f"\r{self.desc} [{bar}] {frac * 100:5.1f}% {elapsed:6.1f}s eta {eta:5.1f}s {note[:40]:<40}")
        self.stream.flush()

    def close(self) -> None:
        if not self.quiet:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
