"""Per-tensor GGUF types for a named recipe, chosen as ``llama-quantize`` does.

A recipe is a llama.cpp file type ("q4_k_m", "q8_0", ...). ``plan_types``
gives the type of every tensor of a model in the file that ``llama-quantize``
writes from the converter's ``--outtype f16`` output, so that an export
straight from safetensors matches ``convert_hf_to_gguf.py`` followed by
``llama-quantize`` tensor for tensor (docs/gguf_recipes.md).

Standard library only: the rules are llama.cpp's (src/llama-quant.cpp),
restated here, and the block tables are ggml's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from ..errors import InvalidArgument

RECIPES: Tuple[str, ...] = (
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1",
    "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k",
)

# The tensor type each recipe starts from before the per-tensor rules
# (llama.cpp's default type of a file type: the three Q3_K mixes start from
# q3_k, and so on).
_DEFAULT_TYPE: Dict[str, str] = {
    "f32": "f32", "f16": "f16", "bf16": "bf16", "q8_0": "q8_0",
    "q4_0": "q4_0", "q4_1": "q4_1", "q5_0": "q5_0", "q5_1": "q5_1",
    "q2_k": "q2_k", "q3_k_s": "q3_k", "q3_k_m": "q3_k", "q3_k_l": "q3_k",
    "q4_k_s": "q4_k", "q4_k_m": "q4_k", "q5_k_s": "q5_k", "q5_k_m": "q5_k", "q6_k": "q6_k",
}

# ggml's (elements per block, bytes per block) of each type named here.
BLOCKS: Dict[str, Tuple[int, int]] = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2),
    "q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24),
    "q2_k": (256, 84), "q3_k": (256, 110), "q4_k": (256, 144), "q5_k": (256, 176), "q6_k": (256, 210),
}
_FLOAT_TYPES = ("f32", "f16", "bf16")

# What a 256-block k-quant becomes when a row does not hold whole blocks.
_FALLBACK = {"q2_k": "q4_0", "q3_k": "q4_0", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}

# The models llama.cpp classes as "70B", whose attn_v gets more bits: a llama
# with 80 layers and grouped-query attention (and not 8 experts), or a qwen2,
# deci or olmo with 80 layers, or a jais2 with 68.
_LAYERS_70B = {"qwen2": 80, "deci": 80, "olmo": 80, "jais2": 68}


@dataclass(frozen=True)
class ModelFacts:
    """The hyperparameters the rules look at, as the GGUF metadata states them.

    ``arch`` is the GGUF architecture name ("llama", "qwen2", "gpt2", ...);
    ``n_layer`` the block count; ``n_head``/``n_head_kv`` the attention and
    key/value heads of the first layer (``n_head_kv`` 0: as many as
    ``n_head``, which is llama.cpp's default when the key is absent);
    ``n_expert`` the expert count (0 for a dense model).

    Raises InvalidArgument for a non-str or empty arch and for counts that are
    not non-negative ints."""

    arch: str
    n_layer: int
    n_head: int = 0
    n_head_kv: int = 0
    n_expert: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not self.arch:
            raise InvalidArgument(f"ModelFacts.arch must be a non-empty str, got {self.arch!r}")
        for field in ("n_layer", "n_head", "n_head_kv", "n_expert"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgument(f"ModelFacts.{field} must be an int >= 0, got {value!r}")

    @property
    def n_gqa(self) -> int:
        # query heads per kv head (0 when the head count is unknown)
        kv = self.n_head_kv or self.n_head
        return self.n_head // kv if kv else 0

    @property
    def is_70b(self) -> bool:
        if self.arch == "llama":
            return self.n_expert != 8 and self.n_layer == 80 and self.n_head != (self.n_head_kv or self.n_head)
        return _LAYERS_70B.get(self.arch) == self.n_layer


def tensor_nbytes(gguf_type: str, shape: Sequence[int]) -> int:
    """Bytes of a tensor of ``shape`` (numpy order) stored as ``gguf_type``.

    Raises InvalidArgument for an unknown type or a row length (last axis)
    that does not hold whole blocks of the type."""
    if gguf_type not in BLOCKS:
        raise InvalidArgument(f"unknown GGUF type {gguf_type!r}; known: {', '.join(BLOCKS)}")
    dims = _check_shape("tensor", shape)
    block, size = BLOCKS[gguf_type]
    row = dims[-1] if dims else 1
    if row % block:
        raise InvalidArgument(f"row length {row} is not a multiple of {block} ({gguf_type})")
    n = 1
    for d in dims:
        n *= d
    return n // block * size


def plan_types(recipe: str, tensors: Sequence[Tuple[str, Tuple[int, ...]]], facts: ModelFacts) -> Dict[str, str]:
    """The GGUF type of every tensor of a model under ``recipe``.

    Arguments: ``recipe``, one of RECIPES; ``tensors``, (GGUF tensor name,
    numpy-order shape whose last axis is the row length) for every tensor of
    the model, in any order (the rules count attn_v and ffn_down tensors in
    llama.cpp's own order, which is recomputed here); ``facts``, the model's
    hyperparameters.

    Returns name -> lowercase GGUF type ("f32", "f16", "bf16", "q8_0",
    "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k",
    "q6_k"): the type ``llama-quantize`` gives each tensor when it quantizes
    the converter's ``--outtype f16`` file. Tensors llama.cpp never quantizes
    (1-D tensors, norms, position embeddings, expert routers, ...) keep the
    converter's type: f32 for those it stores as f32, f16 for the rest.

    Raises InvalidArgument for an unknown recipe, a non-ModelFacts ``facts``,
    names that are not unique non-empty strs, shapes that are not 0-4
    non-negative ints, and, for a model with experts, a quantized ffn tensor
    whose name has no layer number in [0, n_layer) (llama-quantize refuses
    those too)."""
    if not isinstance(recipe, str) or recipe not in _DEFAULT_TYPE:
        raise InvalidArgument(f"unknown GGUF recipe {recipe!r}; recipes: {', '.join(RECIPES)}")
    if not isinstance(facts, ModelFacts):
        raise InvalidArgument(f"facts must be a ModelFacts, got {type(facts).__name__}")
    items = _check_tensors(tensors)
    default = _DEFAULT_TYPE[recipe]
    state = _State(items, facts)
    out: Dict[str, str] = {}
    for name, dims in sorted(items, key=lambda it: (_layer_of(it[0]), it[0])):
        if not _quantizable(name, dims, facts.arch):
            out[name] = converter_type(name, dims)
        elif default in _FLOAT_TYPES:
            out[name] = default
        else:
            out[name] = _fit_row(state.choose(recipe, default, name, dims), dims)
    return {name: out[name] for name, _ in items}  # in the caller's order


# ----------------------------------------------------------------------------
# argument checks


def _check_shape(name: str, shape) -> Tuple[int, ...]:
    if not isinstance(shape, (tuple, list)):
        raise InvalidArgument(f"shape of {name!r} must be a tuple of ints, got {type(shape).__name__}")
    if len(shape) > 4:
        raise InvalidArgument(f"shape of {name!r} has {len(shape)} axes; GGUF tensors have at most 4")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise InvalidArgument(f"shape of {name!r} must hold ints >= 0, got {tuple(shape)!r}")
    return tuple(shape)


def _check_tensors(tensors) -> List[Tuple[str, Tuple[int, ...]]]:
    if isinstance(tensors, (str, bytes)) or not hasattr(tensors, "__iter__"):
        raise InvalidArgument(f"tensors must be a sequence of (name, shape), got {type(tensors).__name__}")
    items: List[Tuple[str, Tuple[int, ...]]] = []
    seen = set()
    for entry in tensors:
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise InvalidArgument(f"each tensor must be a (name, shape) pair, got {entry!r}")
        name, shape = entry
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"tensor names must be non-empty strs, got {name!r}")
        if name in seen:
            raise InvalidArgument(f"tensor {name!r} is listed twice")
        seen.add(name)
        items.append((name, _check_shape(name, shape)))
    return items


# ----------------------------------------------------------------------------
# which tensors are quantized at all

# llama.cpp reads a layer as sscanf("blk.%d.") does: the number counts even
# when no dot follows it.
_LAYER = re.compile(r"blk\.\s*([+-]?\d+)")


def _layer_of(name: str) -> int:
    # llama.cpp walks the tensors ordered by layer number (-1 outside blocks),
    # then by name; the counting rules depend on that order.
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def _ggml_n_dims(dims: Tuple[int, ...]) -> int:
    # ggml counts axes up to the last one (in its reversed order) that is not
    # 1, so a numpy (1, n) tensor is 1-D to it.
    ne = list(reversed(dims)) or [1]
    for i in range(len(ne) - 1, 0, -1):
        if ne[i] != 1:
            return i + 1
    return 1


# Substrings whose tensors llama-quantize copies as they are: norms, expert
# routers, small per-architecture tables (gemma3n altup/laurel, Mamba and
# RWKV conv and mixing weights, T5 relative bias) and multimodal parts.
_KEEP_SUBSTRINGS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight",
    "indexer.k_proj.weight", "indexer.q_proj.weight",
    "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
    "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
    "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
    "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_",
    ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)
# glm5-next keeps these too.
_KEEP_GLM5_NEXT = (
    "hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
    "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight",
    "ssm_g_b.weight", "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight",
)


def _quantizable(name: str, dims: Tuple[int, ...], arch: str = "") -> bool:
    # llama-quantize touches only 2-D and 3-D-or-more tensors whose name ends
    # in "weight". Its test compares the last "weight" with the length minus
    # six, which a five-character name also passes (both sides wrap around).
    if _ggml_n_dims(dims) < 2:
        return False
    if not (name.endswith("weight") or len(name) == 5):
        return False
    # Position embeddings and BERT token types stay as they are.
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    keep = _KEEP_SUBSTRINGS + (_KEEP_GLM5_NEXT if arch == "glm5-next" else ())
    return not any(s in name for s in keep)


_CONVERTER_F32 = re.compile(
    r"(blk\.\d+\.(ffn_gate_inp|ffn_gate_inp_shexp|ssm_conv1d|shortconv\.conv|time_mix_first|"
    r"time_mix_w1|time_mix_w2|time_mix_decay_w1|time_mix_decay_w2|time_mix_lerp_fused|"
    r"altup_correct_coef|altup_predict_coef|ssm_conv1d_q|ssm_conv1d_k|ssm_conv1d_v|indexer\.proj)"
    r"|posnet\.\d+\.norm[12]|position_embd|token_types|v\.position_embd|a\.position_embd)\.weight"
)


def converter_type(name: str, dims: Tuple[int, ...]) -> str:
    """What convert_hf_to_gguf.py stores a tensor as at ``--outtype f16``
    (and keeps in F32 at every outtype): f32 for 1-D tensors, norms, tensors
    not named .weight and its own list of small tables (routers, position
    embeddings, token types, conv and mixing weights); f16 for the rest."""
    if len(dims) <= 1 or name.endswith("_norm.weight"):
        return "f32"
    if name[-7:] not in (".weight", ".lora_a", ".lora_b") or _CONVERTER_F32.fullmatch(name):
        return "f32"
    return "f16"


def _fit_row(target: str, dims: Tuple[int, ...]) -> str:
    # A row must hold whole blocks: a k-quant falls back to a 32-block type
    # (q2_k/q3_k -> q4_0, q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0), and a
    # row that does not hold whole 32-blocks either is stored f16.
    row = dims[-1] if dims else 1
    if row % BLOCKS[target][0] == 0:
        return target
    target = _FALLBACK.get(target, target)
    return target if row % BLOCKS[target][0] == 0 else "f16"


# ----------------------------------------------------------------------------
# the mixes

def _category(name: str) -> str:
    # llama.cpp's broad tensor categories, tested in this order on substrings.
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"),
                     ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"),
                     ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            # fused qkv and MLA's kv_b are as sensitive as attn_v and share
            # its rules (and its count).
            return cat
    return "other"


def _more_bits(i: int, n: int) -> bool:
    # The first and last eighth of the layers, and every third in between.
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


class _State:
    """llama-quantize's running counters over one model."""

    def __init__(self, items, facts: ModelFacts) -> None:
        self.facts = facts
        names = [name for name, _ in items]
        self.n_attn_v = sum(_category(n) == "attn_v" for n in names)
        self.tied = "output.weight" not in names
        self.i_attn_v = 0
        self.i_ffn = {"ffn_down": 0, "ffn_gate": 0, "ffn_up": 0}

    def _layer(self, cat: str, name: str) -> Tuple[int, int]:
        # Dense models count ffn tensors in order; with experts the layer
        # comes from the name, since expert tensors are not one per layer.
        n = self.facts.n_layer
        if self.facts.n_expert <= 1:
            return self.i_ffn[cat], n
        m = _LAYER.match(name)
        if not m:
            raise InvalidArgument(f"cannot find the layer of expert-model tensor {name!r}")
        i = int(m.group(1))
        if not 0 <= i < n:
            raise InvalidArgument(f"layer {i} of tensor {name!r} is not in [0, {n})")
        return i, n

    def choose(self, recipe: str, t: str, name: str, dims: Tuple[int, ...]) -> str:
        f = self.facts
        falcon = f.arch == "falcon"
        cat = _category(name)
        if f.arch == "glm5-next" and any(s in name for s in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
            # glm5-next keeps its query and nextn projections at q8_0 or above
            return "q8_0"
        if cat == "output" or (self.tied and cat == "token_embd"):
            # The output matrix (and a tied token embedding) gets q6_k, or
            # q8_0 on falcon, when the default type is q8_0 already, or when
            # its rows do not hold whole blocks of the default type.
            row = dims[-1] if dims else 1
            if falcon or row % BLOCKS[t][0]:
                return "q8_0"
            return t if t == "q8_0" else "q6_k"
        if cat == "token_embd":
            return t
        if cat == "attn_v":
            if recipe == "q2_k":
                t = "q4_k" if f.n_gqa >= 4 else "q3_k"
            elif recipe == "q3_k_m":
                t = "q5_k" if self.i_attn_v < 2 else "q4_k"
            elif recipe == "q3_k_l":
                t = "q5_k"
            elif recipe in ("q4_k_m", "q5_k_m") and _more_bits(self.i_attn_v, self.n_attn_v):
                t = "q6_k"
            elif recipe == "q4_k_s" and self.i_attn_v < 4:
                t = "q5_k"
            if f.is_70b and t in ("q3_k", "q4_k"):
                # 70B shares attn_v over 8 heads, so it is small: more bits.
                t = "q5_k"
            if f.n_expert == 8:
                t = "q8_0"
            self.i_attn_v += 1
            return t
        if cat == "attn_k":
            return "q8_0" if f.n_expert == 8 else t
        if cat == "ffn_down":
            i, n = self._layer(cat, name)
            if recipe == "q2_k":
                t = "q3_k"
            elif recipe == "q3_k_m":
                t = "q5_k" if i < n // 16 else ("q4_k" if not falcon or _more_bits(i, n) else "q3_k")
            elif recipe == "q3_k_l":
                t = "q4_k" if falcon else "q5_k"
            elif recipe == "q4_k_m":
                if falcon:
                    t = "q6_k" if i < n // 16 else ("q5_k" if _more_bits(i, n) else "q4_k")
                elif _more_bits(i, n):
                    t = "q6_k"
            elif recipe == "q5_k_m" and _more_bits(i, n):
                t = "q6_k"
            elif recipe == "q4_k_s" and not falcon and i < n // 8:
                t = "q5_k"
            self.i_ffn[cat] += 1
            return t
        if cat == "attn_output":
            if falcon:
                return "q4_k" if recipe == "q3_k_l" else t
            if f.n_expert == 8:
                return "q5_k" if recipe in ("q2_k", "q3_k_s", "q3_k_m", "q4_k_s", "q4_k_m") else t
            return {"q2_k": "q3_k", "q3_k_m": "q4_k", "q3_k_l": "q5_k"}.get(recipe, t)
        if cat in ("ffn_gate", "ffn_up"):
            self._layer(cat, name)  # an expert tensor without a layer is an error there too
            self.i_ffn[cat] += 1
        return t
