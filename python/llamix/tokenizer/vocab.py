"""A vocabulary in GGUF's terms, read from ``tokenizer.ggml.*`` metadata and checked.

Source: llama.cpp ``src/llama-vocab.cpp`` (``llama_vocab::impl::load``): the token types, the
default special ids and ``add_bos`` of each tokenizer model, the special tokens found by their
text (end of turn, fill-in-the-middle) and the end-of-generation set. Keys:

``tokenizer.ggml.model``        ``llama`` (SentencePiece) or ``gpt2`` (byte-level BPE)
``tokenizer.ggml.pre``          the BPE pre-tokenizer (see pretokenizers.py)
``tokenizer.ggml.tokens``       the token texts (SentencePiece: U+2581 for a space; BPE: GPT-2's
                                byte-to-character mapping)
``tokenizer.ggml.token_type``   1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
                                (SentencePiece's piece types), 0 undefined
``tokenizer.ggml.scores``       SentencePiece merge priorities
``tokenizer.ggml.merges``       BPE merges ``"left right"``, highest priority first
``tokenizer.ggml.{bos,eos,eot,eom,unknown,seperator,padding}_token_id``, ``add_bos_token``,
``add_eos_token``, ``add_space_prefix``
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import FormatError
from .pretokenizers import PRE_TOKENIZERS, PreTokenizer

# GGUF token types (llama.cpp's enum llama_token_type; SentencePiece's piece types from 1)
UNDEFINED, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = range(7)

MODELS = {"llama": "SentencePiece", "gpt2": "byte-level BPE"}
K = "tokenizer.ggml."

# Tokens llama.cpp recognises by their text (llama_vocab::impl::load): it ends generation at
# every token of EOG_TEXTS present in the vocabulary, takes the first EOT_TEXTS match as the
# end-of-turn token when the metadata names none, and the fill-in-the-middle pad / repo / file
# separator tokens end generation too.
EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
             "_<EOT>", "[EOT]", "<\uff5cend\u2581of\u2581sentence\uff5c>", "<end_of_utterance>")
EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
             "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
             "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
             "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~[")
FIM_TEXTS = {
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
# gpt-oss writes these as control tokens but they are part of the text llama.cpp renders
ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")


@dataclass
class Vocab:
    """A vocabulary as llama.cpp reads it: token texts and types, special ids, and how text is
    tokenized (``model``, ``pre``, ``add_bos`` ...). ``types`` are as stored; ``attrs`` are the
    types llama.cpp acts on (end-of-generation texts count as control tokens)."""
    model: str                              # "llama" or "gpt2"
    tokens: list[str]
    types: np.ndarray                       # int32, one per token
    scores: np.ndarray | None = None        # float32 (SentencePiece)
    merges: list[str] | None = None         # "left right" (BPE)
    pre: str | None = None                  # tokenizer.ggml.pre (BPE)
    bos_id: int = -1
    eos_id: int = -1
    unk_id: int = -1
    pad_id: int = -1
    sep_id: int = -1
    eot_id: int = -1
    eom_id: int = -1
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool = False
    name: str = ""                          # general.name (llama.cpp keys a few token attributes on it)
    extra_eos: tuple[int, ...] = ()         # further end-of-generation ids (generation_config.json)
    attrs: np.ndarray = field(init=False, repr=False)
    eog: tuple[int, ...] = field(init=False)
    rstrip: frozenset = field(init=False, repr=False)   # special ids that swallow the whitespace after them
    lstrip: frozenset = field(init=False, repr=False)   # ... and before them

    def __post_init__(self) -> None:
        self.types = np.asarray(self.types, dtype=np.int32)
        self.finish()

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def pre_tokenizer(self) -> PreTokenizer | None:
        return PRE_TOKENIZERS.get(self.pre or "default") if self.model == "gpt2" else None

    def finish(self) -> None:
        """Derive ``attrs``, the end-of-generation set and the strip flags (llama.cpp's load, after
        the metadata): call again after changing tokens, types or ids."""
        attrs = self.types.copy()
        index = {t: i for i, t in enumerate(self.tokens)}

        def promote(i: int) -> None:
            if attrs[i] != CONTROL:
                attrs[i] = CONTROL

        if self.eot_id < 0:
            self.eot_id = next((index[t] for t in EOT_TEXTS if t in index), -1)
            if self.eot_id >= 0:
                promote(self.eot_id)
        if self.eom_id < 0 and "<|eom_id|>" in index:
            self.eom_id = index["<|eom_id|>"]
            promote(self.eom_id)
        eog = set()
        for texts in FIM_TEXTS.values():
            i = next((index[t] for t in texts if t in index), -1)
            if i >= 0:
                promote(i)
                eog.add(i)
        for t in EOG_TEXTS:
            if t in index:
                eog.add(index[t])
                promote(index[t])
        for t in ALWAYS_RENDERED:
            if t in index:
                attrs[index[t]] = USER_DEFINED
        eog |= {i for i in (self.eos_id, self.eot_id, self.eom_id, *self.extra_eos) if 0 <= i < self.size}
        # gpt-oss / solar-open: <|end|> ends a message, not the generation, when <|return|> and
        # <|call|> (or <|calls|> and <|flush|>) are there
        texts = {self.tokens[i] for i in eog}
        if "<|end|>" in texts and ({"<|return|>", "<|call|>"} <= texts or {"<|calls|>", "<|flush|>"} <= texts):
            eog.discard(index["<|end|>"])
            attrs[index["<|end|>"]] = USER_DEFINED
        if "<|tool_response>" in texts and "</s>" in texts:
            eog.discard(index["</s>"])
            attrs[index["</s>"]] = NORMAL
        self.attrs = attrs
        self.eog = tuple(sorted(eog))
        rstrip: set[int] = set()
        if "phi-3" in self.name.lower() or "phi3" in self.name.lower():
            # llama.cpp's phi-3 rule: special tokens eat the spaces after them, but not these
            rstrip = {int(i) for i in np.flatnonzero(np.isin(attrs, (CONTROL, USER_DEFINED, UNKNOWN)))}
            rstrip |= {index[t] for t in ("</s>",) if t in index}
            rstrip -= {index[t] for t in ("<unk>", "<s>", "<|endoftext|>") if t in index}
        self.rstrip = frozenset(rstrip)
        self.lstrip = frozenset()

    def special_ids(self, parse_special: bool) -> np.ndarray:
        """Ids whose text is cut out of the input before tokenizing: user-defined tokens always,
        control and unknown tokens when ``parse_special`` (llama.cpp's tokenizer_st_partition)."""
        kinds = (USER_DEFINED, CONTROL, UNKNOWN) if parse_special else (USER_DEFINED,)
        return np.flatnonzero(np.isin(self.attrs, kinds))


# --- reading metadata ---------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _get_int(meta: Mapping, key: str, source: str) -> int | None:
    if key not in meta:
        return None
    v = meta[key]
    if not _is_int(v):
        raise FormatError(f"{source}: {key} should be an integer, got {type(v).__name__} {v!r:.40}")
    return int(v)


def _get_bool(meta: Mapping, key: str, source: str) -> bool | None:
    if key not in meta:
        return None
    v = meta[key]
    if not isinstance(v, (bool, np.bool_)):
        raise FormatError(f"{source}: {key} should be a boolean, got {type(v).__name__} {v!r:.40}")
    return bool(v)


def _get_str(meta: Mapping, key: str, source: str) -> str | None:
    if key not in meta:
        return None
    v = meta[key]
    if not isinstance(v, str):
        raise FormatError(f"{source}: {key} should be a string, got {type(v).__name__} {v!r:.40}")
    return v


def _get_strings(meta: Mapping, key: str, source: str) -> list[str] | None:
    if key not in meta:
        return None
    v = meta[key]
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
        raise FormatError(f"{source}: {key} should be an array of strings, got {_describe(v)}")
    return list(v)


def _get_numbers(meta: Mapping, key: str, source: str, n: int, kind: str) -> np.ndarray | None:
    """A numeric array of at least ``n`` entries (llama.cpp reads the first n), ``kind`` "i" or "f"."""
    if key not in meta:
        return None
    v = meta[key]
    arr = np.asarray(v) if isinstance(v, (list, tuple, np.ndarray)) else None
    ok = "iu" if kind == "i" else "iuf"
    if arr is None or arr.ndim != 1 or (arr.size and arr.dtype.kind not in ok):
        raise FormatError(f"{source}: {key} should be an array of {'integers' if kind == 'i' else 'numbers'}, "
                         f"got {_describe(v)}")
    if arr.size < n:
        raise FormatError(f"{source}: {key} has {arr.size} entries but tokenizer.ggml.tokens has {n}")
    return arr[:n]


def _describe(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"an array of {v.dtype}"
    if isinstance(v, (list, tuple)):
        kinds = sorted({type(x).__name__ for x in v[:1000]})
        return f"a list of {'/'.join(kinds) or 'nothing'}"
    return f"{type(v).__name__} {v!r:.40}"


def vocab_from_gguf_metadata(meta: Mapping, source: str = "GGUF") -> Vocab:
    """Read and check a vocabulary from ``tokenizer.ggml.*`` metadata (a plain dict, as
    :class:`llamix.formats.gguf.GGUFReader` gives it). Raises ValueError naming ``source`` and the
    key for anything missing, of the wrong type or out of range."""
    model = _get_str(meta, K + "model", source)
    if model is None:
        what = f"{source}: no tokenizer in the metadata (tokenizer.ggml.model missing)"
        files = "a tokenizer.model, tokenizer.json or GGUF file"
        raise FormatError(f"{what}; pass tokenizer= {files}", cli=f"{what}; give --tokenizer FILE ({files})")
    if model in ("no_vocab", "none"):
        raise FormatError(f"{source}: tokenizer.ggml.model = {model!r}: the file has no vocabulary")
    if model not in MODELS:
        raise FormatError(f"{source}: tokenizer.ggml.model = {model!r} is not supported "
                         f"({', '.join(f'{k!r} ({v})' for k, v in MODELS.items())})")
    tokens = _get_strings(meta, K + "tokens", source)
    if not tokens:
        raise FormatError(f"{source}: tokenizer.ggml.tokens is missing or empty")
    n = len(tokens)
    # llama.cpp names empty tokens rather than refusing the file
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
    if len(set(tokens)) != n:
        seen: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if t in seen:
                raise FormatError(f"{source}: tokenizer.ggml.tokens holds {t!r} twice (ids {seen[t]} and {i})")
            seen[t] = i
    types = _get_numbers(meta, K + "token_type", source, n, "i")
    if types is None:
        types = np.full(n, NORMAL, np.int32)
    elif types.size and (types.min() < 0 or types.max() > BYTE):
        bad = int(np.flatnonzero((types < 0) | (types > BYTE))[0])
        raise FormatError(f"{source}: tokenizer.ggml.token_type[{bad}] = {types[bad]} is not a token type (0..6)")
    scores = _get_numbers(meta, K + "scores", source, n, "f")
    merges = _get_strings(meta, K + "merges", source)
    pre = _get_str(meta, K + "pre", source)
    v = Vocab(model, tokens, types, scores=None if scores is None else scores.astype(np.float32),
              name=str(meta.get("general.name", "") or ""))
    if model == "llama":
        v.bos_id, v.eos_id, v.unk_id = 1, 2, 0
        v.add_bos, v.add_space_prefix = True, True
    else:
        if merges is None:
            raise FormatError(f"{source}: tokenizer.ggml.model = 'gpt2' (byte-level BPE) needs its merges, but "
                             "tokenizer.ggml.merges is missing")
        pre = pre or "default"
        pt = PRE_TOKENIZERS.get(pre)
        if pt is None:
            raise FormatError(f"{source}: tokenizer.ggml.pre = {pre!r} is not a pre-tokenizer llamix knows "
                             f"(llama.cpp's names: {', '.join(sorted(PRE_TOKENIZERS))})")
        v.merges, v.pre = merges, pre
        v.bos_id = v.eos_id = 11  # llama.cpp's defaults for gpt2 vocabularies (Falcon's)
        v.bos_id = -1 if pt.no_bos else v.bos_id
        v.add_bos = pt.add_bos
    for key, attr in (("bos", "bos_id"), ("eos", "eos_id"), ("eot", "eot_id"), ("eom", "eom_id"),
                      ("unknown", "unk_id"), ("seperator", "sep_id"), ("padding", "pad_id")):
        if getattr(v, attr) >= n:  # a default beyond a small vocabulary is no token
            setattr(v, attr, -1)
        idx = _get_int(meta, f"{K}{key}_token_id", source)
        if idx is None:
            continue
        if not 0 <= idx < n:
            raise FormatError(f"{source}: tokenizer.ggml.{key}_token_id = {idx} is outside the vocabulary of {n} tokens")
        setattr(v, attr, idx)
    for key, attr in (("add_bos_token", "add_bos"), ("add_eos_token", "add_eos"), ("add_space_prefix", "add_space_prefix")):
        b = _get_bool(meta, K + key, source)
        if b is not None:
            setattr(v, attr, b)
    if v.add_bos and v.bos_id < 0:
        raise FormatError(f"{source}: tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set")
    if v.add_eos and v.eos_id < 0:
        raise FormatError(f"{source}: tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set")
    v.finish()
    return v
