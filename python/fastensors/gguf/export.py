"""Export of a Hugging Face model directory to a GGUF file llama.cpp loads.

The file is written streamed (header, metadata and tensor infos first, then
one tensor at a time) into a temporary file beside the target, renamed into
place only when complete: on any error nothing is left at ``out_path``."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from .._util.jsonfile import read_json
from ..errors import InvalidArgument
from . import archs as _archs
from . import imatrix as _imatrix
from . import recipes as _recipes
from . import types as _types
from .tokenizer import load_vocab

PathLike = Union[str, "os.PathLike[str]"]
TypeChoice = Union[Mapping[str, str], Callable[[str, Tuple[int, ...]], Optional[str]], None]

from .types import CONFIG_KEY, FORMAT_KEY, FORMAT_VERSION


class ConfigNotFound(InvalidArgument, FileNotFoundError):
    """The model directory has no config.json."""


@dataclass
class TensorReport:
    """One GGUF tensor written: its name, the checkpoint tensor, the type and
    numpy-order shape, and the bytes it takes."""

    name: str
    source: str
    type: str
    shape: Tuple[int, ...]
    nbytes: int


@dataclass
class ExportReport:
    """What :func:`export_gguf` wrote."""

    path: str
    architecture: str  # GGUF architecture name
    hf_class: str
    recipe: str
    file_type: int
    tokenizer: str  # tokenizer.ggml.model
    pre_tokenizer: str
    n_tokens: int
    tensors: List[TensorReport] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    weighted: int = 0  # tensors quantized with the importance matrix
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0

    def types(self) -> Dict[str, int]:
        """GGUF type -> number of tensors of that type."""
        out: Dict[str, int] = {}
        for t in self.tensors:
            out[t.type] = out.get(t.type, 0) + 1
        return out


def recipe_names() -> Tuple[str, ...]:
    """Recipe names :func:`export_gguf` takes: the uniform ones (every
    weight matrix one type) and llama-quantize's mixes (gguf/recipes.py)."""
    names = tuple(_types.UNIFORM_FILE_TYPES)
    return names + tuple(r for r in _recipes.RECIPES if r not in names)


def _file_type(recipe: str) -> int:
    import gguf

    member = _types.UNIFORM_FILE_TYPES.get(recipe) or f"MOSTLY_{recipe.upper()}"
    if not hasattr(gguf.LlamaFileType, member):
        raise InvalidArgument(f"recipe {recipe!r} has no llama.cpp file type")
    return int(getattr(gguf.LlamaFileType, member))


def _plan_types(recipe: str, plans: List[_archs.TensorPlan], arch: _archs.Arch,
               types: TypeChoice = None) -> Dict[str, str]:
    """GGUF tensor name -> GGUF type for ``recipe``; ``types`` (a mapping or
    ``f(name, shape) -> type or None``) overrides it per tensor. Tensors
    llama.cpp keeps in F32 stay F32; a block type that does not divide a
    row falls back to F16, as llama.cpp's converter does."""
    available = _types.available_types()
    if recipe in _types.UNIFORM_FILE_TYPES:
        # the converter's --outtype: its F32 tensors stay F32, the rest take the type
        chosen = {p.gguf_name: ("f32" if _recipes.converter_type(p.gguf_name, p.shape) == "f32" else recipe)
                  for p in plans}
    else:
        if recipe not in _recipes.RECIPES:
            raise InvalidArgument(f"unknown recipe {recipe!r}; expected one of {', '.join(recipe_names())}")
        facts = _recipes.ModelFacts(arch=arch.name, n_layer=arch.n_layer, n_head=arch.n_head,
                                 n_head_kv=int(arch.find(("num_key_value_heads", "n_kv_heads"), 0)), n_expert=0)
        # llama-quantize's rules applied to the converter's f16 file (gguf/recipes.py)
        chosen = dict(_recipes.plan_types(recipe, [(p.gguf_name, p.shape) for p in plans], facts))
    for p in plans:
        if types is not None:
            t = types.get(p.gguf_name) if isinstance(types, Mapping) else types(p.gguf_name, p.shape)
            if t is not None:
                chosen[p.gguf_name] = str(t).lower()
        t = chosen.get(p.gguf_name)
        if t not in available:
            raise InvalidArgument(f"tensor {p.gguf_name!r}: type {t!r} is not one of {', '.join(available)}")
        if not _types.can_hold(t, p.shape):
            chosen[p.gguf_name] = "f16"
    return chosen


def _read_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise ConfigNotFound(f"{model_dir!r} has no config.json: the GGUF exporter needs the model's "
                             "configuration")
    return read_json(path)


# llama-quantize's token embeddings: an imatrix entry of the wrong size is
# ignored for them (they are looked up, never multiplied), an error elsewhere.
_TOKEN_EMBD = ("token_embd.weight", "per_layer_token_embd.weight")


def _imatrix_weights(im, plans: List[_archs.TensorPlan], chosen: Dict[str, str]) -> Dict[str, np.ndarray]:
    """GGUF tensor name -> the importance weights its quantization takes, by
    llama-quantize's rules: a tensor quantized to a block type whose name the
    imatrix has, if the entry holds ne0 * n_expert values (else an error,
    but for the token embeddings, which go unweighted); tensors it lacks are
    quantized without one. Q8_0 takes none (ggml ignores them)."""
    out: Dict[str, np.ndarray] = {}
    for p in plans:
        t = chosen[p.gguf_name]
        w = im.weights.get(p.gguf_name)
        if w is None or t in ("f32", "f16", "bf16"):
            continue
        n = p.shape[-1] * (p.shape[-3] if len(p.shape) >= 3 else 1)
        if w.size != n:
            if p.gguf_name in _TOKEN_EMBD:
                continue
            raise InvalidArgument(f"imatrix size {w.size} is different from tensor size {n} for {p.gguf_name}")
        if _types.has_weighted(t):
            out[p.gguf_name] = w
    return out


def export_gguf(model_dir: PathLike, out_path: PathLike, *, recipe: str = "q8_0", types: TypeChoice = None,
                name: Optional[str] = None, overwrite: bool = True, progress=None, imatrix=None) -> ExportReport:
    """Convert the Hugging Face model in ``model_dir`` (config.json,
    safetensors single or sharded, tokenizer files) into the GGUF file
    ``out_path`` that llama.cpp loads.

    ``recipe``: "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"
    (every weight matrix that type; norms, biases and 1-D tensors F32), or a
    llama-quantize mix such as "q4_k_m" where :func:`recipe_names` lists it.
    ``types``: per-tensor overrides, a mapping of GGUF tensor name -> GGUF
    type or a callable ``(name, numpy shape) -> type or None``. ``name``:
    general.name (default: from the model card / directory). ``overwrite``:
    replace an existing ``out_path`` (else InvalidArgument). ``progress``:
    called ``progress(done_bytes, total_bytes)`` as tensors are written.
    ``imatrix``: an importance matrix, the path of a llama.cpp imatrix file
    (:func:`read_imatrix`) or a mapping of GGUF tensor name -> float32
    weights; each block-quantized tensor it names is then quantized with its
    weights, byte-identical with llama-quantize --imatrix (rules:
    docs/gguf.md), and the quantize.imatrix.* keys are written.

    Returns an :class:`ExportReport`. Raises ConfigNotFound (no
    config.json), UnsupportedArchitecture (listing the supported classes),
    TokenizerNotFound, UnknownTensor (a tensor the architecture has no GGUF
    name for), CheckpointNotFound (no safetensors), InvalidArgument (bad
    recipe or type, missing output directory, an unreadable or malformed
    imatrix, an imatrix entry whose size does not fit its tensor). Nothing is left at
    ``out_path`` (nor a temporary file) when it raises."""
    import gguf

    from ..checkpoint import open_checkpoint

    t0 = time.perf_counter()
    model_dir, out_path = os.fspath(model_dir), os.fspath(out_path)
    if not os.path.isdir(model_dir):
        raise InvalidArgument(f"{model_dir!r} is not a model directory")
    cfg = _read_config(model_dir)
    arch = _archs.detect(cfg)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        raise InvalidArgument(f"cannot write {out_path!r}: directory {out_dir!r} does not exist")
    if os.path.isdir(out_path):
        raise InvalidArgument(f"{out_path!r} is a directory; give the .gguf file's path")
    if os.path.exists(out_path) and not overwrite:
        raise InvalidArgument(f"{out_path!r} exists (pass overwrite=True to replace it)")
    im = None if imatrix is None else _imatrix.resolve(imatrix)
    # pread: the exporter reads each block of rows once, into a fresh buffer;
    # a mapping would read ahead into this process (up to 1 GiB resident
    # when the files are not in the page cache)
    ckpt = open_checkpoint(model_dir, framework="np", backend="pread")
    try:
        infos = [(n, *(lambda i: (i.dtype, tuple(i.shape)))(ckpt.tensor_info(n))) for n in ckpt.keys()]
        plans, dropped = _archs.plan_tensors(arch, infos)
        chosen = _plan_types(recipe, plans, arch, types)
        weights = {} if im is None else _imatrix_weights(im, plans, chosen)
        for p in plans:
            if p.dtype not in ("F32", "F16", "BF16", "F64"):
                raise InvalidArgument(f"tensor {p.hf_name!r} is {p.dtype}; the exporter converts float tensors only")
        vocab = load_vocab(model_dir, arch.config, arch.tokenizer_kind)
        file_type = _file_type(recipe)
        report = ExportReport(out_path, arch.name, arch.hf_class, recipe, file_type, vocab.model, vocab.pre,
                              len(vocab.tokens), dropped=dropped, weighted=len(weights))
        tmp = os.path.join(out_dir, f".{os.path.basename(out_path)}.{os.getpid()}.tmp")
        try:
            _write(tmp, ckpt, arch, plans, chosen, vocab, file_type, model_dir, cfg, name, report, progress,
                   im, imatrix, weights)
            os.replace(tmp, out_path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    finally:
        ckpt.close()
    report.seconds = time.perf_counter() - t0
    return report


def _imatrix_keys(writer, im, source) -> None:
    """The keys llama-quantize records for an importance matrix: the file
    (and its first dataset, and chunk count when known) as it was given, and
    how many entries it holds (u32, as llama-quantize stores them)."""
    def clip(text: str) -> str:  # llama-quantize keeps 127 bytes
        return text.encode("utf-8")[:127].decode("utf-8", "ignore")

    if isinstance(source, (str, os.PathLike)):
        writer.add_string("quantize.imatrix.file", clip(os.fspath(source)))
        if im.datasets:
            writer.add_string("quantize.imatrix.dataset", clip(im.datasets[0]))
    writer.add_uint32("quantize.imatrix.entries_count", len(im.weights))
    if im.chunk_count > 0:
        writer.add_uint32("quantize.imatrix.chunks_count", im.chunk_count)


def _write(tmp, ckpt, arch, plans, chosen, vocab, file_type, model_dir, cfg, name, report, progress,
           im=None, imatrix_source=None, weights=None) -> None:
    import gguf
    from pathlib import Path

    writer = gguf.GGUFWriter(tmp, arch=arch.name)
    try:
        total = 0
        for p in plans:
            t = chosen[p.gguf_name]
            nb = _types.nbytes(t, p.shape)
            qtype = _types.gguf_type(t)
            if t in ("f32", "f16", "bf16"):
                dtype = {"f32": np.float32, "f16": np.float16}.get(t, np.uint8)
                byte_shape = p.shape if t != "bf16" else (*p.shape[:-1], p.shape[-1] * 2)
                writer.add_tensor_info(p.gguf_name, byte_shape, np.dtype(dtype), nb, raw_dtype=qtype)
            else:
                rows = int(np.prod(p.shape[:-1], dtype=np.int64)) if len(p.shape) > 1 else 1
                writer.add_tensor_info(p.gguf_name, (*p.shape[:-1], nb // max(rows, 1)), np.dtype(np.uint8), nb,
                                       raw_dtype=qtype)
            report.tensors.append(TensorReport(p.gguf_name, p.hf_name, t, p.shape, nb))
            total += nb
        # general.* as the converter derives it (model card, config, parameter count)
        n_params = writer.get_total_parameter_count()
        meta = gguf.Metadata.load(None, Path(model_dir), name, n_params[0])
        if meta.name is None:
            meta.name = os.path.basename(os.path.normpath(model_dir))
        if meta.size_label is None and n_params[0] > 0:
            meta.size_label = gguf.size_label(*n_params)
        writer.add_type(gguf.GGUFType.MODEL)
        meta.set_gguf_meta_model(writer)
        _archs.write_hparams(writer, arch, model_dir, file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if im is not None:
            _imatrix_keys(writer, im, imatrix_source)
        vocab.write(writer)
        writer.add_string(CONFIG_KEY, json.dumps(cfg, sort_keys=True))
        writer.add_string(FORMAT_KEY, json.dumps({
            "version": FORMAT_VERSION, "hf_class": arch.hf_class,
            "tensors": {p.gguf_name: {"name": p.hf_name, "dtype": p.dtype, "shape": list(p.hf_shape),
                                      "transform": p.transform, "heads": p.heads} for p in plans},
            "dropped": report.dropped}, sort_keys=True))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        done = 0
        for p in plans:
            data = _RowBlocks(ckpt, p, chosen[p.gguf_name], (weights or {}).get(p.gguf_name))
            writer.write_tensor_data(data, tensor_endianess=writer.endianess)  # bytes, written as encoded
            report.bytes_in += data.bytes_in
            done += data.nbytes
            if progress is not None:
                progress(done, total)
        report.bytes_out = total
        for f in writer.fout or ():
            f.flush()
            os.fsync(f.fileno())
    finally:
        writer.close()


# Rows of source encoded and written at a time: memory stays about this
# much, whatever the size of a tensor (token embeddings, output).
BLOCK_BYTES = 16 << 20


class _RowBlocks:
    """One GGUF tensor, read, encoded and written a block of rows at a
    time. Rows are independent in every GGUF type, so the bytes are those of
    encoding the whole tensor at once. ``GGUFWriter.write_tensor_data``
    needs only ``nbytes`` and ``tofile`` of what it writes."""

    _ITEMSIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}

    def __init__(self, ckpt, plan, gtype: str, weights: Optional[np.ndarray] = None):
        self.ckpt, self.plan, self.gtype, self.weights = ckpt, plan, gtype, weights
        self.nbytes = _types.nbytes(gtype, plan.shape)
        self.bytes_in = int(np.prod(plan.hf_shape, dtype=np.int64)) * self._ITEMSIZE[plan.dtype]

    def _encode(self, a: np.ndarray, w: Optional[np.ndarray] = None) -> np.ndarray:
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        # weights only where there are some: encode keeps its two-argument form
        out = _types.encode(a, self.gtype) if w is None else _types.encode(a, self.gtype, w)
        return out.reshape(-1).view(np.uint8)

    def _block_weights(self, r0: int, r1: int) -> Optional[np.ndarray]:
        """The importance weights of rows [r0, r1) of the first axis: the
        same columns' weights for a matrix, the experts' slices for a stack
        of them (n, rows, cols)."""
        w = self.weights
        if w is None or len(self.plan.shape) < 3:
            return w
        return w.reshape(self.plan.shape[0], -1)[r0:r1].reshape(-1)

    def tofile(self, fout) -> None:
        p = self.plan
        if p.transform is not None or len(p.hf_shape) < 2:
            # whole: a transform moves rows around
            self._encode(_archs.apply(p, self.ckpt.get_tensor(p.hf_name)), self.weights).tofile(fout)
            return
        per_index = self.bytes_in // max(1, p.hf_shape[0])  # bytes of one index of the first dimension
        step = max(1, BLOCK_BYTES // max(1, per_index))
        rows = self.ckpt.get_slice(p.hf_name)
        written = 0
        for r0 in range(0, p.hf_shape[0], step):
            block = self._encode(rows[r0:r0 + step], self._block_weights(r0, r0 + step))
            block.tofile(fout)
            written += block.nbytes
            del block
        if written != self.nbytes:
            raise InvalidArgument(f"tensor {p.gguf_name!r}: wrote {written} bytes, expected {self.nbytes}")
