"""``llamix merge CONFIG.yml OUT``: merge models from a mergekit-style YAML config, into a Hugging
Face folder, or (OUT ending in .gguf) merged and quantized in one streaming pass.

It also takes mergekit-yaml's flags with their meanings (``llamix-mergekit-yaml`` takes exactly
mergekit-yaml's argument list, see mergekit_yaml.py): some change the output, some are accepted
and do nothing here (with a note saying why), and those that ask for something llamix does not do
(a GPU, model code from the Hub, pickled output) are refused with the reason."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .. import export
from .._runtime import set_threads
from ..export.type_rules import FILE_TYPES
from ..merge import load_config, merge
from ..merge.plan import build_plan
from .common import (UsageError, add_force, add_threads, check_output, check_threads, lower_choice, progress_bar,
                     quiet_requested)


def parse_kmb(value: str) -> int:
    """mergekit's size syntax: an integer, or one with a k / m / b suffix (thousand, million,
    billion; decimal, any case), e.g. 5B, 500M. Counts bytes of the output shards."""
    text = str(value).strip()
    try:
        if text.isnumeric():
            return int(text)
        mult = {"k": 10 ** 3, "m": 10 ** 6, "b": 10 ** 9}[text[-1].lower()]
        n = int(text[:-1]) * mult
    except (KeyError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{value!r}: expected a number with an optional k, m or b suffix "
                                         "(mergekit's syntax, e.g. 5B)") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be positive")
    return n


def _bool_flag(p, name: str, default: bool, help: str, dest: str | None = None) -> None:
    """--name / --no-name, as click writes mergekit's boolean options."""
    dest = dest or name.replace("-", "_")
    p.add_argument(f"--{name}", dest=dest, action="store_true", default=default, help=help)
    p.add_argument(f"--no-{name}", dest=dest, action="store_false", help=argparse.SUPPRESS)


def add_mergekit_flags(p, full: bool = False) -> None:
    """mergekit-yaml's options. `full` adds every one of them (llamix-mergekit-yaml); otherwise the
    ones ``llamix merge`` documents (the rest are still accepted, without help)."""
    hide = (lambda text: text) if full else (lambda text: argparse.SUPPRESS)
    p.add_argument("--out-shard-size", type=parse_kmb, default=None, metavar="SIZE",
                   help="largest output shard in mergekit's syntax (5B = 5e9 bytes; default 5B)")
    _bool_flag(p, "copy-tokenizer", True, "write the source model's tokenizer files into the output "
               "(--no-copy-tokenizer: leave them out)")
    _bool_flag(p, "allow-crimes", False, "merge models whose config.json names different architectures")
    _bool_flag(p, "lazy-unpickle", False, "accepted, no effect: llamix reads only safetensors")
    _bool_flag(p, "low-cpu-memory", False, "accepted, no effect: llamix streams one tensor at a time anyway")
    p.add_argument("--random-seed", type=int, default=None, metavar="N", help="seed of the random masks (= --seed)")
    _bool_flag(p, "write-model-card", True, "write README.md and mergekit_config.yml holding the config "
               "(--no-write-model-card: leave them out)")
    _bool_flag(p, "clone-tensors", False, "accepted, no effect: every output tensor is its own buffer")
    _bool_flag(p, "trust-remote-code", False, "refused: llamix runs no code from model repositories")
    _bool_flag(p, "cuda", False, "refused: llamix runs on the CPU")
    p.add_argument("-v", "--verbose", action="count", default=0, dest="verbosity",
                   help="print the plan before merging (models, LoRAs, vocabulary, bytes); -vv lists every tensor")
    # the rest of mergekit-yaml's options
    _bool_flag(p, "unsafe-truncate-embeddings", False, hide("refused: align vocabularies with tokenizer_source or "
                                                            "tokenizer: instead"))
    p.add_argument("--transformers-cache", default=None, metavar="DIR",
                   help=hide("the Hugging Face cache to read repo ids from (HF_HUB_CACHE)"))
    p.add_argument("--lora-merge-cache", default=None, metavar="DIR",
                   help=hide("accepted, no effect: LoRAs are applied while the weights stream"))
    p.add_argument("--lora-merge-dtype", default=None, metavar="DTYPE",
                   help=hide("accepted, no effect: LoRA updates are computed in float32"))
    p.add_argument("--device", default=None, help=hide("cpu only (others refused)"))
    _bool_flag(p, "safe-serialization", True, hide("output in safetensors (--no-safe-serialization refused)"))
    _bool_flag(p, "read-to-gpu", False, hide("refused: CPU only"))
    _bool_flag(p, "multi-gpu", False, hide("refused: CPU only"))
    p.add_argument("-j", "--num-threads", type=int, default=None, metavar="N", dest="num_threads",
                   help=hide("compute threads (= -t)"))
    p.add_argument("--gpu-rich", action="store_true", default=False, help=hide("refused: CPU only"))
    _bool_flag(p, "async-write", False, hide("accepted: shards are written by background threads anyway"))
    p.add_argument("--write-threads", type=int, default=None, metavar="N",
                   help=hide("threads writing the shards of a sharded output (default 2)"))


def add_arguments(p) -> None:
    p.add_argument("config", help="mergekit-style YAML config")
    p.add_argument("out", help="output folder (Hugging Face layout; must not exist or be empty), or OUT.gguf")
    add_threads(p)
    p.add_argument("--shard-size", default=None, help="largest safetensors shard, e.g. 5GB or 500MB (default 5GB)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random masks (dare_*, della*; default 0)")
    p.add_argument("--out-dtype", default=None, help="override the config's out_dtype")
    p.add_argument("--type", type=lower_choice(FILE_TYPES), default=None, metavar="TYPE",
                   help=f"GGUF type when OUT ends in .gguf ({', '.join(FILE_TYPES)}) (default: q4_0)")
    add_force(p)
    p.add_argument("-q", "--quiet", action="store_true", default=False, help="no progress bar")
    p.add_argument("--no-quiet", dest="quiet", action="store_false", help=argparse.SUPPRESS)
    add_mergekit_flags(p)


def _note(msg: str, args) -> None:
    if not quiet_requested(args) or args.verbosity:
        print(f"{getattr(args, 'prog', None) or 'llamix merge'}: note: {msg}", file=sys.stderr)


def resolve_options(args) -> dict:
    """The merge's options from llamix's and mergekit's flags; refuses what llamix does not do."""
    check_threads(args)
    refused = {"trust_remote_code": "llamix runs no code from model repositories: architectures come from "
                                    "config.json and the tensors",
               "cuda": "llamix runs on the CPU", "read_to_gpu": "llamix runs on the CPU",
               "multi_gpu": "llamix runs on the CPU", "gpu_rich": "llamix runs on the CPU",
               "unsafe_truncate_embeddings": "align vocabularies with tokenizer_source: union/base or a tokenizer: "
                                             "section instead"}
    for flag, why in refused.items():
        if getattr(args, flag, False):
            raise UsageError(f"--{flag.replace('_', '-')}: not supported: {why}")
    if args.device not in (None, "cpu", "auto"):
        raise UsageError(f"--device {args.device}: not supported: llamix runs on the CPU")
    if not args.safe_serialization:
        raise UsageError("--no-safe-serialization: not supported: llamix writes only safetensors (no pickles)")
    if args.shard_size is not None and args.out_shard_size is not None:
        raise UsageError("--shard-size / --out-shard-size: give one of them")
    if args.seed is not None and args.random_seed is not None and args.seed != args.random_seed:
        raise UsageError("--seed / --random-seed: give one of them")
    if args.threads is not None and args.num_threads is not None and args.threads != args.num_threads:
        raise UsageError("-t/--threads / -j/--num-threads: give one of them")
    if args.write_threads is not None and args.write_threads < 1:
        raise UsageError(f"--write-threads must be >= 1, got {args.write_threads}")
    for flag, why in (("lazy_unpickle", "llamix reads only safetensors, never a pickle"),
                      ("low_cpu_memory", "llamix streams one tensor at a time anyway"),
                      ("clone_tensors", "every output tensor is its own buffer already")):
        if getattr(args, flag):
            _note(f"--{flag.replace('_', '-')} has no effect: {why}", args)
    if args.lora_merge_cache or args.lora_merge_dtype:
        _note("--lora-merge-cache / --lora-merge-dtype have no effect: LoRAs are applied in float32 while the "
              "weights stream, nothing is cached", args)
    if args.transformers_cache:
        os.environ["HF_HUB_CACHE"] = args.transformers_cache
    return {"threads": args.threads if args.threads is not None else args.num_threads,
            "shard_size": args.shard_size or args.out_shard_size or "5GB",
            "seed": args.seed if args.seed is not None else (args.random_seed or 0),
            "copy_tokenizer": args.copy_tokenizer, "write_model_card": args.write_model_card,
            "allow_crimes": args.allow_crimes, "write_threads": args.write_threads}


def _describe(config, opts: dict, out, args) -> None:
    """-v: the plan in a few lines before the merge starts."""
    plan = build_plan(load_config(config), args.out_dtype, allow_crimes=opts["allow_crimes"])
    print(f"method {plan.method.name} ({plan.method.paper}); {len(plan.models)} models; {len(plan.tensors)} tensors "
          f"into {plan.num_layers} layers; {plan.input_bytes / 1e9:.2f} GB to read", file=sys.stderr)
    for ref, m in plan.models.items():
        lora = f" + LoRA {m.lora_path}" if m.lora_path else ""
        print(f"  model {ref}: {m.path}{lora}", file=sys.stderr)
    if plan.vocab is not None:
        print(f"  vocabulary: {len(plan.vocab.vocab)} tokens ({len(plan.vocab.new_tokens)} new), {plan.vocab.size} rows",
              file=sys.stderr)
    if args.verbosity > 1:
        for t in plan.tensors:
            print(f"  {t.name} {list(t.shape)} {t.work}->{t.out} from {len(t.inputs)} inputs", file=sys.stderr)


def _inputs(config_path: str) -> list:
    """The config file and every model folder it names (as the merge resolves them)."""
    cfg = load_config(config_path)
    out = [config_path]
    for ref in cfg.referenced_models() + ([cfg.tokenizer_source] if cfg.tokenizer_source not in (None, "base") else []):
        out += [p for p in (Path(ref).expanduser(), cfg.base_dir / ref) if p.exists()]
    return out


def run(args) -> int:
    opts = resolve_options(args)
    to_gguf = str(args.out).lower().endswith(".gguf")
    if args.type is not None and not to_gguf:   # was ignored: a safetensors folder came out
        raise UsageError(f"--type {args.type}: only for an OUT ending in .gguf; {args.out} is written as a Hugging "
                         "Face folder (its dtype: out_dtype / --out-dtype)")
    if args.out_dtype is not None and to_gguf:
        raise UsageError(f"--out-dtype {args.out_dtype}: only for a Hugging Face folder; {args.out} is a GGUF file "
                         "(its type: --type)")
    if to_gguf and (args.shard_size is not None or args.out_shard_size is not None):  # was ignored
        flag = "--shard-size" if args.shard_size is not None else "--out-shard-size"
        raise UsageError(f"{flag}: only for a Hugging Face folder; {args.out} is one GGUF file")
    force = getattr(args, "force", False)  # llamix-mergekit-yaml has no --force: it never overwrites
    check_output(args.out, _inputs(args.config), force)
    start = time.perf_counter()
    quiet = quiet_requested(args)
    if args.verbosity:
        _describe(args.config, opts, args.out, args)
    if to_gguf:
        qtype = args.type or "q4_0"
        if opts["threads"]:
            set_threads(opts["threads"])
        with progress_bar("merge+quantize", unit="tensor", quiet=quiet) as bar:
            r = export.merge_to_gguf(args.config, args.out, qtype, seed=opts["seed"], progress=bar)
        print(f"merged into {args.out} ({qtype}, {r.bits_per_weight:.3f} bits/weight) in "
              f"{time.perf_counter() - start:.1f} s")
        if r.fallback_note():
            print(f"note: {r.fallback_note()}")
        return 0
    with progress_bar("merge", quiet=quiet) as bar:
        out = merge(args.config, args.out, n_threads=opts["threads"], shard_size=opts["shard_size"], seed=opts["seed"],
                    out_dtype=args.out_dtype, progress=bar, copy_tokenizer=opts["copy_tokenizer"],
                    write_model_card=opts["write_model_card"], allow_crimes=opts["allow_crimes"],
                    write_threads=opts["write_threads"], overwrite=force)
    print(f"merged into {out} in {time.perf_counter() - start:.1f} s")
    return 0
