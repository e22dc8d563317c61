"""llama-cpp-python's completion, chat and embedding API on :class:`llamix.Model`, with its names,
defaults and OpenAI-shaped results, so code written for ``llama_cpp.Llama`` runs on a llamix model.

- ``create_completion(prompt, ...)`` / ``model(prompt, ...)``: ``{"id": "cmpl-…", "object":
  "text_completion", "created", "model", "choices": [{"text", "index", "logprobs",
  "finish_reason"}], "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}``, or with
  ``stream=True`` an iterator of such chunks (no ``usage``) ending with one whose
  ``finish_reason`` is set and text empty.
- ``create_chat_completion(messages, ...)``: ``{"id": "chatcmpl-…", "object": "chat.completion",
  …, "choices": [{"index", "message": {"role": "assistant", "content"}, "logprobs",
  "finish_reason"}], "usage"}``; streamed as ``chat.completion.chunk`` dicts whose first delta is
  ``{"role": "assistant"}``, then ``{"content": …}`` pieces (with ``tools``: a reply's tool calls
  as one ``{"tool_calls": [...]}`` delta, as OpenAI streams them), then ``{}`` with the finish reason.
- ``create_embedding(input)`` / ``embed(texts)``: pooled final hidden states.

``finish_reason`` is ``"stop"`` (end-of-generation token, stop string, JSON complete) or
``"length"`` (``max_tokens`` or a full context); ``"tool_calls"`` when ``tools`` were given and the
reply is a tool call in the template's ``<tool_call>{…}</tool_call>`` form. Log-probabilities are
natural logs under the distribution each token was sampled from (see
:class:`llamix.model.engine.TokenLogprob`).

The per-request state lives in :class:`~llamix.model.engine.Request` (:meth:`new_request` makes
one from these parameters); the model's side, evaluating prompt and tokens on the KV cache, is
``Model.run``.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import ArgumentError, check_value, describe
from ..tokenizer import check_token_ids
from ..chat_format import ChatFormat, chat_format_for
from .engine import Request, Step, TokenLogprob, logit_bias_ids, stop_strings
from .grammar import JSONConstraint, grammar_tokenizer, schema_of, tool_call_grammar
from .sampling import Sampler

_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)
_CALL_OPEN = "<tool_call>"


class CompletionAPI:
    """Mixed into :class:`llamix.Model` (which provides ``tokenize``, ``tokenizer``, ``eos_ids``,
    ``n_ctx``, ``run``, ``hidden_states``, ``checkpoint``, ``source`` and ``chat_format``)."""

    # --- chat templates ------------------------------------------------------------------------------
    def chat_formatter(self, chat_format: str | None = None) -> ChatFormat:
        """The :class:`~llamix.chat_format.ChatFormat` for ``chat_format`` (None: the model's own
        template, else the built-in format its vocabulary points to); made once per name."""
        name = chat_format if chat_format is not None else self.chat_format
        cache = self.__dict__.setdefault("_chat_formats", {})
        if name not in cache:
            tok = self._tok()
            text = lambda i: tok.tokens[i] if 0 <= i < tok.vocab_size else ""  # noqa: E731
            ck = self.checkpoint
            cache[name] = chat_format_for(getattr(ck, "chat_template", None), name, text(tok.bos_id), text(tok.eos_id),
                                          tok.tokens, source=getattr(ck, "chat_template_source", None) or "")
        return cache[name]

    def apply_chat_template(self, messages: Sequence[Mapping], add_generation_prompt: bool = True,
                            tools: list | None = None, chat_format: str | None = None) -> str:
        """The prompt text of ``messages`` in the model's chat format (tool calls' JSON-string
        arguments parsed to objects for a template that needs them: see
        :meth:`ChatFormat.with_object_arguments`)."""
        fmt = self.chat_formatter(chat_format)
        return fmt.render(fmt.with_object_arguments(messages), add_generation_prompt, tools=tools)

    def chat_tokens(self, messages: Sequence[Mapping], add_generation_prompt: bool = True, tools: list | None = None,
                    chat_format: str | None = None) -> list[int]:
        """The token ids of the rendered prompt: control tokens written by the template are their
        ids (``parse_special``); BOS is added only where the vocabulary wants one and the template
        did not write it."""
        return self.chat_text_tokens(self.apply_chat_template(messages, add_generation_prompt, tools, chat_format))

    def chat_text_tokens(self, text: str, first: bool = True) -> list[int]:
        """Ids of rendered chat text (``first``: it starts the sequence, so BOS applies)."""
        tok = self._tok()
        ids = tok.encode(text, add_special=False, parse_special=True)
        if first and tok.add_bos and tok.bos_id >= 0 and ids[:1] != [tok.bos_id]:
            ids = [tok.bos_id] + ids
        return ids

    # --- the engine API ------------------------------------------------------------------------------
    def new_request(self, prompt_ids: Sequence[int], *, max_tokens: int | None = 16, temperature: float = 0.8,
                    top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05, repeat_penalty: float = 1.0,
                    presence_penalty: float = 0.0, frequency_penalty: float = 0.0, stop=None, seed: int | None = None,
                    logprobs: int | None = None, logit_bias: Mapping[int, float] | None = None,
                    response_format: Mapping | None = None, decode: bool = True, repeat_last_n: int = 64,
                    grammar: str | None = None, penalize_prompt: bool = True) -> Request:
        """A :class:`Request` for ``prompt_ids`` with these sampling parameters (llama-cpp-python's
        names and meanings; ``max_tokens`` None or <= 0: until the context is full, and never past
        it; ``repeat_last_n``: the penalties' window, llama.cpp's, 0 off, -1 the whole context;
        ``grammar``: the output's grammar, llama.cpp's GBNF or llguidance's Lark, instead of a
        ``response_format``; ``penalize_prompt``: the penalties count the prompt's tokens too, as
        llama-cli's and llama-server's do). Raises ValueError when the prompt does not fit the context."""
        ids = check_token_ids(prompt_ids, self.config.vocab_size, "prompt")
        if not ids:
            raise ValueError("empty prompt: give at least one token (e.g. BOS)")
        if len(ids) >= self.n_ctx:
            raise ValueError(f"Requested tokens ({len(ids)}) exceed context window of {self.n_ctx}")
        if max_tokens is not None:
            max_tokens = check_value(max_tokens, int, "max_tokens (None or <= 0: until the context is full)",
                                     error=ArgumentError)
        room = self.n_ctx - len(ids)
        max_tokens = room if max_tokens is None or max_tokens <= 0 else min(int(max_tokens), room)
        sampler = Sampler(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n,
                          seed=self._sampling_seed(seed), frequency_penalty=frequency_penalty,
                          presence_penalty=presence_penalty)
        constraint = None
        schema = schema_of(response_format)
        if schema is not None and grammar is not None:
            raise ValueError("give a grammar or a JSON response_format, not both")
        if schema is not None or grammar is not None:
            constraint = JSONConstraint(self._grammar_tokenizer(), schema, self.config.vocab_size, grammar=grammar)
        bias = None
        if logit_bias:
            bias = logit_bias_ids(logit_bias)
            bad = [k for k in bias if not 0 <= k < self.config.vocab_size]
            if bad:
                raise ValueError(f"logit_bias: token id {bad[0]} is outside the vocabulary")
        return Request(ids, sampler=sampler, max_tokens=max_tokens, tokenizer=self._tok() if decode else None,
                       stop=stop, eos_ids=self.eos_ids, constraint=constraint, logprobs=logprobs, logit_bias=bias,
                       penalize_prompt=penalize_prompt)

    def _grammar_tokenizer(self):
        if "_ll_tokenizer" not in self.__dict__:
            self.__dict__["_ll_tokenizer"] = grammar_tokenizer(self._tok(), self.config.vocab_size, self.eos_ids)
        return self.__dict__["_ll_tokenizer"]

    # --- completions ---------------------------------------------------------------------------------
    def create_completion(self, prompt: str | Sequence[int], suffix: str | None = None, max_tokens: int | None = 16,
                          temperature: float = 0.8, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
                          logprobs: int | None = None, echo: bool = False, stop: str | list[str] | None = None,
                          frequency_penalty: float = 0.0, presence_penalty: float = 0.0, repeat_penalty: float = 1.0,
                          top_k: int = 40, stream: bool = False, seed: int | None = None, model: str | None = None,
                          logit_bias: Mapping[int, float] | None = None, response_format: Mapping | None = None,
                          repeat_last_n: int = 64, llama_cpp_sampling: bool = False,
                          **unsupported) -> dict | Iterator[dict]:
        """Complete ``prompt`` (text, read with control tokens as their ids and BOS where the
        vocabulary asks for it, or token ids), as llama-cpp-python's ``Llama.create_completion``.
        ``logprobs``: the number of alternatives per token to report. ``typical_p`` must stay 1.0,
        ``suffix`` None; other llama-cpp-python-only arguments (mirostat, tfs_z, grammar,
        logits_processor, stopping_criteria) are refused. ``repeat_last_n`` (llama.cpp's; not in
        llama-cpp-python's signature): the tokens the penalties look back on (0: none, -1: all).
        Sampling is llama-cpp-python's: the penalties look at the generated tokens only, and a
        negative ``temperature`` draws from the whole distribution (no top-k, top-p or min-p);
        ``llama_cpp_sampling=True``: llama-cli's and llama-server's instead (the penalties count the
        prompt too; a temperature <= 0 is greedy)."""
        c = self.prepare_completion(prompt, suffix, max_tokens, temperature, top_p, min_p, typical_p, logprobs, echo,
                                    stop, frequency_penalty, presence_penalty, repeat_penalty, top_k, seed, model,
                                    logit_bias, response_format, repeat_last_n=repeat_last_n,
                                    llama_cpp_sampling=llama_cpp_sampling, **unsupported)
        return c.chunks(self.run(c.request)) if stream else c.response(list(self.run(c.request)))

    __call__ = create_completion

    def prepare_completion(self, prompt: str | Sequence[int], suffix: str | None = None, max_tokens: int | None = 16,
                           temperature: float = 0.8, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
                           logprobs: int | None = None, echo: bool = False, stop: str | list[str] | None = None,
                           frequency_penalty: float = 0.0, presence_penalty: float = 0.0, repeat_penalty: float = 1.0,
                           top_k: int = 40, seed: int | None = None, model: str | None = None,
                           logit_bias: Mapping[int, float] | None = None, response_format: Mapping | None = None,
                           repeat_last_n: int = 64, llama_cpp_sampling: bool = False,
                           **unsupported) -> "TextCompletion":
        """:meth:`create_completion` up to running: its :class:`TextCompletion` (the Request and
        the result's shaping), for a driver that runs the request itself (a batching server).
        With ``echo`` and ``logprobs`` it runs the prompt on the model once (its log-probabilities)."""
        grammar = _grammar_text(unsupported)
        _refuse(suffix=suffix is not None, typical_p=typical_p != 1.0, **_unsupported(unsupported))
        if isinstance(prompt, str):
            ids = self.tokenize(prompt, parse_special=True)
        elif isinstance(prompt, (bytes, bytearray)) or not hasattr(prompt, "__iter__"):
            raise ArgumentError(f"prompt must be a string or a list of token ids, got {describe(prompt)}")
        else:
            ids = check_token_ids(prompt, self.config.vocab_size, "prompt")
        request = self.new_request(ids, max_tokens=max_tokens, repeat_penalty=repeat_penalty,
                                   presence_penalty=presence_penalty, frequency_penalty=frequency_penalty, stop=stop,
                                   seed=seed, logprobs=logprobs, logit_bias=logit_bias, response_format=response_format,
                                   repeat_last_n=repeat_last_n, grammar=grammar,
                                   **_sampling(llama_cpp_sampling, temperature, top_k, top_p, min_p))
        head = {"id": f"cmpl-{_uuid4()}", "object": "text_completion", "created": int(time.time()),
                "model": model if model is not None else self.source}
        prompt_text = prompt if isinstance(prompt, str) else self.detokenize(ids)
        echo_lp = self._prompt_logprobs(ids, logprobs) if echo and logprobs is not None else None
        return TextCompletion(request, head, prompt_text if echo else "", logprobs is not None, echo_lp,
                              0 if echo else len(prompt_text))

    def _prompt_logprobs(self, ids: list[int], n: int) -> list[TokenLogprob]:
        """Log-probabilities of the prompt's own tokens (echo), BOS left out: each under the
        model's distribution after the tokens before it, except the first, which gets none (NaN,
        reported as null, as OpenAI and llama-cpp-python report it)."""
        logits = self.logits(ids).astype(np.float64)
        tok = self._tok()
        out: list[TokenLogprob] = []
        for i, t in enumerate(ids):
            if t == tok.bos_id:
                continue
            ctx = [j for j in ids[max(0, i - 4):i] if j != tok.bos_id]
            text_of = lambda j: tok.decode(ctx + [j])[len(tok.decode(ctx)):]  # noqa: E731
            if not out:
                out.append(TokenLogprob(t, text_of(t), float("nan")))
                continue
            z = logits[i - 1]
            lp = z - (z.max() + np.log(np.exp(z - z.max()).sum()))
            k = min(int(n), lp.size)
            best = np.argpartition(-lp, k - 1)[:k] if k else np.array([], dtype=np.int64)
            best = best[np.lexsort((best, -lp[best]))]
            out.append(TokenLogprob(t, text_of(t), float(lp[t]), [(int(j), text_of(int(j)), float(lp[j])) for j in best]))
        return out

    # --- chat ----------------------------------------------------------------------------------------
    def create_chat_completion(self, messages: Sequence[Mapping], functions=None, function_call=None,
                               tools: list | None = None, tool_choice=None, temperature: float = 0.2,
                               top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05, typical_p: float = 1.0,
                               stream: bool = False, stop: str | list[str] | None = None, seed: int | None = None,
                               response_format: Mapping | None = None, max_tokens: int | None = None,
                               presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                               repeat_penalty: float = 1.0, model: str | None = None,
                               logit_bias: Mapping[int, float] | None = None, logprobs: bool | None = None,
                               top_logprobs: int | None = None, chat_format: str | None = None,
                               repeat_last_n: int = 64, llama_cpp_sampling: bool = False,
                               **unsupported) -> dict | Iterator[dict]:
        """Reply to ``messages`` (OpenAI chat messages) as llama-cpp-python's
        ``Llama.create_chat_completion``: the prompt is the model's chat template (or
        ``chat_format``), the reply ends at the end-of-turn token. ``response_format``
        ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {"schema": …}}``
        constrains the reply to JSON (valid against the schema). ``tools`` are given to the
        template; a reply in the ``<tool_call>{"name": …, "arguments": …}</tool_call>`` form comes
        back as ``message["tool_calls"]``. ``logprobs=True`` reports each token's log-probability
        and ``top_logprobs`` alternatives. Sampling as :meth:`create_completion`'s."""
        c = self.prepare_chat_completion(messages, functions, function_call, tools, tool_choice, temperature, top_p,
                                         top_k, min_p, typical_p, stop, seed, response_format, max_tokens,
                                         presence_penalty, frequency_penalty, repeat_penalty, model, logit_bias,
                                         logprobs, top_logprobs, chat_format, repeat_last_n=repeat_last_n,
                                         llama_cpp_sampling=llama_cpp_sampling, **unsupported)
        return c.chunks(self.run(c.request)) if stream else c.response(list(self.run(c.request)))

    def prepare_chat_completion(self, messages: Sequence[Mapping], functions=None, function_call=None,
                                tools: list | None = None, tool_choice=None, temperature: float = 0.2,
                                top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05, typical_p: float = 1.0,
                                stop: str | list[str] | None = None, seed: int | None = None,
                                response_format: Mapping | None = None, max_tokens: int | None = None,
                                presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                                repeat_penalty: float = 1.0, model: str | None = None,
                                logit_bias: Mapping[int, float] | None = None, logprobs: bool | None = None,
                                top_logprobs: int | None = None, chat_format: str | None = None,
                                repeat_last_n: int = 64, llama_cpp_sampling: bool = False,
                                **unsupported) -> "ChatCompletion":
        """:meth:`create_chat_completion` up to running: its :class:`ChatCompletion` (the Request
        and the result's shaping), for a driver that runs the request itself (a batching server)."""
        grammar = _grammar_text(unsupported)
        _refuse(functions=functions is not None, function_call=function_call is not None, typical_p=typical_p != 1.0,
                **_unsupported(unsupported))
        tools, forced = _tools_for_choice(tools, tool_choice)
        if forced is not False:
            if grammar is not None:
                raise ValueError("give a grammar or a forced tool_choice, not both")
            grammar = tool_call_grammar(tools, forced)
        fmt = self.chat_formatter(chat_format)
        ids = self.chat_tokens(messages, True, tools, chat_format)
        stops = stop_strings(stop)
        stops += [s for s in fmt.stop if s not in stops]
        request = self.new_request(ids, max_tokens=max_tokens, repeat_penalty=repeat_penalty,
                                   presence_penalty=presence_penalty, frequency_penalty=frequency_penalty, stop=stops,
                                   seed=seed, logprobs=(top_logprobs or 0) if logprobs else None, logit_bias=logit_bias,
                                   response_format=response_format, repeat_last_n=repeat_last_n, grammar=grammar,
                                   **_sampling(llama_cpp_sampling, temperature, top_k, top_p, min_p))
        head = {"id": f"chatcmpl-{_uuid4()}", "object": "chat.completion", "created": int(time.time()),
                "model": model if model is not None else self.source}
        return ChatCompletion(request, head, bool(tools), bool(logprobs))

    # --- embeddings ----------------------------------------------------------------------------------
    def embed(self, input: str | Sequence[str | Sequence[int]], normalize: bool = False, truncate: bool = True,
              return_count: bool = False, pooling: str = "mean"):
        """Embeddings of ``input``: float32 (n, dim) for a list of texts, (dim,) for one text; the
        final hidden states after the output norm of each text (tokenized with BOS where the
        vocabulary asks for it; an element of the list may instead be token ids, taken as they
        are), pooled by ``pooling`` (``"mean"`` over the tokens, or ``"last"``:
        the last token's), L2-normalised when ``normalize``. ``truncate``: texts longer than the
        context are cut to it (otherwise ValueError). ``return_count``: also return the number of
        tokens embedded. Each text is run alone from position 0; the KV cache is emptied."""
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        texts = _embedding_inputs(input)
        out = np.zeros((len(texts), self.config.dim), dtype=np.float32)
        total = 0
        for i, text in enumerate(texts):
            ids = self.tokenize(text) if isinstance(text, str) else check_token_ids(text, self.config.vocab_size,
                                                                                    f"input {i}")
            if len(ids) > self.n_ctx:
                if not truncate:
                    raise ValueError(f"input {i} has {len(ids)} tokens, more than n_ctx = {self.n_ctx}")
                ids = ids[:self.n_ctx]
            if not ids:
                raise ValueError(f"input {i} is empty and the vocabulary adds no BOS: nothing to embed")
            h = self.hidden_states(ids)
            out[i] = h.mean(axis=0, dtype=np.float64) if pooling == "mean" else h[-1]
            total += len(ids)
        if normalize:
            norms = np.linalg.norm(out.astype(np.float64), axis=1, keepdims=True)
            out = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        result = out[0] if isinstance(input, str) else out
        return (result, total) if return_count else result

    def create_embedding(self, input: str | Sequence[str | Sequence[int]], model: str | None = None,
                         normalize: bool = False, pooling: str = "mean", truncate: bool = True) -> dict:
        """OpenAI's embeddings response: ``{"object": "list", "data": [{"object": "embedding",
        "embedding": [...], "index": i}], "model", "usage": {"prompt_tokens", "total_tokens"}}``.
        ``truncate``: as :meth:`embed` (False: ValueError for a text longer than n_ctx)."""
        texts = _embedding_inputs(input)
        vecs, total = self.embed(texts, normalize=normalize, truncate=truncate, return_count=True, pooling=pooling)
        return {"object": "list",
                "data": [{"object": "embedding", "embedding": v.tolist(), "index": i} for i, v in enumerate(vecs)],
                "model": model if model is not None else self.source,
                "usage": {"prompt_tokens": total, "total_tokens": total}}


class TextCompletion:
    """A prepared ``create_completion``: its :class:`Request` and how the request's steps become
    llama-cpp-python's results. Whoever runs the request feeds the steps to :meth:`response` (all
    of them) or, streaming, takes :meth:`first_chunks`, a :meth:`chunk` per step and
    :meth:`last_chunks` (:meth:`chunks` does all three over an iterable of steps)."""

    def __init__(self, request: Request, head: dict, echo_text: str, logprobs: bool, echo_lp, text_offset: int = 0):
        self.request, self.head, self.echo_text, self.logprobs, self.echo_lp = request, head, echo_text, logprobs, echo_lp
        self.text_offset = text_offset   # the whole result's first text_offset (llama-cpp-python: after the prompt)
        self._offset = 0

    def response(self, steps: Sequence[Step]) -> dict:
        request = self.request
        lp = None
        if self.logprobs:
            lp = _completion_logprobs([s.logprob for s in steps if not s.eog], self.text_offset, self.echo_lp)
        return {**self.head, "choices": [{"text": self.echo_text + request.text, "index": 0, "logprobs": lp,
                                          "finish_reason": request.finish_reason}],
                "usage": _usage(request)}

    def _chunk(self, text: str, lp, reason) -> dict:
        return {**self.head, "choices": [{"text": text, "index": 0, "logprobs": lp, "finish_reason": reason}]}

    def first_chunks(self) -> list[dict]:
        if not self.echo_text:
            return []
        self._offset = len(self.echo_text)
        return [self._chunk(self.echo_text, _completion_logprobs([], 0, self.echo_lp) if self.echo_lp else None, None)]

    def chunk(self, step: Step) -> dict | None:
        lp = None
        if step.logprob is not None and not step.eog:
            lp = _completion_logprobs([step.logprob], self._offset, None)
        if not (step.text or lp is not None):
            return None
        self._offset += len(step.text)
        return self._chunk(step.text, lp, None)

    def last_chunks(self) -> list[dict]:
        return [self._chunk("", None, self.request.finish_reason)]

    def usage_chunk(self) -> dict:
        """OpenAI's ``stream_options.include_usage`` chunk: no choices, the usage."""
        return {**self.head, "choices": [], "usage": _usage(self.request)}

    def chunks(self, steps: Iterable[Step]) -> Iterator[dict]:
        yield from self.first_chunks()
        for step in steps:
            c = self.chunk(step)
            if c is not None:
                yield c
        yield from self.last_chunks()


class ChatCompletion(TextCompletion):
    """A prepared ``create_chat_completion``: as :class:`TextCompletion`, with chat's shapes (a
    message, or ``chat.completion.chunk`` deltas; tool calls when ``tools`` were given)."""

    def __init__(self, request: Request, head: dict, tools: bool, logprobs: bool):
        super().__init__(request, head, "", logprobs, None)
        self.tools = tools
        self.chunk_head = {**head, "object": "chat.completion.chunk"}
        self._held = ""   # streamed text not sent yet: a tool call, or an end that may begin one

    def response(self, steps: Sequence[Step]) -> dict:
        request = self.request
        message: dict[str, Any] = {"role": "assistant", "content": request.text}
        reason = request.finish_reason
        calls = _tool_calls(request.text) if self.tools else []
        if calls:
            rest = _TOOL_CALL.sub("", request.text).strip()
            message = {"role": "assistant", "content": rest or None, "tool_calls": calls}
            reason = "tool_calls"
        lp = _chat_logprobs([s.logprob for s in steps if not s.eog]) if self.logprobs else None
        return {**self.head, "choices": [{"index": 0, "message": message, "logprobs": lp, "finish_reason": reason}],
                "usage": _usage(request)}

    def _chunk(self, delta: dict, lp, reason) -> dict:  # type: ignore[override]
        return {**self.chunk_head, "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": reason}]}

    def first_chunks(self) -> list[dict]:
        return [self._chunk({"role": "assistant"}, None, None)]

    def chunk(self, step: Step) -> dict | None:
        lp = _chat_logprobs([step.logprob]) if step.logprob is not None and not step.eog else None
        text = self._release(step.text) if self.tools else step.text
        return self._chunk({"content": text}, lp, None) if text or lp is not None else None

    def _release(self, text: str) -> str:
        """Of the text streamed so far, what is surely not part of a tool call: from the first
        ``<tool_call>`` on, text is held back for :meth:`last_chunks` (as is an end of the text
        that may be its beginning)."""
        held = self._held + text
        start = held.find(_CALL_OPEN)
        if start < 0:
            keep = next((k for k in range(min(len(held), len(_CALL_OPEN) - 1), 0, -1)
                         if _CALL_OPEN.startswith(held[-k:])), 0)
            start = len(held) - keep
        self._held = held[start:]
        return held[:start]

    def last_chunks(self) -> list[dict]:
        """The text held back, as OpenAI streams a reply's tool calls: one delta with
        ``tool_calls`` (each with its ``index``) and the finish reason ``"tool_calls"``; text that
        holds no call is sent as content."""
        held, self._held = self._held, ""
        calls = _tool_calls(held) if self.tools else []
        rest = _TOOL_CALL.sub("", held).strip() if calls else held
        out = [self._chunk({"content": rest}, None, None)] if rest else []
        if calls:
            out.append(self._chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]}, None, None))
        return out + [self._chunk({}, None, "tool_calls" if calls else self.request.finish_reason)]

    def usage_chunk(self) -> dict:
        return {**self.chunk_head, "choices": [], "usage": _usage(self.request)}


def _uuid4() -> str:
    """A random (version 4) UUID's text, as the OpenAI-style ids carry (without importing uuid)."""
    b = bytearray(os.urandom(16))
    b[6], b[8] = (b[6] & 0x0F) | 0x40, (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --- result shapes ---------------------------------------------------------------------------------------
def _embedding_inputs(input) -> list:
    """``embed``'s ``input`` as a list of texts or token-id lists (checked further when each is
    tokenized); ArgumentError naming ``input`` for anything else."""
    if isinstance(input, str):
        return [input]
    if isinstance(input, (bytes, bytearray, Mapping)) or not isinstance(input, (Sequence, np.ndarray)):
        raise ArgumentError(f"input must be a string or a list of strings or of token-id lists, got {describe(input)}")
    for i, x in enumerate(input):
        if not isinstance(x, (str, Sequence, np.ndarray)) or isinstance(x, (bytes, bytearray)):
            raise ArgumentError(f"input[{i}] must be a string or a list of token ids, got {describe(x)}")
    return list(input)


def _usage(request: Request) -> dict:
    n_prompt, n_out = len(request.prompt), len(request.tokens)
    return {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}


def _completion_logprobs(steps: list[TokenLogprob], offset: int, echo: list | None) -> dict:
    """llama-cpp-python's CompletionLogprobs: tokens, text offsets, each token's log-probability
    and a dict of the top alternatives (the token itself included)."""
    out = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
    for i, lp in enumerate((echo or []) + steps):
        out["tokens"].append(lp.text)
        out["text_offset"].append(offset)
        offset += len(lp.text)
        if np.isnan(lp.logprob):   # the prompt's first token: nothing came before it
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            continue
        out["token_logprobs"].append(lp.logprob)
        top = {text: v for _, text, v in lp.top}
        top[lp.text] = lp.logprob
        out["top_logprobs"].append(top)
    return out


def _chat_logprobs(steps: list[TokenLogprob]) -> dict:
    """OpenAI's chat logprobs: {"content": [{token, logprob, bytes, top_logprobs: [...]}], "refusal"}."""
    def entry(text: str, v: float) -> dict:
        return {"token": text, "logprob": v, "bytes": list(text.encode("utf-8"))}
    return {"content": [{**entry(lp.text, lp.logprob), "top_logprobs": [entry(t, v) for _, t, v in lp.top]}
                        for lp in steps],
            "refusal": None}


def _tool_calls(text: str) -> list[dict]:
    calls = []
    for m in _TOOL_CALL.finditer(text):
        try:
            call = json.loads(m.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        args = call.get("arguments", {})
        calls.append({"id": f"call_{os.urandom(12).hex()}", "type": "function",
                      "function": {"name": call["name"],
                                   "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)}})
    return calls


_IGNORED = {"tfs_z": 1.0, "mirostat_mode": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1,
            "logits_processor": None, "stopping_criteria": None}


def _unsupported(kwargs: dict) -> dict:
    """llama-cpp-python arguments llamix does not implement: accepted at their defaults only."""
    out = {}
    for k, v in kwargs.items():
        if k not in _IGNORED:
            raise TypeError(f"unexpected keyword argument {k!r}")
        out[k] = v != _IGNORED[k]
    return out


def _tools_for_choice(tools: list | None, tool_choice) -> tuple[list | None, str | None | bool]:
    """(the tools the template sees, the call forced) under OpenAI's ``tool_choice``: ``None`` or
    ``"auto"`` (the model decides) keeps the tools and forces nothing (False); ``"none"`` (no tool
    call) leaves them out; ``"required"`` forces a call to one of them (None: any) and
    ``{"type": "function", "function": {"name": N}}`` a call to N: the reply is then constrained
    to a ``<tool_call>`` block with that name and arguments valid against its parameters."""
    if tool_choice is None or tool_choice == "auto":
        return tools, False
    if tool_choice == "none":
        return None, False
    if not tools:
        raise ValueError(f"tool_choice={tool_choice!r} forces a tool call, but no tools were given")
    if tool_choice == "required":
        return tools, None
    fn = tool_choice.get("function") if isinstance(tool_choice, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise ValueError(f"tool_choice must be 'auto', 'none', 'required' or {{'type': 'function', 'function': "
                         f"{{'name': ...}}}}, got {tool_choice!r}")
    return tools, fn["name"]


def _grammar_text(kwargs: dict) -> str | None:
    """The ``grammar`` keyword (taken out of ``kwargs``): llama.cpp's GBNF as text (llama-server's
    ``grammar`` field; llama-cpp-python takes a ``LlamaGrammar`` built from such text)."""
    grammar = kwargs.pop("grammar", None)
    if grammar is not None and not isinstance(grammar, str):
        raise ValueError(f"grammar: give the grammar's GBNF text (a str), got {type(grammar).__name__}")
    return grammar or None


def _sampling(llama_cpp: bool, temperature, top_k, top_p, min_p) -> dict:
    """new_request's sampler settings under llama.cpp's sampler (llama-cli, llama-server: the
    penalties count the prompt, a temperature <= 0 is greedy) or llama-cpp-python's ``Llama`` (the
    penalties count the generated tokens only, its sampler never being shown the prompt; a
    negative temperature draws from the whole distribution: temperature 1, no top-k, top-p or
    min-p)."""
    if not llama_cpp and isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature < 0:
        temperature, top_k, top_p, min_p = 1.0, 0, 1.0, 0.0
    return dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, penalize_prompt=llama_cpp)


def _refuse(**flags: bool) -> None:
    bad = [k for k, on in flags.items() if on]
    if bad:
        raise ValueError(f"not supported by llamix: {', '.join(bad)} (leave at llama-cpp-python's default)")


__all__ = ["ChatCompletion", "CompletionAPI", "Step", "TextCompletion"]
