"""Long fuzz runs for local use (docs/DEVELOPING.md):

    PYTHONPATH=python python tests/fuzz/run.py --seconds 600 [--targets gguf,merge_yaml] [--seed 7]

Runs each target for ``--seconds``, prints what went wrong and a table of outcomes per target, and
saves each new kind of fault under tests/fuzz/corpus/ (commit them: the default test run replays
them). The exit status is 1 when any input crashed, hung or was refused unclearly.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # fuzz_* and tests/child_process.py

import fuzz_harness as fh  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="time per target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--targets", default=",".join(fh.TARGETS), help=f"comma-separated ({', '.join(fh.TARGETS)})")
    p.add_argument("--timeout", type=float, default=fh.DEFAULT_TIMEOUT_S, help="seconds per input before a hang")
    p.add_argument("--memory-mb", type=int, default=fh.DEFAULT_MEMORY >> 20, help="address-space limit per child")
    p.add_argument("--no-save", action="store_true", help="do not add new faults to the corpus")
    args = p.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in targets if t not in fh.TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}")
    results = []
    with fh.Runner(args.timeout, args.memory_mb << 20) as runner:
        for t in targets:
            s = fh.fuzz(t, args.seconds, args.seed, runner=runner, save=not args.no_save)
            print(s.report(), flush=True)
            results.append(s)
    print()
    print(fh.table(results))
    return 1 if any(s.n_bad for s in results) else 0


if __name__ == "__main__":
    sys.exit(main())
