"""The depth rows of bench/infer_table.py: llamix against `llama-bench -d N` (same file, same
threads, same run) after N tokens already in the KV cache. See infer_table.py's docstring."""
from __future__ import annotations

import json
import os
import subprocess

import llamix
from infer_common import model_file, read_bandwidth
from llama_cpp_tools import tool
from llamix.commands.bench import measure


def llama_bench(path, depth: int, n_prompt: int, n_gen: int, threads: int, reps: int, fa: list[int]) -> dict:
    """{(test, fa): tokens/s} from llama-bench's JSON (f16 cache, its default)."""
    exe = tool("llama-bench")
    cmd = [str(exe), "-m", str(path), "-t", str(threads), "-d", str(depth), "-p", str(n_prompt), "-n", str(n_gen),
           "-r", str(reps), "-fa", ",".join("on" if f else "off" for f in fa), "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = {}
    for r in json.loads(out):
        test = "pp" if r["n_prompt"] else "tg"
        on = r["flash_attn"] in (1, True, "on", "1", "true", "enabled")
        res[(test, int(on))] = float(r["avg_ts"])
    return res


BYTES_PER_ELEMENT = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def kv_bytes_per_token(config, depth: int, cache_type: str = "f16") -> int:
    """Key and value bytes one decode step reads at this depth (f16: 2 bytes an element)."""
    return int(config.n_layers * depth * config.kv_dim * 2 * BYTES_PER_ELEMENT[cache_type])


def main(args) -> int:
    if tool("llama-bench") is None:
        print("llama-bench is not built (python bench/llama_cpp_tools.py): no depth rows")
        return 1
    depths = [int(d) for d in args.depths.split(",")]
    path = model_file(args.shape, "q4_0")
    llamix.set_threads(args.threads)
    bandwidth = read_bandwidth(args.threads, rounds=3)
    rows = []
    ctype = getattr(args, "cache_type", "f16")
    m0 = llamix.load(path, threads=args.threads, n_ctx=args.p + args.n, tokenizer=False, kv_cache=ctype,
                     attn_precision=args.attn_precision)
    precision = m0.attn_precision
    base = measure(m0, args.p, 0, args.reps)
    weights = sum(t.nbytes for n, t in m0.tensors.items() if n != "token_embd.weight")
    config = m0.config
    del m0
    for d in depths:
        n_gen = args.n if d <= args.tg_max_depth else 0
        fa = [0, 1] if d <= args.fa_max_depth else [1]
        m = llamix.load(path, threads=args.threads, n_ctx=d + max(args.p, n_gen), tokenizer=False, kv_cache=ctype,
                        attn_precision=args.attn_precision)
        ours = measure(m, args.p, n_gen, args.reps, n_depth=d)
        del m
        # llamix's side first: llama-bench at a deep depth can run for tens of minutes, and a run
        # stopped during it would otherwise lose both
        tg = f", tg{n_gen} {ours['tg']:.1f} t/s" if n_gen else ""
        print(f"depth {d}: llamix pp{args.p} {ours['pp']:.1f} t/s{tg} (at depth 0: pp{args.p} {base['pp']:.1f} t/s); "
              "llama-bench next", flush=True)
        theirs = llama_bench(path, d, args.p, n_gen, args.threads, args.reps, fa)
        row = {"depth": d, "llamix": ours, "llama_cpp": {f"{t}_fa{f}": v for (t, f), v in theirs.items()}}
        row["pp_ratio"] = ours["pp"] / max(v for (t, _), v in theirs.items() if t == "pp")
        row["pp_slowdown_vs_depth0"] = base["pp"] / ours["pp"]
        if n_gen:
            row["tg_ratio"] = ours["tg"] / max(v for (t, _), v in theirs.items() if t == "tg")
            row["tg_roofline"] = bandwidth / (weights + kv_bytes_per_token(config, d, ctype))
            row["tg_roofline_fraction"] = ours["tg"] / row["tg_roofline"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"threads": args.threads, "cache_type": ctype, "attn_precision": precision, "p": args.p, "n": args.n, "reps": args.reps, "depth0_pp": base["pp"],
                          "read_bandwidth_gbs": bandwidth / 1e9, "load_average": load, "rows": rows}, indent=1))
        return 0
    print(f"random-weight {args.shape} Q4_0, {args.threads} threads, KV cache llamix {ctype}, llama.cpp f16, llamix attention {precision}, "
          f"medians of {args.reps}; "
          f"read bandwidth {bandwidth / 1e9:.1f} GB/s; load average {load:.1f}; llamix pp{args.p} at depth 0: "
          f"{base['pp']:.1f} t/s")
    print("| test | depth | llamix t/s | llama.cpp FA off | llama.cpp FA on | ratio vs best | llamix vs its depth 0 | share of roofline |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lc = r["llama_cpp"]
        print(f"| pp{args.p} | {r['depth']} | {r['llamix']['pp']:.1f} | {lc.get('pp_fa0', float('nan')):.1f} | "
              f"{lc.get('pp_fa1', float('nan')):.1f} | {r['pp_ratio']:.2f} | {1 / r['pp_slowdown_vs_depth0']:.2f} | |")
        if "tg" in r["llamix"]:
            print(f"| tg{args.n} | {r['depth']} | {r['llamix']['tg']:.1f} | {lc.get('tg_fa0', float('nan')):.1f} | "
                  f"{lc.get('tg_fa1', float('nan')):.1f} | {r['tg_ratio']:.2f} | | {r['tg_roofline_fraction']:.0%} |")
    return 0
