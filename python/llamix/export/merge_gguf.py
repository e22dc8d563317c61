"""``llamix merge CONFIG.yml OUT.gguf --type q4_0``: merge and quantize in one streaming pass.

The merge executor yields each merged tensor (float32, Hugging Face name and layout) in plan
order; each is renamed to GGUF (the architecture's names), put in the file's layout (a llama
file's q/k rows permuted from rotate-half to adjacent-pair RoPE order, Gemma's norms + 1),
quantized with the same type rules as ``llamix quantize``, and written; the full-precision model
never exists, in memory or on disk.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..formats.gguf_llama import TensorEntry, tokenizer_metadata, write_llama_gguf
from ..formats.names import gguf_name, hf_to_file_layout
from ..loaders import config_from_hf
from ..merge.config import load_config
from ..merge.executor import merged_tensors
from ..merge.plan import build_plan
from ..quant import quantize
from ..quant.qtypes import qtype_info
from ..tokenizer import Tokenizer
from .gguf import GGUF_TYPE_NAME, ExportReport, Progress, check_file_type, chosen_type, file_type_id, tensor_type


def merge_to_gguf(config, out, qtype: str = "q4_0", *, seed: int = 0, pure: bool = False,
                  progress: Progress | None = None) -> ExportReport:
    """Merge as a mergekit YAML config says and write the result as a GGUF file of ``qtype``
    (a file type as :func:`llamix.export_gguf` takes, any case), in one streaming pass.

    ``config``: a YAML path, text or dict. ``seed``: of the random masks (dare_*, della*).
    ``progress(done_tensors, total_tensors, name)`` is called after each tensor. The file appears
    only when complete. Raises ConfigError for a bad config, ArgumentError for a type, ConfigError for a model
    without a ``tokenizer.model`` or ``tokenizer.json`` (llama.cpp needs the vocabulary in the file).
    """
    ft = check_file_type(qtype)
    progress = progress if callable(progress) else None
    plan = build_plan(load_config(config))
    if plan.vocab is not None and (plan.vocab.new_tokens or plan.vocab.size != len(plan.vocab.vocab)):
        raise ConfigError("merging straight to GGUF with a merged or padded vocabulary is not supported: merge into a "
                         "folder, then `llamix quantize` it")
    mc = config_from_hf(plan.out_config, f"{plan.config.source} (the merged model's config.json)")
    names = {t.name: gguf_name(t.name, mc.architecture) for t in plan.tensors}
    mc.tie_embeddings = "output.weight" not in names.values()
    folder = plan.tokenizer_from.path if plan.tokenizer_from is not None else None
    if folder is None or not any((folder / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        raise ConfigError(f"{folder if folder else 'merge config'}: no tokenizer.model or tokenizer.json to put in "
                         "the GGUF (llama.cpp needs the vocabulary in the file): add one to that folder, or take it "
                         "from a model that has one with tokenizer_source: MODEL")
    tok = Tokenizer.from_file(folder)

    out = Path(out)
    report = ExportReport(str(out), ft)
    stream = merged_tensors(plan, seed, dtype_for=lambda task: "float32")
    done = {"n": 0}

    def next_tensor(task, name, target):
        def produce():
            got, arr = next(stream)
            if got != task.name:  # the executor's order is the plan's order
                raise RuntimeError(f"merge produced {got!r} where {task.name!r} was expected")
            arr = hf_to_file_layout(name, np.asarray(arr, dtype=np.float32).reshape(task.shape), mc)
            if arr.ndim == 1:
                return arr
            return quantize(np.ascontiguousarray(arr), target).data
        return produce

    def on_tensor(e: TensorEntry) -> None:
        done["n"] += 1
        if progress is not None:
            progress(done["n"], len(plan.tensors), e.name)

    entries = []
    for task in plan.tensors:
        name, shape = names[task.name], tuple(task.shape)
        gqa = max(1, mc.n_heads // max(1, mc.n_kv_heads))
        target = tensor_type(name, shape, ft, mc.n_layers, mc.tie_embeddings, pure, n_gqa=gqa)
        wanted = chosen_type(name, shape, ft, mc.n_layers, mc.tie_embeddings, pure, n_gqa=gqa)
        if len(shape) >= 2 and wanted != target:
            report.fallbacks[name] = (GGUF_TYPE_NAME.get(wanted, wanted), target)
        gtype = GGUF_TYPE_NAME.get(target, target.upper())
        entries.append(TensorEntry(name, gtype, shape, next_tensor(task, name, target)))
        report.types[name] = gtype
        n = int(np.prod(shape))
        report.n_params += n
        report.nbytes += qtype_info(target).row_bytes(shape[-1]) * (n // shape[-1])
    try:
        write_llama_gguf(out, mc, entries, tokenizer=tokenizer_metadata(tok, mc.vocab_size), name=out.stem,
                         file_type_id=file_type_id(ft), on_tensor=on_tensor)
    finally:
        stream.close()
    return report
