"""What the torchrun tests share: starting a worker script on N gloo ranks
on loopback, reading the report each rank writes, loading a worker as a
module (for its model builders), and, inside the workers, expecting an
exception of given types."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(**extra) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **extra)


def load_worker(path: str):
    """The worker script at ``path`` as a module (its __main__ does not run)."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def torchrun(worker: str, scenario: str, out, nproc: int, timeout: int) -> subprocess.CompletedProcess:
    """``worker scenario out`` on ``nproc`` local ranks (gloo, 127.0.0.1, no restarts)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--nnodes", "1",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--max-restarts", "0",
           worker, scenario, str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=worker_env(), cwd=HERE)


def rank_reports(out, nproc: int, proc) -> list:
    """Each rank's rank{r}.json, every one present and ok."""
    reports = []
    for r in range(nproc):
        path = os.path.join(out, f"rank{r}.json")
        assert os.path.exists(path), f"rank {r} wrote no report:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        with open(path) as f:
            rep = json.load(f)
        assert rep["ok"], f"rank {r} failed:\n{rep.get('error')}"
        reports.append(rep)
    return reports


def expect_error(fn, *types):
    """(type name, message) of the exception ``fn`` raises, which must be one of ``types``."""
    try:
        fn()
    except types as e:
        return type(e).__name__, str(e)
    except BaseException as e:  # the wrong kind: report it
        raise AssertionError(f"expected {[t.__name__ for t in types]}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {[t.__name__ for t in types]}, nothing raised")
