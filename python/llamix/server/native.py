"""llama-server's own (non-OpenAI) answers: ``/completion``'s, ``/tokenize``'s pieces, ``/props``'s
settings (their request bodies are read in params.py).

Fields and defaults follow llama.cpp's ``tools/server/README.md``: a ``/completion`` body takes
``prompt`` (a string, token ids, or both mixed), ``n_predict`` (-1: until the context is full; 0:
nothing is generated), the usual samplers, ``stop``, ``stream``, ``return_tokens`` and
``n_probs``; the answer carries ``content``, ``tokens``, ``stop``, ``stop_type`` (``eos``,
``word``, ``limit``), ``stopping_word``, ``tokens_predicted``, ``tokens_evaluated``,
``tokens_cached``, ``generation_settings``, ``prompt``, ``truncated`` and ``timings``. A stream
sends one ``{"content", "tokens", "stop": false}`` event per piece of text and a last event with
``"stop": true`` and the whole answer's fields, without OpenAI's ``[DONE]``.
"""
from __future__ import annotations

from typing import Sequence

from ..model import Job
from ..model.engine import FINISH_LENGTH, Request, Step, TokenLogprob

# llama-server's sampling defaults (common/common.h), reported in generation_settings
_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0,
             "repeat_last_n": 64, "presence_penalty": 0.0, "frequency_penalty": 0.0, "seed": -1}


def with_pieces(ids: Sequence[int], pieces: Sequence[bytes]) -> list[dict]:
    """``/tokenize``'s ``with_pieces`` answer: each token's text, or its bytes when they are not
    whole UTF-8."""
    out = []
    for i, b in zip(ids, pieces):
        try:
            out.append({"id": i, "piece": b.decode("utf-8")})
        except UnicodeDecodeError:
            out.append({"id": i, "piece": list(b)})
    return out


class NativeCompletion:
    """How a ``/completion`` request's steps become llama-server's answer and stream events."""

    def __init__(self, request: Request, prompt_text: str, model_name: str, settings: dict, options: dict, n_ctx: int):
        self.request, self.prompt_text, self.model_name = request, prompt_text, model_name
        self.settings, self.options, self.n_ctx = settings, options, n_ctx
        self.n_predicted = 0   # tokens streamed so far (the request runs ahead on the engine thread)

    def event(self, step: Step) -> dict | None:
        """A stream event for ``step`` (None for an end-of-generation token that releases no text)."""
        if not step.eog:
            self.n_predicted += 1
        elif not step.text:
            return None
        out = {"index": 0, "content": step.text, "tokens": [] if step.eog else [step.token], "stop": False,
               "tokens_predicted": self.n_predicted, "tokens_evaluated": len(self.request.prompt)}
        if step.logprob is not None and not step.eog:
            out["completion_probabilities"] = [_probs(step.logprob)]
        return out

    def final(self, steps: Sequence[Step], job: Job | None, stream: bool) -> dict:
        """The whole answer (``stream``: the last event, its content empty)."""
        r = self.request
        word = r.stopping_word
        stop_type = "word" if word else "limit" if r.finish_reason == FINISH_LENGTH or not r.done else "eos"
        content = "" if stream else r.text
        out = {"index": 0, "content": content,
               "tokens": list(r.tokens) if (self.options["return_tokens"] and not stream) else [],
               "id_slot": -1, "stop": True, "model": self.model_name,
               "tokens_predicted": len(r.tokens), "tokens_evaluated": len(r.prompt),
               "generation_settings": self.settings, "prompt": self.prompt_text, "has_new_line": "\n" in r.text,
               "truncated": False, "stop_type": stop_type, "stopping_word": word,
               "tokens_cached": len(r.prompt) - job.n_prompt_evaluated if job else 0,
               "timings": _timings(job, len(r.prompt), len(r.tokens))}
        if self.options["n_probs"] and not stream:
            out["completion_probabilities"] = [_probs(s.logprob) for s in steps if s.logprob is not None and not s.eog]
        return out


def settings_of(kw: dict, options: dict, stop: list[str], n_ctx: int) -> dict:
    """``generation_settings``: the sampling values in force (llama-server's defaults for those absent)."""
    s = {name: kw.get(name, default) for name, default in _DEFAULTS.items()}
    if s["seed"] is None:
        s["seed"] = -1
    return {"n_ctx": n_ctx, "n_predict": options["n_predict"], **s, "stop": stop, "n_probs": options["n_probs"]}


def _probs(lp: TokenLogprob) -> dict:
    return {"id": lp.token, "token": lp.text, "bytes": list(lp.text.encode()), "logprob": lp.logprob,
            "top_logprobs": [{"id": i, "token": t, "bytes": list(t.encode()), "logprob": v} for i, t, v in lp.top]}


def _timings(job: Job | None, n_prompt: int, n_predicted: int) -> dict:
    """llama-server's ``timings``: prompt time to the first token, generation time after it."""
    t_first = job.t_first if job and job.t_first is not None else None
    prompt_ms = (t_first - job.t_submit) * 1e3 if t_first is not None else 0.0
    gen_ms = (job.t_done - t_first) * 1e3 if t_first is not None and job.t_done is not None else 0.0
    n_eval = job.n_prompt_evaluated if job else 0

    def rate(n: int, ms: float) -> tuple[float, float]:
        return (ms / n if n else 0.0), (1e3 * n / ms if ms > 0 else 0.0)

    p_tok, p_rate = rate(n_eval, prompt_ms)
    g_tok, g_rate = rate(max(n_predicted - 1, 0), gen_ms)
    return {"cache_n": n_prompt - n_eval, "prompt_n": n_eval, "prompt_ms": prompt_ms, "prompt_per_token_ms": p_tok,
            "prompt_per_second": p_rate, "predicted_n": n_predicted, "predicted_ms": gen_ms,
            "predicted_per_token_ms": g_tok, "predicted_per_second": g_rate}
