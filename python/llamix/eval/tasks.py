"""Multiple-choice tasks scored by log-likelihood, as lm-evaluation-harness scores them.

Reference: EleutherAI lm-evaluation-harness, ``output_type: multiple_choice``
(``lm_eval/api/task.py`` ``ConfigurableTask.construct_requests`` / ``process_results``, and
``lm_eval/models/huggingface.py`` ``_encode_pair``): each choice is the continuation
``target_delimiter + choice`` of the question; trailing spaces of the context move to the front of
the continuation; the continuation's tokens are those of ``tokenize(context + continuation)``
after the first ``len(tokenize(context))``; its score is the sum of their log-probabilities given
everything before them. ``acc`` counts the questions whose highest-scoring choice is the answer,
``acc_norm`` the same with each score divided by the choice's length in characters.

One difference, stated: the sequence starts with BOS when the vocabulary says ``add_bos_token``
(as llama.cpp's and transformers' tokenizers add it); lm-eval's Hugging Face backend leaves BOS
out unless asked (``add_bos_token=True``).

The file is JSON Lines, one question per line:
``{"context": "Q: ... A:", "choices": ["yes", "no"], "answer": 0}``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .perplexity import log_softmax


@dataclass
class MultipleChoice:
    context: str
    choices: list[str]
    answer: int


@dataclass
class TaskResult:
    acc: float          # fraction of questions answered right, 0..1
    acc_norm: float     # the same with length-normalised scores
    n: int              # questions
    loglik: list = field(default_factory=list)   # per question: summed log-likelihood (nats) of each choice


def load_tasks(path) -> list[MultipleChoice]:
    """The questions of a JSONL file; ConfigError naming the file, line and field otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tasks file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected an object with context, choices, answer")
        ctx, choices, answer = d.get("context"), d.get("choices"), d.get("answer")
        if not isinstance(ctx, str):
            raise ConfigError(f"{where}: context: expected a string")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise ConfigError(f"{where}: choices: expected a list of at least two non-empty strings")
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
            raise ConfigError(f"{where}: answer: expected the index of the right choice (0..{len(choices) - 1}), "
                              f"got {answer!r}")
        out.append(MultipleChoice(ctx, choices, answer))
    if not out:
        raise ConfigError(f"{path}: no questions")
    return out


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens with BOS as the vocabulary says, continuation tokens) split as lm-eval splits them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    bos = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id >= 0 else []
    whole = tokenizer.encode(context + continuation, add_special=False)
    ctx = tokenizer.encode(context, add_special=False) if context else []
    return bos + ctx, whole[len(ctx):]


def continuation_loglik(model, context: list[int], continuation: list[int]) -> float:
    """Summed log-probability (nats) of ``continuation`` after ``context`` (float64)."""
    if not context:
        raise ConfigError("a question with an empty context needs a vocabulary that adds BOS")
    if not continuation:
        return 0.0
    ids = context + continuation
    n_ctx = getattr(model, "n_ctx", None)
    if n_ctx and len(ids) - 1 > n_ctx:
        raise ConfigError(f"a question and its choice take {len(ids) - 1} tokens, more than n_ctx = {n_ctx}")
    lp = log_softmax(np.asarray(model.logits(ids[:-1]))[len(context) - 1:])
    return float(lp[np.arange(len(continuation)), continuation].sum())


def score_tasks(model, tasks: list[MultipleChoice], target_delimiter: str = " ") -> TaskResult:
    """Accuracy of ``model`` (a :class:`llamix.Model`, or anything with ``logits(ids)`` and a
    ``tokenizer``) on the questions, each choice scored by its summed log-likelihood."""
    tok = model.tokenizer
    right = right_norm = 0
    lls = []
    for q in tasks:
        ll = np.array([continuation_loglik(model, *encode_pair(tok, q.context, target_delimiter + c)) for c in q.choices])
        lls.append(ll.tolist())
        right += int(np.argmax(ll)) == q.answer
        right_norm += int(np.argmax(ll / np.array([len(c) for c in q.choices], dtype=np.float64))) == q.answer
    return TaskResult(right / len(tasks), right_norm / len(tasks), len(tasks), lls)
