"""Runs writer scenarios (write_scenarios.py) for test_faults.py and
test_kill.py, one forked child per trial, so that the imports are paid once.

    python fault_worker.py     (requests on stdin, replies on stdout, JSON lines)

Request {"scenario", "sandbox", "version"} plus either
- "fault": {"op", "n", "errno", "sticky", "log"} (no "op": only count): the child
  configures the LD_PRELOAD shim (tests/faultinject) and runs the writer;
  the reply describes the exception it raised, if any;
- "kill": {"delay"} or {"step"}: the child runs the writer and is killed
  with SIGKILL after ``delay`` seconds, or at the ``step``-th commit step of
  a checkpoint set (_fileset's step hook); the reply says whether it died.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import write_scenarios  # noqa: E402

import fastensors  # noqa: E402
from fastensors.checkpoint import commit as _fileset  # noqa: E402

try:
    import fastensors.torch  # noqa: F401,E402
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # scenarios that need torch are not requested then
    pass

FAULT_ENV = ("FASTENSORS_FAULT_DIR", "FASTENSORS_FAULT_OP", "FASTENSORS_FAULT_N", "FASTENSORS_FAULT_ERRNO",
             "FASTENSORS_FAULT_STICKY", "FASTENSORS_FAULT_LOG")


def describe(e: BaseException) -> dict:
    return {
        "type": type(e).__name__,
        "mro": [c.__name__ for c in type(e).__mro__],
        "is_oserror": isinstance(e, OSError),
        "is_safetensor_error": isinstance(e, fastensors.SafetensorError),
        "errno": getattr(e, "errno", None),
        "filename": getattr(e, "filename", None),
        "message": str(e),
        "traceback": traceback.format_exc(),
    }


def child_fault(req: dict, wfd: int) -> None:
    fault = req["fault"]
    os.environ["FASTENSORS_FAULT_DIR"] = req["sandbox"]
    os.environ["FASTENSORS_FAULT_LOG"] = fault["log"]
    os.environ["FASTENSORS_FAULT_OP"] = fault.get("op") or ""
    os.environ["FASTENSORS_FAULT_N"] = str(fault.get("n") or 0)
    os.environ["FASTENSORS_FAULT_ERRNO"] = str(fault.get("errno") or 0)
    os.environ["FASTENSORS_FAULT_STICKY"] = "1" if fault.get("sticky") else "0"
    ctypes.CDLL(None).faultinject_reset()
    scenario = write_scenarios.SCENARIOS[req["scenario"]]
    try:
        scenario.run(req["sandbox"], req["version"])
        out = {"ok": True}
    except BaseException as e:  # noqa: BLE001 - every escape is reported
        out = {"ok": False, **describe(e)}
    for name in FAULT_ENV:  # nothing after the writer counts
        os.environ.pop(name, None)
    ctypes.CDLL(None).faultinject_reset()
    os.write(wfd, json.dumps(out).encode())


def child_kill(req: dict) -> None:
    step = req["kill"].get("step")
    if step is not None:
        seen = [0]

        def hook(_label: str) -> None:
            if seen[0] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            seen[0] += 1

        _fileset._step_hook = hook
    write_scenarios.SCENARIOS[req["scenario"]].run(req["sandbox"], req["version"])


def handle(req: dict) -> dict:
    rfd, wfd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        code = 0
        try:
            if "fault" in req:
                child_fault(req, wfd)
            else:
                child_kill(req)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    os.close(wfd)
    reply: dict = {}
    if "kill" in req and req["kill"].get("delay") is not None:
        time.sleep(req["kill"]["delay"])
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    chunks = []
    while True:
        chunk = os.read(rfd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    reply["elapsed"] = time.monotonic() - start
    reply["killed"] = os.WIFSIGNALED(status)
    reply["exit"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    if chunks:
        reply["result"] = json.loads(b"".join(chunks))
    return reply


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        print(json.dumps(handle(json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
