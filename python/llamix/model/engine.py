"""One generation request's own state, apart from any model or KV cache.

A :class:`Request` holds what a generation needs between tokens: its prompt and generated ids,
its sampler (with its own random stream), logit bias, grammar constraint, stop strings and the
streaming decoder, the log-probabilities asked for, and why it finished. It never runs the model:
the driver (``Model.run``) evaluates the prompt, hands each step's logits to :meth:`Request.step`
and evaluates the token it returns. A server batching several sequences keeps one Request per
sequence and one KV cache slot per Request; nothing here is shared between Requests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..errors import ArgumentError, describe
from ..tokenizer import StreamDecoder, Tokenizer
from .grammar import JSONConstraint
from .sampling import Sampler

FINISH_STOP, FINISH_LENGTH = "stop", "length"


def stop_strings(stop) -> list[str]:
    """``stop`` (None, a string or a sequence of strings, as OpenAI's and llama-cpp-python's
    ``stop``) as a list of strings; ArgumentError naming ``stop`` for anything else."""
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        return []
    if isinstance(stops, (bytes, Mapping)) or not isinstance(stops, Sequence) \
            or not all(isinstance(s, str) for s in stops):
        raise ArgumentError(f"stop must be a string or a list of strings, got {describe(stop)}")
    return list(stops)


def logit_bias_ids(logit_bias) -> dict[int, float]:
    """``logit_bias`` ({token id: bias}; ids may be strings of digits, as OpenAI's JSON sends them)
    as {int: float}; ArgumentError naming the entry for anything else."""
    if logit_bias is None:
        return {}
    if not isinstance(logit_bias, Mapping):
        raise ArgumentError(f"logit_bias must be a mapping of token id to bias, got {describe(logit_bias)}")
    out = {}
    for k, v in logit_bias.items():
        try:
            out[int(k)] = float(v)
        except (TypeError, ValueError):
            raise ArgumentError(f"logit_bias[{k!r}]: expected an integer token id and a number, "
                                f"got {describe(k)} -> {describe(v)}") from None
    return out


@dataclass
class TokenLogprob:
    """A sampled token's natural-log probability and the most probable alternatives at its step,
    under the distribution it was sampled from: the softmax of the logits after logit bias,
    penalties and the grammar mask (before the top-k / top-p / min-p cut and temperature)."""
    token: int
    text: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)   # (id, text, logprob), best first


@dataclass
class Step:
    """What one sampled token did: ``token`` (an end-of-generation token when ``eog``, which is not
    part of the completion), ``text`` released to the caller now (possibly empty: held back while a
    stop string or a UTF-8 character may still be completing; at the end, whatever remains),
    ``logprob`` when asked for, ``finish_reason`` on the last step."""
    token: int
    text: str = ""
    eog: bool = False
    logprob: TokenLogprob | None = None
    finish_reason: str | None = None


class Request:
    """A generation in progress: ``prompt`` ids, sampled ``tokens`` (end-of-generation token
    excluded), released ``text``, ``finish_reason`` (``"stop"``: end-of-generation token, stop
    string or completed grammar; ``"length"``: ``max_tokens``) once :attr:`done`, and
    ``stopping_word``: the stop string that ended it ("" if none did).

    ``tokenizer``: for text and stop strings (None: ids only). ``logprobs``: how many top
    alternatives to report per token (None: no log-probabilities). ``logit_bias``: {token id:
    value added to its logit}. ``constraint``: a grammar (:class:`JSONConstraint`) masking the
    logits. ``penalize_prompt``: whether the penalties look back over the prompt too (llama-cli and
    llama-server feed it to their penalty sampler) or over the generated tokens only
    (llama-cpp-python's ``Llama``).
    """

    def __init__(self, prompt: Sequence[int], *, sampler: Sampler, max_tokens: int, tokenizer: Tokenizer | None = None,
                 stop: str | Sequence[str] | None = None, eos_ids: Sequence[int] = (),
                 constraint: JSONConstraint | None = None, logprobs: int | None = None,
                 logit_bias: Mapping[int, float] | None = None, penalize_prompt: bool = True):
        self.prompt = [int(i) for i in prompt]
        self.penalize_prompt = bool(penalize_prompt)
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.sampler, self.max_tokens, self.tokenizer = sampler, int(max_tokens), tokenizer
        self.stops = [s for s in stop_strings(stop) if s]
        if self.stops and tokenizer is None:
            raise ValueError("stop strings need a tokenizer")
        self.eos = frozenset(int(i) for i in eos_ids)
        self.constraint = constraint
        self.n_logprobs = None if logprobs is None else max(0, int(logprobs))
        self.bias = logit_bias_ids(logit_bias)
        self.tokens: list[int] = []
        self.text = ""            # the completion's text released so far
        self.finish_reason: str | None = None
        self.stopping_word = ""   # the stop string that ended the request, if one did
        self._decoder = StreamDecoder(tokenizer, self.prompt) if tokenizer is not None else None
        self._pending = ""        # decoded text not yet released (a stop string may be starting)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def history(self) -> list[int]:
        """What the penalties look back over: the prompt's and the generated ids, or the generated
        ones only (``penalize_prompt`` False)."""
        return self.prompt + self.tokens if self.penalize_prompt else self.tokens

    def logits_for_sampling(self, logits: np.ndarray) -> np.ndarray:
        """``logits`` with the logit bias added and the grammar's refused tokens at -inf, as are
        rows past the tokenizer's vocabulary (a Hugging Face config's vocab_size is often padded
        beyond the tokenizer's, e.g. Qwen2's 151936 rows for 151665 tokens: those ids have no text)."""
        z = np.asarray(logits, dtype=np.float32)
        if self.tokenizer is not None and self.tokenizer.vocab_size < z.shape[0]:
            z = z.copy()
            z[self.tokenizer.vocab_size:] = -np.inf
        if self.bias:
            z = z.copy()
            ids = np.fromiter(self.bias, dtype=np.int64)
            z[ids] += np.fromiter(self.bias.values(), dtype=np.float32)
        if self.constraint is not None:
            z = self.constraint.mask(z)
        return z

    def step(self, logits: np.ndarray) -> Step:
        """Sample the next token from ``logits`` (the model's output after the last evaluated
        token) and advance. The caller evaluates ``Step.token`` next unless :attr:`done`."""
        if self.done:
            raise RuntimeError("the request has finished")
        z = self.logits_for_sampling(logits)
        history = self.history
        token = self.sampler.sample(z, history)
        lp = self._logprob(z, history, token) if self.n_logprobs is not None else None
        if token in self.eos:
            return Step(token, self._finish(FINISH_STOP), eog=True, logprob=lp, finish_reason=FINISH_STOP)
        if self.constraint is not None:
            self.constraint.accept(token)
        self.tokens.append(token)
        text = self._release(self._decoder.push(token)) if self._decoder is not None else ""
        if self.done:  # a stop string
            return Step(token, text, logprob=lp, finish_reason=self.finish_reason)
        if self.constraint is not None and self.constraint.stopped:
            return Step(token, text + self._finish(FINISH_STOP), logprob=lp, finish_reason=FINISH_STOP)
        if len(self.tokens) >= self.max_tokens:
            return Step(token, text + self._finish(FINISH_LENGTH), logprob=lp, finish_reason=FINISH_LENGTH)
        return Step(token, text, logprob=lp)

    def stop(self, reason: str = FINISH_STOP) -> str:
        """End the request from outside (the context is full, the client went away); returns the
        text still held back."""
        return "" if self.done else self._finish(reason)

    # --- text -----------------------------------------------------------------------------------
    def _release(self, piece: str) -> str:
        """The part of the decoded text that can be shown: everything before a stop string (which
        then ends the request), less any tail a stop string could still start with."""
        if not self.stops:
            self.text += piece
            return piece
        self._pending += piece
        cuts = [(self._pending.find(s), k) for k, s in enumerate(self.stops) if s in self._pending]
        if cuts:
            at, k = min(cuts)
            self.stopping_word = self.stops[k]
            out = self._pending[:at]
            self._pending = ""
            self.text += out
            self.finish_reason = FINISH_STOP
            return out
        hold = max(_overlap(self._pending, s) for s in self.stops)
        out, self._pending = self._pending[:len(self._pending) - hold], self._pending[len(self._pending) - hold:]
        self.text += out
        return out

    def _finish(self, reason: str) -> str:
        tail = self._release(self._decoder.flush()) if self._decoder is not None else ""
        if self.finish_reason is None:   # no stop string in the tail: what was held back is text
            tail += self._pending
            self.text += self._pending
            self._pending = ""
        self.finish_reason = reason if self.finish_reason is None or reason == FINISH_STOP else self.finish_reason
        return tail

    # --- log-probabilities ------------------------------------------------------------------------
    def _logprob(self, z: np.ndarray, history: list[int], token: int) -> TokenLogprob:
        x = self.sampler.penalize(z, history).astype(np.float64)
        m = x.max()
        logp = x - (m + np.log(np.exp(x - m).sum()))
        top = []
        if self.n_logprobs:
            k = min(self.n_logprobs, logp.size)
            ids = np.argpartition(-logp, k - 1)[:k]
            ids = ids[np.lexsort((ids, -logp[ids]))]
            top = [(int(i), self.token_text(int(i)), float(logp[i])) for i in ids]
        return TokenLogprob(token, self.token_text(token), float(logp[token]), top)

    def token_text(self, token: int) -> str:
        """The text ``token`` adds after the ids so far (its leading space kept)."""
        if self.tokenizer is None:
            return ""
        ctx = [i for i in (self.prompt + self.tokens)[-4:] if i != self.tokenizer.bos_id]
        tok = self.tokenizer
        if not 0 <= token < tok.vocab_size:
            return ""
        return tok.decode(ctx + [token], special=True)[len(tok.decode(ctx, special=True)):]


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
