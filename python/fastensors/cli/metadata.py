"""The ``fastensors metadata`` subcommands: show, set, delete, embed-config,
validate, diff."""

from __future__ import annotations

import json
import sys
import warnings


def register(sub) -> None:
    p = sub.add_parser("metadata", help="show, edit, validate and compare checkpoint metadata",
                       description="Metadata of a .safetensors file or a checkpoint (model directory, index JSON,"
                       " sharded directory). Edits rewrite the header in front of the unchanged data (copied by"
                       " the kernel), into a temporary file renamed over the original; shards change as one set.")
    msub = p.add_subparsers(dest="metadata_command", metavar="ACTION", required=True)

    q = msub.add_parser("show", help="print the metadata as a JSON object")
    q.add_argument("path")
    q.set_defaults(func=_show)

    q = msub.add_parser("set", help="set KEY=VALUE pairs (values are stored as given)")
    q.add_argument("path")
    q.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    _edit_options(q)
    q.set_defaults(func=_set)

    q = msub.add_parser("delete", help="remove keys")
    q.add_argument("path")
    q.add_argument("keys", nargs="+", metavar="KEY")
    q.add_argument("--missing-ok", action="store_true", help="do not fail on keys that are not there")
    _edit_options(q)
    q.set_defaults(func=_delete)

    q = msub.add_parser("embed-config", help="copy config.json into the metadata",
                        description="Look for DIR/transformer/config.json, DIR/config.json,"
                        " DIR/transformer.config.json (in that order) and write model_type, architectures,"
                        " hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,"
                        " max_position_embeddings, torch_dtype (when present; non-strings as JSON), the whole"
                        " config as full_config and its location as metadata_source. A missing config.json is a"
                        " warning.")
    q.add_argument("path")
    q.add_argument("--model-dir", "--model-path", dest="model_dir", metavar="DIR",
                   help="where to look for config.json (default: the checkpoint's directory); with --config-yaml,"
                   " used when the YAML has no pipeline.path")
    q.add_argument("--config-yaml", metavar="FILE",
                   help="a diffusion pipeline config (e.g. flux.1-dev.yaml): the model directory is its pipeline.path,"
                   " else --model-path, else a directory named after pipeline.name (needs PyYAML)")
    _edit_options(q)
    q.set_defaults(func=_embed_config)

    q = msub.add_parser("validate", help="check headers and metadata; exit status 0 when valid, 1 otherwise")
    q.add_argument("path")
    q.add_argument("--require", action="append", default=[], metavar="KEY", help="a key that must be present"
                   " (repeatable)")
    q.set_defaults(func=_validate)

    q = msub.add_parser("diff", help="metadata and tensors that differ between two checkpoints",
                        description="Lines start with + (only in B), - (only in A) or ~ (changed).")
    q.add_argument("a")
    q.add_argument("b")
    q.add_argument("--json", action="store_true", help="print a JSON document")
    q.add_argument("--exit-code", action="store_true", help="exit with 1 when they differ")
    q.set_defaults(func=_diff)


def _edit_options(p) -> None:
    p.add_argument("--backup", action="store_true", help="keep the previous file(s) as NAME.backup")
    p.add_argument("--no-fsync", action="store_true",
                   help="skip fsync (the commit stays atomic but may not survive a power loss)")


def _edit_kwargs(args) -> dict:
    return {"backup": args.backup, "durable": False if args.no_fsync else None}


def _print_json(doc) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False))


def _show(args) -> int:
    from ..surgery import metadata

    _print_json(metadata.show(args.path))
    return 0


def _set(args) -> int:
    from ..surgery import metadata

    items = {}
    for pair in args.pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"{pair!r} is not KEY=VALUE")
        items[key] = value
    metadata.set(args.path, items, **_edit_kwargs(args))
    print(f"set {', '.join(items)} in {args.path}")
    return 0


def _delete(args) -> int:
    from ..surgery import metadata

    metadata.delete(args.path, args.keys, missing_ok=args.missing_ok, **_edit_kwargs(args))
    print(f"deleted {', '.join(args.keys)} from {args.path}")
    return 0


def _embed_config(args) -> int:
    from ..surgery import metadata

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = metadata.embed_config(args.path, args.model_dir, config_yaml=args.config_yaml,
                                        **_edit_kwargs(args))
    for w in caught:
        print(f"fastensors metadata embed-config: warning: {w.message}", file=sys.stderr)
    if values is not None:
        print(f"embedded {values['metadata_source']} ({', '.join(k for k in values if k != 'full_config')},"
              f" full_config) into {args.path}")
    return 0


def _validate(args) -> int:
    from ..surgery import metadata

    report = metadata.validate(args.path, require=args.require)
    if report.ok:
        print(f"{args.path}: valid ({len(report.metadata)} metadata keys)")
        return 0
    for problem in report.problems:
        print(f"{args.path}: {problem}")
    return 1


def _diff(args) -> int:
    from ..surgery import metadata

    d = metadata.diff(args.a, args.b)
    if args.json:
        _print_json(d.as_dict())
    else:
        for line in d.lines():
            print(line)
        if d.same:
            print("no differences in metadata, tensor names, dtypes or shapes")
    return 1 if (args.exit_code and not d.same) else 0
