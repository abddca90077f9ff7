"""Tokenizers for GGUF: the vocabulary llama.cpp reads from
``tokenizer.ggml.*``.

Three kinds, as llama.cpp names them:

- ``llama``: SentencePiece (``tokenizer.model``, read with the sentencepiece
  package): pieces, scores and piece types, added tokens from
  ``added_tokens.json`` and ``tokenizer_config.json``.
- ``gpt2``: byte-level BPE from ``tokenizer.json``: tokens, token types and
  merges; the pre-tokenizer (``tokenizer.ggml.pre``) is recognised from the
  ``pre_tokenizer`` section (GPT-2, Llama 3 and Qwen2 splitting rules).
- ``bert``: WordPiece from ``tokenizer.json``, in llama.cpp's phantom-space
  form (``##x`` -> ``x``, other words get a leading U+2581).

Special token ids, add_bos/add_eos/add_sep, the chat template and the
normalizer's lowercasing come from tokenizer.json's post-processor,
tokenizer_config.json and config.json, the way llama.cpp's converter reads
them."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from .._util.jsonfile import read_json
from ..errors import InvalidArgument

# llama.cpp token types (llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
# GGUF has ids for these; "cls" is read but has no key (llama.cpp uses bos).
_ID_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "sep": "seperator_token_id",
            "pad": "padding_token_id", "mask": "mask_token_id", "eot": "eot_token_id", "eom": "eom_token_id"}

# Pre-tokenizer split patterns of tokenizer.json (Split + ByteLevel) ->
# llama.cpp's name for the same splitting rule.
_SPLIT_PATTERNS = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)|\\s+": "llama-bpe",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)|\\s+": "qwen2",
}

# WordPiece vocabularies: llama.cpp ignores tokenizer.ggml.pre for them, and
# its converter names them by hashing the ids of a probe text (see
# convert_hf_to_gguf.py, get_vocab_base_pre). We do the same for the BERT
# vocabularies below so the metadata matches; others get "default".
_PROBE = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) '
          '✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
          '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
          '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')
# The bert-base-uncased vocabulary (all-MiniLM, bge-small-en, jina-v2-en) hashes
# to this; the converter's last match for it is "jina-v2-en".
_WORDPIECE_HASHES = {
    "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f": "jina-v2-en",
}


class TokenizerNotFound(InvalidArgument):
    """The model directory has no tokenizer this exporter reads."""


@dataclass
class Vocab:
    """What ``tokenizer.ggml.*`` holds for one model."""

    model: str  # "llama", "gpt2", "bert"
    pre: str
    tokens: List[Union[str, bytes]]
    types: List[int]
    scores: Optional[List[float]] = None
    merges: Optional[List[str]] = None
    special_ids: Dict[str, int] = field(default_factory=dict)
    add_special: Dict[str, bool] = field(default_factory=dict)
    chat_template: Optional[Any] = None
    lowercase: Optional[bool] = None
    add_space_prefix: Optional[bool] = None
    token_type_count: Optional[int] = None
    source: str = ""

    def write(self, writer) -> None:
        """Add the vocabulary's keys to a ``gguf.GGUFWriter``."""
        import gguf

        K = gguf.Keys.Tokenizer
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.token_type_count is not None:
            writer.add_token_type_count(self.token_type_count)
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        if self.merges:
            writer.add_token_merges(self.merges)
        for typ, tid in self.special_ids.items():
            if typ in _ID_KEYS:
                writer.add_uint32(f"tokenizer.ggml.{_ID_KEYS[typ]}", tid)
        for typ, value in self.add_special.items():
            if typ in ("bos", "eos", "sep"):
                writer.add_bool(f"tokenizer.ggml.add_{typ}_token", value)
        if self.chat_template is not None:
            writer.add_chat_template(self.chat_template)
        if self.lowercase is not None:
            # older gguf packages have no add_normalizer_lowercase; the key is llama.cpp's
            writer.add_bool(getattr(K, "NORMALIZER_LOWERCASE", "tokenizer.ggml.normalizer.lowercase"),
                            self.lowercase)


def _json(path: str) -> Optional[dict]:
    return read_json(path, missing_ok=True)


def _looks_special(text: str) -> bool:
    """Added tokens some models forget to mark special (llama.cpp's list)."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>")) or (text.startswith("<unused") and text.endswith(">")))


def load_vocab(model_dir: str, config: dict, kind: str) -> Vocab:
    """The vocabulary of the model in ``model_dir``.

    ``kind``: "spm_or_bpe" (llama-like: tokenizer.model if present, else
    tokenizer.json's BPE), "bpe" (gpt2) or "wordpiece" (bert). Raises
    TokenizerNotFound when the files are missing, InvalidArgument when they
    hold a tokenizer of another kind or a pre-tokenizer llama.cpp has no
    rule for."""
    tj_path = os.path.join(model_dir, "tokenizer.json")
    if kind == "spm_or_bpe" and os.path.isfile(os.path.join(model_dir, "tokenizer.model")):
        vocab = _sentencepiece(model_dir, config)
        _special(vocab, model_dir, load_merges=False)
        return vocab
    tj = _json(tj_path)
    if tj is None:
        wanted = "tokenizer.model or tokenizer.json" if kind == "spm_or_bpe" else "tokenizer.json"
        raise TokenizerNotFound(f"{model_dir!r} has no {wanted}: GGUF files carry the tokenizer")
    model_type = (tj.get("model") or {}).get("type")
    if kind == "wordpiece":
        if model_type != "WordPiece":
            raise InvalidArgument(f"{tj_path!r}: expected a WordPiece tokenizer, got {model_type}")
        vocab = _from_tokenizer_json(tj, config, "bert")
        vocab.token_type_count = int(config.get("type_vocab_size", 1))
        vocab.pre = _wordpiece_pre(tj_path)
        vocab.tokens = [t if ty == CONTROL else (t[2:] if t.startswith("##") else "\u2581" + t)
                        for t, ty in zip(vocab.tokens, vocab.types)]
        _special(vocab, model_dir, load_merges=False)
        return vocab
    if model_type != "BPE":
        raise InvalidArgument(f"{tj_path!r}: expected a BPE tokenizer, got {model_type}")
    vocab = _from_tokenizer_json(tj, config, "gpt2")
    vocab.pre = _bpe_pre(tj, tj_path)
    _special(vocab, model_dir, load_merges=True)
    return vocab


def _sentencepiece(model_dir: str, config: dict) -> Vocab:
    try:
        import sentencepiece
    except ImportError:
        raise InvalidArgument("reading tokenizer.model needs the sentencepiece package "
                              "(pip install sentencepiece)") from None
    path = os.path.join(model_dir, "tokenizer.model")
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.LoadFromFile(path)
    except (OSError, RuntimeError) as e:
        raise InvalidArgument(f"{path!r} is not a SentencePiece model: {e}") from None
    n = int(config.get("vocab_size") or sp.vocab_size())
    tokens: List[Union[str, bytes]] = [f"[PAD{i}]".encode() for i in range(n)]
    scores = [-10000.0] * n
    types = [UNUSED] * n
    for i in range(min(n, sp.vocab_size())):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else UNUSED if sp.IsUnused(i)
                    else BYTE if sp.IsByte(i) else NORMAL)
    added = _json(os.path.join(model_dir, "added_tokens.json")) or {}
    for text, tid in added.items():
        if isinstance(tid, int) and 0 <= tid < n:
            tokens[tid], scores[tid], types[tid] = text.encode("utf-8"), -1000.0, USER_DEFINED
    tc = _json(os.path.join(model_dir, "tokenizer_config.json")) or {}
    for sid, data in (tc.get("added_tokens_decoder") or {}).items():
        tid, text = int(sid), data["content"]
        if not 0 <= tid < n:
            continue
        if data.get("special") or _looks_special(text):
            types[tid] = CONTROL
        else:
            text = text.replace("\u2581", " ")  # llama.cpp expects user-defined tokens pre-normalized
            types[tid] = USER_DEFINED
        tokens[tid], scores[tid] = text.encode("utf-8"), -1000.0
    v = Vocab("llama", "default", tokens, types, scores=scores, source=path)
    if isinstance(tc.get("add_prefix_space"), bool):
        v.add_space_prefix = tc["add_prefix_space"]
    return v


def _from_tokenizer_json(tj: dict, config: dict, model: str) -> Vocab:
    """Tokens and types from tokenizer.json's vocab and added tokens."""
    base = (tj.get("model") or {}).get("vocab") or {}
    if not isinstance(base, dict):
        raise InvalidArgument("tokenizer.json: model.vocab is not a token -> id mapping")
    by_id: Dict[int, str] = {int(i): t for t, i in base.items()}
    added = {int(a["id"]): a for a in tj.get("added_tokens") or []}
    for i, a in added.items():
        by_id[i] = a["content"]
    n = int(config.get("vocab_size") or 0) or (max(by_id) + 1 if by_id else 0)
    if by_id and max(by_id) >= n:
        raise InvalidArgument(f"tokenizer.json has token id {max(by_id)}, beyond config.json's vocab_size {n}")
    tokens: List[Union[str, bytes]] = []
    types: List[int] = []
    for i in range(n):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        text = by_id[i]
        if i in added:
            if added[i].get("special") or _looks_special(text):
                types.append(CONTROL)
            else:
                text = text.replace("\u2581", " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(text)
    return Vocab(model, "default", tokens, types, source="tokenizer.json")


def _bpe_pre(tj: dict, path: str) -> str:
    pre = tj.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern in _SPLIT_PATTERNS:
            return _SPLIT_PATTERNS[pattern]
    raise InvalidArgument(f"{path!r}: llama.cpp has no pre-tokenizer rule known here for {json.dumps(pre)[:200]}; "
                          "recognised: ByteLevel (gpt-2), Split+ByteLevel with the Llama 3 or Qwen2 pattern")


def _wordpiece_pre(path: str) -> str:
    try:
        import tokenizers
    except ImportError:
        return "default"
    try:
        tok = tokenizers.Tokenizer.from_file(path)
        tok.no_truncation()  # a saved max_length would cut the probe short
        tok.no_padding()
        ids = tok.encode(_PROBE).ids
    except Exception:  # a tokenizer.json the library rejects: llama.cpp ignores the name anyway
        return "default"
    return _WORDPIECE_HASHES.get(hashlib.sha256(str(ids).encode()).hexdigest(), "default")


def _content(entry) -> Optional[str]:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def _special(vocab: Vocab, model_dir: str, load_merges: bool) -> None:
    """Special token ids, add_* flags, merges, chat template and the
    normalizer's lowercasing, from tokenizer.json, tokenizer_config.json and
    config.json (the first source naming a type wins)."""
    n = len(vocab.tokens)
    ids = vocab.special_ids
    add = vocab.add_special
    types: List[str] = list(SPECIAL_TYPES)

    def set_id(typ: str, tid) -> None:
        if isinstance(tid, int) and not isinstance(tid, bool) and 0 <= tid < n and typ not in ids:
            ids[typ] = tid

    tj = _json(os.path.join(model_dir, "tokenizer.json"))
    tc = _json(os.path.join(model_dir, "tokenizer_config.json"))
    added_tokens = (tj or {}).get("added_tokens") or []
    if tj:
        if load_merges:
            merges = (tj.get("model") or {}).get("merges")
            if merges and isinstance(merges[0], list):
                # pairs (tokenizers >= 0.20): llama.cpp's file form is "a b", a space inside a part as U+0120+...
                merges = [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
                          for pair in merges]
            vocab.merges = list(merges or [])
        _normalizer(vocab, tj.get("normalizer"))
    if tj and tc is not None:
        _post_processor(tj.get("post_processor"), tc, add, types)
    elif tj:
        _post_processor(tj.get("post_processor"), None, add, types)
    if tc is not None:
        chat = tc.get("chat_template")
        if chat is None:
            jinja = os.path.join(model_dir, "chat_template.jinja")
            if os.path.isfile(jinja):
                with open(jinja, encoding="utf-8") as fh:
                    chat = fh.read()
            else:
                chat = (_json(os.path.join(model_dir, "chat_template.json")) or {}).get("chat_template")
        if isinstance(chat, (str, list)):
            vocab.chat_template = chat
        for typ in types:
            flag = tc.get(f"add_{typ}_token")
            if isinstance(flag, bool) and typ not in add:
                add[typ] = flag
            text = _content(tc.get(f"{typ}_token"))
            if text is not None:
                set_id(typ, next((a.get("id") for a in added_tokens if a.get("content") == text), None))
    cfg = _json(os.path.join(model_dir, "config.json")) or {}
    for typ in types:
        tid = cfg.get(f"{typ}_token_id")
        if tid is None and isinstance(cfg.get("text_config"), dict):
            tid = cfg["text_config"].get(f"{typ}_token_id")
        set_id(typ, tid)
    ids.pop("cls", None)  # no GGUF key; llama.cpp takes bos


def _normalizer(vocab: Vocab, norm) -> None:
    if not isinstance(norm, dict):
        return
    t = norm.get("type")
    if t == "Lowercase":
        vocab.lowercase = True
    elif t == "BertNormalizer" and "lowercase" in norm:
        vocab.lowercase = bool(norm["lowercase"])
    elif t == "Sequence":
        for n in norm.get("normalizers") or []:
            _normalizer(vocab, n)


def _post_processor(post, tc: Optional[dict], add: Dict[str, bool], types: List[str]) -> None:
    """Which special tokens the post-processor adds around one sequence
    (and between two). ``tc`` (tokenizer_config.json) is updated with the
    token names it implies, as llama.cpp's converter does."""
    if not isinstance(post, dict):
        return
    cfg = tc if tc is not None else {}
    bos, cls = _content(cfg.get("bos_token")), _content(cfg.get("cls_token"))
    eos, sep = _content(cfg.get("eos_token")), _content(cfg.get("sep_token"))
    if not bos and cls and tc is not None:
        cfg["bos_token"] = bos = cls
    if not eos and sep and tc is not None:
        cfg["eos_token"] = eos = sep
    for proc in post.get("processors", [post]):
        kind = proc.get("type")
        if kind == "ByteLevel":
            add.setdefault("bos", False)
            add.setdefault("eos", False)
        elif kind == "RobertaProcessing":
            add.update(bos=True, eos=True, sep=True)
            if not cls and tc is not None:
                cfg["cls_token"] = cls = proc.get("cls", [bos])[0]
            if not sep and tc is not None:
                cfg["sep_token"] = sep = proc.get("sep", [eos])[0]
        elif kind == "TemplateProcessing":
            single = proc.get("single") or []
            pair = proc.get("pair") or []
            first = last = None
            if len(single) > 1:
                first = single[0].get("SpecialToken", {}).get("id")
                if first:
                    if tc is None:
                        bos = first
                    elif first not in (bos, cls):
                        if not bos:
                            cfg["bos_token"] = bos = first
                        if not cls:
                            cfg["cls_token"] = cls = first
                    add["bos"] = first in (bos, cls)
                last = single[-1].get("SpecialToken", {}).get("id")
                if last:
                    if tc is None:
                        eos = last
                    elif last != eos:
                        # the old eos becomes end-of-turn, the template's last token the eos
                        extra = "eot" if "eot" not in types else "eom" if "eom" not in types else None
                        if extra:
                            types.append(extra)
                            cfg[f"{extra}_token"] = eos
                        cfg["eos_token"] = eos = last
                    add["eos"] = last == eos
            if pair:
                start = 1 if first and pair[0].get("SpecialToken", {}).get("id") == first else 0
                stop = -1 if last and pair[-1].get("SpecialToken", {}).get("id") == last else None
                middle = pair[slice(start, stop)]
                if middle and middle[0].get("Sequence", {}).get("id") == "A" and \
                        middle[-1].get("Sequence", {}).get("id") == "B" and middle[1:-1]:
                    inner = middle[1:-1]
                    add_sep = False
                    entry = inner[0].get("SpecialToken", {}).get("id")
                    if entry in (sep, eos) and not last:
                        add_sep = True
                    if len(inner) == 2 and inner[1].get("SpecialToken", {}).get("id") in (sep, eos):
                        add_sep = True
                    add["sep"] = add_sep
                    if add_sep and not sep and tc is not None:
                        cfg["sep_token"] = eos


def tokens_equal(a: Sequence, b: Sequence) -> bool:
    """Token lists equal as UTF-8 (str and bytes entries compare alike)."""
    enc = (lambda t: t if isinstance(t, bytes) else t.encode("utf-8"))
    return len(a) == len(b) and all(enc(x) == enc(y) for x, y in zip(a, b))
