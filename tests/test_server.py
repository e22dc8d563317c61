"""``llamix serve``: a server started here on a free port of 127.0.0.1 (uvicorn in a thread, or the
``llamix serve`` command in a child process), driven by the official ``openai`` client and by raw
HTTP (httpx). Its answers are compared with the same model's in-process API (a second Model on
the same weights, run alone): chat, streaming, completions with log-probabilities, JSON schema
output (validated with jsonschema), embeddings. Then the HTTP side: error objects and statuses
(malformed JSON, wrong types, unknown fields, huge bodies, context overflow, API key, queue
full), a client leaving mid-stream freeing its slot, 16 concurrent clients each getting its
alone-run answer, a short soak, the access log and /metrics, and SIGTERM shutting the command
down cleanly. Nothing is left running afterwards."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import llamix
from llamix import Tokenizer
from llamix.chat_format import builtin_format

from conftest import require_peer
from serving import free_port, running

uvicorn = require_peer("uvicorn", "serve")
server_mod = require_peer("llamix.server", "serve")
openai = require_peer("openai", "test")
httpx = require_peer("httpx", "test")

KEY = "test-key-123"
MESSAGES = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Say hello."}]
N_CTX = 256


@pytest.fixture(scope="module")
def checkpoint(assets):
    """A random-weight model with Qwen2's 151k-token vocabulary and a ChatML template."""
    tok = Tokenizer.from_file(assets / "vocab" / "ggml-vocab-qwen2.gguf")
    ck = llamix.random_checkpoint("tiny", "q8_0", tokenizer=tok, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                  hidden_dim=128, seed=3)
    ck.chat_template = builtin_format("chatml").template
    return ck


@pytest.fixture(scope="module")
def ref(checkpoint):
    """The same weights, run alone in process: the reference answers."""
    return llamix.Model(checkpoint, n_ctx=N_CTX)


@pytest.fixture(scope="module")
def app(checkpoint):
    return server_mod.create_app(llamix.Model(checkpoint, n_ctx=N_CTX), 4, name="tiny", api_key=KEY,
                                 max_body_bytes=64 << 10, max_queue=32)


@pytest.fixture(scope="module")
def url(app):
    with running(app) as u:
        yield u


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def post(url, path, body=None, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if body is not None:
        kw["json"] = body
    return httpx.post(url + path, headers=headers, timeout=60, **kw)


def health(url) -> dict:
    return httpx.get(url + "/health", timeout=10).json()


def wait_idle(url, seconds=10.0) -> dict:
    deadline = time.time() + seconds
    while True:
        h = health(url)
        if h["slots_processing"] == 0 and h["queue_depth"] == 0 or time.time() > deadline:
            return h
        time.sleep(0.01)


# --- the openai client -----------------------------------------------------------------------------------
def test_models(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"] and models[0].owned_by == "llamix"


def test_chat_matches_in_process(client, ref):
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    want = ref.create_chat_completion(MESSAGES, max_tokens=12, temperature=0)
    assert r.choices[0].message.content == want["choices"][0]["message"]["content"]
    assert r.choices[0].finish_reason == want["choices"][0]["finish_reason"] == "length"
    assert {k: getattr(r.usage, k) for k in want["usage"]} == want["usage"]
    assert r.model == "tiny" and r.object == "chat.completion"


def test_chat_stream_equals_whole(client, url):
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    # the wire format: server-sent events ending with [DONE]
    r = post(url, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line for line in r.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_completion_with_logprobs_matches_in_process(client, ref):
    r = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=8, temperature=0, logprobs=2)
    want = ref.create_completion("Once upon a time", max_tokens=8, temperature=0, logprobs=2)
    assert r.choices[0].text == want["choices"][0]["text"]
    np.testing.assert_allclose(r.choices[0].logprobs.token_logprobs, want["choices"][0]["logprobs"]["token_logprobs"],
                               rtol=1e-6)
    echo = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=3, temperature=0, echo=True,
                                     logprobs=1)
    want = ref.create_completion("Once upon a time", max_tokens=3, temperature=0, echo=True, logprobs=1)
    assert echo.choices[0].text == want["choices"][0]["text"]
    assert echo.choices[0].logprobs.tokens == want["choices"][0]["logprobs"]["tokens"]


def test_repeat_last_n_as_llama_server(client, ref):
    """llama-server's repeat_last_n body field: the penalties' window, as in process under
    llama.cpp's sampling (llama-server's penalties count the prompt)."""
    for n in (2, -1):
        r = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=12, temperature=0,
                                      extra_body={"repeat_penalty": 1.8, "repeat_last_n": n})
        want = ref.create_completion("Once upon a time", max_tokens=12, temperature=0, repeat_penalty=1.8, repeat_last_n=n,
                                     llama_cpp_sampling=True)
        assert r.choices[0].text == want["choices"][0]["text"]


def test_json_schema(client):
    jsonschema = require_peer("jsonschema", "test")
    schema = {"type": "object", "additionalProperties": False, "required": ["name", "ok"],
              "properties": {"name": {"type": "string", "maxLength": 8}, "ok": {"type": "boolean"}}}
    for seed in range(3):
        r = client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=200, temperature=1.0, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
        assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_embeddings(client, ref):
    texts = ["hello world", "a longer sentence to embed"]
    got = client.embeddings.create(model="tiny", input=texts)            # the client asks for base64
    floats = client.embeddings.create(model="tiny", input=texts, encoding_format="float")
    want = ref.embed(texts)
    for i in range(2):
        np.testing.assert_array_equal(np.asarray(got.data[i].embedding, np.float32), want[i])
        np.testing.assert_array_equal(np.asarray(floats.data[i].embedding, np.float32), want[i])
    assert got.usage.prompt_tokens == sum(len(ref.tokenize(t)) for t in texts)


def test_embeddings_longer_than_the_context_are_refused(client):
    """An input past n_ctx is a 400 naming it, as OpenAI answers (it was cut silently)."""
    with pytest.raises(openai.BadRequestError, match="more than n_ctx"):
        client.embeddings.create(model="tiny", input=["word " * (2 * N_CTX)])


def test_llama_server_fields(url, ref):
    """llama-server's n_predict is max_tokens when that is absent; its samplers llamix does not
    have are a 400 naming them unless sent at the value that turns them off (were ignored)."""
    body = {"model": "tiny", "prompt": "Hello", "temperature": 0}
    r = post(url, "/v1/completions", {**body, "n_predict": 3})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    r = post(url, "/v1/completions", {**body, "n_predict": 3, "max_tokens": 5})
    assert r.json()["usage"]["completion_tokens"] == 5
    r = post(url, "/v1/chat/completions", {"model": "tiny", "messages": MESSAGES, "temperature": 0, "n_predict": 2})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    r = post(url, "/v1/completions", {**body, "max_tokens": 2, "typical_p": 1.0, "mirostat": 0, "tfs_z": 1})
    assert r.status_code == 200
    for name, value in (("typical_p", 0.9), ("mirostat", 2), ("dry_multiplier", 0.8)):
        r = post(url, "/v1/completions", {**body, "max_tokens": 2, name: value})
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == name and "not supported" in err["message"]


def test_concurrent_clients_get_their_alone_answers(client, ref, url):
    """16 clients at once on 4 slots: each greedy answer is the one its prompt gets alone."""
    prompts = [[{"role": "user", "content": f"Tell me about the number {i}." + " more" * (i % 5)}] for i in range(16)]
    want = [ref.create_chat_completion(p, max_tokens=6 + i % 7, temperature=0)["choices"][0]["message"]["content"]
            for i, p in enumerate(prompts)]

    def ask(i):
        r = client.chat.completions.create(model="tiny", messages=prompts[i], max_tokens=6 + i % 7, temperature=0)
        return r.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(ask, range(16)))
    assert got == want
    assert wait_idle(url)["slots_processing"] == 0


def test_n_choices_are_the_seeded_answers_alone(client, ref):
    """OpenAI's n: choice i is what the request gets alone with seed + i; the usage counts the
    prompt once and every choice's tokens; one id for the whole response."""
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=9, temperature=1.0, seed=7, n=3)
    want = [ref.create_chat_completion(MESSAGES, max_tokens=9, temperature=1.0, seed=7 + i) for i in range(3)]
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [c.message.content for c in r.choices] == [w["choices"][0]["message"]["content"] for w in want]
    assert len({c.message.content for c in r.choices}) > 1   # the choices were sampled apart
    assert r.usage.prompt_tokens == want[0]["usage"]["prompt_tokens"]
    assert r.usage.completion_tokens == sum(w["usage"]["completion_tokens"] for w in want)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    c = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=7, temperature=1.0, seed=3, n=2)
    want = [ref.create_completion("Once upon a time", max_tokens=7, temperature=1.0, seed=3 + i) for i in range(2)]
    assert [x.text for x in c.choices] == [w["choices"][0]["text"] for w in want]
    assert [x.index for x in c.choices] == [0, 1]


def test_n_choices_stream_as_whole(client):
    """Streamed with n, each choice's deltas (by index) add up to its whole answer, each choice
    ends with its own finish reason, and the usage chunk counts them all."""
    kw = dict(model="tiny", messages=MESSAGES, max_tokens=8, temperature=1.0, seed=11, n=3)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1
    texts, reasons, roles = ["", "", ""], [None] * 3, [None] * 3
    for ch in chunks[:-1]:
        (c,) = ch.choices
        texts[c.index] += c.delta.content or ""
        roles[c.index] = roles[c.index] or c.delta.role
        if c.finish_reason:
            assert reasons[c.index] is None
            reasons[c.index] = c.finish_reason
    assert texts == [c.message.content for c in whole.choices]
    assert reasons == [c.finish_reason for c in whole.choices] and roles == ["assistant"] * 3
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


# --- raw HTTP ----------------------------------------------------------------------------------------------
def _error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return err


def test_bad_requests(url):
    assert _error(post(url, "/v1/chat/completions", content=b"{not json"), 400)["code"] == "invalid_json"
    err = _error(post(url, "/v1/chat/completions", {"messages": MESSAGES, "temperature": "hot"}), 400)
    assert err["param"] == "temperature"
    assert _error(post(url, "/v1/chat/completions", {"messages": "hi"}), 400)["param"] == "messages"
    assert _error(post(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}), 400)["param"] \
        == "messages[0].content"
    # a user message without content was refused by the template's Jinja error, naming no field
    err = _error(post(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": None}]}), 400)
    assert err["param"] == "messages[0].content" and "null only in an assistant message" in err["message"]
    for n in (0, 129, 1.5):
        assert _error(post(url, "/v1/chat/completions", {"messages": MESSAGES, "n": n}), 400)["param"] == "n"
    assert _error(post(url, "/completion", {"prompt": "x", "n": 2}), 400)["param"] == "n"
    assert _error(post(url, "/v1/completions", {"prompt": 3}), 400)["param"] == "prompt"
    assert _error(post(url, "/v1/completions", {"prompt": "x", "top_p": 7}), 400)   # a value the sampler refuses
    assert _error(post(url, "/v1/completions", {"prompt": "x", "repeat_last_n": 1.5}), 400)["param"] == "repeat_last_n"
    assert _error(post(url, "/v1/completions", {"prompt": "x", "repeat_last_n": -3}), 400)
    assert _error(post(url, "/v1/embeddings", {"input": [1, "a"]}), 400)["param"] == "input"
    assert _error(post(url, "/v1/chat/completions", [1, 2]), 400)
    # unknown fields are tolerated
    r = post(url, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2, "user": "u", "store": False,
                                           "some_future_field": {"x": 1}})
    assert r.status_code == 200, r.text
    # text content parts are read as text
    r = post(url, "/v1/chat/completions", {"max_tokens": 2, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hello."}]}]})
    assert r.status_code == 200, r.text


def test_context_overflow_names_sizes(url):
    err = _error(post(url, "/v1/completions", {"prompt": "word " * 400, "max_tokens": 4}), 400)
    assert err["code"] == "context_length_exceeded" and err["n_ctx"] == N_CTX and err["n_prompt_tokens"] > N_CTX
    assert str(N_CTX) in err["message"]


def test_max_tokens_is_at_least_one_or_minus_one_on_every_endpoint(url, ref):
    """max_tokens 0 or negative generated until the slot's context was full (/v1/completions), or
    to the end of generation (chat): now a 400 naming the field on the OpenAI endpoints, as OpenAI
    answers; -1 is llama-server's explicit "no limit" (its max_tokens and n_predict take it).
    llama-server's /completion reads max_tokens and max_completion_tokens as n_predict (they were
    ignored: no limit) and refuses them below -1 as it does n_predict."""
    cases = [("/v1/completions", {"prompt": "Hello", "temperature": 0}, ("max_tokens", "n_predict")),
             ("/v1/chat/completions", {"messages": MESSAGES, "temperature": 0},
              ("max_tokens", "max_completion_tokens", "n_predict"))]
    for path, body, fields in cases:
        for field in fields:
            for value in (0, -5, 2.5):
                err = _error(post(url, path, {**body, field: value}), 400)
                assert err["param"] == field, (path, field, value, err)
            r = post(url, path, {**body, field: 3})
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3, r.text
    # an explicit -1: until the end of generation or the slot's context is full, as alone in process
    r = post(url, "/v1/chat/completions", {"messages": MESSAGES, "temperature": 0, "max_tokens": -1}).json()
    want = ref.create_chat_completion(MESSAGES, temperature=0, max_tokens=None)
    assert r["choices"][0]["message"]["content"] == want["choices"][0]["message"]["content"]
    assert r["usage"] == want["usage"]
    for field in ("max_tokens", "max_completion_tokens"):
        got = post(url, "/completion", {"prompt": "Hello", "temperature": 0, field: 3}).json()
        assert got["tokens_predicted"] == 3 and got["generation_settings"]["n_predict"] == 3, got
        assert _error(post(url, "/completion", {"prompt": "Hello", field: -5}), 400)["param"] == field
    got = post(url, "/completion", {"prompt": "Hello", "n_predict": 2, "max_tokens": 5}).json()
    assert got["tokens_predicted"] == 2   # n_predict first, as llama-server
    assert post(url, "/completion", {"prompt": "Hello", "n_predict": 0}).json()["content"] == ""


def test_embeddings_of_token_ids(url, ref):
    """Token-id input, as OpenAI and llama-server take it (was a 400): one array of ids, or an
    array of them; each embedded as the same tokens are in process. Ids outside the vocabulary,
    an empty input and a ``dimensions`` other than the model's are 400s naming the field
    (``dimensions`` was ignored)."""
    texts = ["hello world", "a longer sentence to embed"]
    ids = [ref.tokenize(t) for t in texts]
    want = [ref.hidden_states(i).mean(axis=0, dtype=np.float64).astype(np.float32) for i in ids]
    r = post(url, "/v1/embeddings", {"input": ids[0]}).json()
    assert len(r["data"]) == 1 and r["usage"]["prompt_tokens"] == len(ids[0])
    np.testing.assert_array_equal(np.asarray(r["data"][0]["embedding"], np.float32), want[0])
    r = post(url, "/v1/embeddings", {"input": ids}).json()
    assert [d["index"] for d in r["data"]] == [0, 1] and r["usage"]["prompt_tokens"] == sum(map(len, ids))
    for d, w in zip(r["data"], want):
        np.testing.assert_array_equal(np.asarray(d["embedding"], np.float32), w)
    n_vocab, dim = ref.config.vocab_size, ref.config.dim
    for bad in ([n_vocab], [[1, 2], [-1]], "", [""], ["a", ""], [[]], [[1], "a"]):
        assert _error(post(url, "/v1/embeddings", {"input": bad}), 400)["param"] == "input", bad
    err = _error(post(url, "/v1/embeddings", {"input": "hi", "dimensions": dim // 2}), 400)
    assert err["param"] == "dimensions" and "not supported" in err["message"] and str(dim) in err["message"]
    r = post(url, "/v1/embeddings", {"input": "hi", "dimensions": dim})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == dim


def test_completions_of_several_prompts(client, ref, url):
    """prompt as an array of strings or of token arrays: one choice per prompt (n per prompt,
    prompt-major, as OpenAI), each the prompt's answer alone with seed + its choice; the usage
    counts each prompt once. It was a 400 (one prompt per request)."""
    prompts = ["Once upon a time", "Hello there"]
    r = client.completions.create(model="tiny", prompt=prompts, max_tokens=5, temperature=1.0, seed=3, n=2)
    want = [ref.create_completion(p, max_tokens=5, temperature=1.0, seed=3 + j) for p in prompts for j in range(2)]
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert [c.text for c in r.choices] == [w["choices"][0]["text"] for w in want]
    assert r.usage.prompt_tokens == sum(len(ref.tokenize(p, parse_special=True)) for p in prompts)
    assert r.usage.completion_tokens == sum(w["usage"]["completion_tokens"] for w in want)
    ids = [[9707, 1879], [9707]]
    r = client.completions.create(model="tiny", prompt=ids, max_tokens=4, temperature=0)
    assert [c.text for c in r.choices] == [ref.create_completion(i, max_tokens=4, temperature=0)["choices"][0]["text"]
                                           for i in ids]
    # streamed: each prompt's deltas (by index) add up to its whole answer
    whole = client.completions.create(model="tiny", prompt=prompts, max_tokens=6, temperature=0)
    chunks = list(client.completions.create(model="tiny", prompt=prompts, max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    texts = ["", ""]
    for ch in chunks[:-1]:
        for c in ch.choices:
            texts[c.index] += c.text
    assert texts == [c.text for c in whole.choices]
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    for bad in (["a", [1]], [], [[]], ["x"] * 65):
        body = {"prompt": bad, "max_tokens": 1, "n": 2}
        assert _error(post(url, "/v1/completions", body), 400)["param"] == "prompt", bad


def test_every_validation_error_names_its_param(url, ref):
    """Values the model refuses (the sampler's ranges, the vocabulary, the context) were 400s with
    "param": null: each names its field, as OpenAI's do."""
    for path, body in (("/v1/completions", {"prompt": "x", "max_tokens": 1}),
                       ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 1})):
        for field, value in (("top_p", 7), ("min_p", 3), ("repeat_penalty", -1), ("repeat_last_n", -3),
                             ("logit_bias", {str(ref.config.vocab_size): 1}),
                             ("response_format", {"type": "yaml"}), ("stop", [5])):
            assert _error(post(url, path, {**body, field: value}), 400)["param"] == field, (path, field)
    assert _error(post(url, "/v1/completions", {"prompt": "word " * 400}), 400)["param"] == "prompt"
    assert _error(post(url, "/v1/completions", {"prompt": [10 ** 9]}), 400)["param"] == "prompt"
    assert _error(post(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 400}]}),
                  400)["param"] == "messages"
    assert _error(post(url, "/v1/embeddings", {"input": "word " * (2 * N_CTX)}), 400)["param"] == "input"
    assert _error(post(url, "/completion", {"prompt": "x", "top_p": 7}), 400)["param"] == "top_p"
    err = _error(post(url, "/v1/chat/completions", {"messages": MESSAGES, "stream_options": {"include_usage": 1}}), 400)
    assert err["param"] == "stream_options.include_usage"


def test_an_unknown_role_is_refused(url):
    """"role": "bogus" was handed to the chat template as it was (ChatML rendered a "bogus" turn):
    a 400 naming messages[i].role, as OpenAI answers; OpenAI's roles pass."""
    for path in ("/v1/chat/completions", "/apply-template"):
        messages = [MESSAGES[0], {"role": "bogus", "content": "hi"}]
        err = _error(post(url, path, {"messages": messages, "max_tokens": 1}), 400)
        assert err["param"] == "messages[1].role" and "bogus" in err["message"], err
    r = post(url, "/v1/chat/completions", {"max_tokens": 1, "messages": [{"role": "developer", "content": "Be brief."},
                                                                         {"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text


def test_body_size_bounded(url):
    big = {"messages": [{"role": "user", "content": "x" * (100 << 10)}]}
    assert _error(post(url, "/v1/chat/completions", big), 413)["code"] == "request_too_large"
    # without a Content-Length (chunked): counted as it arrives
    def gen():
        for _ in range(100):
            yield b" " * 1024
    r = httpx.post(url + "/v1/chat/completions", content=gen(), headers={"Authorization": f"Bearer {KEY}"},
                   timeout=30)
    _error(r, 413)


def test_api_key(url):
    assert _error(post(url, "/v1/chat/completions", {"messages": MESSAGES}, key=None), 401)["type"] \
        == "authentication_error"
    _error(post(url, "/v1/chat/completions", {"messages": MESSAGES}, key="wrong"), 401)
    _error(httpx.get(url + "/metrics", timeout=10), 401)
    # as llama-server: health and the model list need no key
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    assert httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"] == "tiny"
    assert _error(httpx.get(url + "/nope", headers={"Authorization": f"Bearer {KEY}"}, timeout=10), 404)
    assert _error(httpx.get(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=10),
                  405)


def test_disconnect_mid_stream_frees_the_slot(url, app):
    """The client leaves after a few tokens of a 200-token stream; the engine is held meanwhile (a
    call blocking it between steps) so the request cannot simply run to its end: once released, the
    slot is free after at most a step or two."""
    engine = app.state.server.engine
    body = {"messages": MESSAGES, "max_tokens": 200, "stream": True, "temperature": 0}
    generated_before = _metric(url, "llamix_tokens_generated_total")
    gate = threading.Event()
    with httpx.Client(timeout=30) as c:
        with c.stream("POST", url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(x.startswith("data: ") for x in got)
            engine.call(gate.wait, 30)
            assert health(url)["slots_processing"] == 1
        # leaving the block closes the connection mid-stream
    time.sleep(0.5)     # the server sees the connection go
    gate.set()
    h = wait_idle(url)
    assert h["slots_processing"] == 0
    generated = _metric(url, "llamix_tokens_generated_total") - generated_before
    assert 0 < generated < 40, generated


def _metric(url, name) -> float:
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def test_metrics_and_access_log(url, client, caplog):
    def chat_records():
        records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "llamix.server.access"]
        return [r for r in records if r["path"] == "/v1/chat/completions"]

    with caplog.at_level(logging.INFO, logger="llamix.server.access"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, temperature=0)
        deadline = time.time() + 10   # the server logs the request once its response is sent: after the client has it
        while not chat_records() and time.time() < deadline:
            time.sleep(0.01)
    rec = chat_records()[-1]
    assert rec["status"] == 200 and rec["method"] == "POST" and rec["completion_tokens"] == 4
    assert rec["prompt_tokens"] > 0 and rec["ttft_ms"] >= 0 and rec["duration_ms"] >= rec["ttft_ms"]
    r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert r.headers["content-type"].startswith("text/plain")
    assert _metric(url, "llamix_slots") == 4 and _metric(url, "llamix_tokens_generated_total") >= 4
    assert 'llamix_requests_total{endpoint="/v1/chat/completions",status="200"}' in r.text
    assert "llamix_time_to_first_token_seconds_count" in r.text and "llamix_queue_depth" in r.text


def test_queue_full_is_503(checkpoint):
    """One slot, no queue: while the engine is held (a call blocking it between steps), the first
    request waits for the slot and the second is refused with 503."""
    app = server_mod.create_app(llamix.Model(checkpoint, n_ctx=N_CTX), 1, max_queue=0)
    engine = app.state.server.engine
    with running(app) as u:
        gate = threading.Event()
        engine.call(gate.wait, 30)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, u + "/v1/completions", json={"prompt": "a", "max_tokens": 2}, timeout=30)
            deadline = time.time() + 10
            while engine.queue_depth == 0 and time.time() < deadline:
                time.sleep(0.005)
            err = _error(httpx.post(u + "/v1/completions", json={"prompt": "b", "max_tokens": 2}, timeout=30), 503)
            assert err["code"] == "queue_full"
            gate.set()
            assert first.result(30).status_code == 200


def test_soak(url, client):
    """A few seconds of mixed traffic (chat, streams dropped early, completions, embeddings, bad
    requests) from 6 clients: no 5xx, every slot free afterwards, the server still answers."""
    stop = time.time() + 6
    failures = []

    def worker(seed):
        rnd = random.Random(seed)
        while time.time() < stop:
            kind = rnd.randrange(5)
            try:
                if kind == 0:
                    client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=rnd.randrange(1, 20))
                elif kind == 1:
                    with httpx.stream("POST", url + "/v1/chat/completions", timeout=30,
                                      json={"messages": MESSAGES, "max_tokens": 100, "stream": True},
                                      headers={"Authorization": f"Bearer {KEY}"}) as r:
                        for i, _ in enumerate(r.iter_lines()):
                            if i > rnd.randrange(1, 10):
                                break
                elif kind == 2:
                    client.completions.create(model="tiny", prompt="abc " * rnd.randrange(1, 30), max_tokens=5)
                elif kind == 3:
                    client.embeddings.create(model="tiny", input="soak " * rnd.randrange(1, 10))
                else:
                    r = post(url, "/v1/chat/completions", content=b"[")
                    if r.status_code != 400:
                        failures.append(r.status_code)
            except Exception as e:  # noqa: BLE001 - collected and reported
                failures.append(repr(e))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:5]
    assert wait_idle(url)["slots_processing"] == 0
    assert client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2).choices


# --- the command -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def serve_command(tmp_path, *flags):
    """`llamix serve --random tiny FLAGS` in a child process, its output in tmp_path/serve.log:
    yields (process, url) once /health answers; killed afterwards if it is still running."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(llamix.__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")]), "LLAMIX_QUIET": "1"}
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "llamix", "serve", "--random", "tiny", "--port", str(port), *flags],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def test_serve_command_sigterm(tmp_path):
    with serve_command(tmp_path, "-np", "2", "-c", "512", "-t", "1", "--shutdown-timeout", "5") as (proc, url):
        models = httpx.get(url + "/v1/models", timeout=10).json()
        assert models["data"][0]["meta"]["n_ctx_slot"] == 256     # -c 512 split between 2 slots
        r = httpx.post(url + "/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "serve.log").read_text()
    text = (tmp_path / "serve.log").read_text()
    assert f"running on {url} " in text     # where it listens, as uvicorn says it
    access = [json.loads(line) for line in text.splitlines() if line.startswith('{"ts"')]
    assert {a["path"] for a in access} >= {"/health", "/v1/models", "/v1/completions"}


def test_serve_sigterm_answers_requests_past_the_shutdown_timeout(tmp_path):
    """Requests still running --shutdown-timeout seconds after SIGTERM end with an answer: a
    streaming one with an error event and [DONE], a plain one with a 503 error object; no
    traceback in the log (uvicorn had cancelled their handlers: a bare 500, a stream cut off)."""
    body = {"prompt": [1, 2, 3], "max_tokens": 60000, "temperature": 0, "logit_bias": {"2": -100}}
    results = {}
    flags = ("-np", "2", "-c", "131072", "-t", "1", "--shutdown-timeout", "1")
    with serve_command(tmp_path, *flags) as (proc, url):
        def plain():
            results["plain"] = httpx.post(url + "/v1/completions", json=body, timeout=60)
        worker = threading.Thread(target=plain)
        worker.start()
        with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=60) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))   # it runs
            deadline = time.monotonic() + 30   # and so does the plain one (a loaded machine may start it late)
            while "llamix_slots_busy 2.0" not in httpx.get(url + "/metrics").text and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            events = [line for line in lines if line.startswith("data: ")]
        worker.join(60)
        assert proc.wait(30) == 0
    text = (tmp_path / "serve.log").read_text()
    assert events[-1] == "data: [DONE]" and '"error"' in events[-2] and "stopped" in events[-2], events[-3:]
    assert results["plain"].status_code == 503 and results["plain"].json()["error"]["code"] == "unavailable"
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]


def test_serve_command_busy_port_or_bad_host_is_one_line_naming_the_flag(capsys):
    """A port in use or a host that is no address here ends in one line naming --host/--port and
    exit code 1, before the model loads (was uvicorn's log lines and exit code 3)."""
    from llamix.cli import main
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "-m", "no-such-model.gguf", "--port", str(port), "-t", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"llamix serve: error: --host 127.0.0.1 --port {port}: cannot listen there")
    assert err.count("\n") == 1
    assert main(["serve", "--random", "tiny", "--host", "256.1.1.1", "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llamix serve: error: --host '256.1.1.1': ") and err.count("\n") == 1


def test_serve_command_refuses_a_template_that_does_not_parse(tmp_path, capsys):
    """A chat template that does not parse is the server's fault, said at start in one line naming
    where it came from, exit 1 (the server started, then answered every chat request 400)."""
    from llamix.cli import main
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m['content'] } }}{% endfor %}")
    assert main(["serve", "--random", "tiny", "--port", str(free_port()), "-t", "1", "--chat-template-file",
                 str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"llamix serve: error: chat template (--chat-template-file {bad}) does not parse: "
                              "unexpected '}'"), err
    assert not any("http://" in line for line in err)   # it did not start


def test_a_template_that_refuses_the_messages_is_a_400_with_its_message(checkpoint):
    """raise_exception in the template: the request is one the template refuses, a 400 whose
    message is the template's own, naming the template."""
    import dataclasses
    template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    ck = dataclasses.replace(checkpoint, chat_template=template, chat_template_source="m/tokenizer_config.json: "
                                                                                      "chat_template")
    app = server_mod.create_app(llamix.Model(ck, n_ctx=N_CTX), 1, name="tiny")
    with running(app) as u:
        r = post(u, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2}, key=None)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"] == "chat template (m/tokenizer_config.json: chat_template): System role not supported"
        r = post(u, "/v1/chat/completions", {"messages": MESSAGES[1:], "max_tokens": 2}, key=None)
        assert r.status_code == 200


def test_create_app_refuses_a_template_that_does_not_parse(checkpoint):
    """As llama-server refuses to start: the application is not made (its chat requests would
    each have got the server's fault as a 400 invalid_request_error)."""
    import dataclasses
    ck = dataclasses.replace(checkpoint, chat_template="{{ 'x' } }}", chat_template_source="m.gguf: "
                                                                                        "tokenizer.chat_template")
    with pytest.raises(llamix.FormatError, match=r"chat template \(m\.gguf: tokenizer\.chat_template\) does not parse"):
        server_mod.create_app(llamix.Model(ck, n_ctx=N_CTX), 1)
    server_mod.create_app(llamix.Model(ck, n_ctx=N_CTX, chat_format="chatml"), 1)   # a built-in format instead


def test_lora_adapters_as_llama_server(checkpoint, tmp_path):
    """llama-server's adapter API on a server whose model has a LoRA adapter folded in: GET
    /lora-adapters lists it (id, path, scale); a request's (or POST /lora-adapters') ``lora`` list is
    taken when it asks for the loaded scale and answered by the adapted weights, and refused with a
    400 naming the adapter otherwise (an adapter left out of the list means scale 0, and a request's
    empty list the server's scales, as in llama-server), never answered by weights other than the
    ones asked for. A server without an
    adapter lists none."""
    import copy
    from llamix.formats.gguf import GGUFWriter
    from llamix.loaders.lora import apply_lora

    rng = np.random.default_rng(5)
    adapter = tmp_path / "lora.gguf"
    with GGUFWriter(adapter) as w:
        w.add("general.architecture", "llama")
        w.add("general.type", "adapter")
        w.add("adapter.type", "lora")
        w.add("adapter.lora.alpha", np.float32(2.0))
        for name in ("blk.0.ffn_up.weight", "blk.1.ffn_down.weight"):
            out, inp = checkpoint.tensors[name].shape
            w.add_tensor(name + ".lora_a", rng.normal(0, 0.5, (2, inp)).astype(np.float32))
            w.add_tensor(name + ".lora_b", rng.normal(0, 0.5, (out, 2)).astype(np.float32))
    adapted = copy.copy(checkpoint)
    adapted.tensors, adapted.lora_adapters = dict(checkpoint.tensors), []
    apply_lora(adapted, str(adapter), 0.5)
    alone = llamix.Model(adapted, n_ctx=N_CTX).create_completion("Hello", max_tokens=6, temperature=0)
    app = server_mod.create_app(llamix.Model(adapted, n_ctx=N_CTX), 2)
    with running(app) as u:
        assert httpx.get(u + "/lora-adapters", timeout=30).json() == [
            {"id": 0, "path": str(adapter), "scale": 0.5, "task_name": "", "prompt_prefix": ""}]
        body = {"prompt": "Hello", "max_tokens": 6, "temperature": 0}
        for path, lora in (("/v1/completions", [{"id": 0, "scale": 0.5}]), ("/completion", [{"id": 0, "scale": 0.5}]),
                           ("/completion", [])):   # a request's empty list: the server's scales
            r = post(u, path, {**body, "lora": lora}, key=None)
            assert r.status_code == 200, r.text
        assert post(u, "/v1/completions", {**body, "lora": [{"id": 0, "scale": 0.5}]}, key=None).json()[
            "choices"][0]["text"] == alone["choices"][0]["text"]
        chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        for path, lora, said in (
                ("/v1/completions", [{"id": 0, "scale": 1.0}], "adapter 0 (" + str(adapter) + ") at scale 1:"),
                ("/completion", [{"id": 0}], "at scale 0:"),     # no scale: 0
                ("/v1/chat/completions", [{"id": 3, "scale": 0.5}], "lora[0].id: invalid adapter id 3 (loaded: 0"),
                ("/v1/completions", {"id": 0}, "lora must be a list"),
                ("/v1/completions", [{"id": 0, "scale": "x"}], "lora[0].scale must be a number")):
            err = _error(post(u, path, {**(chat if "chat" in path else body), "lora": lora}, key=None), 400)
            assert said in err["message"] and err["param"] == "lora", err
        assert post(u, "/lora-adapters", [{"id": 0, "scale": 0.5}], key=None).json() == {"success": True}
        for body in ([{"id": 0, "scale": 0.0}], []):   # POST's empty list: every adapter at scale 0
            err = _error(post(u, "/lora-adapters", body, key=None), 400)
            assert "cannot change their scale while serving" in err["message"]
    plain = server_mod.create_app(llamix.Model(checkpoint, n_ctx=N_CTX), 1)
    with running(plain) as u:
        assert httpx.get(u + "/lora-adapters", timeout=30).json() == []
        assert post(u, "/v1/completions", {"prompt": "a", "max_tokens": 1, "lora": []}, key=None).status_code == 200
        _error(post(u, "/v1/completions", {"prompt": "a", "max_tokens": 1, "lora": [{"id": 0, "scale": 1}]},
                    key=None), 400)
