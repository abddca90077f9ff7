"""Whole-model quantization: the compressed-tensors layout loaded by
transformers, GGUF read by gguf, Parquet read by pyarrow, dequantization of
every layout, the quality report and bad input."""

import errno
import json
import os

import numpy as np
import pytest

import fastensors
from fastensors.quant.layouts import compressed_tensors as _ct_layout
from fastensors.checkpoint import open_checkpoint
from fastensors.cli import main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("compressed_tensors")

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _llama(path, dtype=torch.float32, tied=False):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=tied)
    transformers.LlamaForCausalLM(cfg).to(dtype).save_pretrained(path)
    return str(path)


def _bert(path):
    torch.manual_seed(1)
    cfg = transformers.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return _llama(tmp_path_factory.mktemp("llama") / "m")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return _bert(tmp_path_factory.mktemp("bert") / "m")


def _our_dense(dst):
    """Every quantized weight of our output, dequantized by fastensors (F32)."""
    ck = open_checkpoint(dst)
    meta = json.loads(ck.metadata()["fastensors.quantization"])
    bits = {"int8": 8, "int4": 4, "int2": 2}.get(meta["scheme"])
    out = {}
    for key in ck.keys():
        module, _, suffix = key.rpartition(".")
        if suffix not in ("weight_packed", "weight_nf4") and not (suffix == "weight" and
                                                                   ck.tensor_info(key).dtype == "F8_E4M3"):
            continue
        scheme = meta["scheme"] if meta["scheme"] in ("nf4", "fp8_e4m3") else meta["scheme"]

        def part(s, module=module):
            k = f"{module}.{s}"
            return ck.get_tensor(k) if k in ck else None

        out[f"{module}.weight"] = _ct_layout.dequantize_parts(scheme, part, bits)
    return out


CT_CASES = [
    ("int8", None, None, 0.999),
    ("int4", 64, True, 0.98),
    ("int4", 32, False, 0.98),
    ("int2", 32, False, 0.6),
    ("fp8_e4m3", None, None, 0.999),
]


@pytest.mark.parametrize("scheme,group,sym,min_logit_cos", CT_CASES)
def test_llama_loads_in_transformers_with_our_weights(llama, tmp_path, scheme, group, sym, min_logit_cos):
    dst = str(tmp_path / "q")
    rep = fastensors.quantize_model(llama, dst, scheme=scheme, group_size=group, symmetric=sym, validate=True)
    assert len(rep.quantized) == 14 and rep.compression_ratio > 1
    cfg = json.load(open(os.path.join(dst, "config.json")))
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["quantization_status"] == "compressed"
    assert qc["format"] == qc["config_groups"]["group_0"]["format"]
    assert "lm_head" in qc["ignore"]
    assert os.path.isfile(os.path.join(dst, "generation_config.json"))
    kwargs = {}
    if sym is False:  # compressed-tensors' own loader expects unpacked zero points in its model skeleton
        kwargs["quantization_config"] = transformers.CompressedTensorsConfig(dequantize=True)
    q = transformers.AutoModelForCausalLM.from_pretrained(dst, **kwargs)
    orig = transformers.AutoModelForCausalLM.from_pretrained(llama)
    x = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = orig(x).logits
        b = q(x).logits  # the first forward decompresses packed weights
    ours = _our_dense(dst)
    params = dict(q.named_parameters())
    assert len(ours) == 14
    for name, w in ours.items():
        np.testing.assert_array_equal(params[name].detach().float().numpy(), w, err_msg=name)
    # the original model with our dequantized weights gives the same logits
    with torch.no_grad():
        for name, w in ours.items():
            dict(orig.named_parameters())[name].copy_(torch.from_numpy(w))
        c = orig(x).logits
    torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-4)
    a0 = transformers.AutoModelForCausalLM.from_pretrained(llama)
    with torch.no_grad():
        a = a0(x).logits
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
    assert cos > min_logit_cos, cos


def test_bert_bf16_int4_loads_in_transformers(bert, tmp_path):
    src = tmp_path / "bf16"
    transformers.AutoModel.from_pretrained(bert).to(torch.bfloat16).save_pretrained(src)
    dst = str(tmp_path / "q")
    fastensors.quantize_model(str(src), dst, scheme="int4", group_size=32)
    cfg = json.load(open(os.path.join(dst, "config.json")))
    assert "pooler.dense" not in cfg["quantization_config"]["ignore"]
    q = transformers.AutoModel.from_pretrained(dst)
    with torch.no_grad():
        q(torch.arange(10).reshape(1, 10))
    params = dict(q.named_parameters())
    ours = _our_dense(dst)
    assert "encoder.layer.0.attention.self.query.weight" in ours and "pooler.dense.weight" in ours
    for name, w in ours.items():
        assert params[name].dtype == torch.bfloat16
        # ours is computed in F32; the exact product rounds once to BF16, as torch's does
        expect = torch.from_numpy(w).to(torch.bfloat16).float().numpy()
        np.testing.assert_array_equal(params[name].detach().float().numpy(), expect, err_msg=name)
    # embeddings and norms stay as they were
    ck = open_checkpoint(dst)
    assert ck.tensor_info("embeddings.word_embeddings.weight").dtype == "BF16"


def test_selection_rules(llama, tmp_path):
    rep = fastensors.quantize_model(llama, str(tmp_path / "q"), scheme="int8")
    dense = {t.name: t.reason for t in rep.dense}
    assert dense["model.embed_tokens.weight"].startswith("embedding")
    assert dense["lm_head.weight"].startswith("lm_head")
    assert dense["model.norm.weight"] == "1-D"
    ck = open_checkpoint(str(tmp_path / "q"))
    assert ck.tensor_info("lm_head.weight").dtype == "F32"
    assert "model.layers.0.self_attn.q_proj.weight" not in ck
    rep = fastensors.quantize_model(llama, str(tmp_path / "i"), scheme="int8", ignore=[r"mlp\."])
    assert {t.name for t in rep.quantized} == {f"model.layers.{i}.self_attn.{p}_proj.weight" for i in (0, 1)
                                               for p in "qkvo"}
    qc = json.load(open(tmp_path / "i" / "config.json"))["quantization_config"]
    assert "model.layers.0.mlp.up_proj" in qc["ignore"]
    rep = fastensors.quantize_model(llama, str(tmp_path / "o"), scheme="int8", only=r"lm_head|down_proj")
    assert {t.name for t in rep.quantized} == {"lm_head.weight", "model.layers.0.mlp.down_proj.weight",
                                               "model.layers.1.mlp.down_proj.weight"}
    qc = json.load(open(tmp_path / "o" / "config.json"))["quantization_config"]
    assert "lm_head" not in qc["ignore"]


def test_profiles(llama, tmp_path):
    for profile, scheme, group in (("cloud", "int8", None), ("local", "int4", 128), ("edge", "int4", 32)):
        rep = fastensors.quantize_model(llama, str(tmp_path / profile), profile=profile)
        assert (rep.scheme, rep.group_size) == (scheme, group)
    rep = fastensors.quantize_model(llama, str(tmp_path / "gguf"), profile="cloud", format="gguf")
    assert rep.scheme == "q8_0"


def test_edge_profile_picks_the_most_aggressive_scheme_meeting_min_cosine(llama, tmp_path):
    loose = fastensors.quantize_model(llama, str(tmp_path / "a"), profile="edge", min_cosine=0.5)
    assert (loose.scheme, loose.group_size) == ("int2", 64)
    strict = fastensors.quantize_model(llama, str(tmp_path / "b"), profile="edge", min_cosine=0.999)
    assert strict.scheme == "int8"
    assert strict.candidates["int4 g32"] < 0.999 <= strict.candidates["int8"]
    mid = fastensors.quantize_model(llama, str(tmp_path / "c"), profile="edge", min_cosine=0.99)
    assert mid.scheme == "int4" and mid.summary()["min_cosine"] >= 0.99
    # every more aggressive rung missed it
    assert all(v < 0.99 for k, v in mid.candidates.items() if k.startswith("int2"))


def test_gguf_output_matches_gguf_dequantize(llama, tmp_path):
    gguf = pytest.importorskip("gguf")
    dst = str(tmp_path / "g")
    fastensors.quantize_model(llama, dst, scheme="q4_1", format="gguf")
    reader = gguf.GGUFReader(os.path.join(dst, "model.gguf"))
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "llama"
    assert int(reader.fields["hf.config.hidden_size"].parts[-1][0]) == 128
    src = open_checkpoint(llama)
    seen = 0
    for t in reader.tensors:
        orig = src.get_tensor(t.name)
        if t.tensor_type == gguf.GGMLQuantizationType.Q4_1:
            theirs = gguf.quants.dequantize(t.data, t.tensor_type)
            ours = fastensors.quantize(orig, "q4_1").dequantize()
            np.testing.assert_array_equal(theirs.reshape(ours.shape), ours)
            seen += 1
        else:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(np.asarray(t.data).reshape(orig.shape), orig)
    assert seen == 14
    back = str(tmp_path / "back")
    assert main(["dequantize", dst, back]) == 0
    out = open_checkpoint(back)
    assert sorted(out.keys()) == sorted(src.keys())
    w = src.get_tensor("model.layers.1.mlp.gate_proj.weight")
    np.testing.assert_array_equal(out.get_tensor("model.layers.1.mlp.gate_proj.weight"),
                                  fastensors.quantize(w, "q4_1").dequantize())
    assert json.load(open(os.path.join(back, "config.json")))["hidden_size"] == 128


@pytest.mark.parametrize("scheme,group,sym", [("int4", 32, False), ("int2", 64, None), ("int8", None, None),
                                              ("nf4", None, None), ("fp8_e4m3", None, None)])
def test_parquet_dequantizes_like_the_safetensors_output(llama, tmp_path, scheme, group, sym):
    pa = pytest.importorskip("pyarrow.parquet")
    pq_dir, st_dir = str(tmp_path / "pq"), str(tmp_path / "st")
    fastensors.quantize_model(llama, pq_dir, scheme=scheme, group_size=group, symmetric=sym, format="parquet")
    fastensors.quantize_model(llama, st_dir, scheme=scheme, group_size=group, symmetric=sym)
    table = pa.read_table(os.path.join(pq_dir, "model.parquet"))
    rows = {r["name"]: r for r in table.to_pylist()}
    src = open_checkpoint(llama)
    assert set(rows) == set(src.keys())
    r = rows["model.layers.0.self_attn.q_proj.weight"]
    assert r["scheme"] == scheme and r["shape"] == [128, 128] and r["dtype"] == "F32"
    assert r["cosine"] > 0.5 and r["sqnr_db"] > 0 and r["rmse"] > 0
    assert rows["model.norm.weight"]["scheme"] == "dense" and rows["model.norm.weight"]["cosine"] is None
    assert main(["dequantize", pq_dir, str(tmp_path / "a"), "--dtype", "bf16"]) == 0
    assert main(["dequantize", st_dir, str(tmp_path / "b"), "--dtype", "bf16"]) == 0
    a, b = open_checkpoint(str(tmp_path / "a")), open_checkpoint(str(tmp_path / "b"))
    assert a.keys() == b.keys() == src.keys()
    for k in a.keys():
        x, y = a.get_tensor(k), b.get_tensor(k)
        assert x.dtype == y.dtype and np.array_equal(x.view(np.uint8), y.view(np.uint8)), k
    assert a.tensor_info("model.layers.0.mlp.up_proj.weight").dtype == "BF16"
    assert a.tensor_info("model.norm.weight").dtype == "F32"


def test_nf4_layout_and_dequantize(llama, tmp_path):
    dst = str(tmp_path / "n")
    fastensors.quantize_model(llama, dst, scheme="nf4")
    ck = open_checkpoint(dst)
    assert ck.tensor_info("model.layers.0.mlp.up_proj.weight_nf4").dtype == "U8"
    assert ck.tensor_info("model.layers.0.mlp.up_proj.weight_absmax").shape == (256 * 128 // 64,)
    qc = json.load(open(os.path.join(dst, "config.json")))["quantization_config"]
    assert qc["quant_method"] == "fastensors" and qc["format"] == "fastensors-nf4"
    fastensors.dequantize_model(dst, str(tmp_path / "d"))
    w = open_checkpoint(llama).get_tensor("model.layers.0.mlp.up_proj.weight")
    np.testing.assert_array_equal(open_checkpoint(str(tmp_path / "d")).get_tensor("model.layers.0.mlp.up_proj.weight"),
                                  fastensors.quantize(w, "nf4").dequantize())


def test_sharded_source_and_output(llama, tmp_path):
    from fastensors.sharding import reshard

    sharded = str(tmp_path / "sharded")
    reshard(llama, sharded, max_shard_size="300KB")
    assert os.path.isfile(os.path.join(sharded, "model.safetensors.index.json"))
    dst = str(tmp_path / "q")
    rep = fastensors.quantize_model(sharded, dst, scheme="int4", group_size=64, symmetric=False,
                                    max_shard_size="200KB")
    index = json.load(open(os.path.join(dst, "model.safetensors.index.json")))
    files = set(index["weight_map"].values())
    assert len(files) > 1 and files == set(rep.files) - {"model.safetensors.index.json"}
    # a weight's parts share a shard
    wm = index["weight_map"]
    for k, f in wm.items():
        if k.endswith("weight_packed"):
            m = k[: -len("weight_packed")]
            assert wm[m + "weight_scale"] == wm[m + "weight_zero_point"] == wm[m + "weight_shape"] == f
    assert index["metadata"]["total_size"] == sum(open_checkpoint(dst).tensor_info(k).nbytes for k in wm)
    single = str(tmp_path / "single")
    fastensors.quantize_model(llama, single, scheme="int4", group_size=64, symmetric=False)
    a, b = open_checkpoint(dst), open_checkpoint(single)
    for k in a.keys():
        assert np.array_equal(a.get_tensor(k), b.get_tensor(k)), k


def test_report_json_html_png(llama, tmp_path):
    rep = fastensors.quantize_model(llama, str(tmp_path / "q"), scheme="int4", group_size=64, validate=True,
                                    report=str(tmp_path / "r.json"))
    data = json.load(open(tmp_path / "r.json"))
    assert data["summary"]["quantized"] == 14 and data["summary"]["min_cosine"] == rep.summary()["min_cosine"]
    t = next(t for t in data["tensors"] if t["name"] == "model.layers.0.mlp.down_proj.weight")
    w = open_checkpoint(llama).get_tensor("model.layers.0.mlp.down_proj.weight")
    expect = fastensors.quality(w, fastensors.quantize(w, "int4", group_size=64).dequantize())
    assert t["cosine"] == expect["cosine"] and t["rmse"] == expect["rmse"]
    assert t["compression_ratio"] == pytest.approx(256 * 128 * 4 / (256 * 128 / 2 + 256 * 2 * 4 + 16))
    pytest.importorskip("matplotlib")
    rep.write(tmp_path / "r.png")
    png = open(tmp_path / "r.png", "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    from matplotlib import image

    img = image.imread(str(tmp_path / "r.png"))
    assert img.ndim == 3 and img.shape[0] > 200 and img.std() > 0.01  # not a blank canvas
    rep.write(tmp_path / "r.html")
    page = open(tmp_path / "r.html").read()
    assert "data:image/png;base64," in page and "model.layers.0.mlp.down_proj.weight" in page


def test_min_cosine_failure_names_worst_tensors_and_writes_nothing(llama, tmp_path, capsys):
    dst = str(tmp_path / "q")
    rc = main(["quantize", llama, dst, "--scheme", "int2", "--min-cosine", "0.99", "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "fastensors quantize: error:" in err and "below min_cosine 0.99" in err and "cosine 0." in err
    assert not os.path.exists(dst)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".q")]


def test_cli_quantize_with_report(llama, tmp_path, capsys):
    dst = str(tmp_path / "q")
    rc = main(["quantize", llama, dst, "--profile", "local", "--group-size", "64", "--no-progress"])
    assert rc == 1 and "sets the group size" in capsys.readouterr().err
    rc = main(["quantize", llama, dst, "--scheme", "int4", "--group-size", "64", "--validate", "--report",
               str(tmp_path / "r.json"), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "quantized 14 tensors" in out and "min cosine" in out
    assert json.load(open(tmp_path / "r.json"))["scheme"] == "int4"


def test_bad_input(llama, tmp_path, capsys):
    with pytest.raises(fastensors.InvalidArgument, match="unknown scheme 'int3'"):
        fastensors.quantize_model(llama, str(tmp_path / "a"), scheme="int3")
    with pytest.raises(fastensors.InvalidArgument, match="format='gguf'"):
        fastensors.quantize_model(llama, str(tmp_path / "a"), scheme="q4_0")
    with pytest.raises(fastensors.CheckpointNotFound):
        fastensors.quantize_model(str(tmp_path / "missing"), str(tmp_path / "a"), scheme="int8")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("not a model")
    with pytest.raises(fastensors.CheckpointNotFound):
        fastensors.quantize_model(str(tmp_path / "empty"), str(tmp_path / "a"), scheme="int8")
    with pytest.raises(fastensors.NotAQuantizedModel):
        fastensors.dequantize_model(llama, str(tmp_path / "a"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    with pytest.raises(fastensors.DestinationNotEmpty, match="overwrite"):
        fastensors.quantize_model(llama, str(full), scheme="int8")
    assert os.listdir(full) == ["keep.txt"]
    assert main(["quantize", llama, str(full), "--scheme", "int8", "--no-progress"]) == 1
    assert "is not empty" in capsys.readouterr().err
    fastensors.quantize_model(llama, str(full), scheme="int8", overwrite=True)
    assert os.path.isfile(full / "model.safetensors")
    assert not os.path.exists(tmp_path / "a")


def test_unsupported_shape_error_and_skip(tmp_path):
    from fastensors.numpy import save_file

    src = tmp_path / "m"
    src.mkdir()
    rng = np.random.default_rng(0)
    save_file({"a.weight": rng.standard_normal((8, 96), dtype=np.float32),
               "b.weight": rng.standard_normal((8, 128), dtype=np.float32)}, str(src / "model.safetensors"))
    with pytest.raises(fastensors.UnsupportedTensorShape, match=r"'a.weight'.*row length 96.*group size 128"):
        fastensors.quantize_model(str(src), str(tmp_path / "q"), scheme="int4")
    assert not os.path.exists(tmp_path / "q")
    with pytest.warns(UserWarning, match="a.weight"):
        rep = fastensors.quantize_model(str(src), str(tmp_path / "q"), scheme="int4", skip_unsupported=True)
    assert [t.name for t in rep.quantized] == ["b.weight"]
    ck = open_checkpoint(str(tmp_path / "q"))
    assert ck.tensor_info("a.weight").dtype == "F32" and "b.weight_packed" in ck


def test_disk_full_mid_run_leaves_nothing(llama, tmp_path, monkeypatch):
    from fastensors.format import writer as _serialize

    real = _serialize.write_specs_streaming
    calls = []

    def failing(specs, path, meta, durable, fill, **kw):
        def fill_then_fail(i):
            calls.append(i)
            if len(calls) == 5:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            return fill(i)

        return real(specs, path, meta, durable, fill_then_fail, **kw)

    monkeypatch.setattr(_serialize, "write_specs_streaming", failing)
    dst = str(tmp_path / "q")
    with pytest.raises(OSError) as e:
        fastensors.quantize_model(llama, dst, scheme="int4", group_size=64, max_shard_size="100KB")
    assert e.value.errno == errno.ENOSPC
    assert not os.path.exists(dst) and os.listdir(tmp_path) == []
    # over an existing model: the old one stays whole
    monkeypatch.setattr(_serialize, "write_specs_streaming", real)
    fastensors.quantize_model(llama, dst, scheme="int8")
    before = {n: open(os.path.join(dst, n), "rb").read() for n in os.listdir(dst)}
    calls.clear()
    monkeypatch.setattr(_serialize, "write_specs_streaming", failing)
    with pytest.raises(OSError):
        fastensors.quantize_model(llama, dst, scheme="int4", group_size=64, overwrite=True)
    assert {n: open(os.path.join(dst, n), "rb").read() for n in os.listdir(dst)} == before


def test_progress_callback_reaches_the_total(llama, tmp_path):
    seen = []
    fastensors.quantize_model(llama, str(tmp_path / "q"), scheme="int8", progress=lambda d, t: seen.append((d, t)))
    total = sum(open_checkpoint(llama).tensor_info(k).nbytes for k in open_checkpoint(llama).keys())
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)
