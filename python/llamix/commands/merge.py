"""``llamix merge CONFIG.yml OUT``: merge models from a mergekit-style YAML config, into a Hugging
Face folder, or (OUT ending in .gguf) merged and quantized in one streaming pass."""
from __future__ import annotations

import time
from pathlib import Path

from .._runtime import set_threads
from ..export import FILE_TYPES, merge_to_gguf
from ..merge import load_config, merge
from .common import add_force, add_threads, check_output, check_threads, lower_choice, progress_bar, quiet_requested


def add_arguments(p) -> None:
    p.add_argument("config", help="mergekit-style YAML config")
    p.add_argument("out", help="output folder (Hugging Face layout; must not exist or be empty), or OUT.gguf")
    add_threads(p)
    p.add_argument("--shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB or 500MB")
    p.add_argument("--seed", type=int, default=0, help="seed of the random masks (dare_*, della*)")
    p.add_argument("--out-dtype", default=None, help="override the config's out_dtype")
    p.add_argument("--type", type=lower_choice(FILE_TYPES), default="q4_0", metavar="TYPE",
                   help=f"GGUF type when OUT ends in .gguf ({', '.join(FILE_TYPES)})")
    add_force(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _inputs(config_path: str) -> list:
    """The config file and every model folder it names (as the merge resolves them)."""
    cfg = load_config(config_path)
    out = [config_path]
    for ref in cfg.referenced_models() + ([cfg.tokenizer_source] if cfg.tokenizer_source not in (None, "base") else []):
        out += [p for p in (Path(ref).expanduser(), cfg.base_dir / ref) if p.exists()]
    return out


def run(args) -> int:
    check_threads(args)
    check_output(args.out, _inputs(args.config), args.force)
    start = time.perf_counter()
    quiet = quiet_requested(args)
    if str(args.out).endswith(".gguf"):
        if args.threads:
            set_threads(args.threads)
        with progress_bar("merge+quantize", unit="tensor", quiet=quiet) as bar:
            r = merge_to_gguf(args.config, args.out, args.type, seed=args.seed, progress=bar)
        print(f"merged into {args.out} ({args.type}, {r.bits_per_weight:.3f} bits/weight) in "
              f"{time.perf_counter() - start:.1f} s")
        if r.fallback_note():
            print(f"note: {r.fallback_note()}")
        return 0
    with progress_bar("merge", quiet=quiet) as bar:
        out = merge(args.config, args.out, n_threads=args.threads, shard_size=args.shard_size, seed=args.seed,
                    out_dtype=args.out_dtype, progress=bar, overwrite=args.force)
    print(f"merged into {out} in {time.perf_counter() - start:.1f} s")
    return 0
