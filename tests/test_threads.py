"""Concurrent readers and writers: every result is checked."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import safetensors.numpy as ref_np

import fastensors
import fastensors.numpy as fst_np
from conftest import BACKENDS, same_array, sample_array

N_THREADS = 8
ROUNDS = 15


@pytest.fixture(scope="module")
def shared_file(tmp_path_factory):
    tensors = {f"w{i}": sample_array(np.float32, (64, 33), seed=i) for i in range(12)}
    tensors["h"] = sample_array(np.float16, (50, 7), seed=99)
    tensors["s"] = np.array(3, np.int32)
    path = tmp_path_factory.mktemp("threads") / "shared.safetensors"
    ref_np.save_file(tensors, path)
    return path, tensors


def _reader(path, tensors, seed, errors):
    rng = np.random.default_rng(seed)
    names = sorted(tensors)
    try:
        for r in range(ROUNDS):
            backend = BACKENDS[(seed + r) % 2]
            with fastensors.safe_open(path, "np", backend=backend) as f:
                name = names[int(rng.integers(len(names)))]
                got = f.get_tensor(name)
                assert same_array(got, tensors[name]), name
                if tensors[name].ndim == 2:
                    lo = int(rng.integers(0, tensors[name].shape[0]))
                    step = int(rng.choice([1, 2, -1, -3]))
                    idx = np.s_[lo::step, ::2]
                    assert same_array(f.get_slice(name)[idx], tensors[name][idx]), (name, idx)
    except BaseException as e:  # noqa: BLE001 - reported by the main thread
        errors.append(e)


def _writer(directory, seed, errors):
    try:
        for r in range(ROUNDS):
            tensors = {f"t{j}": sample_array(np.int16, (17, 5 + j), seed=seed * 1000 + r * 10 + j) for j in range(4)}
            p = directory / f"w{seed}.safetensors"
            fst_np.save_file(tensors, p, metadata={"round": str(r)}, durable=False)
            back = fst_np.load_file(p)
            for k, v in tensors.items():
                assert same_array(back[k], v)
            # identical to the reference writer's bytes
            assert p.read_bytes() == ref_np.save(tensors, metadata={"round": str(r)})
    except BaseException as e:  # noqa: BLE001
        errors.append(e)


def test_readers_and_writers_concurrently(shared_file, tmp_path):
    path, tensors = shared_file
    errors: list = []
    threads = [threading.Thread(target=_reader, args=(path, tensors, i, errors)) for i in range(N_THREADS)]
    threads += [threading.Thread(target=_writer, args=(tmp_path, i, errors)) for i in range(N_THREADS // 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    assert not errors, errors[:3]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("framework", ["np", "pt"])
def test_one_handle_many_threads(shared_file, backend, framework):
    if framework == "pt":
        torch = pytest.importorskip("torch")
    path, tensors = shared_file
    names = sorted(tensors)
    barrier = threading.Barrier(N_THREADS)

    with fastensors.safe_open(path, framework, backend=backend) as f:

        def work(i):
            barrier.wait()
            out = []
            for r in range(ROUNDS * 2):
                name = names[(i + r) % len(names)]
                t = f.get_tensor(name)
                arr = t if framework == "np" else t.numpy()
                assert same_array(arr, tensors[name]), name
                if tensors[name].ndim == 2:
                    sl = f.get_slice(name)[i % 5 :: 3, -1]
                    sl = sl if framework == "np" else sl.numpy()
                    assert same_array(sl, tensors[name][i % 5 :: 3, -1])
                out.append(name)
            assert f.keys() == names
            assert f.metadata() is None
            return len(out)

        with ThreadPoolExecutor(N_THREADS) as pool:
            assert list(pool.map(work, range(N_THREADS))) == [ROUNDS * 2] * N_THREADS
    if framework == "pt":
        with fastensors.safe_open(path, "pt", backend=backend) as g:
            assert torch.equal(g.get_tensor("w0"), torch.from_numpy(tensors["w0"]))


def test_concurrent_writers_same_target(tmp_path):
    """Racing atomic writes to one path: the file is always one complete version."""
    target = tmp_path / "same.safetensors"
    versions = {i: {"v": np.full((256,), i, np.int64)} for i in range(N_THREADS)}
    errors: list = []

    def write(i):
        try:
            for _ in range(5):
                fst_np.save_file(versions[i], target, durable=False)
                got = fst_np.load_file(target)["v"]
                assert got.shape == (256,) and (got == got[0]).all()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert [p.name for p in tmp_path.iterdir()] == ["same.safetensors"]


def test_close_while_other_threads_read(shared_file):
    """Closing a shared handle mid-read never crashes or returns wrong data:
    each read either completes correctly or raises SafetensorError."""
    path, tensors = shared_file
    names = [n for n in sorted(tensors) if tensors[n].ndim == 2]
    for attempt in range(5):
        f = fastensors.safe_open(path, "np", backend="pread")
        start = threading.Barrier(N_THREADS + 1)
        outcomes: list = []

        def read(i):
            start.wait()
            for r in range(40):
                name = names[(i + r) % len(names)]
                try:
                    got = f.get_slice(name)[1:]
                except fastensors.SafetensorError as e:
                    outcomes.append(("closed", str(e)))
                    return
                if not same_array(got, tensors[name][1:]):
                    outcomes.append(("wrong", name))
                    return
            outcomes.append(("done", None))

        threads = [threading.Thread(target=read, args=(i,)) for i in range(N_THREADS)]
        for t in threads:
            t.start()
        start.wait()
        f.close()
        for t in threads:
            t.join(timeout=60)
        assert len(outcomes) == N_THREADS
        assert all(kind in ("closed", "done") for kind, _ in outcomes), outcomes
        assert all("closed" in msg for kind, msg in outcomes if kind == "closed"), outcomes
