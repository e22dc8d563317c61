"""A multi-turn conversation kept in the model's KV cache: each turn evaluates only the new text.

After a reply, the conversation's token ids are the prompt's ids followed by the reply's sampled
ids, and the KV cache holds all of them but the last. The next turn's prompt is the chat
template rendered over the whole conversation; when that text begins with the text of what is
already known (the template writes earlier turns as they were), only the rest is tokenized and
appended to the known ids, so the cache's prefix matches and ``Model.run`` evaluates just the
new turn (and the reply's last token, when ``max_tokens`` cut the reply before it was evaluated). When it does not (a template that rewrites earlier turns, a
reply cut by a stop string), the whole prompt is tokenized and the cache reuses whatever prefix
still matches.

When the prompt plus room for a reply no longer fits the context, the oldest turns are dropped
(the system prompt stays) and the prompt is evaluated again from the start.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ..tokenizer import check_text
from .engine import Request, stop_strings


@dataclass
class TurnStats:
    """What the last turn cost: prompt tokens evaluated (the cached prefix is not), generated
    tokens, their seconds, turns dropped to fit the context, and why the reply ended."""
    prompt_tokens: int = 0
    prompt_total: int = 0      # the whole prompt's length
    prompt_s: float = 0.0
    eval_tokens: int = 0       # decode steps (each evaluates one token)
    eval_s: float = 0.0
    generated: int = 0
    dropped_turns: int = 0
    finish_reason: str | None = None

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def eval_tps(self) -> float:
        return self.eval_tokens / self.eval_s if self.eval_s > 0 else 0.0


class ChatSession:
    """A conversation with ``model``: :meth:`send` a user message, iterate the reply's text.

    ``system_prompt``: kept first whatever is dropped. ``chat_format``: a built-in format's name
    instead of the model's template. ``reply_room``: positions kept free for a reply when the
    prompt is fitted into the context (default: a quarter of it, at most 512).
    """

    def __init__(self, model, system_prompt: str | None = None, chat_format: str | None = None,
                 reply_room: int | None = None):
        self.model = model
        self.chat_format = chat_format
        self.format = model.chat_formatter(chat_format).compile()   # a template that does not parse: said now
        self.system_prompt = system_prompt
        self.reply_room = reply_room if reply_room is not None else min(max(model.n_ctx // 4, 1), 512)
        self.stats = TurnStats()
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.messages: list[dict] = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        self._known_text, self._known_ids = "", []

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of ``messages`` rendered with the generation prompt, reusing the known ids
        when the text extends the known text."""
        text = self.format.render(messages, add_generation_prompt=True)
        if self._known_ids and text.startswith(self._known_text):
            return self._known_ids + self.model.chat_text_tokens(text[len(self._known_text):], first=False)
        return self.model.chat_text_tokens(text)

    def send(self, content: str, max_tokens: int | None = None, **sampling) -> Iterator[str]:
        """Add a user message and return an iterator over the reply's text. ``max_tokens`` (None
        or <= 0: until the end of the turn or the context is full) and ``sampling``
        (temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty,
        frequency_penalty, seed, stop) as in ``create_completion``. Closing the iterator early keeps what was said
        so far. :attr:`stats` describes the turn once the iterator is done. Raises ValueError
        (before any work) when the message alone does not fit the context, and
        :class:`~llamix.ChatTemplateError` when the template refuses the messages."""
        content = check_text(content, "message")   # named here: the rendered prompt's positions would mislead
        messages = self.messages + [{"role": "user", "content": content}]
        ids, dropped = self._fit(messages, max_tokens)
        stop = sampling.pop("stop", None)
        stops = stop_strings(stop)
        stops += [s for s in self.format.stop if s not in stops]
        request: Request = self.model.new_request(ids, max_tokens=max_tokens, stop=stops, **sampling)
        first = 1 if self.system_prompt else 0
        self.messages = messages[:first] + messages[first + dropped:]
        self.stats = TurnStats(dropped_turns=(dropped + 1) // 2, prompt_total=len(ids))
        return self._reply(ids, request)

    def _reply(self, ids: list[int], request: Request) -> Iterator[str]:
        try:
            for step in self.model.run(request):
                if step.text:
                    yield step.text
        finally:
            if not request.done:
                request.stop("length" if self.model.n_past >= self.model.n_ctx else "stop")
            self._after(ids, request)

    def _fit(self, messages: list[dict], max_tokens: int | None) -> tuple[list[int], int]:
        """The prompt ids, dropping the oldest messages after the system prompt until the prompt
        leaves room for a reply; returns (ids, number of messages dropped)."""
        room = self.reply_room if max_tokens is None or max_tokens <= 0 else min(max_tokens, self.reply_room)
        first = 1 if self.system_prompt else 0
        dropped = 0
        while True:
            ids = self.prompt_ids(messages)
            if len(ids) + room <= self.model.n_ctx:
                return ids, dropped
            if len(messages) - first <= 1:
                raise ValueError(f"the message is too long: the prompt takes {len(ids)} of the {self.model.n_ctx} "
                                 f"tokens of the context, and a reply needs {room} more")
            # drop the oldest exchange (a user message and the reply after it)
            n = 2 if len(messages) - first > 2 and messages[first + 1]["role"] == "assistant" else 1
            messages = messages[:first] + messages[first + n:]
            dropped += n
            self._known_text, self._known_ids = "", []   # the start of the prompt changes

    def _after(self, ids: list[int], request: Request) -> None:
        t = self.model.timings
        self.stats.prompt_tokens, self.stats.prompt_s = t.prompt_tokens, t.prompt_s
        self.stats.eval_tokens, self.stats.eval_s = t.eval_tokens, t.eval_s
        self.stats.generated = len(request.tokens)
        self.stats.finish_reason = request.finish_reason
        reply = request.text
        self.messages.append({"role": "assistant", "content": reply})
        prompt_text = self.format.render(self.messages[:-1], add_generation_prompt=True)
        # the reply's ids are known to be its text only when nothing was cut from the text
        ctx = ids[-4:]
        said = self.model.detokenize(ctx + request.tokens)[len(self.model.detokenize(ctx)):]
        if said == reply:
            self._known_text, self._known_ids = prompt_text + reply, ids + request.tokens
        else:
            self._known_text, self._known_ids = prompt_text, list(ids)
