"""``llamix perplexity -m MODEL -f TEXT [-c 512] [--chunks N] [--kl-base BASE]``: perplexity as llama-perplexity computes it."""
from __future__ import annotations

import argparse
import time

from ..eval import perplexity
from ..model import load
from .common import (MODEL_HELP, TOKENIZER_HELP, add_ctx, add_gpu_flags, add_lora, add_qtype, add_threads, check,
                     check_ctx, check_threads, lora_of, progress_bar, quiet_requested, warn_ctx)
from .model_inputs import read_text_file


def add_arguments(p) -> None:
    p.add_argument("-m", "--model", required=True, help=MODEL_HELP)
    p.add_argument("-f", "--file", required=True, help="UTF-8 text to score")
    add_ctx(p, default=512, what="window length in tokens")
    p.add_argument("-b", "--batch-size", type=int, dest="batch", metavar="N",
                   help="tokens per forward call inside a window (default: the window)")
    p.add_argument("--batch", type=int, dest="batch", help=argparse.SUPPRESS)
    p.add_argument("--chunks", type=int, metavar="N", help="score at most the first N windows (default, or -1: all)")
    p.add_argument("--kl-base", help="base model: also report mean KL(base || model) and top-1 agreement")
    add_qtype(p, help="quantize MODEL while loading")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    add_threads(p)
    add_gpu_flags(p)
    add_lora(p)


def run(args) -> int:
    check_threads(args)
    check_ctx(args, minimum=4)
    if args.batch is not None:
        check(args.batch > 0, "-b/--batch-size", f"must be positive, got {args.batch}")
    if args.chunks == -1:   # llama-perplexity's default: all the chunks
        args.chunks = None
    if args.chunks is not None:
        check(args.chunks >= 1, "--chunks", f"must be >= 1 (or -1: all), got {args.chunks}")
    lora = lora_of(args) or (None, 1.0)
    text = read_text_file(args.file, "-f/--file")
    model = load(args.model, tokenizer=args.tokenizer, qtype=args.qtype, n_threads=args.threads, n_ctx=args.ctx_size,
                 lora=lora[0], lora_scale=lora[1])   # --kl-base stays the model without the adapter
    warn_ctx("perplexity", args.ctx_size, model.config)
    args.ctx_size = model.n_ctx   # -c 0: the model's training context
    base = load(args.kl_base, tokenizer=args.tokenizer, n_ctx=args.ctx_size) if args.kl_base else None
    t0 = time.perf_counter()
    with progress_bar("perplexity", unit="chunk", quiet=quiet_requested()) as bar:
        r = perplexity(model, text, n_ctx=args.ctx_size, kl_base=base, n_batch=args.batch, progress=bar,
                       n_chunks=args.chunks, source=f"-f {args.file}")
    dt = time.perf_counter() - t0
    print(" ".join(f"[{i + 1}]{p:.4f}" for i, p in enumerate(r.chunk_ppl)))
    print(r.summary())
    n_eval = r.n_chunks * r.n_ctx * (2 if base is not None else 1)
    print(f"{dt:.2f} s, {n_eval / dt:.1f} tokens/s evaluated")
    return 0
