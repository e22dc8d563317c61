"""``llamix imatrix -m MODEL -f TEXT -o imatrix.gguf [-c 512] [--chunks N]``: an importance matrix
(llama-imatrix's job and file formats) for ``llamix quantize --imatrix``."""
from __future__ import annotations

import os
import time

from ..eval.imatrix import compute_imatrix
from ..formats.imatrix import write_imatrix
from ..model import load
from .common import (MODEL_HELP, TOKENIZER_HELP, add_ctx, add_force, add_gpu_flags, add_lora, add_threads, check,
                     check_ctx, check_output, check_threads, lora_of, progress_bar, quiet_requested, warn_ctx)
from .model_inputs import read_text_file


def add_arguments(p) -> None:
    p.add_argument("-m", "--model", required=True, help=MODEL_HELP)
    p.add_argument("-f", "--file", required=True, help="UTF-8 calibration text (at least 2 * CTX tokens)")
    p.add_argument("-o", "--output-file", "--output", dest="out", default="imatrix.gguf",
                   help="output file (written atomically): GGUF if it ends in .gguf, else llama.cpp's legacy .dat")
    p.add_argument("--output-format", choices=("gguf", "dat"), help="force the file format")
    add_ctx(p, default=512, what="chunk length in tokens")
    p.add_argument("--chunks", type=int, metavar="N", help="use at most N chunks of the text (default, or -1: all)")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.add_argument("--no-ppl", "--ppl", action="store_true",
                   help="accepted as llama-imatrix's flags, no effect: llamix imatrix computes no perplexity")
    add_force(p)
    add_threads(p)
    add_lora(p)
    add_gpu_flags(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    check_threads(args)
    check_ctx(args, minimum=4)
    if args.chunks == -1:   # llama-imatrix's default: all the chunks
        args.chunks = None
    if args.chunks is not None:
        check(args.chunks >= 1, "--chunks", f"must be positive (or -1: all), got {args.chunks}")
    lora = lora_of(args) or (None, 1.0)
    check_output(args.out, [args.model, args.file, args.tokenizer, lora[0]], args.force, flag="-o", file=True)
    text = read_text_file(args.file, "-f/--file")
    model = load(args.model, tokenizer=args.tokenizer, n_threads=args.threads, n_ctx=args.ctx_size, lora=lora[0],
                 lora_scale=lora[1])
    warn_ctx("imatrix", args.ctx_size, model.config)
    args.ctx_size = model.n_ctx   # -c 0: the model's training context
    t0 = time.perf_counter()
    with progress_bar("imatrix", unit="chunk", quiet=quiet_requested(args)) as bar:
        im = compute_imatrix(model, text, args.ctx_size, chunks=args.chunks, dataset=os.path.basename(args.file),
                             progress=bar)
    legacy = None if args.output_format is None else args.output_format == "dat"
    write_imatrix(im, args.out, legacy=legacy)
    dt = time.perf_counter() - t0
    print(f"wrote {args.out}: {len(im.sums)} matrices, {im.chunk_count} chunks of {im.chunk_size} tokens, "
          f"{dt:.2f} s, {im.chunk_count * im.chunk_size / dt:.1f} tokens/s")
    return 0
