"""Remote reads over loopback HTTP from nginx, measured in one run with the
peers: bytes transferred come from nginx's own access log.

    python bench/bench_remote.py                      # 2 GiB file, 1 GiB sharded model, 5 rounds
    python bench/bench_remote.py --file-mib 512 --model-mib 256 --rounds 2

1. One tensor from a remote single-file checkpoint (--file-mib): requests
   and bytes sent against the goal tensor + header + 64 KiB.
2. Inspecting a remote sharded checkpoint (summary of its index URL):
   requests and bytes sent.
3. Whole-model load of the sharded checkpoint (--model-mib, 4 shards), each
   round in a rotating order:
     fastensors     open_checkpoint(url).get_tensors() (numpy arrays)
     fsspec-seq     fsspec.open(url).read() of each shard in turn (bytes only,
                    no parsing: a lower bound of any loader built on it)
     curl-parallel  16 curl processes, each fetching one 16th of the same
                    bytes with a Range request, written to /dev/null
     fresh-pages    no I/O: allocating as many bytes and writing one byte per
                    page, the page faults a load into fresh arrays pays and
                    curl writing to /dev/null does not
   GB/s are decimal, medians over the rounds, after one untimed round
   (imports, HTTP sessions). fastensors' time includes opening the index and
   the shard headers.

nginx runs with 2 worker processes on 127.0.0.1; the files are in the page
cache, so this measures the client and loopback, not storage. On a shared
machine the numbers move; compare the peers of one run, not runs."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import fastensors  # noqa: E402
import fastensors.numpy as fst_np  # noqa: E402
from remote_servers import NGINX, Nginx  # noqa: E402

MiB = 1 << 20


def make_state(total_mib: int, tensors: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    per = total_mib * MiB // tensors // 2  # f16 elements
    cols = 1024
    rows = max(1, per // cols)
    return {f"layers.{i}.weight": rng.integers(0, 2**16, (rows, cols), dtype=np.uint16).view(np.float16)
            for i in range(tensors)}


def curl_parallel(urls_sizes, parts: int) -> float:
    """Seconds for ``parts`` curl processes to fetch all bytes by ranges."""
    total = sum(s for _, s in urls_sizes)
    step = -(-total // parts)
    jobs = []
    for url, size in urls_sizes:  # cut the concatenation of the files into equal ranges
        at = 0
        while at < size:
            n = min(step, size - at)
            jobs.append((url, at, at + n - 1))
            at += n
    started = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-s", "-f", "-r", f"{a}-{b}", "-o", "/dev/null", url]) for url, a, b in jobs]
    for p in procs:
        if p.wait(timeout=600) != 0:
            raise RuntimeError("curl failed")
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file-mib", type=int, default=2048)
    ap.add_argument("--model-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if NGINX is None:
        print("nginx is not installed (apt-get install nginx-light)", file=sys.stderr)
        return 2
    import fsspec

    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        root, work = os.path.join(tmp, "root"), os.path.join(tmp, "work")
        os.makedirs(root)
        os.makedirs(work)
        os.chmod(tmp, 0o755)  # nginx's workers may run as another user
        big = make_state(args.file_mib, 64, 1)
        fst_np.save_file(big, os.path.join(root, "model.safetensors"), durable=False)
        del big
        model = make_state(args.model_mib, 32, 2)
        fastensors.save_sharded(model, os.path.join(root, "sharded"), max_shard_size=args.model_mib * MiB // 4 + MiB)
        del model
        server = Nginx(root, work, workers=2)
        try:
            print(f"# bench_remote: nginx on 127.0.0.1, {os.cpu_count()} CPUs, python {sys.version.split()[0]}\n")
            # 1. one tensor
            url = f"{server.url}/model.safetensors"
            server.clear()
            with fastensors.safe_open(url, "np") as f:
                name = f.offset_keys()[len(f.offset_keys()) // 2]
                arr = f.get_tensor(name)
                header = f._file.data_start
            log = server.log()
            sent = sum(e[3] for e in log)
            goal = arr.nbytes + header + 64 * 1024
            print("## One tensor of a remote %d MiB file\n" % args.file_mib)
            print("| tensor | tensor bytes | header bytes | requests (HEAD+GET) | bytes sent (nginx log) | goal |")
            print("|---|---|---|---|---|---|")
            print(f"| {name} | {arr.nbytes} | {header} | {len(log)} | {sent} | <= {goal} "
                  f"({'met' if sent <= goal else 'MISSED'}) |\n")
            # 2. inspect
            index_url = f"{server.url}/sharded/model.safetensors.index.json"
            server.clear()
            t0 = time.perf_counter()
            s = fastensors.summary(index_url)
            dt = time.perf_counter() - t0
            log = server.log()
            print("## Inspecting the remote sharded checkpoint (summary of its index URL)\n")
            print("| shards | tensors | requests | GET requests | bytes sent | seconds |")
            print("|---|---|---|---|---|---|")
            print(f"| {len(s.files)} | {len(s.tensors)} | {len(log)} | {sum(e[0] == 'GET' for e in log)} | "
                  f"{sum(e[3] for e in log)} | {dt:.3f} |\n")
            # 3. whole model
            shard_names = [f["name"] for f in s.files]
            urls_sizes = [(f"{server.url}/sharded/{n}", os.path.getsize(os.path.join(root, "sharded", n)))
                          for n in shard_names]
            total = sum(sz for _, sz in urls_sizes)
            for path in [os.path.join(root, "sharded", n) for n in shard_names]:
                with open(path, "rb") as fh:  # into the page cache
                    while fh.read(64 * MiB):
                        pass

            def fastensors_load():
                with fastensors.open_checkpoint(index_url) as ckpt:
                    out = ckpt.get_tensors()
                assert len(out) == 32

            def fsspec_seq():
                for u, size in urls_sizes:
                    with fsspec.open(u, "rb") as fh:
                        assert len(fh.read()) == size

            def curl():
                curl_parallel(urls_sizes, 16)

            def touch():
                buf = np.empty(total, np.uint8)
                buf[::4096] = 1  # one write per page: the faults any load into fresh memory pays

            peers = {"fastensors": fastensors_load, "fsspec-seq": fsspec_seq, "curl-parallel": curl,
                     "fresh-pages": touch}
            for fn in peers.values():  # imports, sessions and connections first, untimed
                fn()
            times = {k: [] for k in peers}
            order = list(peers)
            for r in range(args.rounds):
                for k in order[r % len(order):] + order[:r % len(order)]:
                    t0 = time.perf_counter()
                    peers[k]()
                    times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"## Whole-model load over loopback HTTP ({total / 1e9:.2f} GB, {len(shard_names)} shards, "
                  f"median of {args.rounds} rounds)\n")
            print("| reader | seconds | GB/s | its time / fastensors' time |")
            print("|---|---|---|---|")
            for k in peers:
                print(f"| {k} | {med[k]:.3f} | {total / med[k] / 1e9:.2f} | {med[k] / med['fastensors']:.2f}x |")
            print()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
