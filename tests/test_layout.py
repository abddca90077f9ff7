"""fastensors.layout: pytorch <-> flax, keras and "transposed" layouts on real
architectures, checked against torch's own linear and conv arithmetic
(the "transposed" layout is what "transposed" and "transposed" meant before they took
their frameworks' parameter names)."""

from __future__ import annotations

import numpy as np
import pytest

import fastensors
from fastensors import Remapper, layout

torch = pytest.importorskip("torch")
import fastensors.torch  # noqa: E402
from architectures import ARCHITECTURES, build  # noqa: E402


def numpy_sd(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def models():
    return {name: build(name) for name in ARCHITECTURES}


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("by", ["module_types", "name_rules"])
@pytest.mark.parametrize("dst", ["transposed", "flax", "keras"])
def test_round_trip_gives_original_bytes(models, arch, by, dst):
    model = models[arch]
    sd = numpy_sd(model)
    kw = {"model": model} if by == "module_types" else {}
    flax = layout.convert(sd, "pytorch", dst, **kw)
    back = layout.convert(flax, dst, "pytorch", **kw)
    assert list(back) == list(sd)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert back[k].tobytes() == v.tobytes(), k
    changed = [k for k in sd if k not in flax or flax[k].shape != sd[k].shape]
    assert changed  # something was converted


@pytest.mark.parametrize("arch", ["llama", "bert", "t5"])
def test_name_rules_agree_with_module_types(models, arch):
    model = models[arch]
    by_types = layout.LayoutAdapter("pytorch", "transposed", model=model)
    by_names = layout.LayoutAdapter("pytorch", "transposed")
    for k, v in model.state_dict().items():
        assert by_types.kind(k, v.ndim) == by_names.kind(k, v.ndim), k


def test_llama_linear_and_norm(models):
    model = models["llama"]
    sd = numpy_sd(model)
    flax = layout.convert(sd, "pytorch", "transposed", model=model)
    q = "model.layers.0.self_attn.q_proj.weight"
    np.testing.assert_array_equal(flax[q], sd[q].T)
    assert flax[q].flags.c_contiguous
    assert "model.layers.0.input_layernorm.gamma" in flax and "model.norm.gamma" in flax
    assert "model.norm.weight" not in flax
    np.testing.assert_array_equal(flax["model.embed_tokens.weight"], sd["model.embed_tokens.weight"])
    # (in, out) means y = x @ kernel: the same numbers torch's Linear computes.
    x = torch.randn(3, sd[q].shape[1])
    want = model.model.layers[0].self_attn.q_proj(x).detach().numpy()
    np.testing.assert_allclose(x.numpy() @ flax[q], want, rtol=1e-5, atol=1e-6)


def test_bert_norm_gamma_beta(models):
    flax = layout.convert(numpy_sd(models["bert"]), "pt", "transposed", model=models["bert"])
    assert "bert.embeddings.LayerNorm.gamma" in flax and "bert.embeddings.LayerNorm.beta" in flax
    assert "bert.encoder.layer.0.attention.output.dense.bias" in flax  # linear biases keep their name


def test_vit_patch_conv_is_hwio(models):
    """The ViT patch projection (a Conv2d) becomes HWIO with the model's
    module types; applying it by hand as HWIO matches torch's conv."""
    model = models["vit"]
    sd = numpy_sd(model)
    key = "embeddings.patch_embeddings.projection.weight"
    flax = layout.convert(sd, "pytorch", "transposed", model=model)
    o, i, h, w = sd[key].shape
    assert flax[key].shape == (h, w, i, o)
    conv = model.embeddings.patch_embeddings.projection
    x = torch.randn(1, i, 8, 8)
    want = conv(x).detach().numpy()[0]  # (o, 2, 2)
    patches = x.numpy()[0].reshape(i, 2, h, 2, w).transpose(1, 3, 2, 4, 0)  # (py, px, h, w, i)
    got = np.einsum("yxhwi,hwio->oyx", patches, flax[key]) + sd["embeddings.patch_embeddings.projection.bias"][:, None, None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Without the model, the name rules see an embedding module and leave it alone.
    assert layout.convert(sd, "pytorch", "transposed")[key].shape == (o, i, h, w)


def test_conv1d_and_conv3d_layouts():
    sd = {"conv1.weight": np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4),
          "conv3.weight": np.arange(2 * 3 * 2 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2, 2)}
    flax = layout.convert(sd, "pytorch", "transposed")
    np.testing.assert_array_equal(flax["conv1.weight"], sd["conv1.weight"].transpose(2, 1, 0))
    np.testing.assert_array_equal(flax["conv3.weight"], sd["conv3.weight"].transpose(2, 3, 4, 1, 0))
    back = layout.convert(flax, "transposed", "pytorch")
    assert all(back[k].tobytes() == sd[k].tobytes() for k in sd)


def test_gpt2_conv1d_is_already_in_out():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=64, n_positions=16))
    sd = numpy_sd(model)
    flax = layout.convert(sd, "pytorch", "transposed", model=model)
    np.testing.assert_array_equal(flax["transformer.h.0.attn.c_attn.weight"], sd["transformer.h.0.attn.c_attn.weight"])
    assert "transformer.h.0.ln_1.gamma" in flax and "transformer.ln_f.beta" in flax


def test_torch_tensors_none_and_errors(models):
    sd = {"fc.weight": torch.arange(6.0).reshape(2, 3), "norm.weight": torch.ones(3)}
    out = layout.convert(sd, "pytorch", "transposed")
    assert torch.equal(out["fc.weight"], sd["fc.weight"].T) and out["fc.weight"].is_contiguous()
    assert layout.convert(sd, "pytorch", "none") == sd
    with pytest.raises(fastensors.InvalidArgument, match="unknown layout"):
        layout.convert(sd, "pytorch", "tf2")
    with pytest.raises(fastensors.InvalidArgument, match="transposed convolutions"):
        deconv = torch.nn.Sequential(torch.nn.ConvTranspose2d(2, 3, 2))
        layout.convert(numpy_sd(deconv), "pytorch", "transposed", model=deconv)


def test_composes_with_remapper_and_loads_from_checkpoint(tmp_path, models):
    model = models["bert"]
    fastensors.torch.save_model(model, tmp_path / "model.safetensors")
    from transformers import BertModel

    r = Remapper([(r"\.", "/")])
    # Module types come from a model whose names are those loaded (prefix stripped).
    got = layout.load(tmp_path, "transposed", model=BertModel(model.config), prefix="bert.", remap=r)
    sd = numpy_sd(model)
    key = "encoder/layer/1/intermediate/dense/weight"
    np.testing.assert_array_equal(got[key], sd["bert.encoder.layer.1.intermediate.dense.weight"].T)
    assert "embeddings/LayerNorm/gamma" in got and not any(k.startswith("cls") for k in got)


def test_flax_names_kernel_scale_embedding(models):
    """flax.linen's parameter names: Dense/Conv ``kernel`` (in, out), LayerNorm
    ``scale``/``bias``, Embed ``embedding``."""
    model = models["bert"]
    sd = numpy_sd(model)
    out = layout.convert(sd, "pytorch", "flax", model=model)
    dense = "bert.encoder.layer.0.attention.output.dense"
    np.testing.assert_array_equal(out[f"{dense}.kernel"], sd[f"{dense}.weight"].T)
    assert f"{dense}.bias" in out and f"{dense}.weight" not in out
    assert "bert.embeddings.LayerNorm.scale" in out and "bert.embeddings.LayerNorm.bias" in out
    np.testing.assert_array_equal(out["bert.embeddings.word_embeddings.embedding"],
                                  sd["bert.embeddings.word_embeddings.weight"])
    # flax -> keras goes through pytorch and lands on keras' names
    keras = layout.convert(out, "flax", "keras", model=model)
    assert "bert.embeddings.LayerNorm.gamma" in keras and "bert.embeddings.LayerNorm.beta" in keras
    assert "bert.embeddings.word_embeddings.embeddings" in keras
    np.testing.assert_array_equal(keras[f"{dense}.kernel"], sd[f"{dense}.weight"].T)


def test_flax_kernel_matches_flax_dense_and_conv():
    """The converted kernels compute what torch computes when flax's own
    Dense and Conv apply them."""
    nn = pytest.importorskip("flax.linen")
    jnp = pytest.importorskip("jax.numpy")
    lin, conv = torch.nn.Linear(4, 3), torch.nn.Conv2d(2, 5, 3)
    sd = {"fc.weight": lin.weight.detach().numpy(), "fc.bias": lin.bias.detach().numpy(),
          "conv.weight": conv.weight.detach().numpy(), "conv.bias": conv.bias.detach().numpy()}
    p = layout.convert(sd, "pytorch", "flax")
    x = torch.randn(2, 4)
    y = nn.Dense(3).apply({"params": {"kernel": p["fc.kernel"], "bias": p["fc.bias"]}}, jnp.asarray(x.numpy()))
    np.testing.assert_allclose(np.asarray(y), lin(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    img = torch.randn(1, 2, 6, 6)
    y = nn.Conv(5, (3, 3), padding="VALID").apply({"params": {"kernel": p["conv.kernel"], "bias": p["conv.bias"]}},
                                                  jnp.asarray(img.numpy().transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(y).transpose(0, 3, 1, 2), conv(img).detach().numpy(), rtol=1e-4, atol=1e-4)
