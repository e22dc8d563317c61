"""OpenAI's ``n``: one request answered with ``n`` choices. Each choice is a request of its own on
the batch engine (so the choices decode together, in one batch); the shapes here put their
results back together as the one response OpenAI gives: choice ``i`` carries ``"index": i``, every
object the request's first id and creation time, and the usage counts the prompt once and the
tokens of every choice. ``/v1/completions`` with several prompts answers ``n`` choices for each,
in the prompts' order, each prompt counted once in the usage."""
from __future__ import annotations

from typing import Sequence


def relabel(obj: dict, i: int, head: dict) -> dict:
    """A response or stream chunk of one choice as choice ``i`` of the request whose first object
    is ``head``."""
    return {**obj, "id": head["id"], "created": head["created"],
            "choices": [{**c, "index": i} for c in obj["choices"]]}


def merged_usage(usages: Sequence[dict], n: int | None = None) -> dict:
    """The usage of ``n`` choices of each prompt (default: all of one prompt): each prompt counted once."""
    prompt = sum(u["prompt_tokens"] for u in usages[::n or len(usages)])
    completion = sum(u["completion_tokens"] for u in usages)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def merged_response(responses: Sequence[dict], n: int | None = None) -> dict:
    """The whole (non-streamed) response of ``n`` choices of each prompt, from each choice's own
    response (prompt-major, as OpenAI: choice ``j`` of prompt ``p`` is ``p * n + j``)."""
    head = responses[0]
    out = {**head, "choices": [relabel(r, i, head)["choices"][0] for i, r in enumerate(responses)]}
    if "usage" in head:
        out["usage"] = merged_usage([r["usage"] for r in responses], n)
    return out


def merged_usage_chunk(chunks: Sequence[dict], n: int | None = None) -> dict:
    """The ``stream_options.include_usage`` chunk of ``n`` choices of each prompt."""
    return {**chunks[0], "usage": merged_usage([c["usage"] for c in chunks], n)}
