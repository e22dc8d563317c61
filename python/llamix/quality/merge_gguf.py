"""``llamix merge CONFIG.yml OUT.gguf --type q4_0``: merge and quantize in one streaming pass.

The merge executor yields each merged tensor (float32, Hugging Face name and layout) in plan
order; each is renamed to GGUF, its q/k rows permuted from rotate-half to adjacent-pair RoPE
order, quantized with the same type rules as ``llamix quantize``, and written; the full-precision
model never exists, in memory or on disk.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..formats.gguf import GGUFWriter
from ..model.config import ModelConfig
from ..model.weights import _HF_NAMES, _rotate_half_to_pairs
from ..progress import Progress
from ..tokenizer import Tokenizer
from .export import FILE_TYPES, GGUF_TYPE_NAME, ExportReport, llama_metadata, tensor_type
from ..quant import quantize
from ..quant.qtypes import qtype_info

_GGUF_OF_HF = {v: k for k, v in _HF_NAMES.items()}


def gguf_name(hf: str) -> str:
    """A Hugging Face LLaMA tensor name -> its GGUF name (ValueError for anything else)."""
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if hf in fixed:
        return fixed[hf]
    parts = hf.split(".")
    if len(parts) >= 5 and parts[0] == "model" and parts[1] == "layers" and parts[-1] == "weight":
        kind = ".".join(parts[3:-1])
        if kind in _HF_NAMES:
            return f"blk.{parts[2]}.{_HF_NAMES[kind]}.weight"
    raise ValueError(f"tensor {hf!r} has no GGUF name (only LLaMA-architecture models can be written as GGUF)")


def merge_to_gguf(config, out, qtype: str = "q4_0", *, seed: int = 0, pure: bool = False,
                  progress: bool | None = None) -> ExportReport:
    """Merge as a mergekit YAML config says and write the result as a GGUF file of ``qtype``."""
    from ..merge.config import load_config
    from ..merge.executor import merged_tensors
    from ..merge.plan import build_plan

    qtype = str(qtype).lower()
    if qtype not in FILE_TYPES:
        raise ValueError(f"unknown type {qtype!r}; expected one of {', '.join(FILE_TYPES)}")
    plan = build_plan(load_config(config))
    mc = ModelConfig.from_hf(plan.out_config, "merged config.json")
    names = {t.name: gguf_name(t.name) for t in plan.tensors}
    mc.tie_embeddings = "output.weight" not in names.values()
    tok_file = plan.tokenizer_from.path / "tokenizer.model" if plan.tokenizer_from is not None else None
    if tok_file is None or not tok_file.is_file():
        raise ValueError(f"{tok_file or 'merge config'}: no tokenizer.model to put in the GGUF (llama.cpp needs it)")
    tok = Tokenizer.from_file(tok_file)

    out = Path(out)
    report = ExportReport(str(out), qtype)
    w = GGUFWriter(out)
    for key, value, vtype, *elem in llama_metadata(mc, tok, out.stem, FILE_TYPES[qtype][1]):
        w.add(key, value, vtype, *elem)
    stream = merged_tensors(plan, seed, dtype_for=lambda task: "float32")
    bar = Progress(len(plan.tensors), f"merge+quantize {out.name}", quiet=None if progress is None else not progress)

    def next_tensor(task, name, target):
        def produce():
            got, arr = next(stream)
            if got != task.name:  # the executor's order is the plan's order
                raise RuntimeError(f"merge produced {got!r} where {task.name!r} was expected")
            arr = np.asarray(arr, dtype=np.float32).reshape(task.shape)
            if arr.ndim == 1:
                data = arr
            else:
                if name.endswith("attn_q.weight"):
                    arr = _rotate_half_to_pairs(arr, mc.n_heads)
                elif name.endswith("attn_k.weight"):
                    arr = _rotate_half_to_pairs(arr, mc.n_kv_heads)
                data = quantize(np.ascontiguousarray(arr), target).data
            bar.update(1, name)
            return data
        return produce

    for task in plan.tensors:
        name, shape = names[task.name], tuple(task.shape)
        target = tensor_type(name, shape, qtype, mc.n_layers, mc.tie_embeddings, pure)
        gtype = GGUF_TYPE_NAME.get(target, target.upper())
        w.add_tensor(name, next_tensor(task, name, target), gtype, shape)
        report.types[name] = gtype
        n = int(np.prod(shape))
        report.n_params += n
        report.nbytes += qtype_info(target).row_bytes(shape[-1]) * (n // shape[-1])
    try:
        w.write()
    finally:
        bar.close()
        stream.close()
    return report
