"""One rank of the multi-process quantize_model tests
(tests/test_quantize_distributed.py): ``quantize_model(...,
process_group="default")`` on a small sharded llama-like checkpoint, the
typed errors every rank must raise, a rank failing mid-write and a rank
killed mid-write. Each rank writes what it saw to rank<r>.json; the test
compares the outputs with the one-process quantize_model's.

Run by torchrun (scenario "main"), or for "kill" as plain processes with
the env:// variables set, so that no launcher stops rank 0 when rank 1
dies and rank 0 must notice by itself."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import sys
import time
import traceback

import numpy as np
import torch.distributed as dist

import fastensors
from fastensors.format import writer as fwriter
from fastensors.quant import quantize_model as _  # noqa: F401  (loads the module)
from torchrun_helpers import expect_error  # this folder is on sys.path

qm = sys.modules["fastensors.quant.quantize_model"]  # the attribute is the function

HIDDEN, INTER, KV, LAYERS, VOCAB = 128, 256, 64, 3, 256
SOURCE_SHARD = "600KB"  # 4 source shards
OUT_SHARD = "100KB"     # several output shards for every scheme
CASES = {
    "int8": dict(scheme="int8"),
    "int4": dict(scheme="int4", group_size=64, symmetric=False),
    "nf4": dict(scheme="nf4"),
    "fp8": dict(scheme="fp8_e4m3"),
    "edge": dict(profile="edge", min_cosine=0.9),
}
COMMON = dict(validate=True, max_shard_size=OUT_SHARD, durable=False)


def make_source(path: str) -> None:
    """A llama-like checkpoint in 4 shards, with config.json and another file."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    sd = {"model.embed_tokens.weight": w(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        sd[p + "self_attn.q_proj.weight"] = w(HIDDEN, HIDDEN)
        sd[p + "self_attn.k_proj.weight"] = w(KV, HIDDEN)
        sd[p + "self_attn.v_proj.weight"] = w(KV, HIDDEN)
        sd[p + "self_attn.o_proj.weight"] = w(HIDDEN, HIDDEN)
        sd[p + "post_attention_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        sd[p + "mlp.gate_proj.weight"] = w(INTER, HIDDEN)
        sd[p + "mlp.up_proj.weight"] = w(INTER, HIDDEN)
        sd[p + "mlp.down_proj.weight"] = w(HIDDEN, INTER)
    sd["model.norm.weight"] = np.ones(HIDDEN, np.float32)
    sd["lm_head.weight"] = w(VOCAB, HIDDEN)
    fastensors.save_sharded(sd, path, max_shard_size=SOURCE_SHARD)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN,
                   "intermediate_size": INTER, "num_hidden_layers": LAYERS, "vocab_size": VOCAB}, f)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        f.write('{"do_sample": false}\n')


def comparable(report: dict) -> dict:
    """A report's content without what differs between any two runs."""
    return {k: v for k, v in report.items() if k not in ("seconds", "dst")}


def tree_digest(path: str) -> dict:
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def staging_left(out: str) -> list:
    return [n for n in os.listdir(out) if ".fastensors-staging-" in n]


class ReadLog:
    """The source tensors this rank reads (quantized or copied dense)."""

    def __init__(self):
        self.names: list = []
        self._read, self._raw = qm._Source.read, qm._Source.raw
        log = self.names
        read, raw = self._read, self._raw
        qm._Source.read = lambda s, name: (log.append(name), read(s, name))[1]
        qm._Source.raw = lambda s, name, keep: (log.append(name), raw(s, name, keep))[1]

    def close(self):
        qm._Source.read, qm._Source.raw = self._read, self._raw


def scenario_main(out: str, rank: int, world: int) -> dict:
    seen: dict = {"reads": {}, "reports": {}}
    src = os.path.join(out, "src")
    for case, kwargs in CASES.items():
        dst = os.path.join(out, f"dist_{case}")
        log = ReadLog()
        try:
            rep = fastensors.quantize_model(src, dst, process_group="default", report=dst + ".json",
                                            **kwargs, **COMMON)
        finally:
            log.close()
        seen["reads"][case] = log.names
        seen["reports"][case] = comparable(rep.to_dict())
    dist.barrier()

    # Bad options: the same typed error on every rank, before anything is written.
    bad = os.path.join(out, "bad")
    seen["bad_scheme"] = expect_error(lambda: fastensors.quantize_model(
        src, bad, scheme="int3", process_group="default"), fastensors.InvalidArgument)
    seen["gguf"] = expect_error(lambda: fastensors.quantize_model(
        src, bad, scheme="q4_0", format="gguf", process_group="default"), fastensors.InvalidArgument)
    seen["not_empty"] = expect_error(lambda: fastensors.quantize_model(
        src, os.path.join(out, "dist_int8"), scheme="int8", process_group="default"),
        fastensors.DestinationNotEmpty)
    seen["quality"] = expect_error(lambda: fastensors.quantize_model(
        src, bad, scheme="int4", min_cosine=0.99999, process_group="default", **{**COMMON, "validate": False}),
        fastensors.QualityThresholdNotMet)
    seen["bad_group"] = expect_error(lambda: fastensors.quantize_model(
        src, bad, scheme="int4", process_group=object()), fastensors.InvalidArgument)
    # Options that differ on one rank: that rank's error there, RankFailed elsewhere.
    seen["one_rank_option"] = expect_error(lambda: fastensors.quantize_model(
        src, bad, scheme="int4", group_size=-1 if rank == world - 1 else 64, process_group="default"),
        fastensors.InvalidArgument, fastensors.RankFailed)
    dist.barrier()
    seen["bad_exists"] = os.path.exists(bad)

    # One rank fails while writing its shards, over an existing output and into a new one.
    target = os.path.join(out, "dist_int4")
    before = tree_digest(target)
    real = fwriter.write_specs_streaming
    if rank == world - 1:
        def failing(specs, path, meta, durable, fill, **kw):
            def fill_then_fail(i):
                if i == len(specs) // 2:
                    raise fastensors.SafetensorIOError("disk full (injected)")
                return fill(i)
            return real(specs, path, meta, durable, fill_then_fail, **kw)
        fwriter.write_specs_streaming = failing
    try:
        seen["fail_over"] = expect_error(lambda: fastensors.quantize_model(
            src, target, scheme="int8", overwrite=True, process_group="default", **COMMON),
            fastensors.SafetensorIOError, fastensors.RankFailed)
        seen["fail_new"] = expect_error(lambda: fastensors.quantize_model(
            src, bad, scheme="int8", process_group="default", **COMMON),
            fastensors.SafetensorIOError, fastensors.RankFailed)
    finally:
        fwriter.write_specs_streaming = real
    dist.barrier()
    seen["fail_over_unchanged"] = tree_digest(target) == before
    seen["fail_new_exists"] = os.path.exists(bad)
    seen["staging_left"] = staging_left(out)
    return seen


def scenario_kill(out: str, rank: int, world: int) -> dict:
    """The last rank dies in the middle of writing a shard."""
    src = os.path.join(out, "src")
    if rank == world - 1:
        real = fwriter.write_specs_streaming

        def dying(specs, path, meta, durable, fill, **kw):
            def fill_then_die(i):
                if i == len(specs) // 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                return fill(i)
            return real(specs, path, meta, durable, fill_then_die, **kw)
        fwriter.write_specs_streaming = dying
    t0 = time.monotonic()
    seen = {"killed": expect_error(lambda: fastensors.quantize_model(
        src, os.path.join(out, "killed"), scheme="int8", process_group="default", **COMMON),
        fastensors.RankFailed)}
    seen["seconds"] = time.monotonic() - t0
    return seen


def scenario_convert_kill(out: str, rank: int, world: int) -> dict:
    """The same for the multi-process convert_file: the last rank dies after
    converting its first shard, before the ranks gather their reports."""
    from fastensors import distributed as fd

    module = sys.modules["fastensors.distributed.convert"]
    if rank == world - 1:
        real = module._convert_one

        def dying(*a, **k):
            real(*a, **k)  # one converted shard in the staging directory, then the rank dies
            os.kill(os.getpid(), signal.SIGKILL)
        module._convert_one = dying
    t0 = time.monotonic()
    seen = {"killed": expect_error(lambda: fd.convert_file(os.path.join(out, "src"), os.path.join(out, "killed"),
                                                           "f16"), fastensors.RankFailed)}
    seen["seconds"] = time.monotonic() - t0
    return seen


def main() -> int:
    scenario, out = sys.argv[1], sys.argv[2]
    timeout = int(os.environ.get("QUANT_TEST_TIMEOUT_S", "60"))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        seen = {"main": scenario_main, "kill": scenario_kill,
                "convert_kill": scenario_convert_kill}[scenario](out, rank, world)
        seen["ok"] = True
    except BaseException:
        seen = {"ok": False, "error": traceback.format_exc()}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(seen, f, indent=1, default=str)
    if scenario.endswith("kill"):
        os._exit(0)  # the group lost a rank: tearing it down could wait on the dead peer
    # Every rank reaches the teardown before any closes its connections: a
    # gloo pair torn down while a peer still sends can abort the process.
    if seen["ok"]:
        dist.barrier()
    dist.destroy_process_group()
    return 0 if seen["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
