"""A merge recipe turned into a runnable quantized model in memory, in one streaming pass.

The merge executor yields each merged tensor (float32, Hugging Face name and layout) in plan
order; each is renamed to llamix's canonical names, put in the canonical layout (q/k rows in
adjacent-pair RoPE order, Gemma's norms + 1, phi3's fused tensors split) exactly as the Hugging
Face loader does with a folder's tensors, and quantized on the spot. No merged float model exists,
in memory or on disk: a candidate of an evolutionary merge search costs one merge pass plus the
quantized model it is scored with.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..formats.names import file_shapes, file_tensor_names, fused_parts, hf_name, hf_norm_offset, hf_rows_to_gguf
from ..loaders import Checkpoint, config_from_hf
from ..loaders.checkpoint import float_weight
from ..merge.config import load_config
from ..merge.executor import merged_tensors
from ..merge.plan import build_plan
from ..model import Model
from ..tokenizer import Tokenizer

# Weight types a candidate is evaluated with (f32: unquantized).
EVAL_TYPES = ("q8_0", "q4_0", "f16", "f32")


def merged_checkpoint(config, qtype: str = "q8_0", *, seed: int = 0, tokenizer: Tokenizer | None = None) -> Checkpoint:
    """The merge a mergekit config describes, as a :class:`llamix.Checkpoint` whose 2-D weights are
    ``qtype`` (one of :data:`EVAL_TYPES`; rows that are not whole blocks stay F16, as in llama.cpp)
    and norms float32.

    ``config``: a YAML path, text, dict or MergeConfig. ``seed``: of the random masks (dare_*,
    della*). ``tokenizer``: used instead of reading the base model's folder (a search reuses one).
    Raises ConfigError for a bad config (naming the field), a merged vocabulary, or an output
    without tokenizer files.
    """
    if qtype not in EVAL_TYPES:
        raise ConfigError(f"qtype: {qtype!r} is not an evaluation type ({', '.join(EVAL_TYPES)})")
    plan = build_plan(load_config(config))
    if plan.vocab is not None and (plan.vocab.new_tokens or plan.vocab.size != len(plan.vocab.vocab)):
        raise ConfigError(f"{plan.config.source}: evaluating a merge with a merged or padded vocabulary is not supported")
    mc = config_from_hf(plan.out_config, f"{plan.config.source} (the merged model's config.json)")
    arch = mc.architecture
    mc.tie_embeddings = "lm_head.weight" not in {t.name for t in plan.tensors}
    file_of = {hf_name(n, arch): n for n in file_tensor_names(mc)}
    shapes = file_shapes(mc)
    if tokenizer is None:
        folder = plan.tokenizer_from.path if plan.tokenizer_from is not None else None
        if folder is None or not any((folder / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
            raise ConfigError(f"{plan.config.source}: the base model has no tokenizer.model or tokenizer.json to "
                              "read the evaluation text with")
        tokenizer = Tokenizer.from_file(folder)
    offset = np.float32(hf_norm_offset(arch))
    target = None if qtype == "f32" else qtype
    tensors = {}
    for name, arr in merged_tensors(plan, seed, dtype_for=lambda task: "float32"):
        fname = file_of.get(name)
        if fname is None:
            raise ConfigError(f"{plan.config.source}: merged tensor {name!r} is not part of a {arch} model as llamix "
                              "runs it")
        w = np.asarray(arr, dtype=np.float32).reshape(shapes[fname])
        if w.ndim == 1:
            v = w + offset if offset and fname.endswith("norm.weight") else np.array(w)
            tensors[fname] = hf_rows_to_gguf(fname, v, mc)
        else:
            for part, a, b in fused_parts(fname, mc) or [(fname, 0, w.shape[0])]:
                rows = np.ascontiguousarray(hf_rows_to_gguf(part, w[a:b], mc))
                tensors[part] = float_weight(rows if target else rows.copy(), "f32", target)
    missing = [n for n in file_tensor_names(mc) if n not in tensors and not fused_parts(n, mc)]
    if missing:
        raise ConfigError(f"{plan.config.source}: the merge produced no {missing[0]!r}")
    return Checkpoint(mc, tensors, tokenizer, None, plan.config.source)


def merged_model(config, qtype: str = "q8_0", *, n_ctx: int | None = None, n_threads: int | None = None,
                 seed: int = 0, tokenizer: Tokenizer | None = None) -> Model:
    """:func:`merged_checkpoint` as a runnable :class:`llamix.Model` (``n_ctx`` tokens of context,
    ``n_threads`` compute threads)."""
    return Model(merged_checkpoint(config, qtype, seed=seed, tokenizer=tokenizer), n_ctx=n_ctx, n_threads=n_threads)
