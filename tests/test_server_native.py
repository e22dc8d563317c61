"""``llamix serve``'s llama-server endpoints (``/completion``, ``/tokenize``, ``/detokenize``,
``/apply-template``, ``/props``, and the paths llama-server also answers without ``/v1``):
against the same model's in-process API, and against llama.cpp's own ``llama-server`` on the same
GGUF file (peers marker): the same tokens, pieces, text, greedy completion and answer fields."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llamix
from llamix import Tokenizer
from llamix.chat_format import builtin_format

from conftest import require_peer
from helpers import skip_or_fail
from serving import free_port, running

server_mod = require_peer("llamix.server", "serve")
httpx = require_peer("httpx", "test")

N_CTX = 256
# llama-server's /completion answer fields (tools/server/server-task.cpp, to_json_non_oaicompat)
FINAL_FIELDS = {"index", "content", "tokens", "id_slot", "stop", "model", "tokens_predicted", "tokens_evaluated",
                "generation_settings", "prompt", "has_new_line", "truncated", "stop_type", "stopping_word",
                "tokens_cached", "timings"}
EVENT_FIELDS = {"index", "content", "tokens", "stop", "tokens_predicted", "tokens_evaluated"}


@pytest.fixture(scope="module")
def model(assets):
    """A random-weight model with Qwen2's vocabulary (control tokens, byte-level BPE) and ChatML."""
    tok = Tokenizer.from_file(assets / "vocab" / "ggml-vocab-qwen2.gguf")
    ck = llamix.random_checkpoint("tiny", "q8_0", tokenizer=tok, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                  hidden_dim=128, seed=5)
    ck.chat_template = builtin_format("chatml").template
    return llamix.Model(ck, n_ctx=N_CTX)


@pytest.fixture(scope="module")
def url(model):
    with running(server_mod.create_app(model, 2, name="tiny")) as u:
        yield u


def post(url, path, body):
    return httpx.post(url + path, json=body, timeout=60)


def events(url, body) -> list[dict]:
    with httpx.stream("POST", url + "/completion", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and "data: [DONE]" not in lines   # as llama-server
    return [json.loads(line[6:]) for line in lines]


def test_completion_is_the_in_process_greedy_answer(url, model):
    world = model.tokenize(" world", add_special=False, parse_special=True)
    cases = [("Hello there", model.tokenize("Hello there", parse_special=True)),   # text, ids, both mixed
             ([9707, 1879], [9707, 1879]), ([9707, " world"], [9707, *world])]
    for prompt, ids in cases:
        r = post(url, "/completion", {"prompt": prompt, "n_predict": 7, "temperature": 0, "return_tokens": True})
        assert r.status_code == 200
        got = r.json()
        want = model.create_completion(ids, max_tokens=7, temperature=0)
        assert got["content"] == want["choices"][0]["text"]
        assert got["tokens_predicted"] == want["usage"]["completion_tokens"] == len(got["tokens"])
        assert got["tokens_evaluated"] == len(ids) and got["stop"] is True
        assert got["stop_type"] == ("limit" if want["choices"][0]["finish_reason"] == "length" else "eos")
        assert set(got) >= FINAL_FIELDS and got["generation_settings"]["n_predict"] == 7
    # the same alias llama-server gives its native completion
    assert post(url, "/completions", {"prompt": "Hello there", "n_predict": 7, "temperature": 0}).json()["content"] \
        == model.create_completion("Hello there", max_tokens=7, temperature=0)["choices"][0]["text"]


def test_stream_pieces_add_up_to_the_whole_answer(url):
    body = {"prompt": "Hello there", "n_predict": 9, "temperature": 0}
    whole = post(url, "/completion", {**body, "return_tokens": True}).json()
    evs = events(url, body)
    assert all(set(e) >= EVENT_FIELDS and e["stop"] is False for e in evs[:-1])
    assert [e["tokens_predicted"] for e in evs[:-1]] == list(range(1, len(evs)))
    assert "".join(e["content"] for e in evs) == whole["content"]
    assert [t for e in evs[:-1] for t in e["tokens"]] == whole["tokens"]
    assert evs[-1]["stop"] is True and set(evs[-1]) >= FINAL_FIELDS and evs[-1]["tokens_predicted"] == 9


def test_stop_type_and_word(url, model):
    text = post(url, "/completion", {"prompt": "Hello there", "n_predict": 9, "temperature": 0}).json()["content"]
    word = text[3:5]
    got = post(url, "/completion", {"prompt": "Hello there", "n_predict": 9, "temperature": 0, "stop": [word]}).json()
    assert got["stop_type"] == "word" and got["stopping_word"] == word and got["content"] == text[:text.find(word)]
    eos = model.eos_ids[0]
    got = post(url, "/completion", {"prompt": "Hello", "n_predict": 9, "logit_bias": {str(eos): 100}}).json()
    assert got["stop_type"] == "eos" and got["content"] == "" and got["tokens_predicted"] == 0
    got = post(url, "/completion", {"prompt": "Hello", "n_predict": 0}).json()
    assert got["stop_type"] == "limit" and got["content"] == "" and got["tokens_predicted"] == 0


def test_n_probs(url, model):
    got = post(url, "/completion", {"prompt": "Hello", "n_predict": 3, "temperature": 0, "n_probs": 2}).json()
    want = model.create_completion("Hello", max_tokens=3, temperature=0, logprobs=2)["choices"][0]["logprobs"]
    probs = got["completion_probabilities"]
    assert [p["token"] for p in probs] == want["tokens"]
    assert [p["logprob"] for p in probs] == pytest.approx(want["token_logprobs"], abs=1e-5)
    assert all(len(p["top_logprobs"]) == 2 and p["top_logprobs"][0]["id"] == p["id"] for p in probs)


def test_tokenize_and_detokenize(url, model):
    text = "Hello world <|im_start|>é"
    got = post(url, "/tokenize", {"content": text}).json()["tokens"]
    assert got == model.tokenize(text, add_special=False, parse_special=True)
    plain = post(url, "/tokenize", {"content": text, "parse_special": False}).json()["tokens"]
    assert plain == model.tokenize(text, add_special=False, parse_special=False) and plain != got
    pieces = post(url, "/tokenize", {"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == got and "".join(p["piece"] for p in pieces) == text
    assert post(url, "/detokenize", {"tokens": got}).json()["content"] == text


def test_apply_template_props_and_aliases(url, model):
    messages = [{"role": "user", "content": "hi"}]
    assert post(url, "/apply-template", {"messages": messages}).json()["prompt"] == model.apply_chat_template(messages)
    props = httpx.get(url + "/props", timeout=10).json()
    assert props["default_generation_settings"]["n_ctx"] == N_CTX and props["total_slots"] == 2
    assert props["chat_template"] == builtin_format("chatml").template
    assert httpx.get(url + "/v1/health", timeout=10).json()["status"] == "ok"
    assert httpx.get(url + "/models", timeout=10).json()["data"][0]["id"] == "tiny"
    r = post(url, "/chat/completions", {"messages": messages, "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"


def test_one_prompt_per_completion(url, model):
    """An array of strings (or of arrays) is several prompts to llama-server: refused, never run
    as the prompts joined; an array holding one prompt is that prompt."""
    for prompt in (["Hello", " there"], [[9707], [1879]], ["Hello", [1879]]):
        r = post(url, "/completion", {"prompt": prompt, "n_predict": 2})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
    want = model.create_completion([9707, 1879], max_tokens=4, temperature=0)["choices"][0]["text"]
    for prompt in ([[9707, 1879]], [9707, 1879]):
        r = post(url, "/completion", {"prompt": prompt, "n_predict": 4, "temperature": 0})
        assert r.status_code == 200 and r.json()["content"] == want and r.json()["tokens_evaluated"] == 2, r.text


def test_llama_server_json_schema_grammar_and_logit_bias_pairs(url, model):
    """llama-server's own fields: ``json_schema`` constrains as response_format does and
    ``grammar`` (GBNF) as llama-server does (both were ignored), and ``logit_bias`` may be
    [[id, bias], ...] pairs with false banning the token."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    for path, body in (("/completion", {"prompt": "Hello", "n_predict": 40}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 40})):
        r = post(url, path, {**body, "temperature": 1.0, "seed": 3, "json_schema": schema})
        assert r.status_code == 200, r.text
        answer = r.json()
        text = answer["content"] if path == "/completion" else answer["choices"][0]["message"]["content"]
        assert set(json.loads(text)) == {"n"}, text
    for seed in range(4):   # GBNF, sampled: always one of the grammar's words
        got = post(url, "/completion", {"prompt": "Hello", "n_predict": 8, "temperature": 1.5, "seed": seed,
                                        "grammar": 'root ::= "yes" | "no" | "maybe" [0-9]'}).json()
        assert got["content"] in ("yes", "no") or (got["content"][:5] == "maybe" and got["content"][5:].isdigit()), got
    r = post(url, "/completion", {"prompt": "Hello", "grammar": "root ::= ("})
    assert r.status_code == 400 and "grammar" in r.json()["error"]["message"]
    base = {"prompt": "Hello there", "n_predict": 3, "temperature": 0, "return_tokens": True}
    first = post(url, "/completion", base).json()["tokens"][0]
    for bias in ([[first, False]], [[str(first), -1000]], {str(first): -1000}):
        got = post(url, "/completion", {**base, "logit_bias": bias}).json()["tokens"]
        assert got and got[0] != first, bias
    r = post(url, "/completion", {**base, "logit_bias": [["Hello", -1]]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias"


def test_apply_template_without_generation_prompt(url, model):
    messages = [{"role": "user", "content": "hi"}]
    for add in (False, True):
        got = post(url, "/apply-template", {"messages": messages, "add_generation_prompt": add}).json()["prompt"]
        assert got == model.apply_chat_template(messages, add_generation_prompt=add)
    assert post(url, "/apply-template", {"messages": messages, "add_generation_prompt": 1}).status_code == 400


@pytest.mark.parametrize("path, body, param", [
    ("/completion", {"n_predict": 2}, "prompt"),
    ("/completion", {"prompt": {"x": 1}}, "prompt"),
    ("/completion", {"prompt": "x", "n_predict": -2}, "n_predict"),
    ("/completion", {"prompt": "x", "n_probs": -1}, "n_probs"),
    ("/completion", {"prompt": "x", "mirostat": 2}, "mirostat"),
    ("/tokenize", {}, "content"),
    ("/tokenize", {"content": "x", "with_pieces": "yes"}, "with_pieces"),
    ("/detokenize", {"tokens": [1, 10 ** 9]}, "tokens"),
    ("/detokenize", {"tokens": "abc"}, "tokens"),
])
def test_bad_requests_name_the_field(url, path, body, param):
    r = post(url, path, body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


# --- against llama-server ------------------------------------------------------------------------------------
# ChatML with tool calls written as Qwen2.5's template writes them (arguments | tojson)
TOOL_TEMPLATE = ("{%- for m in messages %}<|im_start|>{{ m.role }}\n{%- if m.content %}{{ m.content }}{%- endif %}"
                 "{%- for c in m.tool_calls or [] %}<tool_call>{\"name\": \"{{ c.function.name }}\", \"arguments\": "
                 "{{ c.function.arguments | tojson }}}</tool_call>{%- endfor %}<|im_end|>\n{%- endfor %}"
                 "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}")

@contextlib.contextmanager
def llama_server(model_path: Path, log: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from llama_cpp_tools import tool

    exe = tool("llama-server")
    if exe is None:
        skip_or_fail("llama-server is not built (bench/llama_cpp_tools.py builds it into ~/.cache/llamix-llama-cpp)")
    port = free_port()
    # --no-repack: llama.cpp's AMX weight buffers crash in some VMs
    cmd = [str(exe), "-m", str(model_path), "--port", str(port), "-c", str(N_CTX), "-np", "1", "-t", "1",
           "--no-repack", "--no-webui"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, f"llama-server exited: {log.read_text()[-2000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            assert time.time() < deadline, "llama-server did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.peers
def test_same_answers_as_llama_server(tmp_path, s260_bin):
    """stories260K (SentencePiece, byte-fallback pieces) exported to an f32 GGUF, served by both."""
    from llamix.export import export_gguf
    from llamix.loaders import load_checkpoint

    path = tmp_path / "s260.gguf"
    ck = load_checkpoint(s260_bin)
    ck.chat_template = TOOL_TEMPLATE   # for /apply-template
    export_gguf(ck, path, "f32")
    ours = llamix.load(str(path), n_ctx=N_CTX)
    with llama_server(path, tmp_path / "llama-server.log") as theirs, \
            running(server_mod.create_app(ours, 1, name="s260")) as mine:
        def both(p, body):
            a, b = post(mine, p, body), post(theirs, p, body)
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            return a.json(), b.json()

        for body in ({"content": "Once upon a time, á"}, {"content": "Once upon a time", "add_special": True},
                     {"content": "Lily <s> é", "with_pieces": True}, {"content": "<s>x", "parse_special": False}):
            a, b = both("/tokenize", body)
            assert a == b, body
        ids = both("/tokenize", {"content": "Once upon a time, á", "add_special": True})[0]["tokens"]
        a, b = both("/detokenize", {"tokens": ids})
        assert a == b
        body = {"prompt": "Once upon a time", "n_predict": 12, "temperature": 0, "return_tokens": True}
        a, b = both("/completion", body)
        for key in ("content", "tokens", "stop", "tokens_predicted", "tokens_evaluated", "prompt", "stop_type",
                    "stopping_word", "truncated", "has_new_line"):
            assert a[key] == b[key], key
        assert set(a) >= set(b)
        assert set(a["timings"]) >= {k for k in b["timings"] if not k.startswith("draft")}
        a, b = both("/completion", {**body, "stop": [a["content"][5:8]]})
        assert (a["content"], a["stop_type"], a["stopping_word"]) == (b["content"], b["stop_type"], b["stopping_word"])
        a, b = both("/completion", {**body, "prompt": [ids]})     # one prompt in an array: that prompt
        assert (a["content"], a["tokens_evaluated"]) == (b["content"], b["tokens_evaluated"])
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        for add in (True, False):
            a, b = both("/apply-template", {"messages": messages, "add_generation_prompt": add})
            assert a == b, add
        call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        a, b = both("/apply-template", {"messages": [*messages, {"role": "assistant", "content": None,
                                                                  "tool_calls": [call]},
                                                     {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]})
        assert a == b and '"arguments": {"city": "Paris"}' in a["prompt"], (a, b)   # arguments not encoded twice
        gbnf = 'root ::= ("Once" | "Lily" | "The") " " [a-z]+ "."'
        a, b = both("/completion", {**body, "grammar": gbnf})     # the same constrained greedy text (the
        assert a["content"] == b["content"], (a["content"], b["content"])   # engines may split it differently)
        first = both("/completion", body)[1]["tokens"][0]
        a, b = both("/completion", {**body, "logit_bias": [[first, False]]})   # llama-server's pairs: banned
        assert a["tokens"] == b["tokens"] and a["content"] == b["content"] and first not in a["tokens"][:1]
        a, b = (httpx.get(u + "/props", timeout=10).json() for u in (mine, theirs))
        for key in ("bos_token", "eos_token", "chat_template", "total_slots"):
            assert a[key] == b[key], key
