"""Writer scenarios for the fault-injection and kill tests (test_faults.py,
test_kill.py): each one replaces a target inside a sandbox directory with
one writer of fastensors.

A scenario is a row of ``SCENARIOS``: ``setup(sandbox)`` writes the sources
and the previous target (version 0), ``run(sandbox, version)`` runs the
writer, producing ``version`` of the target. New writers (metadata edits,
whole-model quantization, ...) are covered by adding a row.

``reader_views(sandbox, scenario)`` reads the target the way loaders do,
with the reference ``safetensors`` package: a file directly; a checkpoint
directory under both reader rules (the single file first, as transformers
does; the index first, as huggingface_hub does), checking that index and
shards agree, together with its companion files (config.json). Each view
maps tensor names to (dtype, shape, bytes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

View = Dict[str, Tuple[str, Tuple[int, ...], bytes]]


METADATA = "__metadata__"  # the key of a file's metadata in a view
COMPANION = "__companion__"  # keys of companion files in a view of a set
COMPANIONS = ("config.json", "generation_config.json")


class IncompleteTarget(AssertionError):
    """The target is not a complete checkpoint under some reader rule."""


# -- data ------------------------------------------------------------------------

def arrays(version: int, sizes=(96, 64, 80)) -> Dict[str, np.ndarray]:
    """Tensors of one version: distinct values (and, between versions with
    different ``sizes``, distinct layouts)."""
    rng = np.random.default_rng(1000 + version)
    out = {}
    for i, n in enumerate(sizes):
        out[f"layer.{i}.weight"] = rng.standard_normal((n, 16), dtype=np.float32)
    out["step"] = np.array([version], dtype=np.int64)
    return out


# Shard sizes of each version of a checkpoint: version 0 the previous one.
SHARD_LAYOUTS = {
    "single->three": [((96, 64, 80), "10MB"), ((96, 64, 80), 8000)],
    "three->three": [((96, 64, 80), 8000), ((90, 70, 80), 8000)],
    "three->two": [((96, 64, 80), 8000), ((200, 160), 13000)],
    "three->single": [((96, 64, 80), 8000), ((96, 64, 80), "10MB")],
    "none->three": [None, ((96, 64, 80), 8000)],
}


def _layout(name: str, version: int):
    return SHARD_LAYOUTS[name][min(version, 1)]


def torch_state(version: int, sizes=(96, 64, 80)):
    import torch

    return {k: torch.from_numpy(v.copy()) for k, v in arrays(version, sizes).items()}


# -- scenarios ---------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    target: str                    # the path the writer replaces, relative to the sandbox
    setup: Callable[[str], None]   # sources and version 0 of the target
    run: Callable[[str, int], None]
    is_set: bool = False           # a checkpoint directory (else one file)
    needs_torch: bool = False
    durable: bool = True

    def commit_paths(self, sandbox: str) -> List[str]:
        """A rename onto one of these paths commits the new version."""
        t = os.path.join(sandbox, self.target)
        if not self.is_set:
            return [t]
        return [t] + [os.path.join(t, n) for n in ("model.safetensors.index.json", "model.safetensors")]


def _file_scenarios() -> List[Scenario]:
    def np_save(sandbox, version, durable=True):
        from fastensors.numpy import save_file

        save_file(arrays(version), os.path.join(sandbox, "out.safetensors"), metadata={"v": str(version)},
                  durable=durable)

    def torch_save(sandbox, version):
        from fastensors.torch import save_file

        save_file(torch_state(version), os.path.join(sandbox, "out.safetensors"), metadata={"format": "pt"})

    def serialize(sandbox, version):
        import fastensors

        data = arrays(version)
        specs = {k: fastensors.TensorSpec(dtype=str(v.dtype), shape=v.shape, data_ptr=v.ctypes.data,
                                          data_len=v.nbytes) for k, v in data.items()}
        fastensors.serialize_file(specs, os.path.join(sandbox, "out.safetensors"))

    def merge_setup(sandbox):
        import fastensors

        fastensors.save_sharded(arrays(1), os.path.join(sandbox, "src"), max_shard_size=8000)
        merge_run(sandbox, 0)

    def merge_run(sandbox, version):
        if version == 0:  # the previous target: something else
            from fastensors.numpy import save_file

            save_file(arrays(0, (8,)), os.path.join(sandbox, "merged.safetensors"))
            return
        from fastensors.sharding import merge

        merge(os.path.join(sandbox, "src"), os.path.join(sandbox, "merged.safetensors"))

    def convert_setup(sandbox):
        from fastensors.numpy import save_file

        save_file(arrays(1), os.path.join(sandbox, "src.safetensors"))
        save_file(arrays(0), os.path.join(sandbox, "out.safetensors"))

    def convert_run(sandbox, version):
        import fastensors

        fastensors.convert_file(os.path.join(sandbox, "src.safetensors"), os.path.join(sandbox, "out.safetensors"),
                                "bf16" if version % 2 else "f16")

    def inplace_setup(sandbox):
        from fastensors.numpy import save_file

        save_file(arrays(0), os.path.join(sandbox, "model.safetensors"))

    def inplace_run(sandbox, version):
        import fastensors

        path = os.path.join(sandbox, "model.safetensors")
        fastensors.convert_file(path, path, "bf16" if version % 2 else "f16")

    def bin_setup(sandbox):
        import torch

        torch.save(torch_state(1), os.path.join(sandbox, "src.bin"))
        bin_run(sandbox, 0)

    def bin_run(sandbox, version):
        from fastensors.torch import convert_pytorch_to_safetensors, save_file

        out = os.path.join(sandbox, "out.safetensors")
        if version == 0:
            save_file(torch_state(0, (8,)), out)
            return
        convert_pytorch_to_safetensors(os.path.join(sandbox, "src.bin"), out)

    def meta_run(sandbox, version):
        import fastensors

        path = os.path.join(sandbox, "out.safetensors")
        if version == 0:
            np_save(sandbox, 0)
            return
        fastensors.metadata.set(path, {"v": str(version), "note": "ünï"})

    def setup_with(run):
        return lambda sandbox: run(sandbox, 0)

    return [
        Scenario("numpy.save_file", "out.safetensors", setup_with(np_save), np_save),
        Scenario("numpy.save_file:fast", "out.safetensors", setup_with(np_save),
                 lambda s, v: np_save(s, v, durable=False), durable=False),
        Scenario("torch.save_file", "out.safetensors", setup_with(torch_save), torch_save, needs_torch=True),
        Scenario("serialize_file", "out.safetensors", setup_with(serialize), serialize),
        Scenario("merge", "merged.safetensors", merge_setup, merge_run),
        Scenario("convert_file", "out.safetensors", convert_setup, convert_run),
        Scenario("convert_file:in-place", "model.safetensors", inplace_setup, inplace_run),
        Scenario("convert_bin:file", "out.safetensors", bin_setup, bin_run, needs_torch=True),
        Scenario("metadata.set", "out.safetensors", setup_with(meta_run), meta_run),
    ]


def _set_scenarios() -> List[Scenario]:
    def sharded(layout_name):
        def run(sandbox, version):
            import fastensors

            layout = _layout(layout_name, version)
            if layout is None:
                return
            sizes, limit = layout
            fastensors.save_sharded(arrays(version, sizes), os.path.join(sandbox, "ckpt"), max_shard_size=limit)

        return run

    def reshard_setup(sandbox):
        from fastensors.numpy import save_file

        save_file(arrays(1), os.path.join(sandbox, "src.safetensors"))
        sharded("single->three")(sandbox, 0)

    def reshard_run(sandbox, version):
        from fastensors.sharding import reshard

        reshard(os.path.join(sandbox, "src.safetensors"), os.path.join(sandbox, "ckpt"),
                max_shard_size=8000 if version % 2 else 12000)

    def convert_dir_setup(sandbox):
        import fastensors

        src = os.path.join(sandbox, "src")
        fastensors.save_sharded(arrays(1), src, max_shard_size=8000)
        with open(os.path.join(src, "config.json"), "w") as f:
            f.write('{"model_type": "demo"}\n')
        # The previous target: the same shard names, other values.
        fastensors.save_sharded(arrays(0), os.path.join(sandbox, "ckpt"), max_shard_size=8000)

    def convert_dir_run(sandbox, version):
        import fastensors

        fastensors.convert_file(os.path.join(sandbox, "src"), os.path.join(sandbox, "ckpt"),
                                "bf16" if version % 2 else "f16")

    def bin_dir_setup(sandbox):
        import torch

        src = os.path.join(sandbox, "src")
        os.makedirs(src)
        state = torch_state(1)
        names = sorted(state)
        weight_map = {}
        for i, part in enumerate((names[:2], names[2:])):
            fname = f"pytorch_model-0000{i + 1}-of-00002.bin"
            torch.save({n: state[n] for n in part}, os.path.join(src, fname))
            weight_map.update({n: fname for n in part})
        with open(os.path.join(src, "pytorch_model.bin.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
        with open(os.path.join(src, "config.json"), "w") as f:
            f.write('{"model_type": "demo"}\n')
        sharded("three->three")(sandbox, 0)

    def bin_dir_run(sandbox, version):
        from fastensors.torch import convert_pytorch_to_safetensors

        convert_pytorch_to_safetensors(os.path.join(sandbox, "src"), os.path.join(sandbox, "ckpt"))

    def pretrained_run(sandbox, version):
        import torch

        from fastensors.torch import save_pretrained

        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.config = {"hidden": 16, "version": version}
                self.layers = torch.nn.ModuleList(torch.nn.Linear(16, 16 + 8 * i) for i in range(3))

        torch.manual_seed(version)
        save_pretrained(Tiny(), os.path.join(sandbox, "ckpt"), max_shard_size="2KB" if version % 2 else "1KB")

    def meta_sharded_setup(sandbox):
        import fastensors

        fastensors.save_sharded(arrays(0), os.path.join(sandbox, "ckpt"), max_shard_size=8000,
                                metadata={"v": "0"})

    def meta_sharded_run(sandbox, version):
        import fastensors

        fastensors.metadata.set(os.path.join(sandbox, "ckpt"), {"v": str(version), "note": "ünï"})

    def quant_setup(sandbox):
        import fastensors

        fastensors.save_sharded(arrays(1), os.path.join(sandbox, "src"), max_shard_size=8000)
        with open(os.path.join(sandbox, "src", "config.json"), "w") as f:
            f.write('{"model_type": "demo"}\n')
        quant_run(sandbox, 0)

    def quant_run(sandbox, version):
        import fastensors

        # version 0: FP8 per channel; version 1: int8 per channel
        fastensors.quantize_model(os.path.join(sandbox, "src"), os.path.join(sandbox, "ckpt"),
                                  scheme="int8" if version % 2 else "fp8_e4m3", overwrite=True)

    rows = [Scenario(f"save_sharded:{name}", "ckpt", lambda s, r=sharded(name): r(s, 0), sharded(name), is_set=True)
            for name in SHARD_LAYOUTS]
    rows += [
        Scenario("metadata.set:sharded", "ckpt", meta_sharded_setup, meta_sharded_run, is_set=True),
        Scenario("quantize_model", "ckpt", quant_setup, quant_run, is_set=True),
    ]
    rows += [
        Scenario("reshard", "ckpt", reshard_setup, reshard_run, is_set=True),
        Scenario("convert_file:directory", "ckpt", convert_dir_setup, convert_dir_run, is_set=True),
        Scenario("convert_bin:directory", "ckpt", bin_dir_setup, bin_dir_run, is_set=True, needs_torch=True),
        Scenario("save_pretrained", "ckpt", lambda s: pretrained_run(s, 0), pretrained_run, is_set=True,
                 needs_torch=True),
    ]
    return rows


SCENARIOS: Dict[str, Scenario] = {s.name: s for s in _file_scenarios() + _set_scenarios()}


# -- reading the target as loaders do ------------------------------------------------------

def _read_file(path: str) -> View:
    import safetensors

    with open(path, "rb") as f:
        data = f.read()
    try:
        view = {name: (t["dtype"], tuple(t["shape"]), bytes(t["data"])) for name, t in safetensors.deserialize(data)}
    except Exception as e:  # the reference's error type is its own
        raise IncompleteTarget(f"{path}: {e}") from None
    # The metadata is part of a version too (metadata edits change only it).
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    view[METADATA] = ("", (), json.dumps(header.get("__metadata__"), sort_keys=True).encode())
    return view


def _read_index(path: str) -> View:
    directory = os.path.dirname(path)
    with open(path, "rb") as f:
        weight_map = json.loads(f.read())["weight_map"]
    out: View = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(directory, shard)
        if not os.path.isfile(shard_path):
            raise IncompleteTarget(f"{path} names {shard}, which does not exist")
        tensors = _read_file(shard_path)
        listed = {k for k, v in weight_map.items() if v == shard}
        # Keyed by the shard's tensors, not its file name (interim names differ).
        out[f"{METADATA}/{','.join(sorted(listed))}"] = tensors.pop(METADATA)
        if set(tensors) != listed:
            raise IncompleteTarget(f"{shard} holds {sorted(tensors)}, the index lists {sorted(listed)}")
        out.update(tensors)
    return out


def reader_views(sandbox: str, scenario: Scenario) -> List[View]:
    """The target as each reader rule sees it; an empty list when there is
    no target. Raises IncompleteTarget when a rule finds a broken one."""
    target = os.path.join(sandbox, scenario.target)
    if not scenario.is_set:
        return [_read_file(target)] if os.path.exists(target) else []
    if not os.path.isdir(target):
        return []
    single = os.path.join(target, "model.safetensors")
    index = os.path.join(target, "model.safetensors.index.json")
    views = []
    for first, second in ((single, index), (index, single)):
        path = first if os.path.exists(first) else second
        if not os.path.exists(path):
            raise IncompleteTarget(f"{target} holds neither model.safetensors nor its index")
        view = _read_index(path) if path.endswith(".json") else _read_file(path)
        # Companions belong to the version too: a loader reads the config
        # next to the weights, so new weights beside an old config are a
        # broken model.
        for name in COMPANIONS:
            companion = os.path.join(target, name)
            if os.path.exists(companion):
                with open(companion, "rb") as f:
                    view[f"{COMPANION}/{name}"] = ("", (), f.read())
        views.append(view)
    return views


def snapshot(sandbox: str) -> Dict[str, bytes]:
    """Every file under ``sandbox`` (relative path -> bytes); directories as
    ``path/`` -> b""."""
    out = {}
    for root, dirs, files in os.walk(sandbox):
        rel = os.path.relpath(root, sandbox)
        if rel != ".":
            out[rel + "/"] = b""
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.normpath(os.path.join(rel, name))] = f.read()
    return out


def restore(sandbox: str, snap: Dict[str, bytes]) -> None:
    """Make ``sandbox`` hold exactly ``snap``."""
    shutil.rmtree(sandbox, ignore_errors=True)
    os.makedirs(sandbox)
    for rel in sorted(snap):
        path = os.path.join(sandbox, rel)
        if rel.endswith("/"):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(snap[rel])


class Worker:
    """fault_worker.py in its own process (under the fault shim when
    ``shim`` is given): one forked child per trial."""

    def __init__(self, shim: Optional[str] = None):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("LD_PRELOAD", None)
        if shim:
            env["LD_PRELOAD"] = shim
        for name in [k for k in env if k.startswith("FASTENSORS_FAULT_")]:
            del env[name]
        here = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen([sys.executable, os.path.join(here, "fault_worker.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def __call__(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the scenario worker died (exit {self.proc.poll()})"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
