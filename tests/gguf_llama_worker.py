"""Runs llama.cpp (llama_cpp) on GGUF files in its own process, so its
OpenMP runtime never meets torch's: ``python gguf_llama_worker.py JOBS OUT``.

JOBS is a JSON list of {"model": path, "embed": [text]} /
{"model": path, "logits": [token id]} / {"model": path, "tokenize": [text]};
OUT gets a JSON list of the results, in order."""

import json
import sys

import numpy as np


def main(jobs_path: str, out_path: str) -> None:
    import llama_cpp

    with open(jobs_path, encoding="utf-8") as fh:
        jobs = json.load(fh)
    out = []
    cache = {}
    for job in jobs:
        key = (job["model"], "embed" in job)
        if key not in cache:
            cache[key] = llama_cpp.Llama(model_path=job["model"], embedding="embed" in job, logits_all=True,
                                         n_ctx=0, n_batch=512, n_threads=2, verbose=False)
        llm = cache[key]
        if "embed" in job:
            out.append([list(map(float, llm.embed(t, normalize=False))) for t in job["embed"]])
        elif "logits" in job:
            llm.reset()
            llm.eval(job["logits"])
            out.append(np.asarray(llm.scores[: len(job["logits"])], dtype=np.float64).tolist())
        else:
            out.append([llm.tokenize(t.encode("utf-8"), add_bos=True, special=False) for t in job["tokenize"]])
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
