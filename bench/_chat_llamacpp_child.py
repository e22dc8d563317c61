"""llama.cpp's side of bench/chat_speed.py, in a child process: llama-cpp-python's
``Llama.create_chat_completion`` over the same conversation, one turn after another (the library
reuses the cached prefix of its previous sequence, as llamix does), with llama.cpp's own counters
(llama_perf_context) read after each turn. CPU buffers only (``use_extra_bufts = False``: ggml's
AMX path crashes on some Xeons).

    python bench/_chat_llamacpp_child.py REQUEST.json     -> one JSON line per turn on stdout
"""
from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    req = json.load(open(sys.argv[1]))
    import llama_cpp
    from llama_cpp import llama_cpp as low

    default_params = low.llama_model_default_params

    def params_without_extra_buffers():
        p = default_params()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params_without_extra_buffers
    t = req["threads"]
    llm = llama_cpp.Llama(model_path=req["model"], n_ctx=req["n_ctx"], n_batch=512, n_ubatch=512, n_threads=t,
                          n_threads_batch=t, verbose=False)
    messages = [{"role": "system", "content": req["system"]}] if req.get("system") else []
    for user in req["turns"]:
        messages.append({"role": "user", "content": user})
        low.llama_perf_context_reset(llm._ctx.ctx)
        t0 = time.perf_counter()
        r = llm.create_chat_completion(messages, temperature=0, max_tokens=req["max_tokens"], seed=0)
        wall = time.perf_counter() - t0
        p = low.llama_perf_context(llm._ctx.ctx)
        reply = r["choices"][0]["message"]["content"]
        messages.append({"role": "assistant", "content": reply})
        print(json.dumps({"prompt_tokens": p.n_p_eval, "prompt_s": p.t_p_eval_ms / 1e3, "eval_tokens": p.n_eval,
                          "eval_s": p.t_eval_ms / 1e3, "generated": r["usage"]["completion_tokens"],
                          "prompt_total": r["usage"]["prompt_tokens"], "wall_s": wall, "reply": reply}), flush=True)
    os._exit(0)  # skip llama.cpp's teardown


if __name__ == "__main__":
    main()
