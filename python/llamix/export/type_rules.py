"""Which type each tensor of a quantized file takes: llama-quantize's rules.

Source: llama.cpp's ``src/llama-quant.cpp`` (``llama_tensor_get_type`` and its ``_impl``,
``tensor_type_fallback``), for the file types llamix writes. Per file type a default tensor type
(``FILE_TYPES``); the _S/_M/_L mixes then give some tensors more bits by category (output head,
attn_v, ffn_down, attn_output) and layer; a row length that the chosen block does not divide
falls back once (``FALLBACK``), then to F16. The user's overrides are llama-quantize's flags:
``--output-tensor-type``, ``--token-embedding-type``, ``--tensor-type PATTERN=TYPE`` (a regular
expression searched in the tensor name; the first that matches wins and skips the mix rules),
``--leave-output-tensor`` and ``--pure``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..errors import ArgumentError
from ..quant.qtypes import QTYPES, qtype_info

# file type name (llama-quantize's, lower case) -> the tensor type most matrices take
FILE_TYPES: dict[str, str] = {
    "f32": "f32", "f16": "f16", "q4_0": "q4_0", "q8_0": "q8_0", "q4_0_mse": "q4_0_mse",
    "q4_k": "q4_k", "q4_k_m": "q4_k", "q5_k_m": "q5_k", "q6_k": "q6_k",
    "q4_1": "q4_1", "q2_k": "q2_k", "q3_k_s": "q3_k", "q3_k_m": "q3_k", "q3_k_l": "q3_k",
    "q4_k_s": "q4_k", "q5_k_s": "q5_k", "iq4_nl": "iq4_nl", "iq4_xs": "iq4_xs",
    "q3_k": "q3_k", "q5_k": "q5_k",
}
# file types that follow another's rules (and write its general.file_type)
FTYPE_AS = {"q4_0_mse": "q4_0", "q4_k": "q4_k_m", "q3_k": "q3_k_m", "q5_k": "q5_k_m"}  # llama-quantize's aliases

# tensor_type_fallback: one step, then F16 if that block does not divide the row either
FALLBACK = {"q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0", "q2_k": "q4_0", "q3_k": "q4_0", "iq4_xs": "iq4_nl"}
_FLOAT = ("f32", "f16", "bf16")
# types a user may name in an override (the ones llamix writes)
TENSOR_TYPES = tuple(t for t in QTYPES if t != "q4_0_mse")


@dataclass(frozen=True)
class TypeOverrides:
    """llama-quantize's per-tensor flags. Types are llamix/GGUF type names (any case)."""
    output_tensor_type: str | None = None        # --output-tensor-type
    token_embedding_type: str | None = None      # --token-embedding-type
    tensor_types: tuple = ()                     # --tensor-type PATTERN=TYPE, in order: ((pattern, type), ...)
    leave_output_tensor: bool = False            # --leave-output-tensor
    pure: bool = False                           # --pure
    has_imatrix: bool = False                    # --imatrix given (changes two rules)


def check_tensor_type(name: str, what: str = "type") -> str:
    t = str(name).lower()
    if t not in TENSOR_TYPES:
        raise ArgumentError(f"{what}: unknown tensor type {name!r}; expected one of {', '.join(TENSOR_TYPES)}")
    return t


def parse_tensor_type(spec: str) -> tuple:
    """``"attn_v=q8_0"`` -> ``("attn_v", "q8_0")`` as llama-quantize's --tensor-type reads it (the
    pattern lower-cased, a regular expression); ArgumentError naming the flag otherwise."""
    pattern, sep, typ = str(spec).partition("=")
    if not sep or not pattern or not typ:
        raise ArgumentError(f"--tensor-type {spec!r}: expected PATTERN=TYPE, e.g. attn_v=q8_0")
    pattern = pattern.lower()
    try:
        re.compile(pattern)
    except re.error as e:
        raise ArgumentError(f"--tensor-type {spec!r}: {pattern!r} is not a regular expression ({e})") from None
    return pattern, check_tensor_type(typ, f"--tensor-type {spec!r}")


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of layers that get more bits in the _M mixes."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def fallback_type(qtype: str, k: int) -> str:
    """The type a row of ``k`` weights takes when ``qtype``'s block does not divide it."""
    if qtype in _FLOAT or k % qtype_info(qtype).block_size == 0:
        return qtype
    t = FALLBACK.get(qtype, qtype)
    return t if k % qtype_info(t).block_size == 0 else "f16"


def category(name: str) -> str:
    """llama.cpp's tensor_get_category."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                      ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                      ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if part in name:
            return cat
    return "other"


def _layer(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else 0


def mix_layer_indices(names: Iterable[str], overrides: TypeOverrides) -> dict[str, int]:
    """llama.cpp's running counters (qs.i_attention_wv, qs.i_ffn_down) at each attn_v and
    ffn_down tensor of ``names`` (in file order): how many earlier tensors of its kind took their
    type from the mix. A tensor a --tensor-type pattern matches skips the mix and does not count,
    so the layers after it take the "more bits" choices of the layer before, as in llama-quantize."""
    counts = {"attn_v": 0, "ffn_down": 0}
    out = {}
    for name in names:
        cat = category(name)
        if cat in counts:
            out[name] = counts[cat]
            if not any(re.search(p, name) for p, _ in overrides.tensor_types):
                counts[cat] += 1
    return out


def mix_type(name: str, k: int, ft: str, t: str, n_layers: int, tied: bool, n_gqa: int,
             ov: TypeOverrides, layer: int | None = None) -> str:
    """llama_tensor_get_type_impl for llamix's file types: the type of ``name`` in the mix ``ft``,
    starting from ``t`` (the file type's default). ``layer``: llama.cpp's counter for an attn_v or
    ffn_down tensor (:func:`mix_layer_indices`; default: the layer in the name)."""
    ft = FTYPE_AS.get(ft, ft)
    cat = category(name)
    i = _layer(name) if layer is None else layer
    if cat == "output" or (tied and cat == "token_embd"):
        if ov.output_tensor_type:
            return check_tensor_type(ov.output_tensor_type, "--output-tensor-type")
        if k % qtype_info(t).block_size:
            return "q8_0"
        return t if t == "q8_0" else "q6_k"
    if cat == "attn_v":
        if ft == "q2_k":
            return "q4_k" if n_gqa >= 4 else "q3_k"
        if ft == "q3_k_m":
            return "q5_k" if i < 2 else "q4_k"
        if ft == "q3_k_l":
            return "q5_k"
        if ft in ("iq4_nl", "iq4_xs") and n_gqa >= 4:
            return "q5_k"
        if ft in ("q4_k_m", "q5_k_m") and use_more_bits(i, n_layers):
            return "q6_k"
        if ft == "q4_k_s" and i < 4:
            return "q5_k"
        return t
    if cat == "ffn_down":
        if ft == "q2_k":
            return "q3_k"
        if ft == "q3_k_m":
            return "q5_k" if i < n_layers // 16 else "q4_k"
        if ft == "q3_k_l":
            return "q5_k"
        if ft == "q4_k_m":
            return "q6_k" if use_more_bits(i, n_layers) else t
        if i < n_layers // 8 and ft in ("iq4_nl", "iq4_xs") and not ov.has_imatrix:
            return "q5_k"
        if ft == "q5_k_m" and use_more_bits(i, n_layers):
            return "q6_k"
        if ft == "q4_k_s" and i < n_layers // 8:
            return "q5_k"
        if ft == "q4_0" and ov.has_imatrix and i < n_layers // 8:
            return "q4_1"
        return t
    if cat == "attn_output":
        return {"q2_k": "q3_k", "q3_k_m": "q4_k", "q3_k_l": "q5_k"}.get(ft, t)
    return t


def chosen_type(name: str, shape: tuple, ft: str, n_layers: int, tied: bool, *, n_gqa: int = 1,
                overrides: TypeOverrides | None = None, stored: str = "f32", layer: int | None = None) -> str:
    """The type llama_tensor_get_type picks for ``name`` (of ``shape``) in a file of type ``ft`` (a
    FILE_TYPES key), before the fallback for its row length (:func:`fallback_type`).
    ``stored``: the tensor's type in the source (kept by --leave-output-tensor)."""
    ov = overrides or TypeOverrides()
    if len(shape) < 2:
        return "f32"
    cat = category(name)
    if ov.leave_output_tensor and name == "output.weight":
        return stored
    if ov.token_embedding_type and cat == "token_embd":
        return check_tensor_type(ov.token_embedding_type, "--token-embedding-type")
    if ov.output_tensor_type and cat == "output":
        return check_tensor_type(ov.output_tensor_type, "--output-tensor-type")
    t = FILE_TYPES[ft]
    if t in _FLOAT:
        return t
    for pattern, typ in ov.tensor_types:
        if re.search(pattern, name):
            return typ
    return t if ov.pure else mix_type(name, int(shape[-1]), ft, t, n_layers, tied, n_gqa, ov, layer)
