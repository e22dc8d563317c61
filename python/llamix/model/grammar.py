"""Constrained decoding: an OpenAI ``response_format`` (a JSON object, or one that validates against
a JSON schema) as a mask over the vocabulary, applied to the logits before sampling.

The grammar engine is llguidance (Microsoft's Low-level Guidance; the engine llama.cpp's own
``--json-schema`` can use). Chosen over the other well-kept libraries after trying them here:
- llguidance is a self-contained Rust wheel (numpy is its only Python-side need), builds its
  token table from any vocabulary given as bytes (so llamix's own tokenizer, SentencePiece or
  byte-level BPE, plugs in directly), compiles a schema in milliseconds and computes a mask in a
  few (an Earley parser over a lexer, not a precomputed automaton per schema), and covers most of
  JSON Schema (formats, patterns, min/max lengths and items, anyOf, $ref);
- xgrammar requires torch, transformers and triton at install time;
- outlines-core compiles each schema to a regular-expression index over the whole vocabulary,
  which costs seconds per schema on a 150k-token vocabulary and limits recursive schemas.

llguidance is imported on first use. Whitespace between JSON tokens is limited to
:data:`MAX_WHITESPACE` characters per gap, so a sampled run of newlines cannot go on until
``max_tokens`` cuts the JSON short.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from ..tokenizer import Tokenizer

MAX_WHITESPACE = 32
_WS = rf"[\x20\x0A\x0D\x09]{{0,{MAX_WHITESPACE}}}"


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise ImportError("response_format needs the llguidance package: pip install llguidance") from None
    return llguidance


def schema_of(response_format: Mapping | None) -> dict | None:
    """The JSON schema an OpenAI / llama-cpp-python ``response_format`` asks for (None: free
    text). ``{"type": "json_object"}`` is any JSON object (or its ``schema``, as llama-cpp-python
    takes it); ``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}`` the
    schema given. Raises ValueError for anything else."""
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise ValueError(f"response_format must be a dict, got {type(response_format).__name__}")
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema") or {"type": "object"}
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise ValueError('response_format {"type": "json_schema"} needs "json_schema": {"name": ..., "schema": {...}}')
        schema = spec.get("schema", spec if "name" not in spec else None)
        if schema is None:
            raise ValueError('response_format "json_schema" has no "schema"')
    else:
        raise ValueError(f"response_format type {kind!r} is not supported (text, json_object, json_schema)")
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise ValueError(f"response_format schema is not JSON: {e}") from None
    if not isinstance(schema, Mapping):
        raise ValueError(f"response_format schema must be a JSON object, got {type(schema).__name__}")
    return dict(schema)


def tool_call_grammar(tools: Sequence[Mapping], name: str | None = None) -> str:
    """A grammar (llguidance's Lark) for a reply that is one tool call, written as the tool-call
    parser reads it, ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``: the
    tool ``name`` (None: any of ``tools``) with arguments valid against its ``parameters``
    schema. Raises ValueError when no tool has that name."""
    options = []
    for t in tools:
        f = t.get("function", t) if isinstance(t, Mapping) else None
        if not isinstance(f, Mapping) or not isinstance(f.get("name"), str):
            raise ValueError(f"tools: each tool needs a function name, got {t!r}")
        if name is None or f["name"] == name:
            options.append({"type": "object", "properties": {"name": {"const": f["name"]},
                                                             "arguments": dict(f.get("parameters") or {"type": "object"})},
                            "required": ["name", "arguments"], "additionalProperties": False})
    if not options:
        raise ValueError(f"tool_choice names the function {name!r}, which is not among the tools")
    schema = {**(options[0] if len(options) == 1 else {"anyOf": options}), "x-guidance": {"whitespace_pattern": _WS}}
    return 'start: "<tool_call>\\n" call "\\n</tool_call>"\ncall: %json ' + json.dumps(schema)


class _Vocabulary:
    """What llguidance's TokenizerWrapper reads: each token's bytes (special tokens as 0xFF + their
    text, which no grammar matches), the end-of-generation ids and a tokenize function."""

    def __init__(self, tok: Tokenizer, n_vocab: int, eos_ids: Sequence[int]):
        pieces = tok.token_bytes()
        self.tokens = [p if p else b"\xff" + tok.tokens[i].encode("utf-8") for i, p in enumerate(pieces)]
        self.special_token_ids = [i for i, p in enumerate(pieces) if not p]
        self.tokens += [b""] * max(0, n_vocab - len(self.tokens))  # embedding rows past the vocabulary
        self.eos_token_id = int(eos_ids[0]) if eos_ids else int(tok.eos_id)
        self.bos_token_id = tok.bos_id if tok.bos_id >= 0 else None
        self._tok = tok

    def __call__(self, text) -> list[int]:
        """Ids whose bytes are exactly ``text`` (llguidance tokenizes the bytes a grammar forces).
        A SentencePiece vocabulary writes a space before a text (its dummy prefix), so the text
        is tokenized after a newline whose tokens are then dropped; failing both, the longest
        matching tokens, left to right."""
        data = bytes(text) if isinstance(text, (bytes, bytearray)) else str(text).encode("utf-8")
        text = data.decode("utf-8", errors="replace")
        for prefix in ("", "\n"):
            ids = self._tok.encode(prefix + text, add_special=False, parse_special=False)
            pieces = [self.tokens[i] for i in ids]
            for k in range(len(ids) + 1):
                if b"".join(pieces[k:]) == data:
                    return ids[k:]
                if len(b"".join(pieces[:k])) > len(prefix) + 1:
                    break
        return self._longest_match(data)

    def _longest_match(self, data: bytes) -> list[int]:
        if not hasattr(self, "_by_bytes"):
            self._by_bytes = {}
            for i, b in enumerate(self.tokens):
                if b and not b.startswith(b"\xff"):
                    self._by_bytes.setdefault(b, i)
            self._longest = max(map(len, self._by_bytes))
        ids, at = [], 0
        while at < len(data):
            for n in range(min(self._longest, len(data) - at), 0, -1):
                i = self._by_bytes.get(data[at:at + n])
                if i is not None:
                    ids.append(i)
                    at += n
                    break
            else:
                raise ValueError(f"the vocabulary has no token for the byte {data[at]:#04x}")
        return ids


def grammar_tokenizer(tok: Tokenizer, n_vocab: int, eos_ids: Sequence[int]) -> Any:
    """llguidance's view of a vocabulary (takes about 0.5 s for 150k tokens: build once per model)."""
    llg = _llguidance()
    vocab = _Vocabulary(tok, n_vocab, eos_ids)
    return llg.LLTokenizer(llg.TokenizerWrapper(vocab), n_vocab=len(vocab.tokens), eos_token=[int(i) for i in eos_ids])


class JSONConstraint:
    """One request's grammar state: :meth:`mask` the logits, :meth:`accept` the sampled token.

    When the JSON is complete only end-of-generation tokens are allowed, so generation ends there.
    """

    def __init__(self, ll_tokenizer: Any, schema: Mapping | None, n_vocab: int, grammar: str | None = None):
        """``schema``: a JSON schema; or ``grammar``: a grammar text instead, llama.cpp's GBNF or
        llguidance's Lark (as :func:`tool_call_grammar` writes)."""
        llg = _llguidance()
        what = "grammar" if grammar is not None else "response_format schema"
        try:
            if grammar is not None:
                grammar = llg.grammar_from("gbnf", grammar)   # GBNF, or Lark (told apart by llguidance)
            else:
                grammar = llg.LLMatcher.grammar_from_json_schema(dict(schema), overrides={"whitespace_pattern": _WS})
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
        self._m = llg.LLMatcher(ll_tokenizer, grammar, log_level=0)
        if self._m.is_error():
            raise ValueError(f"{what} cannot be used: {self._m.get_error()}")
        self.n_vocab = n_vocab

    def allowed(self) -> np.ndarray:
        """bool (n_vocab,): the tokens the grammar accepts next."""
        bits = np.frombuffer(self._m.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[:self.n_vocab].astype(bool)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A copy of ``logits`` with every token the grammar refuses at -inf."""
        out = np.array(logits, dtype=np.float32, copy=True)
        out[:self.n_vocab][~self.allowed()] = -np.inf
        return out

    def accept(self, token: int) -> None:
        if not self._m.consume_token(int(token)):
            raise RuntimeError(f"token {token} does not satisfy the grammar: {self._m.get_error()}")

    @property
    def stopped(self) -> bool:
        """The grammar can take no further token (the JSON is complete)."""
        return bool(self._m.is_stopped())
