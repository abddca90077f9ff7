"""The architectures the exporter knows: Hugging Face class -> GGUF
architecture, the hyperparameters llama.cpp reads for it, and how each
checkpoint tensor becomes a GGUF tensor (name through the gguf package's
tables, and the transforms llama.cpp's converter applies)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .._util.jsonfile import read_json
from ..errors import InvalidArgument


class UnsupportedArchitecture(InvalidArgument):
    """config.json names a model class the GGUF exporter does not convert."""


class UnknownTensor(InvalidArgument):
    """A checkpoint tensor that the architecture's GGUF name table has no entry for."""


# Hugging Face class -> (GGUF architecture key in gguf.MODEL_ARCH, family)
HF_ARCHITECTURES: Dict[str, Tuple[str, str]] = {
    "LlamaForCausalLM": ("LLAMA", "llama"),
    "LlamaModel": ("LLAMA", "llama"),
    "MistralForCausalLM": ("LLAMA", "llama"),
    "Qwen2ForCausalLM": ("QWEN2", "qwen2"),
    "Qwen2Model": ("QWEN2", "qwen2"),
    "BertModel": ("BERT", "bert"),
    "BertForMaskedLM": ("BERT", "bert"),
    "GPT2LMHeadModel": ("GPT2", "gpt2"),
    "GPT2Model": ("GPT2", "gpt2"),
}
# config.json model_type -> class, for configs without "architectures"
_BY_MODEL_TYPE = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "bert": "BertModel", "gpt2": "GPT2LMHeadModel"}

# Buffers checkpoints carry that are no weights (llama.cpp recomputes them).
_DROPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq", ".attn.bias",
                     ".attn.masked_bias")
_BERT_DROPPED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


def supported() -> str:
    return ", ".join(HF_ARCHITECTURES)


@dataclass
class Arch:
    """One model's architecture: the HF class, GGUF architecture and its
    tokenizer kind."""

    hf_class: str
    gguf_arch: Any  # gguf.MODEL_ARCH member
    family: str
    config: dict
    n_layer: int

    @property
    def name(self) -> str:
        import gguf

        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    @property
    def tokenizer_kind(self) -> str:
        return {"llama": "spm_or_bpe", "qwen2": "spm_or_bpe", "bert": "wordpiece", "gpt2": "bpe"}[self.family]

    def find(self, keys: Iterable[str], default=None):
        for k in keys:
            if self.config.get(k) is not None:
                return self.config[k]
        return default

    @property
    def n_head(self) -> int:
        return int(self.find(("num_attention_heads", "n_head", "n_heads"), 0))

    @property
    def n_head_kv(self) -> int:
        return int(self.find(("num_key_value_heads", "n_kv_heads"), self.n_head))


def detect(config: dict) -> Arch:
    """The architecture of a config.json; UnsupportedArchitecture (listing
    the supported classes) when it is not one the exporter converts."""
    import gguf

    archs = config.get("architectures") or []
    hf = archs[0] if archs else _BY_MODEL_TYPE.get(str(config.get("model_type")))
    if hf not in HF_ARCHITECTURES:
        got = hf or config.get("model_type") or "no architecture"
        raise UnsupportedArchitecture(f"GGUF export does not support {got!r}; supported: {supported()}")
    key, family = HF_ARCHITECTURES[hf]
    cfg = dict(config)
    if isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg, **cfg["text_config"]}
    n_layer = cfg.get("num_hidden_layers", cfg.get("n_layer", cfg.get("num_layers")))
    if not isinstance(n_layer, int) or n_layer <= 0:
        raise InvalidArgument(f"config.json of a {hf} has no usable num_hidden_layers / n_layer ({n_layer!r})")
    return Arch(hf, gguf.MODEL_ARCH[key], family, cfg, n_layer)


# -- hyperparameters ---------------------------------------------------------------

def _rope_parameters(a: Arch) -> dict:
    rp = dict(a.config.get("rope_parameters") or a.config.get("rope_scaling") or {})
    theta = a.find(("global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta", "rotary_emb_base"))
    if "full_attention" not in rp and "sliding_attention" not in rp:
        if "rope_theta" not in rp and theta is not None:
            rp["rope_theta"] = theta
        if "rope_type" not in rp and rp.get("type") is not None:
            rp["rope_type"] = rp["type"]
        orig = a.find(("original_max_position_embeddings",))
        if "original_max_position_embeddings" not in rp and orig is not None:
            rp["original_max_position_embeddings"] = orig
    return rp.get("full_attention", rp)


def _common(w, a: Arch) -> None:
    """What llama.cpp's converter writes for every text model."""
    import gguf

    w.add_block_count(a.n_layer)
    if (v := a.find(("max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length",
                     "model_max_length"))) is not None:
        w.add_context_length(v)
    if (v := a.find(("hidden_size", "n_embd", "dim"))) is not None:
        w.add_embedding_length(v)
    if (v := a.find(("intermediate_size", "n_inner", "hidden_dim"))) is not None:
        w.add_feed_forward_length(v)
    if (v := a.find(("num_attention_heads", "n_head", "n_heads"))) is not None:
        w.add_head_count(v)
    if (v := a.find(("num_key_value_heads", "n_kv_heads"))) is not None:
        w.add_head_count_kv(v)
    if a.config.get("is_causal") is False:
        w.add_causal_attention(False)
    rp = _rope_parameters(a)
    rope_type, factor = rp.get("rope_type"), rp.get("factor")
    if rope_type == "linear" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(factor)
    elif rope_type == "yarn" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(factor)
        w.add_rope_scaling_orig_ctx_len(rp["original_max_position_embeddings"])
    elif rope_type == "llama3":
        raise InvalidArgument("llama3 RoPE scaling (a rope_freqs tensor) is not supported by this exporter yet")
    if (theta := rp.get("rope_theta")) is not None:
        w.add_rope_freq_base(theta)
    if (v := a.find(("rms_norm_eps", "norm_eps"))) is not None:
        w.add_layer_norm_rms_eps(v)
    if (v := a.find(("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"))) is not None:
        w.add_layer_norm_eps(v)
    if (v := a.config.get("head_dim")) is not None:
        w.add_key_length(v)
        w.add_value_length(v)


def _pooling(w, model_dir: str) -> None:
    """Sentence-transformers pooling (modules.json -> <Pooling>/config.json)."""
    import gguf

    mods_path = os.path.join(model_dir, "modules.json")
    if not os.path.isfile(mods_path):
        return
    mods = read_json(mods_path, kind=list)
    path = next((m.get("path") for m in mods if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")),
                None)
    if not isinstance(path, str):
        return
    pooling = read_json(os.path.join(model_dir, path, "config.json"))
    modes = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}
    if pooling.get("pooling_mode_mean_tokens"):
        kind = modes["mean"]
    elif pooling.get("pooling_mode_cls_token"):
        kind = modes["cls"]
    elif pooling.get("pooling_mode_lasttoken"):
        kind = modes["lasttoken"]
    elif pooling.get("pooling_mode") in modes:
        kind = modes[pooling["pooling_mode"]]
    else:
        raise InvalidArgument(f"{os.path.join(model_dir, path)!r}: llama.cpp pools by mean, cls or last token only")
    w.add_pooling_type(kind)


def write_hparams(w, a: Arch, model_dir: str, file_type: int) -> None:
    """Add the architecture's hyperparameter keys and general.file_type."""
    if a.family == "gpt2":
        n_embd = a.find(("n_embd", "hidden_size"))
        w.add_block_count(a.n_layer)
        w.add_context_length(a.find(("n_ctx", "n_positions")))
        w.add_embedding_length(n_embd)
        # n_inner (None in GPT-2 itself) is the MLP width when set
        w.add_feed_forward_length(a.config.get("n_inner") or 4 * n_embd)
        w.add_head_count(a.find(("n_head", "num_attention_heads")))
        w.add_layer_norm_eps(a.find(("layer_norm_epsilon", "layer_norm_eps")))
        w.add_file_type(file_type)
        return
    _common(w, a)
    w.add_file_type(file_type)
    if a.family == "llama":
        w.add_vocab_size(a.config["vocab_size"])
        head_dim = a.config.get("head_dim") or a.config["hidden_size"] // a.config["num_attention_heads"]
        w.add_rope_dimension_count(head_dim)
    elif a.family == "qwen2":
        _pooling(w, model_dir)
    elif a.family == "bert":
        if a.config.get("is_causal") is not False:
            w.add_causal_attention(False)
        _pooling(w, model_dir)


# -- tensors --------------------------------------------------------------------

@dataclass
class TensorPlan:
    """One GGUF tensor: its name, the checkpoint tensor it comes from, the
    transform applied (None, "permute" with head count, "transpose") and
    the numpy-order shape written."""

    gguf_name: str
    hf_name: str
    dtype: str
    hf_shape: Tuple[int, ...]
    shape: Tuple[int, ...]
    transform: Optional[str] = None
    heads: int = 0


def _hf_key(a: Arch, name: str) -> Optional[str]:
    """The name looked up in the gguf tables, or None for a dropped tensor."""
    if name.endswith(_DROPPED_SUFFIXES):
        return None
    if "language_model." in name:
        name = name.replace("language_model.", "")
    if a.family == "bert":
        if name.startswith("bert."):
            name = name[5:]
        if name.endswith(".gamma"):
            name = name[:-6] + ".weight"
        elif name.endswith(".beta"):
            name = name[:-5] + ".bias"
        if name in _BERT_DROPPED or name.startswith(("cls.predictions", "cls.seq_relationship")):
            return None
    if a.hf_class in ("LlamaModel", "Qwen2Model") and not name.startswith("model."):
        name = "model." + name  # the base model's names, as the causal LM has them
    return name


def plan_tensors(a: Arch, tensors: Iterable[Tuple[str, str, Tuple[int, ...]]]) -> Tuple[List[TensorPlan], List[str]]:
    """(GGUF tensors in checkpoint order, dropped checkpoint names) for
    ``tensors`` [(name, safetensors dtype code, shape)]. Raises UnknownTensor
    for a tensor the architecture's name table does not map."""
    import gguf

    table = gguf.get_tensor_name_map(a.gguf_arch, a.n_layer)
    plans: List[TensorPlan] = []
    dropped: List[str] = []
    seen: Dict[str, str] = {}
    for name, code, shape in tensors:
        key = _hf_key(a, name)
        if key is None:
            dropped.append(name)
            continue
        new = table.get_name(key, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise UnknownTensor(f"tensor {name!r} is not part of a {a.hf_class} as llama.cpp knows it "
                                f"(no GGUF name for it in the {a.name} table)")
        if new in seen:
            raise InvalidArgument(f"tensors {seen[new]!r} and {name!r} both map to GGUF tensor {new!r}")
        seen[new] = name
        shape = tuple(int(d) for d in shape)
        p = TensorPlan(new, name, code, shape, shape)
        if a.family == "llama" and key.endswith(("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias")):
            # llama.cpp's RoPE pairs adjacent dims; HF pairs the two halves of each head
            p.transform, p.heads = "permute", a.n_head if ".q_proj." in key else a.n_head_kv
        elif a.family == "gpt2" and len(shape) == 2 and \
                key.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            p.transform, p.shape = "transpose", (shape[1], shape[0])  # Conv1D stores (in, out)
        plans.append(p)
    return plans, dropped


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    rows = w.shape[0]
    if rows % (2 * heads):
        raise InvalidArgument(f"cannot permute {w.shape} for {heads} heads")
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def apply(p: TensorPlan, array: np.ndarray) -> np.ndarray:
    """The checkpoint array transformed as the GGUF tensor holds it."""
    if p.transform == "permute":
        return np.ascontiguousarray(_permute(array, p.heads))
    if p.transform == "transpose":
        return np.ascontiguousarray(array.T)
    return array


def undo(transform: Optional[str], heads: int, array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`apply` for a GGUF tensor read back."""
    if transform == "permute":
        return np.ascontiguousarray(_unpermute(array, heads))
    if transform == "transpose":
        return np.ascontiguousarray(array.T)
    return array
