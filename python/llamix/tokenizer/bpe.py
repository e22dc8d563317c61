"""Byte-level BPE (``tokenizer.ggml.model = gpt2``) on Hugging Face's ``tokenizers`` library, and
Hugging Face ``tokenizer.json`` files.

From GGUF metadata the tokenizer is assembled as llama.cpp's ``llm_tokenizer_bpe`` works
(``src/llama-vocab.cpp``): the pre-tokenizer's regular expressions split the text (each one's
matches and the text between them become pieces, ``Split(behavior="isolated")``), each piece's
UTF-8 bytes are mapped to GPT-2's printable characters (``ByteLevel``), and the merges are applied
by rank (``models.BPE``; ``ignore_merges`` where llama.cpp takes a piece that is a token whole).
Special tokens are cut out of the text before, by the Tokenizer, so the library sees none.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import FormatError, parse_json
from .pretokenizers import CONTRACTIONS, GPT2, PRE_TOKENIZERS
from .vocab import BYTE, CONTROL, NORMAL, UNUSED, USER_DEFINED, Vocab


def byte_to_char() -> dict[int, str]:
    """GPT-2's mapping of the 256 byte values to printable characters (``bytes_to_unicode`` in
    OpenAI's encoder.py; llama.cpp's ``unicode_byte_to_utf8``): printable Latin-1 bytes map to
    themselves, the others to U+0100 onwards in byte order."""
    keep = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


# str.translate table: GPT-2 character -> the byte it stands for (as a Latin-1 character)
CHAR_TO_BYTE = {ord(c): b for b, c in byte_to_char().items()}


def token_bytes(text: str) -> bytes:
    """The bytes a byte-level token stands for; characters outside GPT-2's byte alphabet (which a
    well-formed vocabulary has none of) are kept as their UTF-8."""
    t = text.translate(CHAR_TO_BYTE)
    try:
        return t.encode("latin-1")
    except UnicodeEncodeError:
        return b"".join(c.encode("latin-1") if ord(c) < 256 else c.encode("utf-8") for c in t)


def split_merges(merges: list[str], index: dict[str, int] | None = None) -> list[tuple[str, str]]:
    """``"left right"`` merges as pairs, split at the first space after the first character (as
    llama.cpp does, so a left part may begin with a space); entries without one are left out.
    With ``index``, merges naming a part or a result that is not a token are left out too: they
    could never produce a token, llama.cpp keeps them without effect, the ``tokenizers`` library
    refuses them."""
    out = []
    for m in merges:
        p = m.find(" ", 1)
        if p > 0:
            out.append((m[:p], m[p + 1:]))
    if index is not None:
        out = [(a, b) for a, b in out if a in index and b in index and a + b in index]
    return out


CACHE_WORDS = 1 << 17


def tokenizer_from_vocab(vocab: Vocab):
    """A ``tokenizers.Tokenizer`` encoding raw text (no special tokens) as llama.cpp's BPE does."""
    import tokenizers

    pre = vocab.pre_tokenizer
    index = {t: i for i, t in enumerate(vocab.tokens)}
    pairs = split_merges(vocab.merges or [])
    # the word cache: the library's default (10000 words) misses often on long texts; 2^17 words
    # made 1 MB of mixed text 1.6x faster
    kw = dict(ignore_merges=pre.ignore_merges, cache_capacity=CACHE_WORDS)
    try:
        model = tokenizers.models.BPE(index, pairs, **kw)
    except Exception:  # noqa: BLE001 - a merge outside the vocabulary: check each (slower) and build again
        model = tokenizers.models.BPE(index, split_merges(vocab.merges or [], index), **kw)
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizer(pre.expressions)
    return tok


def pre_tokenizer(expressions: tuple[str, ...]):
    import tokenizers

    pts = tokenizers.pre_tokenizers
    return pts.Sequence([pts.Split(tokenizers.Regex(e), behavior="isolated") for e in expressions]
                        + [pts.ByteLevel(add_prefix_space=False, use_regex=False)])


# A place where every pre-tokenizer of PRE_TOKENIZERS ends a piece: a newline between a
# non-space character and an ASCII letter. No expression lets a piece run from a newline into a
# letter, and with a non-space character before it the newline's own piece is the same whether
# the text goes on or ends there (GPT-2's ``\s+(?!\S)`` would take spaces before it along at the
# end of a text, but not in the middle).
_SAFE_CUT = re.compile(r"(?<=\S)\n(?=[A-Za-z])")
CHUNK_CHARS = 1 << 15


def cut_points(text: str, every: int = CHUNK_CHARS) -> list[int]:
    """Positions (after a safe newline) that cut ``text`` into pieces of about ``every`` characters."""
    cuts, pos = [], every
    while pos < len(text):
        m = _SAFE_CUT.search(text, pos)
        if m is None:
            break
        cuts.append(m.end())
        pos = m.end() + every
    return cuts


class HFBackend:
    """Encodes text fragments with a ``tokenizers.Tokenizer`` (special tokens are cut out before,
    and the library is told not to look for them: ``encode_special_tokens``).

    ``chunk``: cut long fragments at newlines where every llama.cpp pre-tokenizer ends a piece
    (:func:`cut_points`), so the library encodes the pieces in parallel; only for tokenizers built
    from GGUF metadata, whose pre-tokenizers are known.
    """

    def __init__(self, hf, chunk: bool = False):
        self.hf = hf
        self.chunk = chunk
        hf.encode_special_tokens = True

    def encode(self, fragments: list[str]) -> list[list[int]]:
        pieces, owner = [], []
        for k, f in enumerate(fragments):
            bounds = [0, *(cut_points(f) if self.chunk and len(f) > 2 * CHUNK_CHARS else []), len(f)]
            for a, b in zip(bounds, bounds[1:]):
                pieces.append(f[a:b])
                owner.append(k)
        out: list[list[int]] = [[] for _ in fragments]
        # the "fast" batch call skips the character offsets, a third of the time on long texts
        for k, e in zip(owner, self.hf.encode_batch_fast(pieces, add_special_tokens=False)):
            out[k].extend(e.ids)
        return out

    def decode(self, ids: list[int], special: bool) -> str:
        return self.hf.decode(ids, skip_special_tokens=not special)


# --- tokenizer.json -----------------------------------------------------------------------------
def load_tokenizer_json(path: Path):
    """A ``tokenizers.Tokenizer`` from a tokenizer.json file (ValueError naming it if unreadable)."""
    import tokenizers

    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - the library raises plain Exception for any parse problem
        raise FormatError(f"{path}: not a Hugging Face tokenizer.json ({e})") from None


def _token_text(v) -> str | None:
    """A special token of tokenizer_config.json: a string, or an AddedToken dict."""
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    d = parse_json(path.read_bytes(), str(path), want=None)
    return d if isinstance(d, dict) else {}


def folder_settings(folder: Path) -> dict:
    """What a Hugging Face folder says about BOS/EOS beside its tokenizer files:
    tokenizer_config.json (``bos_token``, ``eos_token``, ``add_bos_token``, ``add_eos_token``),
    and the end-of-generation ids of generation_config.json and config.json."""
    cfg = _read_json(folder / "tokenizer_config.json")
    out: dict = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        if _token_text(cfg.get(key)) is not None:
            out[key] = _token_text(cfg[key])
    for key in ("add_bos_token", "add_eos_token"):
        if isinstance(cfg.get(key), bool):
            out[key] = cfg[key]
    eos = []
    for name in ("generation_config.json", "config.json"):
        e = _read_json(folder / name).get("eos_token_id")
        eos += [x for x in (e if isinstance(e, list) else [e]) if isinstance(x, int) and not isinstance(x, bool)]
    out["eos_ids"] = tuple(dict.fromkeys(eos))
    return out


def vocab_from_hf(hf, settings: dict, source: str) -> Vocab:
    """The vocabulary of a ``tokenizers.Tokenizer`` in GGUF's terms, as llama.cpp's
    convert_hf_to_gguf.py writes it: added special tokens are control tokens, other added tokens
    user-defined, ids without a token ``[PAD<id>]`` (unused)."""
    n = hf.get_vocab_size(with_added_tokens=True)
    vocab = hf.get_vocab(with_added_tokens=True)
    n = max(n, max(vocab.values(), default=-1) + 1)
    tokens: list[str | None] = [None] * n
    for t, i in vocab.items():
        tokens[i] = t
    types = np.full(n, NORMAL, np.int32)
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i], types[i] = f"[PAD{i}]", UNUSED
    lstrip, rstrip = set(), set()
    for i, added in hf.get_added_tokens_decoder().items():
        types[i] = CONTROL if added.special else USER_DEFINED
        if added.lstrip:
            lstrip.add(i)
        if added.rstrip:
            rstrip.add(i)
    spec = json.loads(hf.to_str())
    model = spec.get("model") or {}
    byte_level = _uses(spec.get("pre_tokenizer"), "ByteLevel") or _uses(spec.get("decoder"), "ByteLevel")
    if model.get("byte_fallback"):
        for i, t in enumerate(tokens):
            if len(t) == 6 and t.startswith("<0x") and t.endswith(">") and types[i] == NORMAL:
                types[i] = BYTE
    index = {t: i for i, t in enumerate(tokens)}

    def idx(key: str) -> int:
        t = settings.get(key)
        return index.get(t, -1) if t is not None else -1

    v = Vocab("gpt2" if byte_level else "llama", tokens, types, name=str(source))
    v.bos_id, v.eos_id, v.unk_id, v.pad_id = idx("bos_token"), idx("eos_token"), idx("unk_token"), idx("pad_token")
    # without tokenizer_config.json, read BOS/EOS off what the post-processor adds
    with_special = hf.encode("a", add_special_tokens=True).ids
    plain = hf.encode("a", add_special_tokens=False).ids
    k = _find(with_special, plain)
    added_front, added_back = with_special[:k], with_special[k + len(plain):] if k >= 0 else []
    if v.bos_id < 0 and added_front:
        v.bos_id = added_front[0]
    if v.eos_id < 0 and added_back:
        v.eos_id = added_back[-1]
    v.add_bos = settings.get("add_bos_token", bool(added_front) and added_front[0] == v.bos_id)
    v.add_eos = settings.get("add_eos_token", bool(added_back) and added_back[-1] == v.eos_id)
    v.add_bos = v.add_bos and v.bos_id >= 0
    v.add_eos = v.add_eos and v.eos_id >= 0
    v.extra_eos = tuple(i for i in settings.get("eos_ids", ()) if 0 <= i < n)
    if v.eos_id < 0 and v.extra_eos:
        v.eos_id = v.extra_eos[0]
    if v.model == "gpt2":
        merges = model.get("merges") or []
        v.merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    v.finish()
    v.lstrip, v.rstrip = frozenset(lstrip), frozenset(rstrip)
    return v


def _find(seq: list[int], sub: list[int]) -> int:
    for k in range(len(seq) - len(sub) + 1):
        if seq[k:k + len(sub)] == sub:
            return k
    return -1


def _uses(component, kind: str) -> bool:
    """Whether a tokenizer.json component (or a Sequence of them) is or contains ``kind``."""
    if not isinstance(component, dict):
        return False
    if component.get("type") == kind:
        return True
    return any(_uses(c, kind) for key in ("pretokenizers", "decoders", "normalizers")
               for c in component.get(key) or [])


def _split_patterns(component) -> list[str]:
    r"""The regular expressions a tokenizer.json pre-tokenizer splits by, in order (a ByteLevel
    pre-tokenizer with ``use_regex`` splits by GPT-2's, which tokenizers ends with ``|\s+``:
    llama.cpp writes it without, its matcher taking whitespace before a non-space the same way)."""
    if not isinstance(component, dict):
        return []
    kind = component.get("type")
    if kind == "Sequence":
        return [p for c in component.get("pretokenizers") or [] for p in _split_patterns(c)]
    if kind == "Split" and isinstance(component.get("pattern"), dict) and "Regex" in component["pattern"]:
        return [component["pattern"]["Regex"]]
    if kind == "ByteLevel" and component.get("use_regex", True):
        return [GPT2]
    return []


def _as_written(expression: str) -> str:
    """A llama.cpp expression as the models' tokenizer.json files write it (llama.cpp spells
    their case-insensitive contractions out)."""
    return expression.replace(CONTRACTIONS, "(?i:'s|'t|'re|'ve|'m|'ll|'d)")


_PROBE = ("Hello World! It's 1234567 o'clock, ABC DEF ghi. \n\n  \t  three  spaces\r\n"
          "d\u00e9j\u00e0 vu \u2014 \u00fcn\u00efc\u00f6d\u00e9 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4 "
          "\U0001f999\U0001f389 #$%^&*(){}[] x=1+2; y += 3 ... 's 've 'RE ''' \"\" ``` 3.14159 1,000,000 "
          "\u00a0nbsp  end  \n")


def detect_pre(hf, vocab: Vocab, source: str) -> str:
    """The ``tokenizer.ggml.pre`` name under which llama.cpp tokenizes as this tokenizer.json does.

    Candidates whose expressions are the ones the file splits by come first (llama.cpp's comments
    give each type's original expression), then all others; the first one whose tokenizer, built
    from the same vocabulary and merges, gives the same ids on a probe text is taken (what
    convert_hf_to_gguf.py checks with a hash of the ids). ValueError naming ``source`` if none does.
    """
    want = hf.encode(_PROBE, add_special_tokens=False).ids
    spec = json.loads(hf.to_str())
    written = _split_patterns(spec.get("pre_tokenizer"))
    ignore = bool((spec.get("model") or {}).get("ignore_merges"))
    same = [name for name, pre in PRE_TOKENIZERS.items()
            if [_as_written(e) for e in pre.expressions] == written or list(pre.expressions) == written]
    same.sort(key=lambda name: PRE_TOKENIZERS[name].ignore_merges != ignore)
    order = same + [name for name in PRE_TOKENIZERS if name not in same]
    built: dict[bool, object] = {}   # one BPE model per ignore_merges; only the pre-tokenizer changes
    tried = set()
    for name in order:
        pre = PRE_TOKENIZERS[name]
        if (pre.kind, pre.ignore_merges) in tried:
            continue
        tried.add((pre.kind, pre.ignore_merges))
        vocab.pre = name
        try:
            if pre.ignore_merges not in built:
                built[pre.ignore_merges] = tokenizer_from_vocab(vocab)
            tok = built[pre.ignore_merges]
            tok.pre_tokenizer = pre_tokenizer(pre.expressions)
            got = tok.encode(_PROBE, add_special_tokens=False).ids
        except Exception:  # noqa: BLE001 - an expression the regex engine refuses is no match either
            continue
        if got == want:
            return name
    vocab.pre = None
    raise FormatError(f"{source}: no llama.cpp pre-tokenizer tokenizes as this tokenizer.json does, so it cannot be "
                     "written as a GGUF vocabulary")
