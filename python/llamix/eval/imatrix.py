"""Importance matrices computed with llamix's forward pass: llama-imatrix's job.

For every matrix multiplication of every layer, the mean over a calibration text's tokens of
the squared input, column by column (llama.cpp ``tools/imatrix/imatrix.cpp``; the error a weight
column's rounding adds to the output grows with that mean). The text is cut as llama-imatrix
cuts it: tokenized with BOS where the vocabulary adds one, split into non-overlapping chunks of
``n_ctx`` tokens, each chunk's first token replaced by BOS, evaluated from an empty cache.
Matrices that read the same input (q/k/v, gate/up) get the same statistics, as in llama.cpp.
The output head is not included (llama-imatrix leaves it out unless --process-output).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import ArgumentError
from ..formats.imatrix import ImportanceMatrix
from ..formats.names import file_tensor_names
from .perplexity import _bos_id, _tokens, windows

Progress = Callable[[float, float, str], None]

# the forward pass's four input points per layer (model/activation_stats.h) -> the matrices reading them
POINT_TENSORS = (("attn_q", "attn_k", "attn_v", "attn_qkv"), ("attn_output",), ("ffn_gate", "ffn_up"), ("ffn_down",))


def compute_imatrix(model, text, n_ctx: int = 512, *, chunks: int | None = None, dataset: str = "",
                    progress: Progress | None = None) -> ImportanceMatrix:
    """The importance matrix of ``model`` (a :class:`llamix.Model` loaded with ``n_ctx`` at least
    this one) over ``text`` (a string or token ids): per matrix ``blk.N.NAME.weight`` the sum
    over tokens of each input column's square and the token count (``.means()`` gives
    float32 (k,) vectors for :func:`llamix.quant.quantize`'s ``imatrix``). ``chunks``: at most this
    many chunks (default all). ``dataset``: the text's file name, recorded in the file. Raises
    ArgumentError when the text has fewer than 2 * n_ctx tokens (as llama-imatrix does).
    """
    n_ctx = int(n_ctx)
    if n_ctx > int(getattr(model, "n_ctx", n_ctx)):
        raise ArgumentError(f"-c {n_ctx} exceeds the context the model was loaded with ({model.n_ctx})")
    tokens = _tokens(model, text)
    if len(tokens) < 2 * n_ctx:
        raise ArgumentError(f"{dataset + ': ' if dataset else ''}the calibration text has {len(tokens)} tokens; at least 2 * n_ctx = {2 * n_ctx} are "
                            "needed (as llama-imatrix); give a longer text or a smaller -c")
    wins = windows(tokens, n_ctx, _bos_id(model))
    if chunks is not None:
        if int(chunks) < 1:
            raise ArgumentError(f"--chunks must be positive, got {chunks}")
        wins = wins[: int(chunks)]
    t = model._t
    t.collect_activation_stats(True)
    try:
        for i, w in enumerate(wins):
            model.reset()
            model.eval(w.tolist())
            if progress is not None:
                progress(i + 1, len(wins), f"chunk {i + 1}")
        stats = t.activation_stats()
    finally:
        t.collect_activation_stats(False)
        model.reset()
    names = set(file_tensor_names(model.config))
    im = ImportanceMatrix(datasets=[dataset] if dataset else [], chunk_count=len(wins), chunk_size=n_ctx)
    for layer in range(model.config.n_layers):
        for point, tensors in enumerate(POINT_TENSORS):
            sums, count = stats[layer * len(POINT_TENSORS) + point]
            for tname in tensors:
                name = f"blk.{layer}.{tname}.weight"
                if name in names:
                    im.sums[name] = np.asarray(sums, dtype=np.float64).reshape(1, -1).copy()
                    im.counts[name] = np.array([float(count)])
    return im
