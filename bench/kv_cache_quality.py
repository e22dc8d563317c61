"""What a quantized KV cache costs in accuracy: perplexity, KL divergence and top-1 agreement of
each cache type (keys and values apart, llama.cpp's -ctk / -ctv) against the float32 cache, same
model, same text, same windows (llama-perplexity's method, llamix.eval.perplexity); and of the
attention's bf16 products (attn_precision="bf16", AMX's arithmetic) over the f32 and f16 caches
against float32 products over the f32 cache.

    python bench/kv_cache_quality.py [--model FILE] [--ctx 1024] [--chunks 4] [--text FILE] [--attention-rows] [--types q8_0/q8_0,...]

Defaults: the real Qwen2.5-Coder-0.5B Q4_K_M file (head_dim 64) and, when present, Gemma 3 270M
(head_dim 256, sliding-window layers); the text is llamix's own docs (English prose and code).
Prints a markdown table (the one in docs/PERFORMANCE.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import llamix  # noqa: E402
from infer_common import real_model_files  # noqa: E402
from llamix.eval.perplexity import perplexity  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (K type, V type, attention precision)
TYPES = [("f16", "f16", "f32"), ("q8_0", "q8_0", "f32"), ("q8_0", "q4_0", "f32"), ("q4_0", "q4_0", "f32"),
         ("f32", "f32", "bf16"), ("f16", "f16", "bf16")]


def default_text() -> str:
    return "\n\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="GGUF file (repeatable; default: the real files present)")
    ap.add_argument("--ctx", type=int, default=1024, help="window (tokens); scored on its second half")
    ap.add_argument("--chunks", type=int, default=4, help="windows of the text scored")
    ap.add_argument("--text", help="a text file (default: llamix's docs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attention-rows", action="store_true", help="only the rows of bf16 attention products")
    ap.add_argument("--types", help="only these K/V pairs with float32 products, e.g. q8_0/q8_0,q8_0/q4_0")
    args = ap.parse_args()
    models = [Path(m) for m in args.model] if args.model else list(real_model_files().values())
    if not models:
        print("no model: give --model FILE (or fetch the real files, ../shared/assets/fetch_real_models.py)")
        return 1
    text = Path(args.text).read_text() if args.text else default_text()
    print(f"windows of {args.ctx} tokens (second halves scored), {args.chunks} windows; KL(f32 cache || cache type)")
    print("| model | K type | V type | attention | KV bytes/token | perplexity | vs f32 | mean KL | top-1 agreement |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for path in models:
        base = llamix.load(path, n_ctx=args.ctx, threads=args.threads, attn_precision="f32")
        ids = base.tokenize(text)[: args.ctx * args.chunks]
        ref = perplexity(base, ids, n_ctx=args.ctx)
        per_token = base.kv_cache_nbytes // base.n_ctx
        print(f"| {path.name} | f32 | f32 | f32 | {per_token} | {ref.ppl:.4f} | | | |", flush=True)
        rows = [t for t in TYPES if t[2] == "bf16" or not args.attention_rows]
        if args.types:
            rows = [(*pair.split("/"), "f32") for pair in args.types.split(",")]
        for tk, tv, ap in rows:
            m = llamix.load(path, n_ctx=args.ctx, threads=args.threads, kv_cache_k=tk, kv_cache_v=tv, attn_precision=ap)
            r = perplexity(m, ids, n_ctx=args.ctx, kl_base=base)
            per_token = m.kv_cache_nbytes // m.n_ctx
            print(f"| {path.name} | {tk} | {tv} | {ap} | {per_token} | {r.ppl:.4f} | {r.ppl / ref.ppl - 1:+.2%} | "
                  f"{r.kl:.5f} ± {r.kl_se:.5f} | {r.top1:.2%} |", flush=True)
            del m
    return 0


if __name__ == "__main__":
    sys.exit(main())
