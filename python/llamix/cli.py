"""The ``llamix`` command line: each subcommand lives in ``llamix/commands/<name>.py`` and provides
``add_arguments(parser)`` and ``run(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "info": "show a model's hyper-parameters and tensors, and the CPU's kernels",
    "generate": "generate text from a prompt",
    "bench": "measure prompt processing and generation speed (llama-bench style)",
    "quantize": "write a model as a GGUF file of a chosen type",
    "perplexity": "measure perplexity (and KL divergence against a base model) on a text",
    "merge": "merge models from a mergekit-style YAML config",
    "soup": "greedy model soup: add candidates only while held-out perplexity improves",
}


def _load(name: str):
    try:
        return importlib.import_module(f"llamix.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"llamix.commands.{name}":
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llamix", description="LLaMA-family models in 4 bits on the CPU, and model merging.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, help_text in COMMANDS.items():
        mod = _load(name)
        if mod is None:
            continue
        modules[name] = mod
        mod.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except (ValueError, OSError, KeyError) as e:
        print(f"llamix {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
