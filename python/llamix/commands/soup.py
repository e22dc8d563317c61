"""``llamix soup --base BASE --candidates A B C --eval TEXT OUT.gguf``: greedy (or uniform) model soup."""
from __future__ import annotations

from pathlib import Path


def add_arguments(p) -> None:
    from ..quality.export import FILE_TYPES

    p.add_argument("out", help="output GGUF file of the soup")
    p.add_argument("--candidates", nargs="+", required=True, help="fine-tuned models (any format llamix loads)")
    p.add_argument("--eval", required=True, help="held-out UTF-8 text; candidates and soups are ranked by its perplexity")
    p.add_argument("--base", help="the model the candidates were fine-tuned from (its perplexity is reported)")
    p.add_argument("--uniform", action="store_true", help="plain uniform soup of all candidates instead of greedy")
    p.add_argument("--quant", default="q8_0", choices=["q8_0", "q4_0", "f16", "f32"],
                   help="inference type for the held-out evaluation (default q8_0)")
    p.add_argument("-c", "--ctx", type=int, help="perplexity window (default: min(512, model context))")
    p.add_argument("--type", default="f16", choices=list(FILE_TYPES), help="GGUF type of the output (default f16)")
    p.add_argument("--tokenizer", help="SentencePiece .model file, when the models have none")
    p.add_argument("-t", "--threads", type=int, help="compute threads")


def run(args) -> int:
    from .. import set_threads
    from ..quality.soup import soup

    if args.threads:
        set_threads(args.threads)
    text = Path(args.eval).read_text(encoding="utf-8")
    r = soup(args.candidates, text, args.out, base=args.base, method="uniform" if args.uniform else "greedy",
             quant=args.quant, n_ctx=args.ctx, out_type=args.type, tokenizer=args.tokenizer)
    print(r.report())
    return 0
