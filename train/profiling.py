"""Where a step's time and memory go: seconds and peak memory per stage (verl's ``timing_s/*`` and
``perf/max_memory_*``).

``Stages`` times named blocks of the step and records each block's peak memory: CUDA's max allocated
bytes on a GPU (its peak counter reset when the block starts), the process's peak resident set
elsewhere (Linux resets the ``VmHWM`` high-water mark through ``/proc/self/clear_refs``; where that
is not possible the peak is the resident set at the block's end, and ``memory/peak_is_exact`` says 0).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

GIB = float(1 << 30)
_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


class Stages:
    """Seconds and peak memory of the named blocks of one step; ``metrics()`` reads them out and restarts."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak_gib: dict[str, float] = {}
        self.exact = True

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._reset_peak()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.peak_gib[name] = max(self.peak_gib.get(name, 0.0), self._peak() / GIB)

    def metrics(self) -> dict[str, float]:
        """``time/<stage>`` seconds and ``memory/<stage>_peak_gib`` of this process; then starts afresh."""
        out = {f"time/{name}": seconds for name, seconds in self.seconds.items()}
        out.update({f"memory/{name}_peak_gib": gib for name, gib in self.peak_gib.items()})
        out["memory/peak_is_exact"] = float(self.exact)
        self.seconds, self.peak_gib = {}, {}
        return out

    def _reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
        except OSError:
            self.exact = False

    def _peak(self) -> float:
        if self.device.type == "cuda":
            return float(torch.cuda.max_memory_allocated(self.device))
        return float(_status_kib("VmHWM" if self.exact else "VmRSS")) * 1024


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (0 where there is no such file)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
