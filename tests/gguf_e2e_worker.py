"""llama.cpp's own pipeline, each step in a fresh interpreter (the converter
imports torch; llama.cpp's OpenMP runtime should never meet torch's):

    python gguf_e2e_worker.py convert MODEL_DIR OUT.gguf [PRE]
        convert_hf_to_gguf.py MODEL_DIR --outtype f16 --outfile OUT.gguf,
        from the llama.cpp tree FASTENSORS_LLAMA_CPP_SRC names. With PRE,
        the converter's BPE pre-tokenizer lookup answers PRE: it recognises
        a tokenizer by hashing its output on a probe text, against a table
        of published models, which a tokenizer trained in a test is not in.
        Everything else is the converter's own code.
    python gguf_e2e_worker.py quantize IN.gguf OUT_DIR RECIPE...
        llama_model_quantize IN.gguf -> OUT_DIR/RECIPE.gguf for each recipe
        (one thread, no importance matrix: llama-quantize's defaults).
    python gguf_e2e_worker.py prepare MODEL_DIR OUT_DIR PRE|- RECIPE...
        convert to OUT_DIR/f16.gguf, then quantize it, each step a process.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys

SRC_ENV = "FASTENSORS_LLAMA_CPP_SRC"


def ftype_name(recipe: str) -> str:
    """llama_cpp.LLAMA_FTYPE_<name> of a recipe."""
    return {"f32": "ALL_F32"}.get(recipe, "MOSTLY_" + recipe.upper())


def convert(model_dir: str, out: str, pre: str = None) -> None:
    src = os.environ[SRC_ENV]
    script = os.path.join(src, "convert_hf_to_gguf.py")
    # as the script arranges it: its own directory, then its vendored gguf-py
    sys.path[:0] = [src, os.path.join(src, "gguf-py")]
    if pre is not None:
        import conversion.base

        conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
    sys.argv = [script, model_dir, "--outtype", "f16", "--outfile", out]
    runpy.run_path(script, run_name="__main__")


def quantize(src: str, out_dir: str, recipes) -> None:
    import llama_cpp

    for recipe in recipes:
        params = llama_cpp.llama_model_quantize_default_params()
        params.nthread = 1
        params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_" + ftype_name(recipe))
        out = os.path.join(out_dir, f"{recipe}.gguf")
        if llama_cpp.llama_model_quantize(src.encode(), out.encode(), params) != 0:
            raise SystemExit(f"llama_model_quantize failed for {recipe}")


def prepare(model_dir: str, out_dir: str, pre: str, recipes) -> None:
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, "f16.gguf")
    steps = [["convert", model_dir, base] + ([] if pre == "-" else [pre]),
             ["quantize", base, out_dir, *recipes]]
    for step in steps:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *step], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{step[0]} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "convert":
        convert(*args)
    elif cmd == "quantize":
        quantize(args[0], args[1], args[2:])
    elif cmd == "prepare":
        prepare(args[0], args[1], args[2], args[3:])
    else:
        raise SystemExit(f"unknown command {cmd!r}")
