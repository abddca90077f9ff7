"""``fastensors inspect``: a checkpoint's tensors, totals, shards, metadata
and modality, from its headers."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("inspect", help="tensors, totals, shards, metadata and modality of a checkpoint",
                       description="Summarize PATH (a .safetensors file, a model directory, an index JSON or a"
                       " sharded directory) from its headers only: no tensor data is read. --json prints the"
                       " stable document described in docs/surgery.md.")
    p.add_argument("path", help="a path, or a URL (https://, s3://, hf://, any fsspec protocol; docs/remote.md)")
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="fsspec options for a URL, as a JSON object (endpoints, anon, ...; credentials are better"
                   " left to the protocol's own environment variables)")
    p.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    p.add_argument("--max-rows", type=int, default=None, metavar="N", help="list at most N tensors in the table")
    p.set_defaults(func=_inspect)


def storage_options_arg(text: str) -> dict:
    """``--storage-options``: a JSON object, or an InvalidArgument naming the rule."""
    from ..errors import InvalidArgument

    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"--storage-options is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("--storage-options must be a JSON object")
    return value


def _inspect(args) -> int:
    from ..gguf import inspect_gguf, looks_like_gguf
    from ..surgery.inspect import summary

    if looks_like_gguf(args.path):  # llama.cpp's files: their own header
        s = inspect_gguf(args.path)
        print(json.dumps(s.as_dict(), indent=2, ensure_ascii=False) if args.json else s.table(max_rows=args.max_rows))
        return 0
    kwargs = {}
    if args.storage_options is not None:
        kwargs["storage_options"] = storage_options_arg(args.storage_options)
    s = summary(args.path, **kwargs)
    if args.json:
        print(json.dumps(s.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(s.table(max_rows=args.max_rows))
    return 0
