"""``llamix extract-lora --base BASE --model FINETUNE --rank R OUT``: a PEFT LoRA adapter that takes
the base to the fine-tune (mergekit-extract-lora's job, whose spelling ``--base-model``,
``--out-path``, ``--max-rank`` works too): a truncated SVD of each weight delta, one
tensor at a time; prints each tensor's relative truncation error."""
from __future__ import annotations

import argparse
import sys
import time

from .._runtime import set_threads
from ..merge.extract_lora import extract_lora
from .common import add_force, add_threads, check, check_output, check_threads, progress_bar, quiet_requested, warn


def add_arguments(p) -> None:
    p.add_argument("out", nargs="?",
                   help="output folder of the adapter (adapter_config.json, adapter_model.safetensors)")
    p.add_argument("--out-path", metavar="OUT", help="the same as OUT (mergekit-extract-lora's spelling)")
    p.add_argument("--base", "--base-model", required=True, help="base model: a folder or a Hugging Face repo id")
    p.add_argument("--model", required=True, help="fine-tuned model: a folder or a Hugging Face repo id")
    p.add_argument("--rank", "--max-rank", type=int, default=128, dest="rank", metavar="R",
                   help="rank of each weight's update (default: 128, as mergekit-extract-lora's --max-rank)")
    p.add_argument("--embed-lora", action=argparse.BooleanOptionalAction, default=False,
                   help="factor the embeddings and output head too (default, --no-embed-lora: saved whole in "
                        "modules_to_save)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="dtype of the adapter's tensors (default: the fine-tune's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomized SVD's sketch")
    add_force(p)
    add_threads(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no per-tensor report")


def run(args) -> int:
    check_threads(args)
    check(args.rank >= 1, "--rank", f"must be >= 1, got {args.rank}")
    check((args.out is None) != (args.out_path is None), "OUT / --out-path:", "give the output folder once")
    args.out = args.out if args.out is not None else args.out_path
    check_output(args.out, [args.base, args.model], args.force)
    if args.threads:
        set_threads(args.threads)
    start = time.perf_counter()
    quiet = quiet_requested(args)
    with progress_bar("extract-lora", unit="tensor", quiet=quiet) as bar:
        report = extract_lora(args.base, args.model, args.out, args.rank, embed_lora=args.embed_lora,
                              out_dtype=args.dtype, seed=args.seed, progress=bar, overwrite=args.force)
    for name, was, now in report.resized:   # as mergekit-extract-lora warns
        warn("extract-lora", f"{name} has shape {list(now)}, the base's {list(was)} (the vocabulary was resized): "
                             "saved whole; the base's embeddings must be resized to it before the adapter applies")
    if not quiet:
        for t in report.tensors:
            detail = f"rank {t.rank}, relative error {t.rel_error:.6f}" if t.kind == "lora" else "saved whole"
            print(f"{t.name}: {detail}", file=sys.stderr)
    worst = report.worst()
    summary = f", largest relative truncation error {worst.rel_error:.6f} ({worst.name})" if worst else ""
    capped = f" (--rank {args.rank} capped by the matrices' sizes)" if report.rank < args.rank else ""
    print(f"LoRA of rank {report.rank}{capped} written to {args.out} in {time.perf_counter() - start:.1f} s{summary}")
    return 0
