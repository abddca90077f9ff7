"""fastensors.summary and ``fastensors inspect``: headers only, totals
checked against the reference package, modality rules."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import safetensors

import fastensors
from fastensors import metadata, summary
from fastensors.surgery.inspect import classify, detect_modality
from fastensors.cli import main as cli
from fastensors.numpy import save_file

torch = pytest.importorskip("torch")
import fastensors.torch  # noqa: E402
from architectures import ARCHITECTURES, build  # noqa: E402


def reference_totals(paths):
    params, nbytes, by_dtype = 0, 0, {}
    for p in paths:
        with safetensors.safe_open(str(p), "pt") as f:
            for k in f.keys():
                t = f.get_slice(k)
                n = int(np.prod(t.get_shape())) if t.get_shape() else 1
                params += n
                size = n * {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "I8": 1}[t.get_dtype()]
                nbytes += size
                by_dtype[t.get_dtype()] = by_dtype.get(t.get_dtype(), 0) + n
    return params, nbytes, by_dtype


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_summary_of_saved_architectures(tmp_path, arch):
    model = build(arch)
    model.save_pretrained(tmp_path, max_shard_size="20KB")  # transformers' own writer, sharded
    shards = sorted(n for n in os.listdir(tmp_path) if n.endswith(".safetensors"))
    s = summary(tmp_path)
    params, nbytes, by_dtype = reference_totals(tmp_path / n for n in shards)
    assert s.parameters == params and s.nbytes == nbytes
    assert {k: v["parameters"] for k, v in s.by_dtype.items()} == by_dtype
    assert s.sharded == (len(shards) > 1)
    assert sorted(f["name"] for f in s.files) == shards
    assert [t.name for t in s.tensors] == sorted(t.name for t in s.tensors)
    assert s.modality == {"llama": "text", "bert": "text", "vit": "image", "t5": "text"}[arch]
    assert s.modality_source == "config.json"


def test_header_only_json_document(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones((4, 3), np.float32), "ids": np.arange(5, dtype=np.int64)}, path,
              metadata={"modality": "audio", "note": "é"})
    # A data section of garbage: summary must not read it.
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    raw[8 + n:] = os.urandom(len(raw) - 8 - n)
    path.write_bytes(bytes(raw))
    assert cli(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "fastensors.summary/1"
    assert doc["totals"] == {"tensors": 2, "parameters": 17, "bytes": 88,
                             "by_dtype": {"F32": {"tensors": 1, "parameters": 12, "bytes": 48},
                                          "I64": {"tensors": 1, "parameters": 5, "bytes": 40}}}
    assert doc["modality"] == {"value": "audio", "source": "metadata:modality"}
    assert doc["metadata"] == {"modality": "audio", "note": "é"}
    assert doc["files"] == [{"name": "m.safetensors", "tensors": 2, "tensor_bytes": 88,
                             "file_bytes": os.path.getsize(path)}]
    assert doc["tensors"][0] == {"name": "ids", "dtype": "I64", "shape": [5], "bytes": 40, "parameters": 5,
                                 "file": "m.safetensors"}
    assert doc["sharded"] is False and doc["index_metadata"] is None
    assert cli(["inspect", str(path)]) == 0
    table = capsys.readouterr().out
    assert "total: 2 tensors, 17 parameters" in table and "modality: audio" in table


def test_sharded_index_path_and_table(tmp_path, capsys):
    sd = {f"layers.{i}.w": np.zeros((32,), np.float16) for i in range(5)}
    fastensors.save_sharded(sd, tmp_path, max_shard_size=100)
    s = summary(tmp_path / "model.safetensors.index.json")
    assert s.sharded and len(s.files) > 1 and s.index_metadata["total_size"] == 320
    assert cli(["inspect", str(tmp_path), "--max-rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "... 3 more tensors" in out and "model-00001-of-" in out
    assert cli(["inspect", str(tmp_path / "nothing")]) == 1
    assert "fastensors inspect: error:" in capsys.readouterr().err


def test_modality_from_embedded_config(tmp_path):
    path = tmp_path / "sub" / "m.safetensors"
    path.parent.mkdir()
    save_file({"w": np.ones(2, np.float32)}, path)
    assert summary(path).modality == "unknown"
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["WhisperForConditionalGeneration"]}))
    metadata.embed_config(path, tmp_path)
    s = summary(path)
    assert (s.modality, s.modality_source) == ("audio", "metadata")


@pytest.mark.parametrize("hints,want", [
    (["T5ForConditionalGeneration"], "text"),
    (["MDLM"], "text"), (["sedd"], "text"), (["TextEncoder"], "text"),
    (["GPTBigCodeForCausalLM"], "code"), (["starcoder2"], "code"),
    (["T5EncoderModel"], "text"), (["BertEncoderDecoder"], "text"),  # "code" inside "encoder" is no hint
    (["DiTTransformer2DModel"], "image"), (["AutoencoderKL"], "image"), (["vit"], "image"),
    (["ViTForImageClassification"], "image"), (["UNet2DConditionModel"], "image"),
    (["WhisperForConditionalGeneration"], "audio"), (["wav2vec2"], "audio"),
    (["Conditional"], None), ([], None),
])
def test_modality_rules(hints, want):
    assert classify(hints) == want


def test_detect_modality_order(tmp_path):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"_class_name": "DiTTransformer2DModel"}))
    assert detect_modality({}, str(tmp_path)) == ("image", os.path.join("transformer", "config.json"))
    assert detect_modality({"model_type": "llama"}, str(tmp_path)) == ("text", "metadata")
    assert detect_modality({"architectures": '["WhisperModel"]'}, None) == ("audio", "metadata")
    assert detect_modality({"modality": "video", "model_type": "llama"}) == ("video", "metadata:modality")
    assert detect_modality({}, None) == ("unknown", "none")
