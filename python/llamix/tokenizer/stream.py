"""UTF-8-correct streaming detokenization: generated ids in, text pieces out as they complete."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator

if TYPE_CHECKING:
    from .core import Tokenizer


class StreamDecoder:
    """Turns generated ids into text pieces as they arrive.

    The text of the new ids is obtained by decoding them together with a few ids of context (so a
    piece's leading space survives) and taking the difference; a piece ending in an incomplete
    UTF-8 sequence (byte-fallback tokens, or byte-level BPE tokens that split a character) shows as
    U+FFFD and is held back until it completes.
    """

    def __init__(self, tokenizer: Tokenizer, context: Iterable[int] = ()):
        self.tok = tokenizer
        ctx = [i for i in context if i != tokenizer.bos_id][-4:]
        self.ids = ctx
        self.offset = len(tokenizer.decode(ctx)) if ctx else 0
        self.start = len(ctx)

    def push(self, token: int) -> str:
        self.ids.append(int(token))
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece = text[self.offset:]
        # keep the window short: restart it at the current token once text has been emitted
        self.ids = self.ids[-1:]
        self.offset = len(self.tok.decode(self.ids))
        return piece

    def flush(self) -> str:
        text = self.tok.decode(self.ids)
        piece = text[self.offset:]
        self.ids, self.offset = [], 0
        return piece


def decode_stream(tokenizer: Tokenizer, ids: Iterator[int], context: Iterable[int] = ()) -> Iterator[str]:
    dec = StreamDecoder(tokenizer, context)
    for i in ids:
        piece = dec.push(i)
        if piece:
            yield piece
    tail = dec.flush()
    if tail:
        yield tail
