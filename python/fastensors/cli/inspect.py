"""``fastensors inspect``: a checkpoint's tensors, totals, shards, metadata
and modality, from its headers."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("inspect", help="tensors, totals, shards, metadata and modality of a checkpoint",
                       description="Summarize PATH (a .safetensors file, a model directory, an index JSON or a"
                       " sharded directory) from its headers only: no tensor data is read. --json prints the"
                       " stable document described in docs/surgery.md.")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    p.add_argument("--max-rows", type=int, default=None, metavar="N", help="list at most N tensors in the table")
    p.set_defaults(func=_inspect)


def _inspect(args) -> int:
    from ..surgery.inspect import summary

    s = summary(args.path)
    if args.json:
        print(json.dumps(s.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(s.table(max_rows=args.max_rows))
    return 0
