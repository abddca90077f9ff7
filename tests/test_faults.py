"""Faults while writing: every writer, with write / fsync / rename / create /
close made to fail with ENOSPC or EIO at each call in turn (an LD_PRELOAD
shim, tests/faultinject/faultinject.c, compiled here with the system cc).

For each writer scenario (write_scenarios.py) a first run counts the calls
the writer makes on files of its sandbox and finds the commit (the rename
that puts the new version in place). Then for each call N of each class:

- the writer raises an OSError (a SafetensorError subclass, or an OSError
  from the standard library) with the injected errno and a message naming
  a file of the sandbox;
- a fault before the commit leaves the sandbox byte for byte as it was: the
  previous target intact, no temporary or staging file left;
- a fault after the commit leaves a complete target under every reader
  rule, each the previous or the new version, and no leftover that the
  target does not reference;
- a failed fsync is never retried (the shim logs an fsync of a file whose
  fsync failed).

Writes and file creations keep failing from the N-th call on (a full disk
stays full); fsync, rename and close fail once.

The default run tries a sample of the calls with alternating errnos; the
``slow`` run tries every call with both (docs/security.md has the counts)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from typing import Dict, List

import pytest

import write_scenarios as ws

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = ("write", "sync", "rename", "create", "close")
# A full or failing disk stays so: from the N-th call on, every write and
# every file creation fails (a writer may then fall back to another way of
# writing, as shutil.copyfile does, without hiding the fault). fsync, rename
# and close fail once.
STICKY = {"write", "create"}
ERRNOS = (errno.ENOSPC, errno.EIO)
STAGING_MARKS = (".fastensors-staging-", ".fastensors-interim-", ".tmp-")


@pytest.fixture(scope="session")
def shim(fault_shim) -> str:
    return fault_shim


@pytest.fixture(scope="module")
def worker(shim):
    w = ws.Worker(shim)
    yield w
    w.close()


def parse_log(path: str) -> List[List[str]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split(" ", 4) for line in f]


def read_log(path: str) -> List[List[str]]:
    lines = parse_log(path)
    os.unlink(path) if os.path.exists(path) else None
    return lines


class Probe:
    """A scenario's sandbox, its previous state, and its clean run."""

    def __init__(self, scenario: ws.Scenario, root: str, worker: ws.Worker):
        self.scenario = scenario
        self.worker = worker
        self.sandbox = os.path.join(os.path.realpath(root), "sandbox")
        self.log = os.path.join(os.path.realpath(root), "fault.log")
        os.makedirs(self.sandbox)
        scenario.setup(self.sandbox)
        self.before = ws.snapshot(self.sandbox)
        self.old_views = ws.reader_views(self.sandbox, scenario)
        # The clean run: counts, commit point, the new version.
        reply = self.run(None)
        assert reply["result"]["ok"], reply["result"].get("traceback")
        lines = read_log(self.log)
        calls = [ln for ln in lines if ln[0] == "call"]
        self.counts = {c: sum(1 for ln in calls if ln[1] == c) for c in CLASSES}
        commits = set(scenario.commit_paths(self.sandbox))
        first = next((i for i, ln in enumerate(calls) if ln[1] == "rename" and ln[4] in commits), None)
        assert first is not None, f"no rename onto the target in {calls}"
        # Calls of each class up to and including the commit rename.
        self.before_commit = {c: sum(1 for ln in calls[: first + 1] if ln[1] == c) for c in CLASSES}
        self.new_views = ws.reader_views(self.sandbox, scenario)
        assert self.new_views and self.new_views != self.old_views
        self.after = ws.snapshot(self.sandbox)

    def run(self, fault) -> dict:
        req = {"scenario": self.scenario.name, "sandbox": self.sandbox, "version": 1,
               "fault": dict(fault or {}, log=self.log)}
        return self.worker(req)

    def trial(self, op: str, n: int, err: int) -> str:
        """Injects one fault, checks the outcome, restores the sandbox.
        Returns "before" or "after" (the commit)."""
        ws.restore(self.sandbox, self.before)
        reply = self.run({"op": op, "n": n, "errno": err, "sticky": op in STICKY})
        where = f"{self.scenario.name}: {op} #{n} -> {errno.errorcode[err]}"
        assert reply["exit"] == 0 and "result" in reply, f"{where}: the writer process crashed: {reply}"
        res = reply["result"]
        lines = read_log(self.log)
        injected = [ln for ln in lines if ln[0] == "inject"]
        assert injected, f"{where}: the call never happened (the writer is not deterministic?)"
        assert not [ln for ln in lines if ln[0] == "refsync"], f"{where}: a failed fsync was retried: {lines}"
        assert not res["ok"], f"{where}: the fault at {injected[0][4]} was swallowed; the writer reported success"
        assert res["is_oserror"], f"{where}: {res['type']} is not an OSError:\n{res['traceback']}"
        assert res["errno"] == err, f"{where}: errno {res['errno']}, not {err}: {res['message']}"
        named = (res["filename"] or "") + " " + res["message"]
        assert self.sandbox in named, f"{where}: the error names no file: {res['message']!r}"
        phase = "before" if n <= self.before_commit[op] else "after"
        if phase == "before":
            assert ws.snapshot(self.sandbox) == self.before, (
                f"{where} (before the commit): the sandbox changed: {sorted(set(ws.snapshot(self.sandbox)) ^ set(self.before))}"
            )
        else:
            views = ws.reader_views(self.sandbox, self.scenario)
            assert views and all(v in (self.old_views + self.new_views) for v in views), (
                f"{where} (after the commit): the target is neither the old nor the new version"
            )
            self.check_no_stray_files(where)
        return phase

    def check_no_stray_files(self, where: str) -> None:
        referenced = set()
        target = os.path.join(self.sandbox, self.scenario.target)
        if self.scenario.is_set:
            for name in os.listdir(target):
                if name.endswith(".index.json"):
                    with open(os.path.join(target, name)) as f:
                        referenced.update(json.load(f)["weight_map"].values())
        known = set(self.before) | set(self.after)
        for rel in ws.snapshot(self.sandbox):
            base = os.path.basename(rel.rstrip("/"))
            if rel in known or base in referenced:
                continue
            raise AssertionError(f"{where}: left behind {rel}")


def plan(probe: Probe, full: bool):
    """(op, n, errno) of every trial: every call with both errnos (full),
    else up to 6 calls per class (the first, the last, both sides of the
    commit) with alternating errnos."""
    trials = []
    for op in CLASSES:
        count = probe.counts[op]
        if full:
            trials += [(op, n, e) for n in range(1, count + 1) for e in ERRNOS]
            continue
        k = probe.before_commit[op]
        picks = sorted({n for n in (1, 2, k, k + 1, count - 1, count) if 1 <= n <= count})
        trials += [(op, n, ERRNOS[i % 2]) for i, n in enumerate(picks)]
    return trials


def scenario_params(full: bool):
    marks = [pytest.mark.slow] if full else []
    return [pytest.param(name, marks=marks, id=name) for name in ws.SCENARIOS]


def run_scenario(name, tmp_path, worker, full) -> Dict[str, int]:
    scenario = ws.SCENARIOS[name]
    if scenario.needs_torch:
        pytest.importorskip("torch")
    probe = Probe(scenario, str(tmp_path), worker)
    assert probe.counts["write"] and probe.counts["rename"] and probe.counts["create"], probe.counts
    if scenario.durable:
        assert probe.counts["sync"], "a durable writer that never fsyncs"
    else:
        assert not probe.counts["sync"], "durable=False fsyncs"
    tally = {"before": 0, "after": 0}
    for op, n, err in plan(probe, full):
        tally[probe.trial(op, n, err)] += 1
    print(f"{name}: calls {probe.counts}, faults injected {sum(tally.values())} "
          f"({tally['before']} before the commit, {tally['after']} after)")
    return tally


@pytest.mark.parametrize("name", scenario_params(False))
def test_fault_sample(name, tmp_path, worker):
    run_scenario(name, tmp_path, worker, full=False)


@pytest.mark.parametrize("name", scenario_params(True))
def test_fault_every_call(name, tmp_path, worker):
    run_scenario(name, tmp_path, worker, full=True)


def test_shim_counts_and_fails_only_under_its_directory(shim, tmp_path):
    """The seam itself: calls outside the directory pass; the N-th call of
    the class fails with the errno; every call is logged."""
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    code = (
        "import os, sys\n"
        "for d in sys.argv[1:]:\n"
        "    for i in range(3):\n"
        "        try:\n"
        "            with open(os.path.join(d, f'f{i}'), 'wb') as f: f.write(b'x')\n"
        "            print(d[-3:], i, 'ok')\n"
        "        except OSError as e: print(d[-3:], i, e.errno)\n"
    )
    log = tmp_path / "log"
    env = dict(os.environ, LD_PRELOAD=shim, FASTENSORS_FAULT_DIR=str(inside), FASTENSORS_FAULT_OP="write",
               FASTENSORS_FAULT_N="2", FASTENSORS_FAULT_ERRNO=str(errno.ENOSPC), FASTENSORS_FAULT_LOG=str(log))
    out = subprocess.run([sys.executable, "-c", code, str(outside), str(inside)], env=env, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    assert out[:6] == ["out 0 ok", "out 1 ok", "out 2 ok", "/in 0 ok", f"/in 1 {errno.ENOSPC}", "/in 2 ok"]
    lines = parse_log(str(log))
    assert [ln[:3] for ln in lines if ln[1] == "write"] == [["call", "write", "1"], ["call", "write", "2"],
                                                             ["inject", "write", "2"], ["call", "write", "3"]]
    assert all(str(inside) in ln[-1] for ln in lines)


def test_io_error_without_errno_is_typed():
    """The core raises some I/O errors with a message and no errno (a write
    that came out shorter than planned): still a SafetensorIOError."""
    from fastensors.errors import SafetensorIOError, _io_error

    e = _io_error("Io: wrote 10 bytes, planned 12 (in 'x.safetensors')")
    assert type(e) is SafetensorIOError and e.errno is None and "planned 12" in str(e)
    e = _io_error(errno.ENOSPC, "write failed", "x.safetensors")
    assert e.errno == errno.ENOSPC and e.filename == "x.safetensors"
