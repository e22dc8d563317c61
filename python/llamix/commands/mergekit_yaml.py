"""``llamix-mergekit-yaml CONFIG_FILE OUT_PATH [OPTIONS]`` (entry point: llamix.cli:mergekit_yaml): a stand-in for mergekit-yaml that takes
exactly its argument list (mergekit 0.1.5's MergeOptions as click options) and runs llamix's
merge. The options' meanings are llamix merge's (see merge.py): options for GPUs, model code or
pickled output are refused with the reason, memory options llamix does not need are accepted."""
from __future__ import annotations

import argparse

from .. import __version__
from .merge import add_mergekit_flags, run as run_merge


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llamix-mergekit-yaml", allow_abbrev=False,
                                description="Merge models from a mergekit YAML config with llamix (mergekit-yaml's "
                                            "arguments).")
    p.add_argument("config_file", help="mergekit YAML config")
    p.add_argument("out_path", help="output folder")
    add_mergekit_flags(p, full=True)
    p.add_argument("--quiet", dest="quiet", action="store_true", default=False,
                   help="suppress progress bars and other non-essential output")
    p.add_argument("--no-quiet", dest="quiet", action="store_false", help=argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"llamix {__version__}")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """mergekit-yaml's arguments, as the namespace llamix merge's run() reads (run = that run)."""
    args = build_parser().parse_args(argv)
    args.config, args.out = args.config_file, args.out_path
    args.threads, args.shard_size, args.seed, args.out_dtype, args.type = None, None, None, None, None
    args.command = "merge"
    args.prog = "llamix-mergekit-yaml"   # the name its messages give (run_command's)
    args.run = run_merge
    return args
