"""Issue 5 tables, every figure measured in this run (medians of --rounds):

1. Quality of each file type on stories260K (shared/assets): bits per weight, file size,
   perplexity +- SE, KL(f32 || type) and top-1 agreement on tests/data/stories_eval.txt
   (llama.cpp's perplexity rule, --ctx windows), perplexity and decode tokens/s.
2. A random-weight TinyLlama-1.1B-shaped model (--layers to shorten it): size, KL / top-1 against
   its f16 file on a short text, prompt (--pp tokens) and decode (--tg tokens) speed in llamix and
   in llama.cpp (llama-cpp-python) on the same file.
3. Quantization throughput (GB/s of input file) of `llamix quantize` against llama.cpp's own
   quantizer (llama_model_quantize through llama-cpp-python) on the same input, same types.
4. Perplexity throughput (tokens/s): llamix.perplexity against llama.cpp evaluating the same
   windows with all logits (what llama-perplexity does), same file.

    python bench/quality_table.py [--layers 22] [--rounds 3] [--threads 2] [--skip-tinyllama]

llama.cpp runs in child processes (bench/lcpp_child.py), without its extra (repacked) weight
buffers; its timings are taken inside the child.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import llamix
from llamix.eval.perplexity import windows
from llamix.export import export_gguf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lcpp_child  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
TEXT = (ROOT / "tests" / "data" / "stories_eval.txt").read_text()
TYPES = ["f32", "f16", "q8_0", "q5_k_m", "q4_k_m", "q4_0", "q4_0_mse"]


def median(f, rounds):
    ts, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), out


def llama_cpp() -> bool:
    """Whether llama-cpp-python is usable (asked of a child process: llama.cpp never runs here)."""
    ok, reason = lcpp_child.llama_cpp_peer.available()
    print(f"({reason}{'; ' + lcpp_child.NOTE if ok else ''})")
    return ok


def lcpp_quantize(src, dst, ftype: str, threads: int) -> float:
    """Seconds llama.cpp's quantizer takes, timed in its child process."""
    return lcpp_child.run_in_child(lcpp_child.timed_quantize, src, dst, ftype, threads)


def decode_speed(model, n: int) -> float:
    bos = model.config.bos_token_id
    t = time.perf_counter()
    ids = model.generate_tokens([bos], max_tokens=n, temperature=0)
    return max(len(ids), 1) / (time.perf_counter() - t)


def lcpp_speeds(path, pp: int, tg: int, threads: int, n_ctx: int, rounds: int):
    """[(prompt tokens/s, decode tokens/s)] in llama.cpp for the same file, one per round, from a
    child process that keeps the model loaded."""
    prompt = [1] + [int(i) for i in np.random.default_rng(0).integers(3, 500, pp - 1)]
    with lcpp_child.Child() as lcpp:
        lcpp.call(lcpp_child.load, path, n_ctx=n_ctx, n_batch=pp, threads=threads)
        # decode: greedy, argmax of the last logits (no sampler overhead, as llamix's decode here)
        return [(lcpp.call(lcpp_child.pp, prompt), lcpp.call(lcpp_child.greedy_tg, tg)) for _ in range(rounds)]


def table_stories(d: Path, args, lc):
    src = ASSETS / "stories260K" / "stories260K.bin"
    base = llamix.load(src, n_ctx=args.ctx)
    print(f"\n## stories260K quality (text: tests/data/stories_eval.txt, --ctx {args.ctx}; KL and top-1 "
          "against the f32 model)\n")
    print("| type | bits/weight | file | PPL | KL divergence | top-1 agreement | perplexity tok/s | decode tok/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in TYPES + ["q4_0 pure", "q4_0_mse pure"]:
        name, pure = t.split()[0], t.endswith("pure")
        path = d / f"s260_{name}{'_pure' if pure else ''}.gguf"
        rep = export_gguf(src, path, name, pure=pure, progress=False)
        m = llamix.load(path, n_ctx=args.ctx)
        dt, r = median(lambda: llamix.perplexity(m, TEXT, n_ctx=args.ctx, kl_base=base, progress=False), args.rounds)
        tps = r.n_chunks * r.n_ctx * 2 / dt  # model + base evaluated
        dec = np.median([decode_speed(m, args.ctx - 1) for _ in range(args.rounds)])
        print(f"| {t} | {rep.bits_per_weight:.3f} | {os.path.getsize(path) / 1e3:.1f} kB | {r.ppl:.4f} +- {r.ppl_se:.4f} "
              f"| {r.kl:.5f} +- {r.kl_se:.5f} | {100 * r.top1:.2f} +- {100 * r.top1_se:.2f} % | {tps:.0f} | {dec:.0f} |")
    return d / "s260_f32.gguf"


def table_tinyllama(d: Path, args, lc):
    tok = llamix.Tokenizer.from_file(ASSETS / "llama_tokenizer" / "tokenizer.model")
    f16 = d / "tl_f16.gguf"
    export_gguf(llamix.random_checkpoint("1b", tokenizer=tok, lazy=True, n_layers=args.layers), f16, "f16")
    print(f"\n## Random-weight TinyLlama-1.1B shape ({args.layers} layers; threads {args.threads}; pp {args.pp} / "
          f"tg {args.tg} tokens; KL and top-1 against the f16 file over {args.kl_tokens} tokens)\n")
    print("| type | bits/weight | file | KL divergence | top-1 | llamix pp tok/s | llama.cpp pp tok/s | "
          "llamix tg tok/s | llama.cpp tg tok/s | quantize s (llamix / llama.cpp) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    n_ctx = max(args.pp, args.kl_tokens) + args.tg + 8
    base = llamix.load(f16, n_ctx=n_ctx)
    ids = [1] + [int(i) for i in np.random.default_rng(1).integers(3, 32000, args.kl_tokens - 1)]
    base_lp = _log_softmax(base.logits(ids))
    quant_rows = []
    for t in ["f16", "q8_0", "q4_0", "q4_0_mse", "q4_k_m", "q5_k_m"]:
        path = d / f"tl_{t}.gguf"
        tq, rep = median(lambda: export_gguf(f16, path, t, progress=False), 1)
        tl = float("nan")
        if lc and t in ("q8_0", "q4_0", "q4_k_m", "q5_k_m"):
            tl = lcpp_quantize(f16, d / f"tl_lcpp_{t}.gguf", t, args.threads)
        quant_rows.append((t, f16.stat().st_size, tq, tl))
        m = llamix.load(path, n_ctx=n_ctx)
        lp = _log_softmax(m.logits(ids))
        kl = float((np.exp(base_lp) * (base_lp - lp)).sum(-1).mean())
        top1 = float((base_lp.argmax(-1) == lp.argmax(-1)).mean())
        prompt = ids[:args.pp] if len(ids) >= args.pp else ([1] * args.pp)
        pp_dt, _ = median(lambda: m.logits(prompt[:args.pp]), args.rounds)
        tg = np.median([decode_speed(m, args.tg) for _ in range(args.rounds)])
        lpp = ltg = float("nan")
        if lc:
            speeds = lcpp_speeds(path, args.pp, args.tg, args.threads, n_ctx, args.rounds)
            lpp, ltg = float(np.median([s[0] for s in speeds])), float(np.median([s[1] for s in speeds]))
        del m
        print(f"| {t} | {rep.bits_per_weight:.3f} | {os.path.getsize(path) / 1e6:.0f} MB | {kl:.5f} | {100 * top1:.1f} % "
              f"| {args.pp / pp_dt:.1f} | {lpp:.1f} | {tg:.1f} | {ltg:.1f} | {tq:.1f} / {tl:.1f} |")
    print("\n## Quantization throughput (GB/s of the f16 input file)\n")
    print("| type | llamix | llama.cpp | llamix / llama.cpp |")
    print("|---|---:|---:|---:|")
    for t, nbytes, tq, tl in quant_rows:
        print(f"| {t} | {nbytes / tq / 1e9:.3f} | {nbytes / tl / 1e9:.3f} | {tl / tq:.2f} |")


def _log_softmax(z):
    z = z.astype(np.float64)
    z -= z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def table_perplexity_speed(d: Path, args, lc):
    if not lc:
        return
    print(f"\n## Perplexity throughput (tokens evaluated per second, --ctx {args.ctx}, same file)\n")
    print("| model | type | llamix tok/s | llama.cpp tok/s | ratio | PPL llamix | PPL llama.cpp |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for t in ["q8_0", "q4_0"]:
        path = d / f"s260_{t}.gguf"
        m = llamix.load(path, n_ctx=args.ctx)
        dt, r = median(lambda: llamix.perplexity(m, TEXT, n_ctx=args.ctx, progress=False), args.rounds)
        wins = [[int(i) for i in w] for w in windows(m.tokenize(TEXT), args.ctx, 1)]
        with lcpp_child.Child() as lcpp:  # timed in the child, the model kept loaded
            lcpp.call(lcpp_child.load, path, n_ctx=args.ctx, n_batch=args.ctx, threads=args.threads, logits_all=True)
            runs = [lcpp.call(lcpp_child.window_nll, wins, args.ctx) for _ in range(args.rounds)]
        dl, ppl_l = float(np.median([s for s, _ in runs])), math.exp(np.mean(runs[-1][1]))
        n = len(wins) * args.ctx
        print(f"| stories260K | {t} | {n / dt:.0f} | {n / dl:.0f} | {dl / dt:.2f} | {r.ppl:.4f} | {ppl_l:.4f} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--pp", type=int, default=256)
    ap.add_argument("--tg", type=int, default=32)
    ap.add_argument("--kl-tokens", type=int, default=128)
    ap.add_argument("--skip-tinyllama", action="store_true")
    ap.add_argument("--workdir", help="keep the files here (default: a temporary folder)")
    args = ap.parse_args()
    if not ASSETS.is_dir():
        print(f"assets not found at {ASSETS}", file=sys.stderr)
        return 1
    os.environ.setdefault("LLAMIX_QUIET", "1")
    llamix.set_threads(args.threads)
    lc = llama_cpp()
    print(f"llamix {llamix.__version__}, kernels: {llamix.cpu_info()['isa']}, threads {args.threads}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        d = Path(tmp)
        table_stories(d, args, lc)
        table_perplexity_speed(d, args, lc)
        if not args.skip_tinyllama:
            table_tinyllama(d, args, lc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
