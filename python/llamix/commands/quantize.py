"""``llamix quantize MODEL OUT.gguf --type q4_0``: write any model llamix loads as a GGUF file."""
from __future__ import annotations

import os
import time


def add_arguments(p) -> None:
    from ..quality.export import FILE_TYPES

    p.add_argument("model", help="GGUF file, Hugging Face folder or llama2.c .bin")
    p.add_argument("out", help="output .gguf path (written atomically)")
    p.add_argument("--type", "-t", default="q4_0", choices=list(FILE_TYPES), help="file type (default q4_0)")
    p.add_argument("--tokenizer", help="SentencePiece .model file, when the model has none beside it")
    p.add_argument("--pure", action="store_true", help="no Q6_K/Q8_0 output head, no _M mix: one type everywhere")
    p.add_argument("--threads", type=int, help="compute threads (default: physical cores)")


def _input_bytes(path: str) -> int:
    if os.path.isdir(path):
        return sum(e.stat().st_size for e in os.scandir(path) if e.name.endswith((".safetensors", ".bin")))
    return os.path.getsize(path)


def run(args) -> int:
    from .. import set_threads
    from ..quality.export import export_gguf

    if args.threads:
        set_threads(args.threads)
    t0 = time.perf_counter()
    r = export_gguf(args.model, args.out, args.type, tokenizer=args.tokenizer, pure=args.pure)
    dt = time.perf_counter() - t0
    size = os.path.getsize(args.out)
    counts = ", ".join(f"{n} {t}" for t, n in sorted(r.type_counts().items()))
    print(f"wrote {args.out}: {args.type}, {size / 1e6:.2f} MB, {r.bits_per_weight:.3f} bits/weight over "
          f"{r.n_params / 1e6:.2f} M weights ({counts})")
    print(f"{dt:.2f} s, {_input_bytes(args.model) / dt / 1e9:.3f} GB/s of input")
    return 0
