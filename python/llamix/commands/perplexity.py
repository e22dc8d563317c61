"""``llamix perplexity -m MODEL -f TEXT [--ctx 512] [--kl-base BASE]``: perplexity as llama.cpp computes it."""
from __future__ import annotations

import time
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("-m", "--model", required=True, help="GGUF file, Hugging Face folder or llama2.c .bin")
    p.add_argument("-f", "--file", required=True, help="UTF-8 text to score")
    p.add_argument("-c", "--ctx", type=int, default=512, help="window length in tokens (default 512)")
    p.add_argument("-b", "--batch", type=int, help="tokens per forward call inside a window (default: the window)")
    p.add_argument("--kl-base", help="base model: also report mean KL(base || model) and top-1 agreement")
    p.add_argument("--quant", choices=["q4_0", "q8_0", "f16"], help="quantize MODEL while loading")
    p.add_argument("--tokenizer", help="SentencePiece .model file, when the model has none")
    p.add_argument("-t", "--threads", type=int, help="compute threads (default: physical cores)")


def run(args) -> int:
    from .. import load
    from ..quality.perplexity import perplexity

    text = Path(args.file).read_text(encoding="utf-8")
    model = load(args.model, tokenizer=args.tokenizer, quant=args.quant, threads=args.threads, n_ctx=args.ctx)
    base = load(args.kl_base, tokenizer=args.tokenizer, n_ctx=args.ctx) if args.kl_base else None
    t0 = time.perf_counter()
    r = perplexity(model, text, n_ctx=args.ctx, kl_base=base, n_batch=args.batch)
    dt = time.perf_counter() - t0
    for i, p in enumerate(r.chunk_ppl):
        print(f"[{i + 1}]{p:.4f}", end=" ")
    print()
    print(r.summary())
    n_eval = r.n_chunks * r.n_ctx * (2 if base is not None else 1)
    print(f"{dt:.2f} s, {n_eval / dt:.1f} tokens/s evaluated")
    return 0
