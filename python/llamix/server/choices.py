"""OpenAI's ``n``: one request answered with ``n`` choices. Each choice is a request of its own on
the batch engine (so the choices decode together, in one batch); the shapes here put their
results back together as the one response OpenAI gives: choice ``i`` carries ``"index": i``, every
object the request's first id and creation time, and the usage counts the prompt once and the
tokens of every choice."""
from __future__ import annotations

from typing import Sequence


def relabel(obj: dict, i: int, head: dict) -> dict:
    """A response or stream chunk of one choice as choice ``i`` of the request whose first object
    is ``head``."""
    return {**obj, "id": head["id"], "created": head["created"],
            "choices": [{**c, "index": i} for c in obj["choices"]]}


def merged_usage(usages: Sequence[dict]) -> dict:
    """The usage of ``n`` choices of one prompt: the prompt counted once."""
    prompt = usages[0]["prompt_tokens"]
    completion = sum(u["completion_tokens"] for u in usages)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def merged_response(responses: Sequence[dict]) -> dict:
    """The whole (non-streamed) response of ``n`` choices, from each choice's own response."""
    head = responses[0]
    out = {**head, "choices": [relabel(r, i, head)["choices"][0] for i, r in enumerate(responses)]}
    if "usage" in head:
        out["usage"] = merged_usage([r["usage"] for r in responses])
    return out


def merged_usage_chunk(chunks: Sequence[dict]) -> dict:
    """The ``stream_options.include_usage`` chunk of ``n`` choices."""
    return {**chunks[0], "usage": merged_usage([c["usage"] for c in chunks])}
