"""Model soups: the uniform average of fine-tuned models, and the greedy soup.

Reference: Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models
improves accuracy without increasing inference time" (https://arxiv.org/abs/2203.05482),
Recipe 1 (greedy soup): rank the candidates by held-out score, start from the best, and add the
next candidate to the uniform average only if the held-out score of the average improves.
Here the held-out score is perplexity on a text, measured with llamix's own quantized inference
(Q8_0 by default), so each trial costs one quantized forward pass over the text. The greedy soup
is never worse on that text than the best single candidate: it starts there and only accepts
strict improvements.

Tensors are averaged one at a time from the memory-mapped candidates; a trial model holds only
the quantized average.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._runtime import set_threads
from ..errors import ArgumentError, FormatError
from ..export import export_gguf
from ..formats.names import tensor_names
from ..loaders import Checkpoint, load_checkpoint
from ..model import Model
from ..quant import QuantizedTensor, quantize
from ..quant.qtypes import qtype_info
from .perplexity import Progress, perplexity, text_tokens


@dataclass
class SoupStep:
    candidate: str
    ppl_before: float   # the soup's held-out perplexity before trying the candidate
    ppl_after: float    # with the candidate added to the uniform average
    kept: bool


@dataclass
class SoupResult:
    method: str                                    # "greedy" or "uniform"
    ranking: list = field(default_factory=list)    # [(candidate, perplexity)] best first
    steps: list = field(default_factory=list)      # SoupStep per candidate after the first
    kept: list = field(default_factory=list)       # candidates in the soup
    ppl: float = float("nan")                      # the soup's held-out perplexity
    base_ppl: float | None = None
    out: str | None = None

    def report(self) -> str:
        lines = []
        if self.base_ppl is not None:
            lines.append(f"base: ppl {self.base_ppl:.4f}")
        lines += [f"rank {i + 1}: {c}  ppl {p:.4f}" for i, (c, p) in enumerate(self.ranking)]
        if self.method == "greedy" and self.ranking:
            lines.append(f"start: {self.ranking[0][0]}  ppl {self.ranking[0][1]:.4f}")
        for s in self.steps:
            lines.append(f"try {s.candidate}: ppl {s.ppl_before:.4f} -> {s.ppl_after:.4f}  "
                         f"{'kept' if s.kept else 'rejected'}")
        lines.append(f"{self.method} soup of {len(self.kept)}: ppl {self.ppl:.4f}" + (f" -> {self.out}" if self.out else ""))
        return "\n".join(lines)


def _as_float(t) -> np.ndarray:
    if isinstance(t, QuantizedTensor):
        if t.qtype == "f32":
            return t.data.view(np.float32).reshape(t.shape)
        return t.dequantize()
    return np.asarray(t, dtype=np.float32)


class AveragedTensors:
    """The uniform average of some checkpoints' tensors, computed tensor by tensor on access."""

    def __init__(self, checkpoints: list):
        self.checkpoints = checkpoints

    def shape_of(self, name: str) -> tuple:
        return tuple(self.checkpoints[0].tensors[name].shape)

    def __getitem__(self, name: str) -> np.ndarray:
        acc = _as_float(self.checkpoints[0].tensors[name]).astype(np.float32, copy=True)
        for ck in self.checkpoints[1:]:
            acc += _as_float(ck.tensors[name])
        acc /= np.float32(len(self.checkpoints))
        return acc


def _average(checkpoints: list, tokenizer) -> Checkpoint:
    """The soup as a checkpoint whose tensors are averaged when the writer reaches them."""
    first = checkpoints[0]
    return Checkpoint(first.config, AveragedTensors(checkpoints), tokenizer, first.rope_freqs, "soup")


def _model(checkpoints: list, tokenizer, qtype: str, n_ctx: int):
    """A runnable Model of the average, quantized tensor by tensor (rows that are not whole
    blocks stay F16, as everywhere in llamix)."""
    avg = AveragedTensors(checkpoints)
    c = checkpoints[0].config
    tensors = {}
    for name in tensor_names(c):
        w = avg[name]
        if w.ndim == 1:
            tensors[name] = w
        else:
            q = qtype if w.shape[1] % qtype_info(qtype).block_size == 0 else "f16"
            tensors[name] = quantize(w, q)
    return Model(Checkpoint(c, tensors, tokenizer, checkpoints[0].rope_freqs, "soup"), n_ctx=n_ctx)


def _check_compatible(refs: list[str], checkpoints: list) -> None:
    first = checkpoints[0]
    names = tensor_names(first.config)
    for ref, ck in zip(refs[1:], checkpoints[1:]):
        if tensor_names(ck.config) != names:
            raise FormatError(f"{ref}: its tensors differ from {refs[0]}'s (different architecture or layer count)")
        for n in names:
            if tuple(ck.tensors[n].shape) != tuple(first.tensors[n].shape):
                raise FormatError(f"{ref}: tensor {n!r} has shape {tuple(ck.tensors[n].shape)}, "
                                 f"{refs[0]} has {tuple(first.tensors[n].shape)}")


def group_perplexity(refs, tokens, qtype: str = "q8_0", n_ctx: int = 512, *, tokenizer=None,
                     n_threads: int | None = None) -> float:
    """Perplexity on ``tokens`` of the uniform average of the models at paths ``refs``, quantized to
    ``qtype``: one soup trial, from paths (what a Ray task of ``llamix soup --ray`` runs)."""
    if n_threads:
        set_threads(n_threads)
    cks = [load_checkpoint(r, tokenizer=tokenizer) for r in refs]
    tok = next((ck.tokenizer for ck in cks if ck.tokenizer is not None), None)
    return perplexity(_model(cks, tok, qtype, n_ctx), list(tokens), n_ctx=n_ctx).ppl


def soup(candidates, eval_text, out=None, *, base=None, method: str = "greedy", qtype: str = "q8_0",
         n_ctx: int | None = None, out_qtype: str = "f16", tokenizer=None, progress: Progress | None = None,
         quant: str | None = None, out_type: str | None = None, evaluate_groups=None) -> SoupResult:
    """Make a model soup of ``candidates`` (paths llamix loads, fine-tuned from the same base).

    ``method="greedy"``: rank the candidates by perplexity on ``eval_text`` (held-out text) with
    ``qtype`` inference (``quant`` is an alias), start from the best, add each next one to the
    uniform average only if the perplexity improves. ``method="uniform"``: the average of all.
    ``base`` (optional) is measured for reference. ``out``: write the soup as a GGUF file of
    ``out_qtype`` (``out_type`` is an alias). ``n_ctx``: the perplexity window (default: the
    smaller of 512 and the model's context; 0: the model's context). ``progress(done_trials, total_trials, note)`` is
    called after each perplexity run. ``evaluate_groups(groups, tokens, n_ctx)``: computes the
    perplexity of each group of paths (a list of lists) elsewhere, e.g. in parallel Ray tasks
    (``RayPool.soup_evaluator``); the trials of one round (the ranking) are handed over together.
    Raises ValueError for incompatible candidates.
    """
    progress = progress if callable(progress) else None
    qtype = quant or qtype
    out_qtype = out_type or out_qtype
    if method not in ("greedy", "uniform"):
        raise ArgumentError(f"method must be 'greedy' or 'uniform', got {method!r}")
    refs = [str(c) for c in candidates]
    if not refs:
        raise ArgumentError("soup needs at least one candidate")
    qtype_info(qtype)
    cks = [load_checkpoint(c, tokenizer=tokenizer) for c in refs]
    base_ck = load_checkpoint(base, tokenizer=tokenizer) if base is not None else None
    _check_compatible(refs + ([str(base)] if base is not None else []), cks + ([base_ck] if base_ck else []))
    tok = next((ck.tokenizer for ck in ([base_ck] if base_ck else []) + cks if ck.tokenizer is not None), None)
    if tok is None:
        what = f"{refs[0]}: no tokenizer to read the evaluation text"
        raise ArgumentError(f"{what}; pass tokenizer=", cli=f"{what}; give --tokenizer FILE")
    n_ctx = int(cks[0].config.context_length if n_ctx == 0 else n_ctx or min(512, cks[0].config.context_length))
    tokens = text_tokens(tok, eval_text) if isinstance(eval_text, str) else list(eval_text)
    n_trials = len(refs) + (1 if base_ck else 0) + (len(refs) - 1 if method == "greedy" else 1)
    trials = {"done": 0}

    ref_of = {id(ck): ref for ref, ck in zip(refs, cks)}
    if base_ck is not None:
        ref_of[id(base_ck)] = str(base)

    def ppls(groups: list, notes: list) -> list:
        if evaluate_groups is not None:
            out = evaluate_groups([[ref_of[id(ck)] for ck in g] for g in groups], tokens, n_ctx)
        else:
            out = [perplexity(_model(g, tok, qtype, n_ctx), tokens, n_ctx=n_ctx).ppl for g in groups]
        for note in notes:
            trials["done"] += 1
            if progress is not None:
                progress(trials["done"], n_trials, note)
        return list(out)

    def ppl(group: list, note: str) -> float:
        return ppls([group], [note])[0]

    res = SoupResult(method)
    first = ([[base_ck]] if base_ck is not None else []) + [[ck] for ck in cks]
    first_scores = ppls(first, (["base"] if base_ck is not None else []) + [Path(ref).name for ref in refs])
    if base_ck is not None:
        res.base_ppl = first_scores.pop(0)
    scores = first_scores
    order = sorted(range(len(refs)), key=lambda i: scores[i])  # stable: ties keep the given order
    res.ranking = [(refs[i], scores[i]) for i in order]
    if method == "uniform":
        kept = order
        res.ppl = ppl([cks[i] for i in kept], "uniform")
    else:
        kept, current = [order[0]], scores[order[0]]
        for i in order[1:]:
            after = ppl([cks[j] for j in kept + [i]], Path(refs[i]).name)
            res.steps.append(SoupStep(refs[i], current, after, after < current))
            if after < current:
                kept.append(i)
                current = after
        res.ppl = current
    res.kept = [refs[i] for i in kept]
    if out is not None:
        export_gguf(_average([cks[i] for i in kept], tok), out, out_qtype)
        res.out = str(out)
    return res
