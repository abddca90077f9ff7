"""PyTorch pickle checkpoints to safetensors: values preserved, shared
tensors stored once, sharded indexes rewritten, and pickles that would run
code refused without running it."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import safetensors.torch as ref_torch  # noqa: E402

import fastensors  # noqa: E402
import fastensors.torch as ft  # noqa: E402
from fastensors.cli import main  # noqa: E402
from conftest import same_tensor, split_header, torch_sample  # noqa: E402


def sample_state_dict():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(30, 8, generator=g)
    return {
        "embed.weight": emb,
        "lm_head.weight": emb,  # tied
        "layer.weight": torch.randn(16, 8, generator=g).t(),  # non-contiguous
        "layer.bias": torch.randn(16, generator=g),
        "bf": torch_sample("bfloat16", (5, 3)),
        "f8": torch_sample("float8_e4m3fn", (7,)),
        "ids": torch.arange(12, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.empty(0, 4),
    }


def test_single_bin_to_file(tmp_path):
    sd = sample_state_dict()
    torch.save(sd, tmp_path / "pytorch_model.bin")
    out = ft.convert_pytorch_to_safetensors(tmp_path / "pytorch_model.bin", tmp_path / "model.safetensors")
    assert out == [str(tmp_path / "model.safetensors")]
    loaded = ref_torch.load_file(tmp_path / "model.safetensors")  # the reference reader as the oracle
    assert set(loaded) == set(sd) - {"lm_head.weight"}
    for k, v in loaded.items():
        assert same_tensor(v, sd[k]), k
    header, _ = split_header((tmp_path / "model.safetensors").read_bytes())
    assert header["__metadata__"] == {"format": "pt", "lm_head.weight": "embed.weight"}


def test_directory_to_directory_carries_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sd = sample_state_dict()
    torch.save(sd, src / "pytorch_model.bin")
    (src / "config.json").write_text('{"model_type": "x"}')
    ft.convert_pytorch_to_safetensors(src, tmp_path / "dst")
    assert sorted(os.listdir(tmp_path / "dst")) == ["config.json", "model.safetensors"]
    with fastensors.open_checkpoint(tmp_path / "dst", framework="pt") as ckpt:
        for k in ckpt.keys():
            assert same_tensor(ckpt.get_tensor(k), sd[k])


def test_in_place_conversion_keeps_the_bin(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "pytorch_model.bin")
    ft.convert_pytorch_to_safetensors(tmp_path, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "pytorch_model.bin"]


def test_sharded_bin_index_rewritten(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=96, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    src = tmp_path / "bin"
    ft.save_pretrained(model, src, max_shard_size="20KB", safe_serialization=False)
    old_index = json.loads((src / "pytorch_model.bin.index.json").read_text())
    written = ft.convert_pytorch_to_safetensors(src / "pytorch_model.bin.index.json", tmp_path / "st")
    names = sorted(os.listdir(tmp_path / "st"))
    assert sorted(os.path.basename(p) for p in written) == [
        n for n in names if n not in ("config.json", "generation_config.json")]
    assert "config.json" in names  # carried over from the source directory
    index = json.loads((tmp_path / "st" / "model.safetensors.index.json").read_text())
    # shard i of the .bin becomes shard i of the safetensors
    for name, fname in index["weight_map"].items():
        assert fname == old_index["weight_map"][name].replace("pytorch_model", "model").replace(".bin", ".safetensors")
    assert ("lm_head.weight" in index["weight_map"]) != ("transformer.wte.weight" in index["weight_map"])
    assert {"lm_head.weight", "transformer.wte.weight"} & set(index["metadata"])
    assert index["metadata"]["total_parameters"] == old_index["metadata"]["total_parameters"]
    assert index["metadata"]["total_size"] == sum(
        ckpt_t.nbytes for ckpt_t in fastensors.list_safetensors_tensors(tmp_path / "st"))
    for fname in set(index["weight_map"].values()):
        header, _ = split_header((tmp_path / "st" / fname).read_bytes())
        assert header["__metadata__"]["format"] == "pt"
    # the converted checkpoint loads into transformers and into the model
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "st").eval()
    ids = torch.randint(0, 96, (1, 7))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_cli_convert_bin(tmp_path, capsys):
    sd = {"a": torch.randn(4, 4), "b": torch.arange(5)}
    torch.save(sd, tmp_path / "weights.bin")
    assert main(["convert-bin", str(tmp_path / "weights.bin"), str(tmp_path / "out.safetensors")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out.safetensors")
    loaded = ref_torch.load_file(tmp_path / "out.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


# -- pickles that would run code ------------------------------------------------------------

class Payload:
    """Unpickling this calls open(path, "w"): it would create the file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("fmt", ["zip", "legacy", "plain-pickle"])
def test_malicious_pickle_refused_without_running(tmp_path, fmt, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "pytorch_model.bin"
    obj = {"weight": torch.ones(2), "evil": Payload(str(marker))}
    if fmt == "zip":
        torch.save(obj, bad)
    elif fmt == "legacy":
        torch.save(obj, bad, _use_new_zipfile_serialization=False)
    else:
        bad.write_bytes(pickle.dumps(obj, protocol=2))
    assert not marker.exists()
    with pytest.raises(fastensors.UnsafePickle, match="refusing to load") as e:
        ft.convert_pytorch_to_safetensors(bad, tmp_path / "out.safetensors")
    assert isinstance(e.value, fastensors.CheckpointError)
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(fastensors.UnsafePickle):
        ft.load_pretrained(torch.nn.Linear(2, 2), tmp_path)
    assert not marker.exists()
    assert main(["convert-bin", str(bad), str(tmp_path / "o")]) == 1
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_not_a_state_dict(tmp_path):
    torch.save([torch.ones(2)], tmp_path / "list.bin")
    with pytest.raises(fastensors.CheckpointError, match="not a state dict"):
        ft.convert_pytorch_to_safetensors(tmp_path / "list.bin", tmp_path / "o.safetensors")
    torch.save({"nested": {"w": torch.ones(2)}}, tmp_path / "nested.bin")
    with pytest.raises(fastensors.CheckpointError, match="not a flat state dict"):
        ft.convert_pytorch_to_safetensors(tmp_path / "nested.bin", tmp_path / "o.safetensors")


def test_verification_catches_a_bad_write(tmp_path, monkeypatch):
    torch.save({"w": torch.arange(64, dtype=torch.float32)}, tmp_path / "pytorch_model.bin")
    import fastensors.convert_bin as cb

    real = cb.write_specs

    def corrupting(specs, path, metadata, durable):
        real(specs, path, metadata, durable)
        with open(path, "r+b") as f:  # flip the last byte of tensor data
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
            f.seek(-1, os.SEEK_END)
            f.write(bytes([last[0] ^ 0xFF]))

    monkeypatch.setattr(cb, "write_specs", corrupting)
    with pytest.raises(fastensors.ConversionMismatch, match="'w'"):
        ft.convert_pytorch_to_safetensors(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # A single .bin to a .safetensors path: the previous file stays, nothing else is left.
    previous = tmp_path / "model.safetensors"
    previous.write_bytes(b"previous")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(fastensors.ConversionMismatch, match="'w'"):
        ft.convert_pytorch_to_safetensors(tmp_path / "pytorch_model.bin", previous)
    assert previous.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == before


def test_sharded_bin_disagreeing_with_index(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": torch.ones(2), "c": torch.ones(1)}, tmp_path / "pytorch_model-00002-of-00002.bin")
    index = {"metadata": {"total_size": 20}, "weight_map": {
        "a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(fastensors.CheckpointError, match="'c'"):
        ft.convert_pytorch_to_safetensors(tmp_path, tmp_path / "out")
    index["weight_map"]["c"] = "../pytorch_model-00002-of-00002.bin"
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(fastensors.InvalidIndex):
        ft.convert_pytorch_to_safetensors(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_numpy_values_match_torch_load(tmp_path):
    sd = {f"t{i}": torch_sample(name, (3, 5), seed=i) for i, name in
          enumerate(["float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "float8_e5m2"])}
    torch.save(sd, tmp_path / "pytorch_model.bin")
    ft.convert_pytorch_to_safetensors(tmp_path, tmp_path / "o")
    ref = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    with fastensors.open_checkpoint(tmp_path / "o", framework="pt") as ckpt:
        for k, v in ref.items():
            assert same_tensor(ckpt.get_tensor(k), v), k
    assert np.array_equal(fastensors.open_checkpoint(tmp_path / "o").get_tensor("t2"), sd["t2"].numpy())
