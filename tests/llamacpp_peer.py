"""llama.cpp (llama-cpp-python) as a peer, run in a child process: ggml's AMX path crashes on some
Xeons, so the child loads models with ``use_extra_bufts = False`` (CPU buffers only), and a crash
there fails a test instead of killing the test run.

``llamacpp_run(path, ...)`` returns a dict: ``ids`` (the prompt ids; llama.cpp's own tokenization
when ``text`` is given), ``greedy`` (``n_greedy`` tokens, each the argmax of the logits after the
previous one; no end-of-sequence stop), ``text`` (llama.cpp's detokenization of ``detokenize``
ids, when given) and ``logits`` (float32 (n, vocab): every prompt position
when ``all_logits``, else the last). Run as a script, it is the child.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def llamacpp_run(path, ids=None, text: str | None = None, n_greedy: int = 0, all_logits: bool = False,
                 n_ctx: int = 256, threads: int = 2, f32_kv: bool = True, detokenize=None,
                 timeout: float = 600) -> dict:
    """Run llama.cpp on ``path`` in a child process (see the module docstring). ``f32_kv``: keep
    llama.cpp's KV cache in float32 (its default is fp16)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "logits.npy"
        req = {"path": str(path), "ids": None if ids is None else [int(i) for i in ids], "text": text,
               "n_greedy": int(n_greedy), "all_logits": bool(all_logits), "n_ctx": int(n_ctx), "threads": int(threads),
               "f32_kv": bool(f32_kv), "out": str(out),
               "detokenize": None if detokenize is None else [int(i) for i in detokenize]}
        r = subprocess.run([sys.executable, __file__], input=json.dumps(req), capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"llama.cpp child failed (exit {r.returncode}) on {path}:\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["logits"] = np.load(out)
        return res


def _child() -> None:
    req = json.loads(sys.stdin.read())
    import llama_cpp
    from llama_cpp import llama_cpp as low

    default_params = low.llama_model_default_params

    def params_without_extra_buffers():
        p = default_params()
        p.use_extra_bufts = False  # no AMX / repacked extra buffer types
        return p

    low.llama_model_default_params = params_without_extra_buffers
    kw = {}
    if req["f32_kv"]:
        kw.update(type_k=0, type_v=0)  # GGML_TYPE_F32
    llm = llama_cpp.Llama(model_path=req["path"], n_ctx=req["n_ctx"], n_batch=req["n_ctx"], n_ubatch=req["n_ctx"],
                          logits_all=req["all_logits"], verbose=False, n_threads=req["threads"],
                          n_threads_batch=req["threads"], seed=0, **kw)
    ids = req["ids"] if req["ids"] is not None else llm.tokenize(req["text"].encode(), add_bos=True, special=False)
    n_vocab = llm.n_vocab()
    llm.eval(ids)
    if req["all_logits"]:
        logits = np.array(llm.scores[:len(ids)], dtype=np.float32)
    else:
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,)).astype(np.float32)[None].copy()
    greedy = []
    last = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
    for _ in range(req["n_greedy"]):
        tok = int(np.argmax(last))
        greedy.append(tok)
        llm.eval([tok])
        last = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
    np.save(req["out"], logits)
    res = {"ids": [int(i) for i in ids], "greedy": greedy}
    if req["detokenize"] is not None:
        res["text"] = llm.detokenize(req["detokenize"]).decode("utf-8", errors="replace")
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip llama.cpp's teardown


if __name__ == "__main__":
    _child()
