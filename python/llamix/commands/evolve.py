"""``llamix evolve CONFIG.yml OUT_DIR [--workers N] [--ray-address ADDR] [--resume]``: search merge
parameters with CMA-ES, candidates merged, quantized and scored in parallel Ray tasks."""
from __future__ import annotations

from ..eval import evolve
from ..export import FILE_TYPES
from .common import UsageError, lower_choice, progress_bar, quiet_requested

OUT_TYPES = ("hf", "none") + tuple(FILE_TYPES)


def add_arguments(p) -> None:
    p.add_argument("config", nargs="?", metavar="CONFIG.yml", help="the evolve config (see docs/MERGING.md)")
    p.add_argument("out_dir", nargs="?", metavar="OUT_DIR",
                   help="the run's folder: new or empty; with --resume, a run's (OUT_DIR alone resumes with its own "
                        "config)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="candidates evaluated at once (default: one per CPU, at most the population)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="join this Ray cluster (default: start a local Ray instance sized to the machine)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT_DIR from its last generation")
    p.add_argument("--out-type", type=lower_choice(OUT_TYPES), default="hf", metavar="TYPE",
                   help="the merged best model: hf (a Hugging Face folder OUT_DIR/model), a GGUF type "
                        "(OUT_DIR/model.gguf) or none")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    paths = [x for x in (args.config, args.out_dir) if x is not None]
    if not paths or (len(paths) == 1 and not args.resume):
        raise UsageError("expected CONFIG.yml OUT_DIR (or OUT_DIR alone with --resume)")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    config, out = (None, paths[0]) if len(paths) == 1 else paths
    with progress_bar("evolve", unit="cand", quiet=quiet_requested(args)) as bar:
        r = evolve(config, out, workers=args.workers, ray_address=args.ray_address, resume=args.resume,
                   out_type=None if args.out_type == "none" else args.out_type, progress=bar)
    print(r.report())
    return 0
