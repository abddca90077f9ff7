"""safe_open over HTTP: nginx (started here on a loopback port) serves the
files; the oracle is the reference reading the same local file, and nginx's
own access log says what was sent. A fault proxy in front of nginx drops
connections, stalls, ignores Range, truncates, pads and fails with 503."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import safetensors

import fastensors
import fastensors.numpy as fst_np
from fastensors.sources import RemoteOptions

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")
from remote_servers import NGINX, FaultProxy, Nginx  # noqa: E402

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")

rng = np.random.default_rng(7)
TENSORS = {
    "embed": rng.standard_normal((256, 512)).astype(np.float32),   # 512 KiB
    "small": np.arange(10, dtype=np.int64),
    "head": rng.standard_normal((512, 256)).astype(np.float16),
}
# Data requests on fastensors' pooled connections (the default) and through fsspec's aiohttp client.
CLIENTS = ["pooled", "fsspec"]


def fast(client: str, **kw) -> RemoteOptions:
    return RemoteOptions(**{"timeout_s": 1.0, "backoff_s": 0.01, "deadline_s": 30.0, "http_client": client, **kw})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    work = tmp_path_factory.mktemp("nginx")
    fst_np.save_file(TENSORS, root / "m.safetensors", metadata={"format": "np"})
    server = Nginx(str(root), str(work))
    try:
        yield server, root
    finally:
        server.stop()


@pytest.fixture()
def proxy(served):
    p = FaultProxy(served[0].port)
    try:
        yield p
    finally:
        p.stop()


def _equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("client", CLIENTS)
def test_whole_file_equals_the_reference(served, client):
    server, root = served
    with fastensors.safe_open(f"{server.url}/m.safetensors", "np", remote=fast(client)) as f, \
            safetensors.safe_open(str(root / "m.safetensors"), "np") as ref:
        assert f.keys() == ref.keys() and f.metadata() == ref.metadata()
        for k in ref.keys():
            assert _equal(f.get_tensor(k), ref.get_tensor(k))
        got = f.get_tensors()
        assert all(_equal(got[k], ref.get_tensor(k)) for k in ref.keys())
        assert _equal(f.get_slice("embed")[10:20, ::3], ref.get_slice("embed")[10:20][:, ::3])


@pytest.mark.parametrize("client", CLIENTS)
def test_redirected_url(served, client):
    server, root = served
    server.clear()
    with fastensors.safe_open(f"{server.url}/redirect/m.safetensors", "np", remote=fast(client)) as f:
        assert _equal(f.get_tensor("head"), TENSORS["head"])
    log = server.log()
    assert any(e[1] == "/redirect/m.safetensors" and e[2] == 302 for e in log)
    if client == "pooled":  # data requests go to where the redirect led, once
        assert all(e[1] == "/m.safetensors" for e in log if e[0] == "GET" and e[2] == 206)


def test_one_tensor_transfers_only_its_bytes(served):
    server, root = served
    server.clear()
    with fastensors.safe_open(f"{server.url}/m.safetensors", "np") as f:
        header = f._file.data_start
        got = f.get_tensor("head")
        begin, end = f.tensor_info("head").data_offsets
    assert _equal(got, TENSORS["head"])
    log = server.log()
    sent = sum(entry[3] for entry in log)
    assert [e[0] for e in log].count("HEAD") == 1
    assert all(e[2] == 206 for e in log if e[0] == "GET")
    # the header request (at most header_bytes) and the tensor's own bytes
    assert sent <= (end - begin) + header + 64 * 1024
    assert f"bytes={header + begin}-" in " ".join(e[4] for e in log)


def test_large_header_takes_a_second_request(served):
    server, root = served
    meta = {f"k{i}": "v" * 100 for i in range(2000)}  # ~220 KB of header
    fst_np.save_file({"x": np.ones(3, np.float32)}, root / "big-header.safetensors", metadata=meta)
    server.clear()
    with fastensors.safe_open(f"{server.url}/big-header.safetensors", "np") as f:
        assert f.metadata() == meta
        assert f._file.header_size > RemoteOptions().header_bytes
    gets = [e for e in server.log() if e[0] == "GET"]
    assert len(gets) == 2 and gets[0][4] == f"bytes=0-{RemoteOptions().header_bytes - 1}"


def test_slices_read_only_their_rows(served):
    server, root = served
    with fastensors.safe_open(f"{server.url}/m.safetensors", "pt") as f:
        server.clear()
        part = f.get_slice("embed")[100:104]
    assert part.numpy().tobytes() == TENSORS["embed"][100:104].tobytes()
    assert sum(e[3] for e in server.log()) == 4 * 512 * 4


def test_large_tensors_are_split_into_parallel_requests(served):
    server, root = served
    opts = RemoteOptions(request_bytes=64 * 1024)
    with fastensors.safe_open(f"{server.url}/m.safetensors", "np", remote=opts) as f:
        server.clear()
        got = f.get_tensor("embed")
    assert _equal(got, TENSORS["embed"])
    gets = [e for e in server.log() if e[0] == "GET"]
    assert len(gets) == TENSORS["embed"].nbytes // (64 * 1024)
    assert all(e[3] == 64 * 1024 for e in gets)


def test_missing_url_is_file_not_found(served):
    server, _ = served
    with pytest.raises(FileNotFoundError) as e:
        fastensors.safe_open(f"{server.url}/absent.safetensors", "np")
    assert isinstance(e.value, fastensors.FileNotFound) and "absent.safetensors" in str(e.value)


def test_malformed_remote_file_has_the_local_error(served):
    server, root = served
    data = bytearray((root / "m.safetensors").read_bytes())
    bad = root / "bad.safetensors"
    bad.write_bytes(bytes(data[:-5]))  # the last tensor is cut short
    with pytest.raises(fastensors.SafetensorError) as local:
        fastensors.safe_open(bad, "np")
    with pytest.raises(fastensors.SafetensorError) as remote:
        fastensors.safe_open(f"{server.url}/bad.safetensors", "np")
    assert type(remote.value) is type(local.value)


@pytest.mark.parametrize("client", CLIENTS)
def test_object_changed_after_open_is_file_changed(served, client):
    server, root = served
    target = root / f"changing-{client}.safetensors"
    fst_np.save_file(TENSORS, target)
    f = fastensors.safe_open(f"{server.url}/{target.name}", "np", remote=fast(client))
    try:
        fst_np.save_file({**TENSORS, "small": np.arange(10, dtype=np.int64) + 1}, target)
        st = os.stat(target)
        os.utime(target, (st.st_atime, st.st_mtime + 5))  # a new Last-Modified, hence a new ETag
        with pytest.raises(fastensors.FileChanged, match="changed"):
            f.get_tensor("small")
    finally:
        f.close()


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("fault", ["drop", "stall", "short", "5xx"])
def test_transient_faults_are_retried(served, proxy, fault, client):
    proxy.set(fault, times=2, stall_s=2.5)
    with fastensors.safe_open(f"{proxy.url}/m.safetensors", "np", remote=fast(client)) as f:
        got = f.get_tensor("embed")
    assert _equal(got, TENSORS["embed"])
    assert proxy.seen >= 3  # two failed answers, then good ones


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("fault", ["drop", "stall", "5xx"])
def test_persistent_faults_end_in_a_typed_error(served, proxy, fault, client):
    proxy.set(fault, times=1000, stall_s=1.5)
    opts = fast(client, timeout_s=0.5, retries=2, deadline_s=20.0)
    started = time.monotonic()
    with pytest.raises(fastensors.RemoteError) as e:
        fastensors.safe_open(f"{proxy.url}/m.safetensors", "np", remote=opts)
    assert "m.safetensors" in str(e.value) and "bytes 0-" in str(e.value)
    assert time.monotonic() - started < 20
    assert proxy.seen == 3  # the first attempt and two retries


def test_deadline_bounds_the_retries(served, proxy):
    proxy.set("stall", times=1000, stall_s=1.5)
    opts = fast("pooled", timeout_s=0.5, retries=100, backoff_s=0.2, deadline_s=2.0)
    started = time.monotonic()
    with pytest.raises(fastensors.RemoteError):
        fastensors.safe_open(f"{proxy.url}/m.safetensors", "np", remote=opts)
    assert time.monotonic() - started < 10


def test_a_dripping_server_cannot_outlast_the_deadline(served, proxy):
    # Each byte arrives within the socket timeout; only the deadline ends it.
    opts = fast("pooled", timeout_s=1.0, retries=100, deadline_s=2.0)
    with fastensors.safe_open(f"{proxy.url}/m.safetensors", "np", remote=opts) as f:
        proxy.set("drip", times=1000)
        started = time.monotonic()
        with pytest.raises(fastensors.RemoteTimeout):
            f.get_tensor("small")
    assert time.monotonic() - started < 6


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("fault,words", [("ignore-range", "ignored Range"), ("long", "more than asked")])
def test_wrong_answers_are_reported_never_returned(served, proxy, fault, words, client):
    with fastensors.safe_open(f"{proxy.url}/m.safetensors", "np", remote=fast(client)) as f:
        proxy.set(fault, times=1000)
        with pytest.raises(fastensors.BadRangeResponse, match=words):
            f.get_tensor("small")
