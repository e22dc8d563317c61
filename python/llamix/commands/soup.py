"""``llamix soup OUT.gguf --candidates A B C --eval TEXT [--base BASE]``: greedy (or uniform) model soup."""
from __future__ import annotations

import argparse

from .._runtime import set_threads
from ..eval import soup
from ..eval.evolve import require_extra
from ..export import FILE_TYPES
from .common import (TOKENIZER_HELP, add_ctx, add_force, add_threads, check, check_ctx, check_output, check_threads,
                     lower_choice, progress_bar, quiet_requested)
from .model_inputs import read_text_file

EVAL_TYPES = ("q8_0", "q4_0", "f16", "f32")


def add_arguments(p) -> None:
    p.add_argument("out", help="output GGUF file of the soup")
    p.add_argument("--candidates", nargs="+", required=True, help="fine-tuned models (any format llamix loads)")
    p.add_argument("--eval", required=True, help="held-out UTF-8 text; candidates and soups are ranked by its perplexity")
    p.add_argument("--base", help="the model the candidates were fine-tuned from (its perplexity is reported)")
    p.add_argument("--uniform", action="store_true", help="plain uniform soup of all candidates instead of greedy")
    p.add_argument("--qtype", type=lower_choice(EVAL_TYPES), default="q8_0", metavar="TYPE",
                   help=f"weight type of the held-out evaluation ({', '.join(EVAL_TYPES)})")
    p.add_argument("--quant", type=lower_choice(EVAL_TYPES), dest="qtype", help=argparse.SUPPRESS)
    add_ctx(p, what="perplexity window in tokens (default: the smaller of 512 and the model's context)")
    p.add_argument("--type", type=lower_choice(FILE_TYPES), default="f16", metavar="TYPE",
                   help=f"GGUF type of the output ({', '.join(FILE_TYPES)})")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    add_threads(p)
    p.add_argument("--ray", action="store_true",
                   help="evaluate the trials in parallel Ray tasks, as llamix evolve does (the 'evolve' extra)")
    p.add_argument("--workers", type=int, metavar="N", help="with --ray: trials evaluated at once (default: one per CPU)")
    p.add_argument("--ray-address", metavar="ADDR", help="with --ray: join this Ray cluster (default: a local one)")
    add_force(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    check_threads(args)
    check_ctx(args, minimum=4)
    check_output(args.out, [*args.candidates, args.base, args.eval, args.tokenizer], args.force)
    text = read_text_file(args.eval, "--eval")
    if args.threads:
        set_threads(args.threads)
    check(args.ray or (args.workers is None and args.ray_address is None), "--workers/--ray-address", "need --ray")
    check(args.workers is None or args.workers >= 1, "--workers", f"must be >= 1, got {args.workers}")
    pool = None
    if args.ray:
        _, RayPool = require_extra()
        pool = RayPool(args.workers, args.ray_address, max_workers=len(args.candidates))
    try:
        with progress_bar("soup", unit="trial", quiet=quiet_requested(args)) as bar:
            r = soup(args.candidates, text, args.out, base=args.base, method="uniform" if args.uniform else "greedy",
                     qtype=args.qtype, n_ctx=args.ctx_size, out_qtype=args.type, tokenizer=args.tokenizer, progress=bar,
                     evaluate_groups=pool.soup_evaluator(args.qtype, args.tokenizer) if pool else None)
    finally:
        if pool is not None:
            pool.close()
    print(r.report())
    return 0
