"""The output vocabulary of a merge, as mergekit 0.1.5 builds it (``tokenizer_source:`` or
``tokenizer:``), each input's embedding and output-head rows realigned to it, and the merged
tokenizer files.

Vocabulary (from each model's ``tokenizer.json``, else its ``tokenizer.model`` with the tokens its
folder adds, as transformers reads them; tokens at ids >= the model's ``vocab_size`` are ignored,
as mergekit strips them):
- ``base``: the base model's vocabulary (the first model's without a base); ``<model>``: that
  model's; ``union``: the base's, then every token of the other models it lacks, in model order
  (plain tokens first, then added tokens with their flags); mergekit takes the other models in
  Python set order, so the ids of tokens new in several models can differ from mergekit's, never
  the tokens or their rows.
- tokens named in ``tokenizer.tokens`` are added when missing; ``pad_to_multiple_of`` pads the
  row count (the padding rows are the mean of the real ones, torch's float32 sum divided by the
  count, as mergekit does).

Rows, per vocabulary tensor (embeddings and the output head: first axis the model's vocab size)
and per model of that tensor's inputs: a token the model has takes its own row; otherwise (or
with ``force``) its source: a ``tokens`` entry (a model's row for the token, or for another token
or id, or zeros), else by mergekit's default: the one model that has it, else the base's row if
the base is among the inputs and has it, else the mean of the rows of the models that have it
(summed in model order in the working dtype, then divided), else zeros.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .. import tokenizer
from .config import ConfigError, MergeConfig, TokenSource
from .kernels import scale as round_to
from .sources import parse_ref, read_config, resolve_folder

VOCAB_TENSOR = ("embed", "lm_head", "wte", "output.weight", "embed_out")


def is_vocab_tensor(name: str, shape: tuple[int, ...], vocab_size: Optional[int]) -> bool:
    return bool(shape) and vocab_size is not None and shape[0] == vocab_size and any(k in name for k in VOCAB_TENSOR)


@dataclass
class ModelVocab:
    """One model's tokenizer as the merge uses it."""
    vocab: dict[str, int]                 # token -> id (ids below the model's vocab_size)
    added: dict[str, dict]                # added-token content -> its fields (content, special, ...)
    folder: Path


def _load_tokenizer(folder: Path):
    from tokenizers import Tokenizer  # heavy: only when a vocabulary is built
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def read_vocab(folder: Path, vocab_size: Optional[int]) -> Optional[ModelVocab]:
    """The model's vocabulary from its tokenizer.json, else from its tokenizer.model and the tokens
    the folder adds to it (as transformers reads them), or None if it has neither."""
    if not (folder / "tokenizer.json").is_file():
        return _read_sentencepiece_vocab(folder, vocab_size) if (folder / "tokenizer.model").is_file() else None
    tok = _load_tokenizer(folder)
    limit = vocab_size if vocab_size is not None else tok.get_vocab_size(with_added_tokens=True)
    vocab = {t: i for t, i in tok.get_vocab(with_added_tokens=True).items() if i < limit}
    added = {}
    for i, a in sorted(tok.get_added_tokens_decoder().items()):
        if i < limit and a.content not in added:
            added[a.content] = {"content": a.content, "lstrip": a.lstrip, "normalized": a.normalized, "rstrip": a.rstrip,
                                "single_word": a.single_word, "special": a.special}
    return ModelVocab(vocab, added, folder)


def _read_sentencepiece_vocab(folder: Path, vocab_size: Optional[int]) -> ModelVocab:
    """The pieces of tokenizer.model, then the folder's added tokens (added_tokens.json,
    tokenizer_config.json's added_tokens_decoder); control and unknown pieces count as added
    special tokens, as transformers makes them."""
    # the tokenizer package's names load their modules here, on first use (not at the merge's start)
    Tokenizer, added_tokens = tokenizer.Tokenizer, tokenizer.added_tokens
    CONTROL, UNKNOWN, UNUSED = tokenizer.CONTROL, tokenizer.UNKNOWN, tokenizer.UNUSED
    tok = Tokenizer.from_file(folder / "tokenizer.model")
    limit = vocab_size if vocab_size is not None else tok.vocab_size
    types = tok.token_types
    vocab = {}
    for i, t in enumerate(tok.tokens[:limit]):
        if types[i] != UNUSED:
            vocab.setdefault(t, i)
    special = {i: (t, True) for i, t in enumerate(tok.tokens[:limit]) if types[i] in (CONTROL, UNKNOWN)}
    added = {}
    for i, (t, is_special) in sorted({**special, **added_tokens(folder)}.items()):
        if i < limit and t not in added:
            added[t] = {"content": t, "lstrip": False, "normalized": not is_special, "rstrip": False,
                        "single_word": False, "special": is_special}
    return ModelVocab(vocab, added, folder)


@dataclass
class OutputVocab:
    """The merged vocabulary and how each model's rows map into it."""
    source_folder: Path                    # the tokenizer the output's files start from
    vocab: dict[str, int]                  # token -> output id
    size: int                              # rows of the vocabulary tensors (padded)
    new_tokens: list[tuple[str, dict]]     # tokens added to the source tokenizer, in id order
    perms: dict[str, np.ndarray] = field(default_factory=dict)  # model ref -> output id -> its row or -1
    vocabs: dict[str, dict[str, int]] = field(default_factory=dict)  # model ref -> its token -> id
    tokens: dict[str, TokenSource] = field(default_factory=dict)
    base: Optional[str] = None

    def is_identity(self, ref: str, rows: int) -> bool:
        """The model's rows are the output's as they are (no realignment needed)."""
        p = self.perms[ref]
        return (rows == self.size == len(p) and not self.tokens and np.array_equal(p, np.arange(len(p))))

    # -- realignment of one vocabulary tensor -------------------------------------------------
    def align(self, refs: list[str], arrays: list[np.ndarray], dtype: str) -> list[np.ndarray]:
        """The tensors of `refs` (one per model, rows = that model's vocabulary, in the working
        dtype `dtype`) with rows realigned to the output vocabulary, in that dtype."""
        work = [_to_f32(a, dtype) for a in arrays]
        token_shape = work[0].shape[1:]
        models = list(dict.fromkeys(refs))
        tensor_of = {r: w for r, w in zip(refs, work)}
        configs = dict(self.tokens)
        average = self._default_sources(models, configs)
        defaults: dict[str, np.ndarray] = {}
        for token, tid in self.vocab.items():
            cfg = configs.get(token)
            if not (cfg and cfg.force) and all(self.perms[m][tid] >= 0 for m in models):
                continue
            if token in average:
                acc = np.zeros(token_shape, np.float32)
                count = 0
                for m in models:
                    j = self.perms[m][tid]
                    if j >= 0:
                        acc = _round(acc + tensor_of[m][j], dtype)
                        count += 1
                defaults[token] = _round(acc / np.float32(count), dtype)
            elif cfg is not None:
                defaults[token] = self._configured(token, tid, cfg, tensor_of, token_shape)
        out = []
        n_real = len(self.vocab)
        forced = np.zeros(n_real, bool)
        for token, cfg in configs.items():
            if cfg.force and token in self.vocab:
                forced[self.vocab[token]] = True
        for r in refs:
            p, old = self.perms[r], tensor_of[r]
            new = np.zeros((self.size,) + token_shape, np.float32)
            own = (p >= 0) & ~forced
            new[:n_real][own] = old[p[own]]
            for token, row in defaults.items():
                tid = self.vocab[token]
                if not own[tid]:
                    new[tid] = row
            if self.size > n_real:  # padding rows: the mean of the real ones
                new[n_real:] = _round(torch_column_sums(new[:n_real]) / np.float32(n_real), dtype)
            out.append(_from_f32(new, dtype))
        return out

    def _default_sources(self, models: list[str], configs: dict) -> set:
        """mergekit's default sources for tokens some model lacks; returns the tokens to average."""
        average = set()
        for token, tid in self.vocab.items():
            if token in configs:
                continue
            has = [self.perms[m][tid] >= 0 for m in models]
            if sum(has) == 1:
                configs[token] = TokenSource(kind="model", model=models[has.index(True)])
            elif sum(has) == 0:
                configs[token] = TokenSource(kind="zero")
            elif self.base in models and self.perms[self.base][tid] >= 0:
                configs[token] = TokenSource(kind="model", model=self.base)
            else:
                average.add(token)
        return average

    def _configured(self, token, tid, cfg: TokenSource, tensor_of, token_shape) -> np.ndarray:
        if cfg.kind == "zero":
            return np.zeros(token_shape, np.float32)
        if cfg.model not in tensor_of:
            raise ConfigError(f"tokenizer.tokens[{token!r}]: takes a row of {cfg.model}, which is not an input of "
                              "this tensor")
        rows = tensor_of[cfg.model]
        if cfg.kind == "model_token":
            j = cfg.token_id
            if j is None:
                if cfg.token not in self.vocabs[cfg.model]:
                    raise ConfigError(f"tokenizer.tokens[{token!r}]: token {cfg.token!r} is not in {cfg.model}")
                j = self.vocabs[cfg.model][cfg.token]
            if not 0 <= j < rows.shape[0]:
                raise ConfigError(f"tokenizer.tokens[{token!r}]: token id {j} is out of range for {cfg.model}")
            return rows[j]
        j = self.perms[cfg.model][tid]
        if j < 0:
            raise ConfigError(f"tokenizer.tokens[{token!r}]: {cfg.model} does not have this token")
        return rows[j]

    # -- output files ---------------------------------------------------------------------------
    def write(self, out: Path, chat_template: Optional[str]) -> None:
        """The source's tokenizer files with the new tokens: tokenizer.json (when the source has
        one) and tokenizer_config.json's added_tokens_decoder, which a tokenizer.model-only
        tokenizer is read with (transformers, llama.cpp's converter, llamix); and the chat template."""
        src = self.source_folder
        for f in ("special_tokens_map.json", "tokenizer.model", "generation_config.json", "added_tokens.json"):
            if (src / f).is_file():
                (out / f).write_bytes((src / f).read_bytes())
        if (src / "tokenizer.json").is_file():
            self._write_tokenizer_json(out)
        config = _read_json(src / "tokenizer_config.json")
        decoder = config.get("added_tokens_decoder")
        if not isinstance(decoder, dict):
            decoder = config["added_tokens_decoder"] = {}
        for token, info in self.new_tokens:
            special = bool(info.get("special", False))
            decoder.setdefault(str(self.vocab[token]), {
                "content": token, "lstrip": bool(info.get("lstrip", False)),
                "normalized": bool(info.get("normalized", not special)), "rstrip": bool(info.get("rstrip", False)),
                "single_word": bool(info.get("single_word", False)), "special": special})
        if not decoder:
            del config["added_tokens_decoder"]
        if chat_template is not None:
            config["chat_template"] = chat_template
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    def _write_tokenizer_json(self, out: Path) -> None:
        from tokenizers import AddedToken
        tok = _load_tokenizer(self.source_folder)
        for token, info in self.new_tokens:
            at = AddedToken(token, single_word=info.get("single_word", False), lstrip=info.get("lstrip", False),
                            rstrip=info.get("rstrip", False), normalized=info.get("normalized", not info.get("special")),
                            special=info.get("special", False))
            (tok.add_special_tokens if info.get("special") else tok.add_tokens)([at])
        tok.save(str(out / "tokenizer.json"))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _to_f32(a: np.ndarray, dtype: str) -> np.ndarray:
    a = np.asarray(a)
    if dtype == "bfloat16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def _from_f32(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return np.ascontiguousarray(a, np.float32)
    return round_to(np.ascontiguousarray(a, np.float32), out=dtype)


def _round(a: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to the working dtype (mergekit computes in it), kept as float32."""
    if dtype == "float32":
        return a.astype(np.float32)
    return _to_f32(round_to(np.ascontiguousarray(a, np.float32), out=dtype), dtype).reshape(a.shape)


def torch_column_sums(rows: np.ndarray) -> np.ndarray:
    """torch's float32 sum over the first axis of a contiguous (V, H) array (its outer reduction):
    columns in groups of 32 sum all rows through 4 cascade levels of 2^max(4, ceil_log2(V) / 4)
    rows; groups of 8 further columns and single columns sum the rows as 4 interleaved partial
    sums through the same cascade over groups of 4 rows (then the leftover rows into partial 0,
    then partials 1..3 into it)."""
    rows = np.ascontiguousarray(rows, np.float32).reshape(rows.shape[0], -1)
    V, H = rows.shape
    out = np.zeros(H, np.float32)
    wide = H // 32 * 32
    if wide:
        out[:wide] = _cascade(lambda i: rows[i, :wide], V, wide)
    rest = rows[:, wide:]
    if rest.shape[1]:
        out[wide:] = _interleaved(rest)
    return out


def _ceil_log2(x: int) -> int:
    return 1 if x <= 2 else int(x - 1).bit_length()


def _cascade(item, size: int, width: int) -> np.ndarray:
    """torch's multi_row_sum of one accumulator over `size` items: returns the float32 total."""
    power = max(4, _ceil_log2(size) // 4)
    step = 1 << power
    acc = np.zeros((4, width), np.float32)
    i = 0
    while i + step <= size:
        for _ in range(step):
            acc[0] = acc[0] + item(i)
            i += 1
        for j in range(1, 4):
            acc[j] = acc[j] + acc[j - 1]
            acc[j - 1] = 0
            if i & ((step - 1) << (j * power)):
                break
    while i < size:
        acc[0] = acc[0] + item(i)
        i += 1
    for j in range(1, 4):
        acc[0] = acc[0] + acc[j]
    return acc[0]


def _interleaved(rows: np.ndarray) -> np.ndarray:
    """torch's row_sum over the rows (4 partial sums, each a cascade over groups of 4 rows)."""
    V, W = rows.shape
    groups = V // 4
    parts = [_cascade(lambda g, k=k: rows[4 * g + k], groups, W) for k in range(4)]
    for i in range(groups * 4, V):
        parts[0] = parts[0] + rows[i]
    for k in range(1, 4):
        parts[0] = parts[0] + parts[k]
    return parts[0]


def build_vocab(cfg: MergeConfig, models: dict, base_ref: str, where_of: dict[str, str]) -> Optional[OutputVocab]:
    """The output vocabulary for `tokenizer_source` / `tokenizer`, or None when the config asks for
    neither (the first model's or the base's tokenizer files are then copied as they are)."""
    source = cfg.tokenizer.source if cfg.tokenizer is not None else cfg.tokenizer_source
    if source is None:
        return None
    field_name = "tokenizer.source" if cfg.tokenizer is not None else "tokenizer_source"
    sizes = {ref: info.config.get("vocab_size") for ref, info in models.items()}
    vocabs = {ref: read_vocab(info.path, sizes[ref]) for ref, info in models.items()}
    base = base_ref
    extra = list((cfg.tokenizer.tokens if cfg.tokenizer else {}) or {})
    pad = cfg.tokenizer.pad_to_multiple_of if cfg.tokenizer else None
    src_ref = base if source in ("base", "union") else source
    if src_ref not in models:  # a tokenizer from a model that is not merged: only its files are read
        folder = resolve_folder(parse_ref(src_ref, field_name).model, cfg.base_dir, field_name)
        vocabs[src_ref] = read_vocab(folder, read_config(folder, field_name).get("vocab_size"))
        if vocabs[src_ref] is None:
            raise ConfigError(f"{field_name}: {src_ref} has no tokenizer.json or tokenizer.model")
    missing = [ref for ref, v in vocabs.items() if v is None]
    if missing:
        same = len({sizes[r] for r in models}) == 1 and not extra and not pad and source != "union"
        if same:
            return None  # one vocabulary everywhere: copy the files
        what = f"{field_name}: {source!r}" if source in ("union", "base") else f"{field_name}: {source}"
        raise ConfigError(f"{what} needs each model's tokenizer.json or tokenizer.model to align "
                          "vocabularies; "
                          f"{missing[0]} ({where_of.get(missing[0], 'model')}) has none")
    src = vocabs[src_ref]
    new_tokens: list[tuple[str, dict]] = []
    vocab = dict(src.vocab)

    def add(token: str, info: dict):
        if token in vocab:
            return
        vocab[token] = len(vocab)
        new_tokens.append((token, info))

    if source == "union":
        order = [base] + [r for r in models if r != base]
        plain: list[str] = []
        added: dict[str, dict] = {}
        for ref in order:
            v = vocabs[ref]
            seen = set(plain)
            for token in sorted(v.vocab, key=v.vocab.get):
                if token not in v.added and token not in seen:
                    plain.append(token)
                    seen.add(token)
            for token, info in v.added.items():
                added.setdefault(token, info)
        for token in plain:
            if token not in added:
                add(token, {"special": False, "normalized": True})
        for token, info in added.items():
            add(token, info)
    for token in extra:
        add(token, {"special": False, "normalized": True})
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ConfigError(f"{field_name}: the vocabulary of {src_ref} does not number its tokens 0..n-1")
    size = len(vocab)
    if pad and size % pad:
        size += pad - size % pad
    out = OutputVocab(src.folder, vocab, size, new_tokens, base=base,
                      tokens=dict(cfg.tokenizer.tokens) if cfg.tokenizer else {})
    for ref, v in vocabs.items():
        if ref not in models:
            continue
        p = np.full(len(vocab), -1, np.int64)
        for token, tid in vocab.items():
            j = v.vocab.get(token)
            if j is not None:
                p[tid] = j
        out.perms[ref] = p
        out.vocabs[ref] = v.vocab
    for token, ts in out.tokens.items():
        if ts.model is not None and ts.model not in models:
            raise ConfigError(f"tokenizer.tokens[{token!r}].source: {ts.model} is not one of the merged models")
        # a source that cannot give the row, said now (naming the config) rather than when the
        # embeddings are merged: where the source is used (forced, or a model lacks the token)
        tid = vocab.get(token)
        if ts.model is None or tid is None or not (ts.force or any(p[tid] < 0 for p in out.perms.values())):
            continue
        if ts.kind == "model" and out.perms[ts.model][tid] < 0:
            raise ConfigError(f"tokenizer.tokens[{token!r}].source: {ts.model} does not have this token")
        if ts.kind == "model_token" and ts.token_id is None and ts.token not in out.vocabs[ts.model]:
            raise ConfigError(f"tokenizer.tokens[{token!r}].source: token {ts.token!r} is not in {ts.model}")
    return out

