"""Time and peak memory to open a file whose header is at the 100,000,000-byte
limit with about a million (zero-sized) tensors, and to list every tensor's
info: the C++ core (the list_tensors example) and Python (safe_open +
tensor_info), with the reference ``safetensors`` as the peer. Each reader
runs in its own process; peak RSS is that process's ru_maxrss.

    python bench/bench_hostile_header.py [--cpp PATH/TO/list_tensors] [--dir DIR]

Figures are recorded in docs/security.md.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

LIMIT = 100_000_000


def hostile_header(count: int, limit: int = LIMIT) -> bytes:
    """A header of exactly `limit` bytes: `count` zero-sized tensors with names
    padded so the JSON fills the limit (then space padding, as writers do)."""
    entry = '"{name}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
    base = len(entry.format(name="")) + 1  # + comma
    per = (limit - 2) // count - base
    if per < 8:
        raise ValueError("too many tensors for the limit")
    parts = [entry.format(name=f"{i:0{per}d}") for i in range(count)]
    body = ("{" + ",".join(parts) + "}").encode()
    if len(body) > limit:
        raise AssertionError(len(body))
    return body + b" " * (limit - len(body))


def write_hostile(path: str, count: int) -> None:
    header = hostile_header(count)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)))
        fh.write(header)


PY_FASTENSORS = """
import sys, fastensors as fst
with fst.safe_open(sys.argv[1], "np") as f:
    n = 0
    for k in f.keys():
        n += f.tensor_info(k).nbytes == 0
print(n)
"""

PY_REFERENCE = """
import sys, safetensors
with safetensors.safe_open(sys.argv[1], "np") as f:
    n = sum(1 for k in f.keys() if f.get_slice(k).get_shape() == [0])
print(n)
"""


def run(cmd) -> dict:
    """Wall time and peak RSS of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return {
        "seconds": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "exit": os.waitstatus_to_exitcode(status),
        "lines": out.count(b"\n"),
        "tail": out[-60:].decode(errors="replace").strip().splitlines()[-1:] or err[-200:].decode(errors="replace"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpp", help="the list_tensors example binary (cmake -DFASTENSORS_BUILD_EXAMPLES=ON)")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--write", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write:
        write_hostile(args.write, args.count)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = os.path.join(d, "hostile.safetensors")
        # Written by a child: this process stays small, and children forked
        # from it do not start with (and count in their peak) its memory.
        subprocess.run([sys.executable, __file__, "--write", path, "--count", str(args.count)], check=True)
        print(f"file: {os.path.getsize(path)} bytes, header {LIMIT} bytes, {args.count} tensors")
        results = {}
        if args.cpp:
            results["C++ File::open + keys + info (list_tensors)"] = run([args.cpp, path])
        results["python fastensors safe_open + tensor_info"] = run([sys.executable, "-c", PY_FASTENSORS, path])
        results["python safetensors (reference) safe_open + get_slice"] = run([sys.executable, "-c", PY_REFERENCE, path])
        results["python baseline (interpreter + numpy import)"] = run([sys.executable, "-c", "import numpy"])
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
