"""Progress display for long work: a tqdm bar when tqdm is installed (an
optional dependency), else a single stderr line rewritten in place."""

from __future__ import annotations

import sys
import time

def format_bytes(n: float) -> str:
    """Decimal units: 1.5 GB, 20.0 MB, 512 B."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


class Progress:
    """``update_to(done)`` in bytes of ``total``; ``close()`` at the end."""

    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None):
        self.total = max(int(total), 1)
        self.desc = desc
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._bar = None
        self._done = 0
        self._start = time.monotonic()
        self._last = 0.0
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self._bar = tqdm(total=self.total, desc=desc, unit="B", unit_scale=True, unit_divisor=1000,
                             file=self.stream, leave=True, dynamic_ncols=True)

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)

    def update_to(self, done: int) -> None:
        done = min(int(done), self.total)
        if not self.enabled or done < self._done:
            return
        if self._bar is not None:
            self._bar.update(done - self._done)
            self._done = done
            return
        self._done = done
        now = time.monotonic()
        if now - self._last >= 0.2 or done == self.total:
            self._last = now
            self._line()

    def _line(self, end: str = "") -> None:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        pct = 100.0 * self._done / self.total
        rate = self._done / elapsed
        self.stream.write(f"\r{self.desc}: {pct:5.1f}% {format_bytes(self._done)} / {format_bytes(self.total)} "
                          f"({format_bytes(rate)}/s){end}")
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        else:
            self._line(end="\n")
        self.enabled = False
