"""``llamix.merge(config, out_dir)``: the whole merge from Python."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from .._runtime import _C, idle_blas_threads, set_threads
from .config import load_config
from .executor import Progress, execute
from .kernels import dtype_name
from .output import HFFolderWriter
from .plan import build_plan


def merge(config: Any, out_dir: str | os.PathLike, *, n_threads: Optional[int] = None, shard_size="5GB",
          seed: int = 0, out_dtype: Optional[str] = None, progress: Optional[Progress] = None, writer=None,
          threads: Optional[int] = None, overwrite: bool = False, copy_tokenizer: bool = True,
          write_model_card: bool = True, allow_crimes: bool = False, write_threads: Optional[int] = None) -> Path:
    """Merge models as a mergekit YAML config describes, into a Hugging Face folder.

    config: a path to a YAML file, a YAML string, or a dict (mergekit's schema). Everything is
    validated (fields, models, tensor names and shapes, parameters) before any work starts.
    out_dir: the output folder (must not exist or be empty, unless ``overwrite``); written atomically.
    n_threads: compute threads (default: the current setting; ``threads`` is an alias).
    shard_size: e.g. "5GB". progress(input_bytes_done, input_bytes_total, tensor_name): called
    after each tensor.
    seed: keys the random masks of DARE / DELLA. out_dtype: overrides the config's.
    writer: another output (see llamix.merge.executor.TensorWriter), e.g. a GGUF writer.
    copy_tokenizer: write the source model's tokenizer files (a merged vocabulary is always
    written); write_model_card: README.md and mergekit_config.yml; allow_crimes: merge models of
    different architectures; write_threads: threads writing the shards of a sharded output.
    Returns the output path.
    """
    threads = threads if n_threads is None else n_threads
    idle_blas_threads()  # numpy's OpenBLAS workers spin after its import and would take a core
    cfg = load_config(config)
    plan = build_plan(cfg, dtype_name(out_dtype) if out_dtype else None, allow_crimes=allow_crimes)
    out = writer if writer is not None else HFFolderWriter(out_dir, shard_size, overwrite=overwrite,
                                                           copy_tokenizer=copy_tokenizer,
                                                           write_model_card=write_model_card,
                                                           write_threads=write_threads)
    before = _C.threads()
    if threads is not None:
        set_threads(threads)
    try:
        execute(plan, out, seed=seed, progress=progress)
    finally:
        if threads is not None:
            set_threads(before)
    return Path(out_dir)
