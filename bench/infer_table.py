"""Inference speed, llamix against llama.cpp (llama-cpp-python, in a child process) in the same
run, on the same files, same thread count: synthesized random-weight TinyLlama-1.1B-shaped GGUF
files (Q4_0 and Q8_0), and the real published files when present (Qwen2.5-Coder-0.5B and Gemma 3
270M, Q4_K_M mixes; see infer_common.REAL_MODELS).

    python bench/infer_table.py [--reps 3] [--threads 2] [--shape 1b] [--quants q4_0,q8_0] [--no-real] [--json]
    python bench/infer_table.py --quick      # 1 repetition, pp128 / tg32, Q4_0 and the real files
    python bench/infer_table.py --depths 4096,16384   # only the depth rows (below)

Depth rows (--depths): pp512 and tg after N tokens already in the cache, llamix (f16 cache, or
--cache-type's) against
`llama-bench -d N` (bench/llama_cpp_tools.py's build, f16 cache, flash attention on and off, its
best reported) on the same Q4_0 file; tg's share of the bandwidth roofline counts the weights plus
the f16 keys and values read per token. Depths past --tg-max-depth measure pp only, and llama.cpp
runs only with flash attention there (--fa-max-depth) to keep the run under half an hour.

pp: one batch of 512 prompt tokens from an empty cache; tg: 128 single-token decodes from an
empty cache (llama-bench's -p 512 / -n 128). Repetitions alternate between the two engines;
medians are reported, with the llamix/llama.cpp ratio and generation's share of the memory
bandwidth limit (weight bytes read per token x tokens/s / a read-bandwidth probe, same run).
Before timing, both engines' logits for a short prompt are compared (same file, same answer).
llama.cpp runs in a child process (bench/lcpp_child.py) without its extra (repacked) weight
buffers; the timings are taken inside each engine's process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lcpp_child  # noqa: E402
import llamix  # noqa: E402
import depth_rows  # noqa: E402
from infer_common import (LlamaCppChild, decode_bytes_per_token, llamix_pp, llamix_tg,  # noqa: E402
                          model_file, prompt_tokens, read_bandwidth, real_model_files)


def check_same_answer(m, llm: LlamaCppChild, tokens) -> float:
    """Correlation of the last-token logits of both engines (must be > 0.99)."""
    ours = m.logits(tokens)[-1]
    theirs = llm.logits(tokens)
    r = float(np.corrcoef(ours, theirs)[0, 1])
    assert r > 0.99, f"llamix and llama.cpp disagree on the same file (logit correlation {r:.4f})"
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--quants", default="q4_0,q8_0")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--no-real", action="store_true", help="skip the real published files")
    ap.add_argument("--quick", action="store_true", help="1 repetition, pp128 / tg32, Q4_0 and the real files")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--depths", help="comma-separated depths: measure only the depth rows (llama-bench -d)")
    ap.add_argument("--cache-type", default="f16", choices=("f32", "f16", "q8_0", "q4_0"),
                    help="llamix's KV cache type in the depth rows (llama.cpp keeps its default f16)")
    ap.add_argument("--tg-max-depth", type=int, default=4096, help="deepest depth with a tg row")
    ap.add_argument("--fa-max-depth", type=int, default=4096, help="deepest depth llama.cpp also runs without flash attention")
    ap.add_argument("--attn-precision", default="auto", choices=("auto", "f32", "bf16"),
                    help="llamix's attention arithmetic in the depth rows (auto: bf16 where AMX tiles are usable)")
    args = ap.parse_args()
    if args.depths:
        return depth_rows.main(args)
    if args.quick:
        args.reps, args.p, args.n, args.quants = 1, 128, 32, "q4_0"

    llamix.set_threads(args.threads)
    rows = []
    bw = []
    files = [(q, f"random {args.shape}", model_file(args.shape, q)) for q in args.quants.split(",") if q]
    if not args.no_real:
        files += [(name, "real", path) for name, path in real_model_files().items()]
    for quant, kind, path in files:
        m = llamix.load(path, threads=args.threads, n_ctx=args.p + args.n, tokenizer=False)
        llm = LlamaCppChild(path, args.p + args.n, args.threads)
        corr = check_same_answer(m, llm, prompt_tokens(8, m.config.vocab_size, seed=1))
        pp_tokens = prompt_tokens(args.p, m.config.vocab_size)
        tg_tokens = prompt_tokens(args.n, m.config.vocab_size, seed=2)
        llamix_pp(m, pp_tokens), llm.pp(pp_tokens)  # warm-up: first touch of every weight
        res = {"llamix_pp": [], "llamacpp_pp": [], "llamix_tg": [], "llamacpp_tg": []}
        for _ in range(args.reps):
            res["llamix_pp"].append(llamix_pp(m, pp_tokens))
            res["llamacpp_pp"].append(llm.pp(pp_tokens))
            res["llamix_tg"].append(llamix_tg(m, tg_tokens))
            res["llamacpp_tg"].append(llm.tg(tg_tokens))
            bw.append(read_bandwidth(args.threads, rounds=3))
        med = {k: statistics.median(v) for k, v in res.items()}
        rows.append({"quant": quant, "model": kind, "bytes_per_token": decode_bytes_per_token(m), "logit_corr": corr,
                     **med, "runs": res})
        llm.close()
        del llm, m
    bandwidth = statistics.median(bw)
    load = os.getloadavg()[0]  # other processes competing for the cores distort both engines
    for r in rows:
        r["tg_bw_fraction"] = r["llamix_tg"] * r["bytes_per_token"] / bandwidth
        r["llamacpp_tg_bw_fraction"] = r["llamacpp_tg"] * r["bytes_per_token"] / bandwidth
    if args.json:
        print(json.dumps({"shape": args.shape, "threads": args.threads, "p": args.p, "n": args.n, "reps": args.reps,
                          "llama_cpp": lcpp_child.NOTE, "read_bandwidth_gbs": bandwidth / 1e9, "load_average": load,
                          "rows": rows}, indent=1))
        return 0
    print(f"random-weight {args.shape} model and real files, {args.threads} threads, {llamix.cpu_info()['isa']} kernels, "
          f"medians of {args.reps} runs; read bandwidth probe {bandwidth / 1e9:.1f} GB/s; load average {load:.1f}"
          f" on {os.cpu_count()} CPUs; {lcpp_child.NOTE}")
    if load > os.cpu_count():
        print("WARNING: the machine is busy with other processes; both engines' figures are distorted "
              "(llama.cpp's spinning thread barriers suffer most)")
    print("| model | type | test | llamix t/s | llama.cpp t/s | ratio | llamix GB/s (share of bw) | llama.cpp GB/s (share) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        gb = r["bytes_per_token"] / 1e9
        print(f"| {r['model']} | {r['quant']} | pp{args.p} | {r['llamix_pp']:.1f} | {r['llamacpp_pp']:.1f} | "
              f"{r['llamix_pp'] / r['llamacpp_pp']:.2f} | | |")
        print(f"| {r['model']} | {r['quant']} | tg{args.n} | {r['llamix_tg']:.1f} | {r['llamacpp_tg']:.1f} | "
              f"{r['llamix_tg'] / r['llamacpp_tg']:.2f} | {r['llamix_tg'] * gb:.1f} ({r['tg_bw_fraction']:.0%}) | "
              f"{r['llamacpp_tg'] * gb:.1f} ({r['llamacpp_tg_bw_fraction']:.0%}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
