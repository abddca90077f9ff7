"""safe_open over s3:// through s3fs, against moto's S3 server started on a
loopback port (as s3fs's own tests do). The oracle is the reference reading
the same local file; the object is pinned by its ETag and size."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors

import fastensors
import fastensors.numpy as fst_np
from fastensors.sources import RemoteOptions

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto")
from remote_servers import MotoS3  # noqa: E402

TENSORS = {
    "w": np.random.default_rng(3).standard_normal((128, 256)).astype(np.float32),
    "b": np.arange(256, dtype=np.int32),
}


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    work = tmp_path_factory.mktemp("moto")
    server = MotoS3(str(work))
    try:
        local = work / "m.safetensors"
        fst_np.save_file(TENSORS, local, metadata={"format": "np"})
        opts = server.storage_options()
        fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
        fs.call_s3("create_bucket", Bucket="fastensors-test")  # us-east-1: no location constraint
        fs.put(str(local), "fastensors-test/m.safetensors")
        yield server, opts, fs, local
    finally:
        server.stop()


def test_s3_url_equals_the_reference(bucket):
    server, opts, fs, local = bucket
    with fastensors.safe_open("s3://fastensors-test/m.safetensors", "np", storage_options=opts) as f, \
            safetensors.safe_open(str(local), "np") as ref:
        assert f.keys() == ref.keys() and f.metadata() == ref.metadata()
        for k in ref.keys():
            assert f.get_tensor(k).tobytes() == ref.get_tensor(k).tobytes()
        assert f.get_slice("w")[5:9].tobytes() == ref.get_slice("w")[5:9].tobytes()
        assert "ETag" in f._file.source.pin


def test_s3_file_object_through_the_reference_entry_point(bucket):
    # The reference's test_handle.py::test_fsspec_s3, against the local server.
    server, opts, fs, local = bucket
    with fs.open("fastensors-test/m.safetensors", "rb") as fh:
        with fastensors._safe_open_handle(fh, framework="np", device="cpu") as g:
            got = {k: g.get_tensor(k) for k in g.keys()}
    assert all(got[k].tobytes() == TENSORS[k].tobytes() for k in TENSORS)


def test_s3_missing_object_and_changed_object(bucket):
    server, opts, fs, local = bucket
    with pytest.raises(FileNotFoundError):
        fastensors.safe_open("s3://fastensors-test/absent.safetensors", "np", storage_options=opts)
    fs.put(str(local), "fastensors-test/changing.safetensors")
    f = fastensors.safe_open("s3://fastensors-test/changing.safetensors", "np", storage_options=opts,
                             remote=RemoteOptions(backoff_s=0.01))
    try:
        other = local.parent / "other.safetensors"
        fst_np.save_file({**TENSORS, "b": TENSORS["b"] + 1}, other)
        fs.put(str(other), "fastensors-test/changing.safetensors")
        with pytest.raises(fastensors.FileChanged):
            f.get_tensor("b")
    finally:
        f.close()


def test_s3_sharded_checkpoint_and_summary(bucket, tmp_path):
    server, opts, fs, local = bucket
    state = {f"l{i}.weight": np.full((64, 64), i, np.float32) for i in range(6)}
    fastensors.save_sharded(state, tmp_path / "sharded", max_shard_size=40_000)
    for p in (tmp_path / "sharded").iterdir():
        fs.put(str(p), f"fastensors-test/sharded/{p.name}")
    url = "s3://fastensors-test/sharded"
    with fastensors.open_checkpoint(url, storage_options=opts) as ckpt:
        assert ckpt.is_sharded and len(ckpt.files) > 1
        got = ckpt.get_tensors()
    assert set(got) == set(state) and all(got[k].tobytes() == state[k].tobytes() for k in state)
    want = fastensors.summary(tmp_path / "sharded").as_dict()
    remote = fastensors.summary(url, storage_options=opts).as_dict()
    want.pop("path"), remote.pop("path")
    assert remote == want
