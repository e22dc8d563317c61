"""Chat on a real published model (marker ``realmodels``; the file is fetched when absent, the
tests skip with the reason otherwise and fail under CI): Qwen2.5-Coder-0.5B-Instruct Q4_K_M with
its own ChatML template answers a factual question, writes JSON that validates against a schema
on every one of 50 seeded samples at temperature 0.8 (``slow``), and holds a 5-turn conversation
in which each turn evaluates only its own tokens."""
from __future__ import annotations

import json

import pytest

import llamix
from llamix.model.chat import ChatSession

from conftest import require_peer
from test_real_models import real_model_path

pytestmark = pytest.mark.realmodels

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "country", "population", "landmarks"],
          "properties": {"city": {"type": "string", "maxLength": 40}, "country": {"type": "string", "maxLength": 40},
                         "population": {"type": "integer", "minimum": 0},
                         "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 3}}}


@pytest.fixture(scope="module")
def qwen():
    return llamix.load(real_model_path("qwen2"), n_ctx=2048)


def test_capital_of_france(qwen):
    assert qwen.chat_formatter().name == "model"   # the file's own template
    r = qwen.create_chat_completion([{"role": "user", "content": "What is the capital of France? Answer with one word."}],
                                    temperature=0)
    assert r["choices"][0]["message"]["content"].strip().strip(".") == "Paris"
    assert r["choices"][0]["finish_reason"] == "stop"


@pytest.mark.slow
def test_json_schema_valid_every_time(qwen):
    jsonschema = require_peer("jsonschema", "test")
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
    valid = 0
    for seed in range(50):
        r = qwen.create_chat_completion([{"role": "user", "content": "Describe a European capital city as JSON."}],
                                        temperature=0.8, seed=seed, max_tokens=256, response_format=fmt)
        text = r["choices"][0]["message"]["content"]
        assert r["choices"][0]["finish_reason"] == "stop", (seed, text)
        jsonschema.validate(json.loads(text), SCHEMA)
        valid += 1
    assert valid == 50


@pytest.mark.slow
def test_five_turns_evaluate_only_the_new_turn(qwen):
    s = ChatSession(qwen, system_prompt="You are a concise assistant.")
    turns = ["Hi! My name is Ada.", "What is 12 times 12?", "Name a prime number bigger than 100.",
             "What is my name?", "Say goodbye in French."]
    replies = []
    for i, u in enumerate(turns):
        replies.append("".join(s.send(u, temperature=0, max_tokens=60)))
        if i:
            delta = f"<|im_end|>\n<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n"
            # this turn's text (from the end-of-turn token on), and the last reply token when the
            # reply was cut by max_tokens (one that ended with the end-of-turn token had it evaluated)
            want = len(qwen.tokenize(delta, add_special=False, parse_special=True)) + (prev == "length")
            assert s.stats.prompt_tokens == want, (i, s.stats)
        prev = s.stats.finish_reason
    assert "144" in replies[1]
    assert "Ada" in replies[3]
