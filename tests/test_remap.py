"""fastensors.remap: Remapper, reindex, renaming on load and on write,
partial loading (include/exclude/prefix) into models of real architectures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors
from safetensors.numpy import load_file as ref_load_file

import fastensors
from fastensors import KeyCollision, Remapper, reindex
from fastensors.numpy import save_file
from fastensors.remap import map_keys, rename_file

torch = pytest.importorskip("torch")
import fastensors.torch  # noqa: E402
from architectures import build  # noqa: E402


def test_rules_apply_in_order_with_groups():
    r = Remapper([(r"^model\.layers\.(\d+)\.", r"blk.\1."), (r"self_attn\.q_proj", "attn_q"), (r"blk\.", "b.")])
    assert r("model.layers.11.self_attn.q_proj.weight") == "b.11.attn_q.weight"
    assert r("lm_head.weight") == "lm_head.weight"
    assert r.then({"lm_head.weight": "output.weight"})("lm_head.weight") == "output.weight"


def test_bad_rules_are_typed_errors():
    with pytest.raises(fastensors.InvalidArgument, match="bad regular expression"):
        Remapper([("(", "x")])
    with pytest.raises(fastensors.InvalidArgument):
        Remapper(["not-a-pair"])
    with pytest.raises(fastensors.InvalidArgument, match="non-empty"):
        map_keys(["a"], Remapper([("a", "")]))


def test_collision_names_both_sources():
    r = Remapper([(r"\.(q|k)_proj", ".qk")])
    with pytest.raises(KeyCollision) as e:
        r.map_keys(["l.q_proj", "l.k_proj"])
    assert "'l.q_proj'" in str(e.value) and "'l.k_proj'" in str(e.value) and "'l.qk'" in str(e.value)
    assert e.value.sources == ("l.q_proj", "l.k_proj") and e.value.target == "l.qk"
    assert isinstance(e.value, ValueError) and isinstance(e.value, fastensors.SafetensorError)


def test_debug_prints_table(capsys):
    Remapper([("a", "b")], debug=True).map_keys(["xa", "y"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["original", "remapped"]
    assert out[1].split() == ["xa", "->", "xb"] and out[2].split() == ["y", "=", "y"]


def test_reindex():
    keys = ["layers.0.w", "layers.2.w", "layers.4.w", "layers.4.b", "head.w"]
    assert reindex(keys) == {"layers.0.w": "layers.0.w", "layers.2.w": "layers.1.w", "layers.4.w": "layers.2.w",
                             "layers.4.b": "layers.2.b", "head.w": "head.w"}
    # Numbers order numerically (10 after 9), nested numbering is per parent.
    keys = ["b.10.m.3", "b.9.m.7", "b.9.m.1", "b.10.m.8", "c.5"]
    assert reindex(keys) == {"b.10.m.3": "b.1.m.0", "b.9.m.7": "b.0.m.1", "b.9.m.1": "b.0.m.0",
                             "b.10.m.8": "b.1.m.1", "c.5": "c.0"}
    assert reindex(["x.3", "x.5"], start=1) == {"x.3": "x.1", "x.5": "x.2"}


def test_reindex_pruned_llama_loads_into_smaller_model(tmp_path):
    """Drop layers 1 of a 3-layer Llama; reindex makes the rest load into a
    2-layer model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=2, vocab_size=64)
    big = LlamaForCausalLM(LlamaConfig(num_hidden_layers=3, **cfg))
    sd = {k: v for k, v in big.state_dict().items() if ".layers.1." not in k}
    fastensors.torch.save_file(sd, tmp_path / "model.safetensors", remap=reindex(sd))
    small = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, **cfg))
    missing, unexpected = fastensors.torch.load_pretrained(small, tmp_path)
    assert (missing, unexpected) == ([], [])
    torch.testing.assert_close(small.model.layers[1].mlp.up_proj.weight, big.model.layers[2].mlp.up_proj.weight,
                               rtol=0, atol=0)


@pytest.fixture
def file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({f"enc.{i}.w": np.full((2, 2), i, np.float32) for i in range(3)}
              | {"dec.0.w": np.zeros(3, np.int8), "enc.0.b": np.ones(2, np.float16)}, path)
    return path


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_safe_open_remap_and_select(file, backend):
    with fastensors.safe_open(file, "np", backend=backend, prefix="enc.", exclude=[r"\.b$"],
                              remap=Remapper([(r"^(\d+)\.w$", r"layer\1.kernel")])) as f:
        assert f.keys() == ["layer0.kernel", "layer1.kernel", "layer2.kernel"]
        assert f.offset_keys() == ["layer0.kernel", "layer1.kernel", "layer2.kernel"]
        assert f.get_tensor("layer2.kernel")[0, 0] == 2
        assert f.get_slice("layer1.kernel")[1:, :1].tolist() == [[1.0]]
        assert f.tensor_info("layer1.kernel").dtype == "F32"
        assert list(f.get_tensors()) == ["layer0.kernel", "layer1.kernel", "layer2.kernel"]
        with pytest.raises(fastensors.TensorNotFound):
            f.get_tensor("enc.0.w")  # stored names are hidden
    with fastensors.safe_open(file, "np", include=["^dec", r"\.b$"]) as f:
        assert f.keys() == ["dec.0.w", "enc.0.b"]
    with pytest.raises(KeyCollision, match="'enc.0.w' and 'enc.1.w'"):
        fastensors.safe_open(file, "np", remap=lambda k: k.split(".")[0] + ".w")


def test_prefix_strip_collision(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a.x": np.zeros(1), "a.a.x": np.zeros(1)}, path)
    with fastensors.safe_open(path, "np", prefix="a.") as f:
        assert f.keys() == ["a.x", "x"]
    with pytest.raises(fastensors.InvalidArgument, match="leaves no name"):
        fastensors.safe_open(path, "np", prefix="a.x")


def test_open_checkpoint_sharded_remap(tmp_path):
    sd = {f"model.layers.{i}.w": np.full((50,), i, np.float32) for i in range(4)}
    fastensors.save_sharded(sd, tmp_path, max_shard_size=450)
    r = Remapper([(r"^model\.layers\.", "h.")])
    with fastensors.open_checkpoint(tmp_path, remap=r, exclude=["layers.0"]) as ckpt:
        assert ckpt.keys() == ["h.1.w", "h.2.w", "h.3.w"]
        assert ckpt.get_tensor("h.3.w")[0] == 3
        assert sorted(n for f in ckpt.files for n in ckpt.tensors_in_file(f)) == ckpt.keys()
        assert ckpt.stored_name("h.1.w") == "model.layers.1.w"
        assert ckpt.file_of("h.1.w") == ckpt._stored_map["model.layers.1.w"]
        assert [t.name for t in ckpt.tensors()] == ckpt.keys()
        assert ckpt.total_parameters() == 150
        assert "h.1.w" in ckpt and "model.layers.1.w" not in ckpt and len(ckpt) == 3


def test_remap_on_write_and_file_rename(tmp_path):
    sd = {"old.a": np.arange(4, dtype=np.int32), "old.b": np.ones((2, 2), np.float32)}
    r = Remapper([(r"^old\.", "new.")])
    save_file(sd, tmp_path / "w.safetensors", remap=r)
    assert sorted(ref_load_file(str(tmp_path / "w.safetensors"))) == ["new.a", "new.b"]
    plan = fastensors.save_sharded(sd, tmp_path / "sh", remap=r, max_shard_size=20)
    assert sorted(plan.tensor_to_filename) == ["new.a", "new.b"]
    # In place: a new header, the same data bytes.
    path = tmp_path / "x.safetensors"
    save_file(sd, path, metadata={"k": "v"})
    mapping = rename_file(path, r, backup=True)
    assert mapping == {"old.a": "new.a", "old.b": "new.b"}
    ref = ref_load_file(str(path))
    np.testing.assert_array_equal(ref["new.a"], sd["old.a"])
    with safetensors.safe_open(str(path), "np") as f:
        assert f.metadata() == {"k": "v"}
    assert sorted(ref_load_file(str(path) + ".backup")) == ["old.a", "old.b"]
    # Sharded, in place: the index follows.
    rename_file(tmp_path / "sh", {"new.a": "renamed.a"})
    index = json.loads((tmp_path / "sh" / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == ["new.b", "renamed.a"]
    with fastensors.open_checkpoint(tmp_path / "sh", lazy=False) as ckpt:
        np.testing.assert_array_equal(ckpt.get_tensor("renamed.a"), sd["old.a"])


# -- real architectures ----------------------------------------------------------------


def test_t5_encoder_out_of_encoder_decoder(tmp_path):
    """The encoder of a T5 encoder-decoder checkpoint (written by
    transformers) loads into T5EncoderModel by excluding the decoder."""
    from transformers import T5EncoderModel

    full = build("t5")
    full.save_pretrained(tmp_path)
    enc = T5EncoderModel(full.config)
    missing, unexpected = fastensors.torch.load_pretrained(enc, tmp_path, exclude=[r"^decoder\.", r"^lm_head\."])
    assert (missing, unexpected) == ([], [])
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, full.state_dict()[k], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fastensors.torch.load_pretrained(T5EncoderModel(full.config), tmp_path)


def test_bert_base_by_prefix_strict_false_reports_keys(tmp_path):
    """BertModel out of a BertForMaskedLM checkpoint: strip "bert."; the
    pooler is missing (the MLM head has none)."""
    from transformers import BertModel

    mlm = build("bert")
    fastensors.torch.save_model(mlm, tmp_path / "model.safetensors")
    base = BertModel(mlm.config)
    missing, unexpected = fastensors.torch.load_pretrained(base, tmp_path, prefix="bert.", strict=False)
    assert missing == ["pooler.dense.bias", "pooler.dense.weight"] and unexpected == []
    torch.testing.assert_close(base.encoder.layer[1].output.dense.weight, mlm.bert.encoder.layer[1].output.dense.weight,
                               rtol=0, atol=0)
    missing, unexpected = fastensors.torch.load_model(base, tmp_path / "model.safetensors", strict=False)
    assert "pooler.dense.weight" in missing and "bert.pooler.dense.weight" not in unexpected
    assert "cls.predictions.bias" in unexpected


def test_llama_to_other_codebase_names_and_back(tmp_path):
    """Rename a Llama checkpoint to GGUF-style names and back again."""
    model = build("llama")
    fastensors.torch.save_model(model, tmp_path / "model.safetensors")
    to_gguf = Remapper([
        (r"^model\.embed_tokens\.", "token_embd."),
        (r"^model\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.", r"blk.\1.attn_\2."),
        (r"^model\.layers\.(\d+)\.self_attn\.o_proj\.", r"blk.\1.attn_output."),
        (r"^model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.", r"blk.\1.ffn_\2."),
        (r"^model\.layers\.(\d+)\.input_layernorm\.", r"blk.\1.attn_norm."),
        (r"^model\.layers\.(\d+)\.post_attention_layernorm\.", r"blk.\1.ffn_norm."),
        (r"^model\.norm\.", "output_norm."),
        (r"^lm_head\.", "output."),
    ])
    with fastensors.open_checkpoint(tmp_path, "pt", remap=to_gguf) as ckpt:
        keys = ckpt.keys()
        assert "blk.1.attn_q.weight" in keys and "output_norm.weight" in keys and "token_embd.weight" in keys
        assert not any(k.startswith("model.") for k in keys)
        renamed = {k: ckpt.get_tensor(k) for k in keys}
    back = {v: k for k, v in to_gguf.map_keys(model.state_dict()).items()}
    fresh = build("llama")
    for p in fresh.parameters():
        torch.nn.init.zeros_(p)
    fastensors.torch.save_file(renamed, tmp_path / "gguf_names.safetensors", remap=back)
    missing, unexpected = fastensors.torch.load_model(fresh, tmp_path / "gguf_names.safetensors", strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}  # tied to the embedding in some configs
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0)


def test_release_under_a_swapping_remap_releases_the_named_tensor(tmp_path, monkeypatch):
    # remap={"a": "b", "b": "a"}: releasing public "a" must drop the pages of
    # stored "b" (the tensor shown as "a"), never stored "a".
    fastensors.numpy.save_file({"a": np.zeros(4096, np.float32), "b": np.ones(4096, np.float32)},
                               tmp_path / "m.safetensors")
    released = []
    with fastensors.open_checkpoint(tmp_path, remap={"a": "b", "b": "a"}) as ckpt:
        handle = ckpt._handles["m.safetensors"]
        real = handle._file

        class Recorder:
            backend = real.backend

            def release(self, name):
                released.append(name)
                real.release(name)

            def __getattr__(self, attr):
                return getattr(real, attr)

            def __contains__(self, name):
                return name in real

        monkeypatch.setattr(handle, "_file", Recorder())
        # The read engine takes the real file (a plan entry is a _core.File).
        monkeypatch.setattr(handle, "_range", lambda info: (real, real.data_start + info[3], info[4] - info[3]))
        assert float(ckpt.get_tensor("a")[0]) == 1.0  # public "a" is stored "b"
        ckpt.release("a")
        assert released == ["b"]
        ckpt.release("b")
        assert released == ["b", "a"]
        assert float(ckpt.get_tensor("a")[0]) == 1.0 and float(ckpt.get_tensor("b")[0]) == 0.0
