"""``llamix merge CONFIG.yml OUT_DIR``: merge models from a mergekit-style YAML config."""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("config", help="mergekit-style YAML config")
    parser.add_argument("out", help="output folder (Hugging Face layout); must not exist or be empty")
    parser.add_argument("--threads", type=int, default=None, help="compute threads (default: physical cores)")
    parser.add_argument("--shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB or 500MB")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random masks (dare_*, della*)")
    parser.add_argument("--out-dtype", default=None, help="override the config's out_dtype")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # issue 5: OUT.gguf merges and quantizes in one streaming pass
    parser.add_argument("--type", default="q4_0", help="GGUF type when OUT ends in .gguf (as llamix quantize --type)")


def run(args) -> int:
    import time

    from ..merge import merge

    start = time.perf_counter()
    if str(args.out).endswith(".gguf"):  # issue 5: merge + quantize in one pass
        from .. import set_threads
        from ..quality.merge_gguf import merge_to_gguf

        if args.threads:
            set_threads(args.threads)
        r = merge_to_gguf(args.config, args.out, args.type, seed=args.seed, progress=False if args.quiet else None)
        print(f"merged into {args.out} ({args.type}, {r.bits_per_weight:.3f} bits/weight) in "
              f"{time.perf_counter() - start:.1f} s")
        return 0
    out = merge(args.config, args.out, threads=args.threads, shard_size=args.shard_size, seed=args.seed,
                out_dtype=args.out_dtype, progress=False if args.quiet else None)
    print(f"merged into {out} in {time.perf_counter() - start:.1f} s")
    return 0
