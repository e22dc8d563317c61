"""The depth rows of bench/infer_table.py without llama-bench (for when bench/llama_cpp_tools.py's
build is not there): llama.cpp through llama-cpp-python (the same vendored llama.cpp, its pip
build), f16 cache, flash attention off or on, against llamix on the same random TinyLlama-1.1B
Q4_0 file (infer_common.model_file), 2 threads, one repetition, each engine in its own process:

    python bench/depth_pylcpp.py llamix     # pp512 at depth 0 and D, tg64 at D, read probe
    python bench/depth_pylcpp.py fa0        # llama.cpp, flash attention off (fa1: on)

The cache is filled to D once, untimed; each timing rewinds to D first and follows an untimed
repetition (pp) or one untimed token (tg).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from depth_rows import kv_bytes_per_token  # noqa: E402
from infer_common import decode_bytes_per_token, model_file, read_bandwidth  # noqa: E402


def main() -> int:
    which = sys.argv[1]
    D = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
    P, N = 512, 64
    path = model_file("1b", "q4_0")
    rng = np.random.default_rng(0)
    fill = rng.integers(100, 30000, D).tolist()
    prompt = rng.integers(100, 30000, P).tolist()
    gen = rng.integers(100, 30000, N + 1).tolist()
    res = {}
    if which == "llamix":
        from llamix import Model
        from llamix.loaders import load_checkpoint
        ck = load_checkpoint(str(path))
        m = Model(ck, n_ctx=D + P + 8, n_threads=2, kv_cache_k="f16", kv_cache_v="f16")
        m.eval(prompt)
        m.rewind(0)
        t = time.perf_counter()
        m.eval(prompt)
        res["pp_d0"] = P / (time.perf_counter() - t)
        m.rewind(0)
        m.eval(fill)
        m.rewind(D)
        m.eval(prompt)
        m.rewind(D)
        t = time.perf_counter()
        m.eval(prompt)
        res["pp_d"] = P / (time.perf_counter() - t)
        m.rewind(D)
        m.eval([gen[0]])
        t = time.perf_counter()
        for x in gen[1:]:
            m.eval([x])
        res["tg_d"] = N / (time.perf_counter() - t)
        res["read_GBps"] = read_bandwidth(2) / 1e9
        bytes_per_token = decode_bytes_per_token(ck) + kv_bytes_per_token(ck.config, D)
        res["roofline_share"] = res["tg_d"] * bytes_per_token / (res["read_GBps"] * 1e9)
    else:
        import llama_cpp
        llm = llama_cpp.Llama(str(path), n_ctx=D + P + 8, n_batch=P, n_ubatch=P, n_threads=2, n_threads_batch=2,
                              flash_attn=which == "fa1", verbose=False)
        llm.eval(fill)
        llm.n_tokens = D
        llm.eval(prompt)
        llm.n_tokens = D
        t = time.perf_counter()
        llm.eval(prompt)
        res["pp_d"] = P / (time.perf_counter() - t)
        llm.n_tokens = D
        llm.eval([gen[0]])
        t = time.perf_counter()
        for x in gen[1:]:
            llm.eval([x])
        res["tg_d"] = N / (time.perf_counter() - t)
    print(which, D, json.dumps({k: round(v, 3) for k, v in res.items()}), f"load {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
