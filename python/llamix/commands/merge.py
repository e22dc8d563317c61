"""``llamix merge CONFIG.yml OUT``: merge models from a mergekit-style YAML config, into a Hugging
Face folder, or (OUT ending in .gguf) merged and quantized in one streaming pass."""
from __future__ import annotations

import time

from .._runtime import set_threads
from ..export import FILE_TYPES, merge_to_gguf
from ..merge import merge
from .common import add_threads, check_threads, lower_choice, progress_bar, quiet_requested


def add_arguments(p) -> None:
    p.add_argument("config", help="mergekit-style YAML config")
    p.add_argument("out", help="output folder (Hugging Face layout; must not exist or be empty), or OUT.gguf")
    add_threads(p)
    p.add_argument("--shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB or 500MB")
    p.add_argument("--seed", type=int, default=0, help="seed of the random masks (dare_*, della*)")
    p.add_argument("--out-dtype", default=None, help="override the config's out_dtype")
    p.add_argument("--type", type=lower_choice(FILE_TYPES), default="q4_0", metavar="TYPE",
                   help=f"GGUF type when OUT ends in .gguf ({', '.join(FILE_TYPES)})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    check_threads(args)
    start = time.perf_counter()
    quiet = quiet_requested(args)
    if str(args.out).endswith(".gguf"):
        if args.threads:
            set_threads(args.threads)
        with progress_bar("merge+quantize", unit="tensor", quiet=quiet) as bar:
            r = merge_to_gguf(args.config, args.out, args.type, seed=args.seed, progress=bar)
        print(f"merged into {args.out} ({args.type}, {r.bits_per_weight:.3f} bits/weight) in "
              f"{time.perf_counter() - start:.1f} s")
        return 0
    with progress_bar("merge", quiet=quiet) as bar:
        out = merge(args.config, args.out, n_threads=args.threads, shard_size=args.shard_size, seed=args.seed,
                    out_dtype=args.out_dtype, progress=bar)
    print(f"merged into {out} in {time.perf_counter() - start:.1f} s")
    return 0
