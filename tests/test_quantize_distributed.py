"""quantize_model across the ranks of a process group
(``process_group="default"`` under torchrun, gloo on loopback).

The oracle is the one-process quantize_model run here on the same sharded
llama-like checkpoint: every output file byte for byte (shards, index,
config.json with its quantization_config, the other files) and the report
(per-tensor cosine/SQNR/RMSE/max error included). Also: each rank reads a
disjoint share of the source tensors, together all of them; bad options
raise the same typed error on every rank; a rank failing mid-write or killed
mid-write leaves the destination untouched. Launches have timeouts and the
workers' collectives a bounded one, so no failure hangs the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

import fastensors  # noqa: E402
from torchrun_helpers import free_port, load_worker, rank_reports, torchrun, worker_env  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "quantize_distributed_worker.py")

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


W = load_worker(WORKER)


def launch(scenario: str, out, nproc: int, timeout: int = 300) -> subprocess.CompletedProcess:
    return torchrun(WORKER, scenario, out, nproc, timeout)


def references(out) -> dict:
    """The source checkpoint and the one-process outputs of every case."""
    src = os.path.join(out, "src")
    W.make_source(src)
    assert len([n for n in os.listdir(src) if n.endswith(".safetensors")]) >= 3
    reports = {}
    for case, kwargs in W.CASES.items():
        ref = os.path.join(out, f"ref_{case}")
        rep = fastensors.quantize_model(src, ref, report=ref + ".json", **kwargs, **W.COMMON)
        assert len(rep.files) > 3, (case, rep.files)  # several output shards to share out
        reports[case] = W.comparable(rep.to_dict())
    return reports


def check_main(out, nproc: int) -> None:
    refs = references(out)
    proc = launch("main", out, nproc)
    seen = rank_reports(out, nproc, proc)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with fastensors.open_checkpoint(os.path.join(out, "src")) as ck:
        every_tensor = set(ck.keys())
    for case in W.CASES:
        ref, got = os.path.join(out, f"ref_{case}"), os.path.join(out, f"dist_{case}")
        # The files, byte for byte.
        assert W.tree_digest(got) == W.tree_digest(ref), case
        cfg = json.load(open(os.path.join(got, "config.json")))
        assert "quantization_config" in cfg
        # The report, on every rank and in the file rank 0 wrote.
        for r in range(nproc):
            assert seen[r]["reports"][case] == refs[case], (case, r)
        assert refs[case]["summary"]["min_cosine"] is not None  # validate=True measured every tensor
        with open(got + ".json") as f, open(ref + ".json") as g:
            assert W.comparable(json.load(f)) == W.comparable(json.load(g)), case
        # Each source tensor read by exactly one rank (the edge search reads all on rank 0 first).
        reads = [seen[r]["reads"][case] for r in range(nproc)]
        if case != "edge":
            for r in range(nproc):
                assert reads[r], f"rank {r} did no share of {case}"
                assert len(reads[r]) == len(set(reads[r])), f"rank {r} read a tensor twice ({case})"
            assert sum(len(x) for x in reads) == len(every_tensor)
            assert set().union(*map(set, reads)) == every_tensor
    for r in range(nproc):
        s = seen[r]
        for case, error in (("bad_scheme", "InvalidArgument"), ("gguf", "InvalidArgument"),
                            ("not_empty", "DestinationNotEmpty"), ("quality", "QualityThresholdNotMet"),
                            ("bad_group", "InvalidArgument")):
            assert s[case][0] == error, (r, case, s[case])
        assert "format='safetensors' only" in s["gguf"][1]
        last = r == nproc - 1
        assert s["one_rank_option"][0] == ("InvalidArgument" if last else "RankFailed"), s["one_rank_option"]
        assert s["fail_over"][0] == ("SafetensorIOError" if last else "RankFailed"), s["fail_over"]
        assert s["fail_new"][0] == ("SafetensorIOError" if last else "RankFailed"), s["fail_new"]
        if not last:
            assert "disk full (injected)" in s["fail_over"][1] and f"rank {nproc - 1}" in s["fail_over"][1]
        assert s["fail_over_unchanged"] and not s["fail_new_exists"] and not s["bad_exists"]
        assert s["staging_left"] == []


def test_two_ranks_match_one_process_and_fail_together(tmp_path):
    check_main(tmp_path, 2)


@pytest.mark.slow
def test_four_ranks(tmp_path):
    check_main(tmp_path, 4)


@pytest.mark.parametrize("scenario", ["kill", "convert_kill"], ids=["quantize_model", "convert_file"])
def test_a_killed_rank_makes_the_others_fail_and_commits_nothing(tmp_path, scenario):
    W.make_source(str(tmp_path / "src"))
    port = free_port()
    procs = []
    t0 = time.monotonic()
    # Plain processes, not torchrun: its agent would stop rank 0 as soon as rank 1 dies.
    for rank in range(2):
        env = worker_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                   LOCAL_RANK=str(rank), QUANT_TEST_TIMEOUT_S="20")
        procs.append(subprocess.Popen([sys.executable, WORKER, scenario, str(tmp_path)], env=env, cwd=HERE,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[1].returncode == -9, outs[1][-2000:]  # it really died
    assert not (tmp_path / "rank1.json").exists()
    rep = json.load(open(tmp_path / "rank0.json"))
    assert rep["ok"], rep.get("error")
    assert rep["killed"][0] == "RankFailed", rep["killed"]
    assert rep["seconds"] < 60 and time.monotonic() - t0 < 170
    assert not (tmp_path / "killed").exists()  # nothing visible at the destination
    assert W.staging_left(str(tmp_path)) == []  # rank 0 removed the staging directory
