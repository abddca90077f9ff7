"""Runs in a fresh interpreter with FASTENSORS_ISA set (see test_convert.py):
converts every oracle case of ``cases.npz`` with fastensors at that level and
reports, as one JSON line, the cases whose bits differ from the oracle.

    python convert_worker.py CASES_DIR
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

import fastensors

# Lengths 0..130 at these start offsets cover every vector tail and head.
TAIL_OFFSETS = (0, 1, 3, 7)


def main() -> int:
    folder = sys.argv[1]
    with open(os.path.join(folder, "cases.json")) as f:
        cases = json.load(f)
    report = {"isa": fastensors.isa(), "failures": [], "checked": 0}
    for case in cases:
        # Inputs and expected outputs are stored as raw unsigned bits.
        src = np.asarray(np.load(os.path.join(folder, case["src"]), mmap_mode="r")).view(np.dtype(case["src_dtype"]))
        want = np.asarray(np.load(os.path.join(folder, case["want"]), mmap_mode="r"))
        got = fastensors.convert(src, case["to"])
        got_bits = got.view(want.dtype)
        bad = np.nonzero(got_bits != want)[0]
        report["checked"] += int(src.size)
        if bad.size:
            i = int(bad[0])
            report["failures"].append({
                "case": case["name"], "count": int(bad.size), "index": i,
                "input": int(np.asarray(src).reshape(-1).view(np.dtype(f"u{src.itemsize}"))[i]),
                "want": int(want[i]), "got": int(got_bits[i]),
            })
            continue
        # Short conversions, so every kernel's head and tail path runs.
        flat = src.reshape(-1)
        for off in TAIL_OFFSETS:
            for n in range(0, 131):
                if off + n > flat.size:
                    break
                part = fastensors.convert(flat[off:off + n], case["to"]).view(want.dtype)
                if not np.array_equal(part, want[off:off + n]):
                    report["failures"].append({"case": case["name"], "tail_offset": off, "length": n})
                    break
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
