"""Shared helpers for the fastensors benchmarks.

Timing (``time.perf_counter``, medians of N runs), the synthetic state dict,
peak-RSS reading, page-cache and dirty-page probes, machine description and
markdown tables. Only the standard library, numpy and (for the state dict)
torch are used."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import mmap
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, Iterable, List, Sequence

import numpy as np

MiB = 1 << 20
GB = 1e9  # throughput is reported in decimal GB/s

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")


# -- timing -------------------------------------------------------------------

def time_call(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (``time.perf_counter``)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def summarize(values: Sequence[float]) -> Dict[str, object]:
    """Median, min, max and every run, for the JSON record."""
    return {"median": median(values), "min": min(values), "max": max(values), "runs": list(values)}


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / GB if seconds > 0 else float("inf")


# -- state dicts ----------------------------------------------------------------

def tensor_shapes(total_mib: int, n_tensors: int = 64, itemsize: int = 2, cols: int = 1024) -> List[tuple]:
    """``n_tensors`` 2-D shapes of equal byte size summing to ``total_mib`` MiB
    (``cols`` elements per row; the last tensor takes the remainder)."""
    total_elems = total_mib * MiB // itemsize
    rows_total = total_elems // cols
    base = rows_total // n_tensors
    if base == 0:
        raise ValueError(f"{total_mib} MiB is too small for {n_tensors} tensors of {cols} columns")
    rows = [base] * n_tensors
    rows[-1] += rows_total - base * n_tensors
    return [(r, cols) for r in rows]


def make_state_dict(total_mib: int = 1024, n_tensors: int = 64, dtype: str = "bfloat16", seed: int = 0):
    """A torch state dict of ``n_tensors`` tensors totalling ``total_mib`` MiB.

    Values are random bit patterns written in place (no temporaries, so the
    process's peak RSS after building equals its RSS), made finite by
    clearing one exponent bit so every value is an ordinary float."""
    import torch

    dt = getattr(torch, dtype)
    itemsize = torch.empty((), dtype=dt).element_size()
    if itemsize != 2:
        raise ValueError("make_state_dict builds 16-bit float state dicts only")
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for i, shape in enumerate(tensor_shapes(total_mib, n_tensors, itemsize)):
        t = torch.empty(shape, dtype=dt)
        bits = t.view(torch.int16)
        bits.random_(-(1 << 15), 1 << 15, generator=gen)
        bits.bitwise_and_(~(1 << 14))  # top exponent bit off: finite, no NaN/Inf
        sd[f"model.layers.{i // 8}.block.{i % 8}.weight"] = t
    return sd


def state_dict_nbytes(sd) -> int:
    return sum(t.nelement() * t.element_size() for t in sd.values())


# -- touching every byte -------------------------------------------------------

def touch_bytes(arr: np.ndarray) -> int:
    """Read every byte of a contiguous array the same cheap way for everyone:
    an XOR reduction over a uint64 view (falls back to uint8 for odd sizes)."""
    flat = arr.reshape(-1).view(np.uint8)
    if flat.size % 8 == 0 and flat.ctypes.data % 8 == 0:
        return int(np.bitwise_xor.reduce(flat.view(np.uint64)))
    return int(np.bitwise_xor.reduce(flat))


def touch_torch(t) -> int:
    """``touch_bytes`` on a uint8 view of a torch tensor's bytes (no copy)."""
    import torch

    return touch_bytes(t.reshape(-1).view(torch.uint8).numpy())


# -- memory --------------------------------------------------------------------

def proc_status_kib(field: str, pid: str = "self") -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, ...), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/self/clear_refs``,
    Linux >= 4.0). Returns False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def meminfo_kib(field: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def dirty_mib() -> float:
    """System-wide dirty + writeback page cache, MiB."""
    return (meminfo_kib("Dirty") + meminfo_kib("Writeback")) / 1024


def collect() -> None:
    gc.collect()


# -- page cache ----------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def cached_fraction(path: str) -> float:
    """Fraction of ``path``'s pages resident in the page cache (mincore)."""
    size = os.path.getsize(path)
    if size == 0:
        return 1.0
    page = mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return float("nan")
        try:
            pages = (size + page - 1) // page
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                return float("nan")
            return float(np.frombuffer(vec, np.uint8).__and__(1).sum()) / pages
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def warm_file(path: str) -> float:
    """Read ``path`` once so it sits in the page cache; returns the cached fraction."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(16 * MiB)
        while f.readinto(buf):
            pass
    return cached_fraction(path)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- machine -------------------------------------------------------------------

def _run(cmd: List[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def loadavg() -> List[float]:
    return list(os.getloadavg())


def machine_info(path: str) -> Dict[str, object]:
    """What the benchmark ran on: CPU, cores, memory, filesystem, versions."""
    info: Dict[str, object] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "lscpu": _run(["lscpu"]).splitlines()[:20],
        "free": _run(["free", "-h"]).splitlines(),
        "df": _run(["df", "-T", path]).splitlines(),
        "loadavg": loadavg(),
    }
    for mod in ("fastensors", "safetensors", "torch", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # pragma: no cover - reported, not fatal
            info[mod] = f"unavailable: {e}"
    return info


# -- output --------------------------------------------------------------------

def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table; numeric cells right-aligned."""
    rows = [[_cell(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    numeric = [all(_is_num(r[i]) for r in rows) and bool(rows) for i in range(len(headers))]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric)) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def _cell(c: object) -> str:
    if c is None:
        return "—"
    if isinstance(c, float):
        return f"{c:.3f}"
    return str(c)


def _is_num(s: str) -> bool:
    try:
        float(s.rstrip("x"))
        return True
    except ValueError:
        return s == "—"


def write_json(name: str, payload: Dict[str, object]) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, name)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    return path


def free_disk_bytes(path: str) -> int:
    return shutil.disk_usage(path).free


class Context:
    """What every run of a benchmark script shares: the state-dict size, the
    run count, sync/warm-up switches and the scratch directory."""

    def __init__(self, args):
        self.size_mib = args.size_mib
        self.tensors = args.tensors
        self.runs = args.runs
        # Scripts without these switches always sync and warm up.
        self.sync = not getattr(args, "no_sync", False)
        self.warmup = not getattr(args, "no_warmup", False)
        self.dir = os.path.abspath(args.dir)
        os.makedirs(self.dir, exist_ok=True)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def remove_dir_if_empty(self) -> None:
        """The scratch directory goes once the runs left nothing in it."""
        try:
            os.rmdir(self.dir)
        except OSError:
            pass
