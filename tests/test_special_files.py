"""Paths that are not regular files (a FIFO, a socket, a character device,
a symlink to one) get a clear error at once from every entry point that
opens a file, never a hang. Each call runs in a subprocess with a deadline,
so a regression fails instead of blocking the test run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")

CALLS = {
    "safe_open mmap": "fastensors.safe_open(p, 'np')",
    "safe_open pread": "fastensors.safe_open(p, 'np', backend='pread')",
    "numpy.load_file": "fastensors.numpy.load_file(p)",
    "open_checkpoint": "fastensors.open_checkpoint(p)",
    "convert_file": "fastensors.convert_file(p, p + '.out', 'bf16')",
    "metadata.show": "fastensors.metadata.show(p)",
    "save_file over it": "fastensors.numpy.save_file({'a': np.zeros(2, np.float32)}, p)",
}


@pytest.fixture(scope="module")
def specials(tmp_path_factory):
    d = tmp_path_factory.mktemp("special")
    fifo = d / "model.safetensors.fifo"
    os.mkfifo(fifo)
    link = d / "link.safetensors"
    link.symlink_to(fifo)
    sock_path = d / "sock.safetensors"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    paths = {"fifo": str(fifo), "symlink to fifo": str(link), "socket": str(sock_path)}
    if os.path.exists("/dev/null"):
        paths["character device"] = "/dev/null"
    yield paths
    sock.close()


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("kind", ["fifo", "symlink to fifo", "socket", "character device"])
def test_not_a_regular_file_is_an_error_not_a_hang(specials, kind, call):
    if kind not in specials:
        pytest.skip(f"no {kind} here")
    if kind == "character device" and call == "save_file over it":
        pytest.skip("replacing /dev/null is not something a test should risk")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import fastensors, fastensors.numpy
        p = {specials[kind]!r}
        try:
            {CALLS[call]}
        except fastensors.SafetensorError as e:
            print(type(e).__name__, e)
            sys.exit(0)
        print("no error")
        sys.exit(3)
    """)
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{call} on a {kind} blocked")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not a regular file" in r.stdout or "is a directory" in r.stdout or "not a file" in r.stdout, r.stdout
