"""llama.cpp (llama-cpp-python) in a child process for the inference benchmarks: loads one GGUF
file with CPU buffers only (``use_extra_bufts = False``: ggml's AMX path crashes on some Xeons),
then answers one JSON request per line on stdin with one JSON line on stdout:

    {"cmd": "pp", "tokens": [...]}      -> {"tps": prompt tokens/s, one batch from an empty cache}
    {"cmd": "tg", "tokens": [...]}      -> {"tps": single-token decodes/s from an empty cache}
    {"cmd": "logits", "tokens": [...]}  -> {"logits": last token's logits}
    {"cmd": "tokenize", "text": "..."}  -> {"ids": llama.cpp's tokens, BOS as the vocabulary says}

    python bench/_llamacpp_child.py MODEL.gguf N_CTX THREADS
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def main() -> None:
    path, n_ctx, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import llama_cpp
    from llama_cpp import llama_cpp as low

    default_params = low.llama_model_default_params

    def params_without_extra_buffers():
        p = default_params()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params_without_extra_buffers
    llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_ubatch=min(n_ctx, 512),
                          n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)
    print(json.dumps({"ready": True, "n_vocab": llm.n_vocab()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        if cmd == "tokenize":
            out = {"ids": llm.tokenize(req["text"].encode(), add_bos=True, special=False)}
        elif cmd == "logits":
            llm.reset()
            llm.eval(req["tokens"])
            out = {"logits": np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).tolist()}
        elif cmd == "pp":
            llm.reset()
            t = time.perf_counter()
            llm.eval(req["tokens"])
            out = {"tps": len(req["tokens"]) / (time.perf_counter() - t)}
        elif cmd == "tg":
            llm.reset()
            t = time.perf_counter()
            for tok in req["tokens"]:
                llm.eval([tok])
            out = {"tps": len(req["tokens"]) / (time.perf_counter() - t)}
        else:
            out = {"error": f"unknown command {cmd!r}"}
        print(json.dumps(out), flush=True)
    os._exit(0)  # skip llama.cpp's teardown


if __name__ == "__main__":
    main()
