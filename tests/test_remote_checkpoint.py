"""Sharded checkpoints at URLs (nginx on loopback): open_checkpoint from the
index or the folder, summary and `fastensors inspect` from headers only
(the index, then every shard's header at once), whole loads equal to the
local checkpoint's, and a missing shard named."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import fastensors
import fastensors.numpy as fst_np

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")
from remote_servers import NGINX, Nginx  # noqa: E402

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")

rng = np.random.default_rng(11)
STATE = {f"layers.{i}.weight": rng.standard_normal((256, 256)).astype(np.float32) for i in range(8)}
STATE["embed"] = rng.standard_normal((100, 64)).astype(np.float16)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    work = tmp_path_factory.mktemp("nginx")
    fastensors.save_sharded(STATE, root / "sharded", max_shard_size=600_000, metadata={"format": "np"})
    (root / "single").mkdir()
    fst_np.save_file(STATE, root / "single" / "model.safetensors")
    server = Nginx(str(root), str(work))
    try:
        yield server, root
    finally:
        server.stop()


def test_sharded_checkpoint_from_index_and_folder(served):
    server, root = served
    local = fastensors.open_checkpoint(root / "sharded")
    assert local.is_sharded and len(local.files) > 2
    for url in (f"{server.url}/sharded/model.safetensors.index.json", f"{server.url}/sharded"):
        with fastensors.open_checkpoint(url) as ckpt:
            assert ckpt.is_sharded and ckpt.files == local.files
            assert ckpt.keys() == local.keys()
            got = ckpt.get_tensors()
            assert set(got) == set(STATE)
            assert all(got[k].tobytes() == STATE[k].tobytes() for k in STATE)
            assert ckpt.get_tensor("embed").tobytes() == STATE["embed"].tobytes()
            with pytest.raises(fastensors.InvalidArgument, match="local checkpoints"):
                ckpt.read_into("embed", np.zeros(STATE["embed"].nbytes, np.uint8))
    local.close()
    with fastensors.open_checkpoint(f"{server.url}/single") as ckpt:
        assert not ckpt.is_sharded and ckpt.get_tensor("embed").tobytes() == STATE["embed"].tobytes()


def test_summary_reads_headers_only(served):
    server, root = served
    want = fastensors.summary(root / "sharded").as_dict()
    server.clear()
    got = fastensors.summary(f"{server.url}/sharded/model.safetensors.index.json").as_dict()
    log = server.log()
    for doc in (want, got):
        doc.pop("path")
    assert got == want
    shards = len(want["files"])
    gets = [e for e in log if e[0] == "GET"]
    # the index whole, then one header request per shard; never tensor data
    assert len(gets) == 1 + shards
    header_requests = [e for e in gets if e[1].endswith(".safetensors")]
    assert all(e[4].startswith("bytes=0-") for e in header_requests)
    tensor_bytes = sum(f["tensor_bytes"] for f in want["files"])
    assert sum(e[3] for e in header_requests) < tensor_bytes
    assert sum(e[3] for e in header_requests) <= shards * fastensors.RemoteOptions().header_bytes


def test_cli_inspect_of_a_url(served):
    server, root = served
    run = lambda target: subprocess.run([sys.executable, "-m", "fastensors", "inspect", target, "--json"],  # noqa
                                        capture_output=True, text=True, timeout=120)
    local, remote = run(str(root / "sharded")), run(f"{server.url}/sharded")
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr
    a, b = json.loads(local.stdout), json.loads(remote.stdout)
    a.pop("path"), b.pop("path")
    assert a == b
    bad = subprocess.run([sys.executable, "-m", "fastensors", "inspect", f"{server.url}/sharded",
                          "--storage-options", "[1]"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "JSON object" in bad.stderr


def test_missing_shard_and_missing_checkpoint(served):
    server, root = served
    broken = root / "broken"
    fastensors.save_sharded(STATE, broken, max_shard_size=600_000)
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    (broken / victim).unlink()
    with pytest.raises(fastensors.ShardNotFound, match=victim):
        fastensors.open_checkpoint(f"{server.url}/broken", lazy=False)
    with pytest.raises(fastensors.CheckpointNotFound):
        fastensors.open_checkpoint(f"{server.url}/nothing-here")


def test_convert_file_from_a_url_equals_the_local_conversion(served, tmp_path):
    server, root = served
    fastensors.convert_file(root / "sharded", tmp_path / "local", "bf16")
    fastensors.convert_file(f"{server.url}/sharded", tmp_path / "remote", "bf16")
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "remote").iterdir())
    for name in names:
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "remote" / name).read_bytes(), name
    fastensors.convert_file(f"{server.url}/single/model.safetensors", tmp_path / "one.safetensors", "f16")
    fastensors.convert_file(root / "single" / "model.safetensors", tmp_path / "one-local.safetensors", "f16")
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "one-local.safetensors").read_bytes()


def test_cli_convert_and_quantize_from_a_url(served, tmp_path):
    server, root = served
    conv = subprocess.run([sys.executable, "-m", "fastensors", "convert", f"{server.url}/single/model.safetensors",
                           str(tmp_path / "c.safetensors"), "--dtype", "bf16"], capture_output=True, text=True,
                          timeout=300)
    assert conv.returncode == 0, conv.stderr
    with fastensors.safe_open(tmp_path / "c.safetensors", "np") as f:
        assert f.get_tensor("embed").dtype.name == "bfloat16"
    local = fastensors.quantize_model(root / "sharded", tmp_path / "q-local", scheme="int8", durable=False)
    remote = fastensors.quantize_model(f"{server.url}/sharded", tmp_path / "q-remote", scheme="int8",
                                       durable=False)
    assert remote.src == f"{server.url}/sharded"
    names = sorted(p.name for p in (tmp_path / "q-local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "q-remote").iterdir())
    for name in names:
        if name.endswith(".safetensors"):
            assert (tmp_path / "q-local" / name).read_bytes() == (tmp_path / "q-remote" / name).read_bytes()
    assert len(local.tensors) == len(remote.tensors)
