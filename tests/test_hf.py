"""Hugging Face conventions: save_pretrained writes what transformers
writes and transformers loads it; load_pretrained loads transformers' own
saves; PretrainedMixin gives any module the pair."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fastensors  # noqa: E402
import fastensors.torch as ft  # noqa: E402

VOCAB = 96


def tiny(kind):
    """Small randomly initialized models built from configs (no downloads)."""
    torch.manual_seed({"bert": 0, "gpt2": 1, "llama": 2}[kind])
    if kind == "bert":
        cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                      num_attention_heads=2, vocab_size=VOCAB, max_position_embeddings=64)
        return transformers.BertForMaskedLM(cfg).eval()
    if kind == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(cfg).eval()
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=VOCAB, tie_word_embeddings=True,
                                   max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


AUTO = {"bert": "AutoModelForMaskedLM", "gpt2": "AutoModelForCausalLM", "llama": "AutoModelForCausalLM"}
IDS = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(5))


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def fresh_copy(model):
    """The same architecture with different random weights."""
    torch.manual_seed(123)
    return type(model)(model.config).eval()


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("shard", ["20KB", "5GB"])
def test_transformers_loads_ours(tmp_path, kind, shard):
    model = tiny(kind)
    ft.save_pretrained(model, tmp_path, max_shard_size=shard)
    auto = getattr(transformers, AUTO[kind])
    loaded, info = auto.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert torch.equal(logits(loaded.eval()), logits(model))
    assert not torch.equal(logits(fresh_copy(model)), logits(model))  # the comparison can fail


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_files_identical_to_transformers_save(tmp_path, kind):
    model = tiny(kind)
    ft.save_pretrained(model, tmp_path / "ours", max_shard_size="20KB")
    model.save_pretrained(tmp_path / "ref", max_shard_size="20KB")
    names = sorted(os.listdir(tmp_path / "ref"))
    assert sorted(os.listdir(tmp_path / "ours")) == names
    assert "model.safetensors.index.json" in names
    for name in names:
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_single_file_identical_to_transformers_save(tmp_path):
    model = tiny("gpt2")
    ft.save_pretrained(model, tmp_path / "ours")
    model.save_pretrained(tmp_path / "ref")
    assert sorted(os.listdir(tmp_path / "ours")) == sorted(os.listdir(tmp_path / "ref"))
    for name in os.listdir(tmp_path / "ref"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("shard", ["20KB", "5GB"])
def test_we_load_transformers_save(tmp_path, kind, shard):
    model = tiny(kind)
    model.save_pretrained(tmp_path, max_shard_size=shard)
    other = fresh_copy(model)
    missing, unexpected = ft.load_pretrained(other, tmp_path)
    assert missing == [] and unexpected == []
    assert torch.equal(logits(other), logits(model))


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_pickle_weights_like_transformers(tmp_path, kind):
    model = tiny(kind)
    ft.save_pretrained(model, tmp_path, max_shard_size="20KB", safe_serialization=False)
    names = sorted(os.listdir(tmp_path))
    assert "pytorch_model.bin.index.json" in names and not any(n.endswith(".safetensors") for n in names)
    text = (tmp_path / "pytorch_model.bin.index.json").read_text()
    index = json.loads(text)
    assert text == json.dumps(index, indent=2, sort_keys=True) + "\n"
    assert set(index["weight_map"]) == set(model.state_dict())  # pickles keep tied names
    shards = {}
    for fname in sorted(set(index["weight_map"].values())):
        shards.update(torch.load(tmp_path / fname, weights_only=True))
    assert shards.keys() == model.state_dict().keys()
    auto = getattr(transformers, AUTO[kind])
    loaded, info = auto.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(logits(loaded.eval()), logits(model))
    other = fresh_copy(model)
    assert ft.load_pretrained(other, tmp_path) == ([], [])
    assert torch.equal(logits(other), logits(model))


def test_pickle_save_replaces_safetensors_save(tmp_path):
    model = tiny("gpt2")
    ft.save_pretrained(model, tmp_path, max_shard_size="20KB")
    ft.save_pretrained(model, tmp_path, safe_serialization=False)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "generation_config.json", "pytorch_model.bin"]
    ft.save_pretrained(model, tmp_path)  # and back: the .bin stays, shadowed by model.safetensors
    assert fastensors.hf.find_weights(tmp_path)[1].endswith("model.safetensors")


def test_load_pretrained_strict_and_dtype(tmp_path):
    model = tiny("llama")
    ft.save_pretrained(model, tmp_path, max_shard_size="20KB")
    # a model with an extra parameter: strict refuses before touching anything
    other = fresh_copy(model)
    other.register_parameter("extra", torch.nn.Parameter(torch.zeros(3)))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(RuntimeError, match='Missing key.*"extra"'):
        ft.load_pretrained(other, tmp_path)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    missing, unexpected = ft.load_pretrained(other, tmp_path, strict=False)
    assert missing == ["extra"] and unexpected == []
    # dtype casts the model and the loaded tensors
    half = fresh_copy(model)
    ft.load_pretrained(half, tmp_path, dtype=torch.bfloat16)
    for k, v in half.state_dict().items():
        want = model.state_dict()[k]
        assert v.dtype == (torch.bfloat16 if want.is_floating_point() else want.dtype)
        assert torch.equal(v, want.to(v.dtype))


def test_save_pretrained_metadata_and_atomic_replace(tmp_path):
    model = tiny("bert")
    ft.save_pretrained(model, tmp_path, max_shard_size="20KB", metadata={"author": "me"})
    with fastensors.open_checkpoint(tmp_path) as ckpt:
        assert ckpt.metadata() == {"author": "me", "format": "pt"}
    ft.save_pretrained(model, tmp_path)  # now one file: shards and index go
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


# -- the mixin ---------------------------------------------------------------------------

@dataclasses.dataclass
class TinyConfig:
    vocab: int = 50
    width: int = 8
    layers: int = 2


class TinyLM(ft.PretrainedMixin, torch.nn.Module):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed = torch.nn.Embedding(config.vocab, config.width)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(config.width, config.width) for _ in range(config.layers))
        self.head = torch.nn.Linear(config.width, config.vocab, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.register_buffer("steps", torch.tensor(7))

    def forward(self, ids):
        x = self.embed(ids)
        for b in self.blocks:
            x = torch.tanh(b(x))
        return self.head(x)


class DictLM(ft.PretrainedMixin, torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.lin = torch.nn.Linear(config["n"], config["n"])


def test_mixin_round_trip_with_dataclass_config(tmp_path):
    torch.manual_seed(0)
    model = TinyLM(TinyConfig(vocab=40, width=6, layers=3))
    model.save_pretrained(tmp_path, max_shard_size=500)
    assert json.loads((tmp_path / "config.json").read_text()) == {"layers": 3, "vocab": 40, "width": 6}
    weight_map = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert len([k for k in ("embed.weight", "head.weight") if k in weight_map]) == 1  # tied: stored once
    loaded = TinyLM.from_pretrained(tmp_path)
    assert loaded.config == model.config and not loaded.training
    ids = torch.randint(0, 40, (3, 5))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
    assert loaded.head.weight is loaded.embed.weight
    assert int(loaded.steps) == 7


def test_mixin_with_dict_config_and_bad_config(tmp_path):
    model = DictLM({"n": 4})
    model.save_pretrained(tmp_path)
    loaded = DictLM.from_pretrained(tmp_path)
    assert loaded.config == {"n": 4} and torch.equal(loaded.lin.weight, model.lin.weight)
    (tmp_path / "config.json").write_text('{"vocab": 3, "surprise": 1}')
    with pytest.raises(fastensors.InvalidArgument, match="surprise"):
        TinyLM.from_pretrained(tmp_path)


def test_mixin_with_transformers_config_class(tmp_path):
    class Wrapped(ft.PretrainedMixin, torch.nn.Module):
        config_class = transformers.BertConfig

        def __init__(self, config):
            super().__init__()
            self.config = config
            self.lin = torch.nn.Linear(config.hidden_size, 3)

    model = Wrapped(transformers.BertConfig(hidden_size=12, num_attention_heads=2))
    model.save_pretrained(tmp_path)
    loaded = Wrapped.from_pretrained(tmp_path)
    assert loaded.config.hidden_size == 12 and torch.equal(loaded.lin.weight, model.lin.weight)


def test_automodel_loads_a_base_model(tmp_path):
    torch.manual_seed(3)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                  vocab_size=VOCAB, max_position_embeddings=64)
    model = transformers.BertModel(cfg).eval()
    ft.save_pretrained(model, tmp_path, max_shard_size="30KB")
    loaded, info = transformers.AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is transformers.BertModel
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        assert torch.equal(loaded.eval()(IDS).last_hidden_state, model(IDS).last_hidden_state)
