"""fastensors.metadata and ``fastensors metadata``: edits read back by the
reference ``safetensors`` package, atomic and crash-safe, on single files
and sharded checkpoints."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import safetensors
from safetensors.numpy import load_file as ref_load_file

import fastensors
from fastensors import metadata
from fastensors.checkpoint import commit as _fileset
from fastensors.surgery import rewrite as _rewrite
from fastensors.cli import main as cli
from fastensors.numpy import save_file

def ref_metadata(path):
    with safetensors.safe_open(str(path), "np") as f:
        return f.metadata()


def tensors(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "z.weight": rng.standard_normal((7, 5)).astype(np.float32),
        "a.bias": rng.integers(0, 255, (13,), dtype=np.uint8),
        "m.half": rng.standard_normal((3, 3)).astype(np.float16),
        "empty": np.zeros((0, 4), np.int64),
    }


@pytest.fixture
def single(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(tensors(), path, metadata={"format": "np"})
    return path


@pytest.fixture
def sharded(tmp_path):
    d = tmp_path / "ckpt"
    sd = {f"layers.{i}.w": np.full((64,), i, np.float32) for i in range(6)}
    fastensors.save_sharded(sd, d, max_shard_size=600, metadata={"origin": "test"})
    assert len([n for n in os.listdir(d) if n.endswith(".safetensors")]) > 1
    return d


def data_section(path):
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    return raw[8 + n:]


def test_set_non_ascii_round_trip_read_by_reference(single):
    before = data_section(single)
    got = metadata.set(single, {"note": "naïve café — 模型 🚀", "layers": 12, "tags": ["a", "é"]})
    assert got == {"format": "np", "note": "naïve café — 模型 🚀", "layers": "12", "tags": '["a", "é"]'}
    assert ref_metadata(single) == got
    assert data_section(single) == before
    ref = ref_load_file(str(single))
    for k, v in tensors().items():
        np.testing.assert_array_equal(ref[k], v)
    assert metadata.show(single) == got


def test_keeps_tensor_order_of_foreign_writers(tmp_path):
    """A file whose tensors are not in the reference order keeps its offsets."""
    path = tmp_path / "odd.safetensors"
    a = np.arange(6, dtype=np.float32)
    b = np.arange(3, dtype=np.uint8)
    head = {"b": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
            "a": {"dtype": "F32", "shape": [6], "data_offsets": [3, 27]}}
    text = json.dumps(head).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + b.tobytes() + a.tobytes())
    metadata.set(path, {"k": "v"})
    assert ref_metadata(path) == {"k": "v"}
    ref = ref_load_file(str(path))
    np.testing.assert_array_equal(ref["a"], a)
    np.testing.assert_array_equal(ref["b"], b)
    with fastensors.safe_open(path, "np") as f:
        assert f.offset_keys() == ["b", "a"]


def test_delete_and_missing_key(single):
    metadata.set(single, {"x": "1", "y": "2"})
    assert metadata.delete(single, ["x"]) == {"format": "np", "y": "2"}
    with pytest.raises(fastensors.MetadataKeyNotFound, match="'nope'"):
        metadata.delete(single, ["nope"])
    assert metadata.delete(single, ["nope", "y"], missing_ok=True) == {"format": "np"}
    assert ref_metadata(single) == {"format": "np"}


def test_mode_kept_and_backup(single):
    os.chmod(single, 0o640)
    old = single.read_bytes()
    metadata.set(single, {"k": "v"}, backup=True)
    assert os.stat(single).st_mode & 0o777 == 0o640
    backup = single.with_name(single.name + ".backup")
    assert backup.read_bytes() == old
    assert ref_metadata(single)["k"] == "v"
    assert sorted(os.listdir(single.parent)) == ["model.safetensors", "model.safetensors.backup"]


def test_sharded_edit_applies_to_every_shard(sharded):
    shards = sorted(n for n in os.listdir(sharded) if n.endswith(".safetensors"))
    index_before = json.loads((sharded / "model.safetensors.index.json").read_text())
    metadata.set(sharded, {"license": "apache-2.0", "origin": "edited"}, backup=True)
    for name in shards:
        meta = ref_metadata(sharded / name)
        assert meta["license"] == "apache-2.0"
        assert (sharded / (name + ".backup")).exists()
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == index_before["weight_map"]
    assert index["metadata"]["total_size"] == index_before["metadata"]["total_size"]
    assert index["metadata"]["origin"] == "edited"  # the index held it, so it changes there too
    assert metadata.show(sharded)["origin"] == "edited"
    with pytest.raises(fastensors.InvalidArgument, match="total_size"):
        metadata.set(sharded, {"total_size": "1"})
    metadata.delete(sharded, ["origin"])
    assert "origin" not in metadata.show(sharded)
    with fastensors.open_checkpoint(sharded) as ckpt:
        np.testing.assert_array_equal(ckpt.get_tensor("layers.5.w"), np.full((64,), 5, np.float32))


def write_config(directory, where="config.json", **extra):
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
              "max_position_embeddings": 256, "torch_dtype": "bfloat16", "rope_theta": 10000.0,
              "name": "módel", **extra}
    path = os.path.join(directory, where)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f)
    return config


def test_embed_config_search_order_and_keys(tmp_path, single):
    write_config(tmp_path, "transformer.config.json", model_type="third")
    write_config(tmp_path, "config.json", model_type="second")
    config = write_config(tmp_path, "transformer/config.json", model_type="first")
    values = metadata.embed_config(single, tmp_path)
    meta = ref_metadata(single)
    assert meta["metadata_source"] == os.path.join("transformer", "config.json")
    assert meta["model_type"] == "first"
    assert meta["architectures"] == '["LlamaForCausalLM"]'
    assert meta["hidden_size"] == "64" and meta["torch_dtype"] == "bfloat16"
    assert json.loads(meta["full_config"]) == config
    assert "rope_theta" not in meta
    assert set(values) == set(metadata.CONFIG_KEYS) | {"full_config", "metadata_source"}
    os.unlink(tmp_path / "transformer" / "config.json")
    metadata.embed_config(single, tmp_path)
    assert ref_metadata(single)["model_type"] == "second"
    assert metadata.validate(single, require=["model_type", "full_config"]).ok


def test_embed_config_missing_is_a_warning(tmp_path, single):
    before = single.read_bytes()
    with pytest.warns(UserWarning, match="no config.json"):
        assert metadata.embed_config(single, tmp_path / "nowhere") is None
    assert single.read_bytes() == before
    assert cli(["metadata", "embed-config", str(single), "--model-dir", str(tmp_path)]) == 0


def test_embed_config_from_a_pipeline_yaml(tmp_path, single, capsys):
    pytest.importorskip("yaml")
    model = tmp_path / "models" / "flux"
    config = write_config(model, "transformer/config.json", model_type="flux")
    yaml_file = tmp_path / "flux.1-dev.yaml"
    # pipeline.path, relative to the YAML file
    yaml_file.write_text("pipeline:\n  name: flux.1-dev\n  path: models/flux\n  dtype: torch.bfloat16\n")
    assert metadata.model_dir_from_yaml(yaml_file) == str(model)
    assert cli(["metadata", "embed-config", str(single), "--config-yaml", str(yaml_file)]) == 0
    assert json.loads(ref_metadata(single)["full_config"]) == config
    assert "embedded" in capsys.readouterr().out
    # pipeline.path wins over --model-path
    other = tmp_path / "other"
    write_config(other, model_type="other")
    assert metadata.model_dir_from_yaml(yaml_file, other) == str(model)
    # no pipeline.path: --model-path, then a directory named after pipeline.name
    yaml_file.write_text("pipeline:\n  name: flux.1-dev\n")
    assert metadata.model_dir_from_yaml(yaml_file, other) == str(other)
    assert cli(["metadata", "embed-config", str(single), "--config-yaml", str(yaml_file),
                "--model-path", str(other)]) == 0
    assert ref_metadata(single)["model_type"] == "other"
    write_config(tmp_path / "flux.1-dev", model_type="by-name")
    assert metadata.model_dir_from_yaml(yaml_file) == str(tmp_path / "flux.1-dev")
    metadata.embed_config(single, config_yaml=yaml_file)
    assert ref_metadata(single)["model_type"] == "by-name"


@pytest.mark.parametrize("text,match", [
    ("pipeline:\n  path: no/such/dir\n", "pipeline.path 'no/such/dir'|pipeline.path .*is not a directory"),
    ("pipeline:\n  dtype: bf16\n", "no pipeline.path and no pipeline.name"),
    ("pipeline:\n  name: not-here\n", "no directory named after its pipeline.name 'not-here'"),
    ("model:\n  path: x\n", "no 'pipeline' mapping"),
    ("- a\n- b\n", "no 'pipeline' mapping"),
    ("pipeline:\n  path: [1, 2]\n", "pipeline.path must be a non-empty string"),
    ("pipeline: [\n", "not valid YAML"),
])
def test_embed_config_yaml_errors_are_clear(tmp_path, single, text, match, capsys):
    pytest.importorskip("yaml")
    before = single.read_bytes()
    yaml_file = tmp_path / "pipe.yaml"
    yaml_file.write_text(text)
    with pytest.raises(fastensors.InvalidArgument, match=match):
        metadata.embed_config(single, config_yaml=yaml_file)
    assert single.read_bytes() == before
    assert cli(["metadata", "embed-config", str(single), "--config-yaml", str(yaml_file)]) == 1
    assert "error" in capsys.readouterr().err
    with pytest.raises(fastensors.InvalidArgument, match="cannot read pipeline config"):
        metadata.model_dir_from_yaml(tmp_path / "missing.yaml")


def test_validate(tmp_path, single, capsys):
    assert metadata.validate(single).ok
    report = metadata.validate(single, require=["format", "license"])
    assert not report.ok and "license" in report.problems[0]
    metadata.set(single, {"full_config": "{not json"})
    assert "full_config" in metadata.validate(single).problems[0]
    bad = tmp_path / "bad.safetensors"
    head = json.dumps({"__metadata__": {"n": 1}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})
    bad.write_bytes(len(head).to_bytes(8, "little") + head.encode() + b"\0")
    report = metadata.validate(bad)
    assert not report.ok and "invalid checkpoint" in report.problems[0]
    assert cli(["metadata", "validate", str(bad)]) == 1
    assert cli(["metadata", "validate", str(single), "--require", "format"]) == 1  # full_config is broken
    metadata.delete(single, ["full_config"])
    assert cli(["metadata", "validate", str(single), "--require", "format"]) == 0
    assert cli(["metadata", "validate", str(single), "--require", "nope"]) == 1
    out = capsys.readouterr().out
    assert "'nope' is missing" in out


def test_diff(tmp_path, single, capsys):
    other = tmp_path / "other.safetensors"
    t = tensors()
    t["z.weight"] = t["z.weight"].astype(np.float16)
    t["m.half"] = t["m.half"].reshape(9)
    del t["a.bias"]
    t["new"] = np.ones(2, np.int8)
    save_file(t, other, metadata={"format": "pt", "extra": "é"})
    d = metadata.diff(single, other)
    assert d.metadata_added == {"extra": "é"}
    assert d.metadata_changed == {"format": ("np", "pt")}
    assert d.tensors_added == {"new": ("I8", (2,))}
    assert d.tensors_removed == {"a.bias": ("U8", (13,))}
    assert d.dtype_changed == {"z.weight": ("F32", "F16")}
    assert d.shape_changed == {"m.half": ((3, 3), (9,))}
    assert metadata.diff(single, single).same
    assert cli(["metadata", "diff", str(single), str(other)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "~ dtype z.weight: F32 -> F16" in out and "+ metadata extra = é" in out
    assert cli(["metadata", "diff", str(single), str(other), "--exit-code"]) == 1
    assert cli(["metadata", "diff", str(single), str(single), "--exit-code"]) == 0
    capsys.readouterr()
    assert cli(["metadata", "diff", str(single), str(other), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tensors"]["shape_changed"] == {"m.half": {"a": [3, 3], "b": [9]}}


def test_cli_set_show_delete(single, capsys):
    assert cli(["metadata", "set", str(single), "a=1", "b=x=y", "--backup"]) == 0
    assert ref_metadata(single) == {"format": "np", "a": "1", "b": "x=y"}
    capsys.readouterr()
    assert cli(["metadata", "show", str(single)]) == 0
    assert json.loads(capsys.readouterr().out) == {"format": "np", "a": "1", "b": "x=y"}
    assert cli(["metadata", "delete", str(single), "a"]) == 0
    assert cli(["metadata", "delete", str(single), "a"]) == 1
    assert "fastensors metadata: error:" in capsys.readouterr().err
    assert cli(["metadata", "set", str(single), "novalue"]) == 1


@pytest.mark.parametrize("methods", [["copy_file_range", "sendfile", "pread"], ["sendfile", "pread"], ["pread"]])
def test_copy_methods_and_fallback(tmp_path, methods):
    src = tmp_path / "src"
    payload = os.urandom(3 << 20)
    src.write_bytes(payload)
    chosen = [(n, f) for n, f in _rewrite.COPY_METHODS if n in methods]

    def refuses(*_):
        raise OSError(errno.EXDEV, "cross-device")

    dst = tmp_path / "dst"
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.write(b"head")
        fo.flush()
        used = _rewrite.copy_range(fi.fileno(), fo.fileno(), 5, len(payload) - 5,
                                   methods=[("refuses", refuses)] + chosen)
    assert used == chosen[0][0]
    assert dst.read_bytes() == b"head" + payload[5:]


def test_truncated_source_is_an_error(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x" * 10)
    with open(src, "rb") as fi, open(tmp_path / "dst", "wb") as fo:
        with pytest.raises(fastensors.TruncatedData):
            _rewrite.copy_range(fi.fileno(), fo.fileno(), 0, 20)


# -- crashes --------------------------------------------------------------------------


def _state(path):
    """("old"|"new", ...) for the checkpoint as a reader sees it."""
    meta = metadata.show(path)
    with fastensors.open_checkpoint(path, lazy=False) as ckpt:
        arrays = {k: np.array(ckpt.get_tensor(k)) for k in ckpt.keys()}
    return meta.get("edit", "old"), arrays


@pytest.mark.parametrize("kind", ["single", "sharded"])
def test_killed_at_every_step_leaves_old_or_new(tmp_path, kind, request):
    """SIGKILL the editor at each step in turn: the checkpoint reads back as
    complete old or complete new, tensor data unchanged; the backup is whole."""
    path = request.getfixturevalue(kind)
    _, want = _state(path)
    files_before = {n: (path.parent / n if kind == "single" else path / n).read_bytes()
                    for n in ([path.name] if kind == "single" else os.listdir(path))}
    step = 0
    while True:
        pid = os.fork()
        if pid == 0:
            seen = [0]

            def hook(_label, _at=step):
                if seen[0] == _at:
                    os.kill(os.getpid(), signal.SIGKILL)
                seen[0] += 1

            _fileset._step_hook = hook
            try:
                metadata.set(path, {"edit": f"new{step}"}, backup=True, durable=False)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        label, arrays = _state(path)
        assert label in ("old", f"new{step}"), step
        assert arrays.keys() == want.keys() and all(np.array_equal(arrays[k], want[k]) for k in want)
        if label == "old" and kind == "single":
            assert path.read_bytes() == files_before[path.name]
        if not killed:
            break
        # Back to the original for the next trial.
        if label != "old":
            metadata.delete(path, ["edit"], durable=False)
        step += 1
        assert step < 60
    assert step >= (2 if kind == "single" else 5)
    assert label == f"new{step}"
    # Every edit after a kill cleaned up after it: no interim or staging names
    # left, and a checkpoint once left on interim names has its final names back.
    where = path.parent if kind == "single" else path
    assert not [n for n in os.listdir(where) if "fastensors-" in n]
    if kind == "sharded":
        index = json.loads((path / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"].values()) <= set(files_before)  # the original shard names


KILLER = r"""
import sys, fastensors.metadata as m
i = 0
while True:
    m.set(sys.argv[1], {"edit": str(i)}, durable=True)
    i += 1
"""


def test_killed_at_random_times(tmp_path):
    """A large file edited in a loop by another process, killed at random
    moments: every time the file reads as a complete, valid checkpoint."""
    path = tmp_path / "big.safetensors"
    big = np.random.default_rng(1).standard_normal(8 << 20).astype(np.float32)  # 32 MiB
    save_file({"big": big, "small": np.arange(5, dtype=np.int32)}, path, metadata={"edit": "start"}, durable=False)
    data = data_section(path)
    rng = random.Random(7)
    for trial in range(4):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(path)])
        time.sleep(0.2 + rng.random() * 0.6)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert "edit" in ref_metadata(path)
        assert data_section(path) == data
        assert metadata.validate(path).ok
    # Staging left by killed editors is removed by the next commit in that place.
    metadata.set(path, {"edit": "final"})
    assert [n for n in os.listdir(tmp_path.parent) if _fileset.STAGING_MARK in n and tmp_path.name in n] == []
    assert os.listdir(tmp_path) == ["big.safetensors"]


def test_pipeline_yaml_hostile_arguments_in_a_subprocess(tmp_path):
    # Odd argument types, a directory, binary junk, a YAML bomb of aliases and
    # non-string keys: a typed error or TypeError, never a crash or a hang.
    pytest.importorskip("yaml")
    (tmp_path / "junk.yaml").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "bomb.yaml").write_text("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                                        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\npipeline: {path: *c}\n")
    (tmp_path / "keys.yaml").write_text("pipeline: {1: 2, [a]: b}\n")
    (tmp_path / "deep.yaml").write_text("pipeline: " + "[" * 5000 + "]" * 5000 + "\n")
    code = textwrap.dedent(f"""
        import fastensors
        from fastensors import metadata
        d = {str(tmp_path)!r}
        cases = [None, 3, 2.5, b"x", [d], {{}}, d, d + "/junk.yaml", d + "/bomb.yaml", d + "/keys.yaml",
                 d + "/deep.yaml", d + "/missing.yaml", "", "\\0"]
        for case in cases:
            for model_path in (None, 7, d, d + "/nope"):
                try:
                    metadata.model_dir_from_yaml(case, model_path)
                except (fastensors.SafetensorError, TypeError, ValueError):
                    pass
        print("done", len(cases))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "done 14" in r.stdout, r.stdout + r.stderr
