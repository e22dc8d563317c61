"""The llama-cpp-python-shaped API: create_completion / __call__ / create_chat_completion /
create_embedding results have llama-cpp-python's shapes (compared with llama-cpp-python's own
results on the same GGUF, peers), code written for it runs, streaming equals the whole result,
finish reasons, usage, log-probabilities (against a numpy log-softmax of logits recomputed from
scratch), response_format JSON (parsed and validated with jsonschema), the engine's Request on
synthetic logits (stop strings, bias, end of generation), and embeddings against transformers'
final hidden states (peers)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import llamix
from llamix import Tokenizer
from llamix.chat_format import builtin_format
from llamix.model.engine import Request
from llamix.model.sampling import Sampler

import llama_cpp_peer
from conftest import require_peer
from helpers import hub_cache, log_softmax, tiny_tensors, write_model

MESSAGES = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def qwen_vocab(assets) -> Tokenizer:
    return Tokenizer.from_file(assets / "vocab" / "ggml-vocab-qwen2.gguf")


@pytest.fixture(scope="module")
def model(qwen_vocab):
    """A random-weight model with Qwen2's 151k-token vocabulary and a ChatML template."""
    ck = llamix.random_checkpoint("tiny", "q8_0", tokenizer=qwen_vocab, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                  hidden_dim=128, seed=3)
    ck.chat_template = builtin_format("chatml").template
    return llamix.Model(ck, n_ctx=256)


def shape(x, key: str = ""):
    """The structure of a result: key sets, list element structure, scalar types (a completion's
    top_logprobs entries are dicts keyed by token text: their values' type only)."""
    if isinstance(x, dict):
        if key == "top_logprobs" and "logprob" not in x:
            return {"<token>": sorted({shape(v) for v in x.values()})}
        return {k: shape(v, k) for k, v in x.items()}
    if isinstance(x, list):
        return [shape(x[0], key)] if x else []
    if isinstance(x, (bool, np.bool_)):
        return "bool"
    if isinstance(x, (int, float, np.integer, np.floating)):
        return "number"
    return type(x).__name__


# --- against llama-cpp-python ----------------------------------------------------------------------
@pytest.mark.peers
def test_penalties_count_generated_tokens_only_as_llama_cpp_python(assets, tmp_path):
    """llama-cpp-python's Llama never shows the prompt to its penalty sampler (llama-cli and
    llama-server do): on the same file, its greedy completions with each penalty are llamix's API's;
    llama.cpp's own sampling (llama_cpp_sampling=True, the prompt penalized) gives other text."""
    llama_cpp_peer.require()
    path = tmp_path / "s260k.gguf"
    llamix.export_gguf(llamix.load(assets / "stories260K" / "stories260K.bin"), path, None)
    runs = [dict(max_tokens=30, temperature=0, repeat_penalty=3.0), dict(max_tokens=30, temperature=0, frequency_penalty=1.0),
            dict(max_tokens=30, temperature=0, presence_penalty=1.5)]
    theirs = llama_cpp_peer.completion_texts_in_child(path, "Once upon a time", runs)
    m = llamix.Llama(path, n_ctx=256)
    assert [m.create_completion("Once upon a time", **kw)["choices"][0]["text"] for kw in runs] == theirs
    assert m.create_completion("Once upon a time", llama_cpp_sampling=True, **runs[0])["choices"][0]["text"] != theirs[0]


def test_negative_temperature_draws_from_the_whole_distribution_as_llama_cpp_python(model):
    """llama-cpp-python's Llama with temperature < 0: its chain is the penalties and one draw from
    the softmax of the logits (no top-k/top-p/min-p, temperature 1); llama.cpp's sampler (the CLI,
    the server) is greedy there."""
    s = model.prepare_completion("Hello there", temperature=-1, top_k=1, top_p=0.1, min_p=0.9).request.sampler
    assert (s.temperature, s.top_k, s.top_p, s.min_p) == (1.0, 0, 1.0, 0.0)
    z = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    idx, p = s.probabilities(z)
    want = np.exp(z.astype(np.float64) - z.max())
    np.testing.assert_allclose(p, (want / want.sum())[idx], rtol=1e-12)
    greedy = model.prepare_completion("Hello there", temperature=-1, llama_cpp_sampling=True).request.sampler
    assert greedy.probabilities(z)[0].tolist() == [int(np.argmax(z))]


@pytest.mark.peers
def test_result_shapes_match_llama_cpp_python(model, tmp_path):
    llama_cpp_peer.require()
    path = tmp_path / "m.gguf"
    llamix.export_gguf(model, path, qtype="q8_0")
    theirs = llama_cpp_peer.api_results_in_child(path, "Hello there", MESSAGES)
    ours = {
        "completion": model.create_completion("Hello there", max_tokens=4, seed=1),
        "completion_logprobs": model.create_completion("Hello there", max_tokens=3, logprobs=2, seed=1),
        "completion_echo": model("Hello there", max_tokens=2, echo=True, seed=1),
        "completion_stream": list(model.create_completion("Hello there", max_tokens=4, stream=True, seed=1)),
        "chat": model.create_chat_completion(MESSAGES, max_tokens=4, seed=1),
        "chat_logprobs": model.create_chat_completion(MESSAGES, max_tokens=3, logprobs=True, top_logprobs=2, seed=1),
        "chat_stream": list(model.create_chat_completion(MESSAGES, max_tokens=4, stream=True, seed=1)),
        "embedding": model.create_embedding(["hello world", "a b"]),
    }
    for key in theirs:
        t, o = theirs[key], ours[key]
        if key.endswith("stream"):
            # the first and the last chunk, and every one between them, shaped alike
            assert shape(o[0]) == shape(t[0]), key
            assert shape(o[-1]) == shape(t[-1]), key
            assert {json.dumps(shape(c), sort_keys=True) for c in o[1:-1]} <= \
                {json.dumps(shape(c), sort_keys=True) for c in t[1:-1]}, key
            assert o[-1]["choices"][0]["finish_reason"] in ("stop", "length")
            continue
        if key == "chat_logprobs":  # llama-cpp-python writes "bytes": null; OpenAI (and llamix) the UTF-8 bytes
            for entry in t["choices"][0]["logprobs"]["content"]:
                entry["bytes"] = [0]
                for alt in entry["top_logprobs"]:
                    alt["bytes"] = [0]
        assert shape(o) == shape(t), f"{key}:\n{shape(o)}\n!=\n{shape(t)}"
    assert ours["completion"]["id"].startswith("cmpl-") and ours["chat"]["id"].startswith("chatcmpl-")
    assert ours["chat"]["object"] == "chat.completion" and ours["chat_stream"][0]["object"] == "chat.completion.chunk"
    # mean-pooled embeddings of the same file: the same vectors, up to both engines' Q8_0 activations
    for o, t in zip(ours["embedding"]["data"], theirs["embedding"]["data"]):
        a, b = np.asarray(o["embedding"], np.float64), np.asarray(t["embedding"], np.float64)
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.999
    assert ours["embedding"]["usage"] == theirs["embedding"]["usage"]


@pytest.mark.peers
def test_vocabulary_accessors_as_llama_cpp_python(model, tmp_path, s260_bin):
    """n_vocab(), n_embd(), token_bos(), token_eos(): Llama's methods, the same values on the same
    file (byte-level BPE without BOS, SentencePiece with BOS)."""
    llama_cpp_peer.require()
    qwen = tmp_path / "qwen.gguf"
    llamix.export_gguf(model, qwen, qtype="q8_0")
    s260 = tmp_path / "s260.gguf"
    llamix.export_gguf(s260_bin, s260, qtype="f32")
    for path in (qwen, s260):
        llm = llamix.load(path)
        theirs = llama_cpp_peer.accessors_in_child(path)
        assert {name: getattr(llm, name)() for name in theirs} == theirs, path.name


def test_code_written_for_llama_cpp_python_runs(model):
    llm = model
    out = llm("Q: Name the planets in the solar system? A: ", max_tokens=8, stop=["Q:", "\n"], echo=True, seed=0)
    assert out["choices"][0]["text"].startswith("Q: Name the planets")
    pieces = []
    for chunk in llm.create_chat_completion(messages=MESSAGES, stream=True, max_tokens=6, seed=4):
        delta = chunk["choices"][0]["delta"]
        if "role" in delta:
            assert delta["role"] == "assistant"
        elif "content" in delta:
            pieces.append(delta["content"])
    whole = llm.create_chat_completion(messages=MESSAGES, max_tokens=6, seed=4)
    assert "".join(pieces) == whole["choices"][0]["message"]["content"]
    assert whole["usage"]["completion_tokens"] <= 6
    emb = llm.create_embedding("Hello, world!")["data"][0]["embedding"]
    assert isinstance(emb, list) and len(emb) == llm.config.dim


def test_llama_cpp_python_constructor_arguments(qwen_vocab, tmp_path, s260_bin):
    """Llama(seed=...) makes a whole run reproducible (calls without a seed draw theirs from it);
    n_gpu_layers / n_batch / logits_all / verbose are accepted (a nonzero n_gpu_layers warns);
    n_tokens is the filled context (these were TypeErrors / AttributeErrors)."""
    def run(seed):
        ck = llamix.random_checkpoint("tiny", "q8_0", tokenizer=qwen_vocab, dim=64, n_layers=2, n_heads=4,
                                      n_kv_heads=2, hidden_dim=128, seed=3)
        m = llamix.Model(ck, n_ctx=256, seed=seed)
        return [m.create_completion("Hello", max_tokens=8, temperature=1.5)["choices"][0]["text"] for _ in range(3)]
    first = run(11)
    assert run(11) == first and len(set(first)) > 1    # reproducible, and not one text repeated
    assert run(12) != first
    with pytest.warns(UserWarning, match="n_gpu_layers=-1 has no effect"):
        llm = llamix.load(s260_bin, n_gpu_layers=-1, n_batch=512, logits_all=True, verbose=False, seed=1)
    llm.eval(llm.tokenize("Once upon a time"))
    assert llm.n_tokens == llm.n_past > 0
    with pytest.raises(llamix.ArgumentError, match="seed must be an integer"):
        llamix.load(s260_bin, seed="x")


def test_llama_class_and_from_pretrained_as_llama_cpp_python(tmp_path, s260_bin, monkeypatch):
    """llamix.Llama(model_path=..., n_ctx=..., n_threads=...) is the Model load() gives, and
    Llama.from_pretrained(repo_id, filename) finds the file in huggingface_hub's cache (offline)."""
    pytest.importorskip("huggingface_hub")
    from llamix.export import export_gguf

    repo = tmp_path / "repo"
    repo.mkdir()
    export_gguf(s260_bin, repo / "stories-f32.gguf", "f32")
    export_gguf(s260_bin, repo / "stories-q8_0.gguf", "q8_0")
    llm = llamix.Llama(model_path=str(repo / "stories-q8_0.gguf"), n_ctx=64, n_threads=1, seed=3, verbose=False)
    ref = llamix.load(repo / "stories-q8_0.gguf", n_ctx=64, n_threads=1)
    assert isinstance(llm, llamix.Model) and llm.n_ctx == 64
    want = ref.create_completion("Once upon a time", max_tokens=6, temperature=0)["choices"][0]["text"]
    assert llm("Once upon a time", max_tokens=6, temperature=0)["choices"][0]["text"] == want
    assert llamix.load(model_path=repo / "stories-q8_0.gguf", n_ctx=64).n_vocab() == llm.n_vocab()

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_cache(cache, "someone/stories-GGUF", repo)
    llm = llamix.Llama.from_pretrained("someone/stories-GGUF", "*q8_0.gguf", n_ctx=64)
    assert isinstance(llm, llamix.Llama) and llm.source.endswith("stories-q8_0.gguf")
    assert llm("Once upon a time", max_tokens=6, temperature=0)["choices"][0]["text"] == want
    with pytest.raises(llamix.ArgumentError, match=r"2 files match '\*.gguf'.*name one"):
        llamix.Llama.from_pretrained("someone/stories-GGUF", "*.gguf")
    # offline, a file not in the cache is said to be so (was "0 files match")
    with pytest.raises(llamix.ArgumentError, match=r"no file matching '\*q4_k_m.gguf' in the Hugging Face cache.*"
                                                   r"HF_HUB_OFFLINE is set"):
        llamix.Llama.from_pretrained("someone/stories-GGUF", "*q4_k_m.gguf")
    with pytest.raises(llamix.ArgumentError, match="path once"):
        llamix.load()


# --- behaviour ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_stream_equals_whole(model, seed):
    kw = dict(max_tokens=12, temperature=1.0, seed=seed, stop=["e"])
    whole = model.create_completion("Once upon", **kw)
    chunks = list(model.create_completion("Once upon", stream=True, **kw))
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert "e" not in whole["choices"][0]["text"]


def test_greedy_finish_reasons_and_usage(model):
    a = model.create_completion("Hi", max_tokens=5, temperature=0)
    b = model.create_completion("Hi", max_tokens=5, temperature=0.9, top_p=0.0, seed=8)  # top_p = 0: greedy
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    assert a["choices"][0]["finish_reason"] == "length"
    n_prompt = len(model.tokenize("Hi"))
    assert a["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 5, "total_tokens": n_prompt + 5}
    eos = model.eos_ids[0]
    r = model.create_completion("Hi", max_tokens=5, logit_bias={eos: 1e4})  # the first token ends it
    assert r["choices"][0] == {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}
    assert r["usage"]["completion_tokens"] == 0
    # max_tokens None: until the context is full, never past it
    full = model.create_completion([1, 2, 3], max_tokens=None, temperature=0, logit_bias={e: -1e4 for e in model.eos_ids})
    assert full["choices"][0]["finish_reason"] == "length" and full["usage"]["total_tokens"] == model.n_ctx
    with pytest.raises(ValueError, match="exceed context window"):
        model.create_completion(list(range(300)))


def test_logprobs_against_recomputed_logits(model):
    """Each reported log-probability is log_softmax of the logits at its position (recomputed here
    from scratch over prompt + completion), and the top alternatives are the best ones."""
    r = model.create_completion("The sky is", max_tokens=6, temperature=1.0, seed=5, logprobs=3)
    lp = r["choices"][0]["logprobs"]
    prompt = model.tokenize("The sky is", parse_special=True)
    out = model.create_completion("The sky is", max_tokens=6, temperature=1.0, seed=5)
    assert out["choices"][0]["text"] == r["choices"][0]["text"]   # asking for logprobs changes nothing
    tokens = model.tokenize("The sky is" + r["choices"][0]["text"], add_special=True, parse_special=True)[len(prompt):]
    ref = log_softmax(model.logits(prompt + tokens))
    assert len(lp["token_logprobs"]) == 6
    for i, v in enumerate(lp["token_logprobs"]):
        assert v == pytest.approx(ref[len(prompt) - 1 + i, tokens[i]], abs=1e-4)
        top = sorted(ref[len(prompt) - 1 + i], reverse=True)[:3]
        got = sorted(lp["top_logprobs"][i].values(), reverse=True)
        assert got[:3] == pytest.approx(top, abs=1e-4) or len(got) == 4
    assert lp["text_offset"][0] == len("The sky is")
    assert "".join(lp["tokens"]) == r["choices"][0]["text"]
    chat = model.create_chat_completion(MESSAGES, max_tokens=3, logprobs=True, top_logprobs=2, seed=2)
    content = chat["choices"][0]["logprobs"]["content"]
    assert len(content) == 3 and all(len(c["top_logprobs"]) == 2 for c in content)
    assert all(c["top_logprobs"][0]["logprob"] >= c["top_logprobs"][1]["logprob"] >= c["logprob"] - 1e-9
               or c["logprob"] >= c["top_logprobs"][1]["logprob"] for c in content)
    echo = model("The sky is", max_tokens=1, echo=True, logprobs=1, temperature=0)["choices"][0]["logprobs"]
    assert echo["token_logprobs"][0] is None and echo["top_logprobs"][0] is None
    assert echo["token_logprobs"][1] == pytest.approx(ref[0, prompt[1]], abs=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_json_schema_output_validates(model, seed):
    """A random model sampled at temperature 1 still writes JSON that validates: the grammar
    leaves it no other choice."""
    jsonschema = require_peer("jsonschema", "test")
    schema = {"type": "object", "additionalProperties": False, "required": ["name", "ok", "kind", "tags"],
              "properties": {"name": {"type": "string", "maxLength": 8}, "ok": {"type": "boolean"},
                             "kind": {"enum": ["a", "b", "c"]},
                             "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2}}}
    r = model.create_chat_completion(MESSAGES, temperature=1.0, seed=seed, max_tokens=200,
                                     response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    text = r["choices"][0]["message"]["content"]
    assert r["choices"][0]["finish_reason"] == "stop", text
    jsonschema.validate(json.loads(text), schema)


def test_json_schema_on_a_sentencepiece_vocabulary(s260_bin):
    """A SentencePiece vocabulary that writes a space before a text (Llama 2, Mistral,
    TinyLlama): the bytes a grammar forces are tokenized without that space (a JSON reply raised
    RuntimeError 'token " " doesn't satisfy the grammar' at its first forced '{')."""
    from llamix.model.grammar import _Vocabulary

    jsonschema = require_peer("jsonschema", "test")
    m = llamix.load(s260_bin, n_ctx=512)
    vocab = _Vocabulary(m.tokenizer, m.config.vocab_size, m.eos_ids)
    for text in ("nce", " nce", "{", '"name": "Lily"', "é\n x", "\n\n"):
        assert b"".join(vocab.tokens[i] for i in vocab(text)) == text.encode(), text
    schema = {"type": "object", "additionalProperties": False, "required": ["kind", "ok"],
              "properties": {"kind": {"enum": ["cat", "dog"]}, "ok": {"type": "boolean"}}}
    for seed in range(3):
        # room for the whitespace the grammar allows (32 characters a gap), so the JSON completes
        r = m.create_completion("Once upon a time", temperature=0.7, seed=seed, max_tokens=400,
                                response_format={"type": "json_schema", "json_schema": {"schema": schema}})
        assert r["choices"][0]["finish_reason"] == "stop"
        jsonschema.validate(json.loads(r["choices"][0]["text"]), schema)


def test_json_object_and_bad_formats(model):
    r = model.create_chat_completion(MESSAGES, temperature=0, max_tokens=120, logit_bias={},
                                     response_format={"type": "json_object", "schema": {
                                         "type": "object", "properties": {"n": {"type": "integer", "maximum": 9}},
                                         "required": ["n"], "additionalProperties": False}})
    assert isinstance(json.loads(r["choices"][0]["message"]["content"])["n"], int)
    with pytest.raises(ValueError, match="response_format type 'xml'"):
        model.create_chat_completion(MESSAGES, response_format={"type": "xml"})
    with pytest.raises(ValueError, match="not supported by llamix: typical_p"):
        model.create_completion("x", typical_p=0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        model.create_completion("x", bogus=1)


def test_bad_stop_and_logit_bias_name_the_argument(model):
    """stop and logit_bias of the wrong shape end in an ArgumentError naming them (was a bare
    TypeError "'int' object is not iterable" / ValueError from int()); logit_bias keys may be
    digit strings, as an OpenAI JSON body sends them."""
    for call in (model.create_completion, lambda p, **kw: model.create_chat_completion(MESSAGES, **kw),
                 lambda p, **kw: llamix.ChatSession(model).send(p, **kw)):
        with pytest.raises(llamix.ArgumentError, match="stop must be a string or a list of strings, got int 5"):
            list(call("Hi", max_tokens=2, stop=5))
        with pytest.raises(llamix.ArgumentError, match="stop must be"):
            list(call("Hi", max_tokens=2, stop=["ok", None]))
    with pytest.raises(llamix.ArgumentError, match=r"logit_bias\['abc'\]"):
        model.create_completion("Hi", max_tokens=2, logit_bias={"abc": 1.0})
    with pytest.raises(llamix.ArgumentError, match="logit_bias must be a mapping"):
        model.create_completion("Hi", max_tokens=2, logit_bias=[1, 2])
    eos = model.eos_ids[0]
    r = model.create_completion("Hi", max_tokens=5, logit_bias={str(eos): 1e4})   # the first token ends it
    assert r["usage"]["completion_tokens"] == 0 and r["choices"][0]["finish_reason"] == "stop"


# --- the engine's Request on synthetic logits ------------------------------------------------------
def _onehot(vocab: int, token: int, others: float = 0.0) -> np.ndarray:
    z = np.full(vocab, others, np.float32)
    z[token] = 30.0
    return z


def test_request_stop_strings_hold_back_text(qwen_vocab):
    """Text that could begin a stop string is held back until it cannot; the stop string and what
    follows it never come out; finish_reason says why it ended."""
    tok = qwen_vocab
    ids = tok.encode(" alpha beta gamma delta", add_special=False)
    req = Request([tok.bos_id if tok.bos_id >= 0 else 0], sampler=Sampler(temperature=0), max_tokens=50,
                  tokenizer=tok, stop=["gam", "zzz"], eos_ids=tok.eos_ids)
    released = []
    for t in ids:
        step = req.step(_onehot(tok.vocab_size, t))
        released.append(step.text)
        if req.done:
            break
    assert "".join(released) == req.text == " alpha beta "
    assert req.finish_reason == "stop"
    req2 = Request([0], sampler=Sampler(temperature=0), max_tokens=2, tokenizer=tok, eos_ids=tok.eos_ids)
    assert req2.step(_onehot(tok.vocab_size, ids[0])).finish_reason is None
    assert req2.step(_onehot(tok.vocab_size, ids[1])).finish_reason == "length" and req2.done
    req3 = Request([0], sampler=Sampler(temperature=0), max_tokens=5, tokenizer=tok, eos_ids=tok.eos_ids)
    s = req3.step(_onehot(tok.vocab_size, tok.eos_ids[0]))
    assert s.eog and s.finish_reason == "stop" and req3.tokens == []


def test_request_logprobs_and_bias(qwen_vocab):
    """Log-probabilities are of the distribution sampled from: logits plus bias, after penalties."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal(qwen_vocab.vocab_size).astype(np.float32)
    req = Request([5, 6], sampler=Sampler(temperature=0, repeat_penalty=1.5), max_tokens=3, tokenizer=qwen_vocab,
                  logprobs=4, logit_bias={7: 3.0, 8: -2.0})
    step = req.step(z)
    x = z.astype(np.float64).copy()
    x[7] += 3.0
    x[8] -= 2.0
    for t in (5, 6):
        x[t] = x[t] / 1.5 if x[t] > 0 else x[t] * 1.5
    ref = log_softmax(x)
    assert step.token == int(np.argmax(x))
    assert step.logprob.logprob == pytest.approx(ref[step.token], abs=1e-5)
    assert [t for t, _, _ in step.logprob.top] == list(np.argsort(-ref, kind="stable")[:4])
    assert [v for _, _, v in step.logprob.top] == pytest.approx(np.sort(ref)[::-1][:4], abs=1e-5)


# --- embeddings -----------------------------------------------------------------------------------------
@pytest.mark.peers
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_embeddings_match_transformers_hidden_states(tmp_path, assets, pooling):
    """Pooled final hidden states (after the output norm) of a Hugging Face llama folder equal
    transformers' last hidden_states entry, pooled the same way."""
    torch = require_peer("torch")
    transformers = require_peer("transformers")
    folder = write_model(tmp_path / "m", tiny_tensors(4, vocab=512), vocab=512)
    (folder / "tokenizer.model").write_bytes((assets / "stories260K" / "tok512.model").read_bytes())
    m = llamix.load(folder, n_ctx=64)
    hf = transformers.LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    texts = ["Once upon a time there was a cat", "The end."]
    got = m.embed(texts, pooling=pooling)
    got_n = m.embed(texts, pooling=pooling, normalize=True)
    assert got.shape == (2, 16) and got.dtype == np.float32
    for i, text in enumerate(texts):
        ids = m.tokenize(text)
        with torch.no_grad():
            h = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0].double().numpy()
        want = h.mean(0) if pooling == "mean" else h[-1]
        np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        np.testing.assert_allclose(got_n[i], want / np.linalg.norm(want), rtol=1e-4, atol=1e-5)
    assert m.n_past == 0   # the cache is left empty
    one = m.embed(texts[1], pooling=pooling)
    assert one.shape == (16,) and np.array_equal(one, got[1])


def test_hidden_states_feed_the_logits(model):
    """The hidden rows times the output matrix are the logits (same forward pass, head skipped)."""
    ids = model.tokenize("a b c d e")
    h = model.hidden_states(ids)
    logits = model.logits(ids)
    head = model.tensors["token_embd.weight" if model.config.tie_embeddings else "output.weight"].dequantize()
    np.testing.assert_allclose(h @ head.T, logits, atol=2e-2 * np.abs(logits).max())


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
TOOL_TEMPLATE = ("{%- if tools %}TOOLS:{{ tools | tojson }}\n{%- endif %}"
                 "{%- for m in messages %}{{ m.role }}: {{ m.content }}\n{%- endfor %}assistant:")


def _script_tool_reply(model, monkeypatch, reply: str) -> list[str]:
    """The model "says" ``reply`` and ends its turn, under TOOL_TEMPLATE; returns the list the
    rendered prompts are appended to."""
    ids = model.tokenize(reply, add_special=False)
    prompts = []

    def scripted_run(request):
        prompts.append(model.detokenize(request.prompt))
        for t in ids + [model.eos_ids[0]]:
            z = np.zeros(model.config.vocab_size, np.float32)
            z[t] = 50.0
            yield request.step(z)
            if request.done:
                return

    monkeypatch.setattr(model, "run", scripted_run)
    monkeypatch.setattr(model.checkpoint, "chat_template", TOOL_TEMPLATE)
    monkeypatch.setattr(model, "_chat_formats", {}, raising=False)
    return prompts


def test_tool_call_reply_becomes_tool_calls(model, monkeypatch):
    """With ``tools``, a reply written as <tool_call>{"name", "arguments"}</tool_call> comes back as
    OpenAI tool_calls (arguments as a JSON string) with finish_reason "tool_calls"; the tools reach
    the template."""
    reply = 'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>'
    prompts = _script_tool_reply(model, monkeypatch, reply)
    r = model.create_chat_completion([{"role": "user", "content": "Weather?"}], tools=TOOLS, temperature=0)
    choice = r["choices"][0]
    assert prompts[0].startswith('TOOLS:[{"type": "function"')
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Zürich"}
    plain = model.create_chat_completion([{"role": "user", "content": "Weather?"}], temperature=0)  # no tools: text
    assert plain["choices"][0]["message"]["content"] == reply and plain["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("reply", [
    'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>',
    '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>\n<tool_call>{"name": "get_time", '
    '"arguments": {"tz": "UTC"}}</tool_call>',
    'Compare a < b, then <tool_ca and stop.',     # no call: every character is streamed as content
])
def test_streamed_tool_calls_are_the_whole_answers(model, monkeypatch, reply):
    """Streamed with tools, a reply's tool calls come as OpenAI's tool_calls deltas and finish
    reason, never as content text: the openai library's own accumulator (the one its client's
    stream helper uses) rebuilds from the chunks the message create_chat_completion returns."""
    require_peer("openai", "test")
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    _script_tool_reply(model, monkeypatch, reply)
    msgs = [{"role": "user", "content": "Weather?"}]
    whole = model.create_chat_completion(msgs, tools=TOOLS, temperature=0)["choices"][0]
    state = ChatCompletionStreamState()
    for chunk in model.create_chat_completion(msgs, tools=TOOLS, temperature=0, stream=True):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    streamed = state.get_final_completion().choices[0]
    assert streamed.finish_reason == whole["finish_reason"]
    assert (streamed.message.content or "").strip() == (whole["message"]["content"] or "")
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in streamed.message.tool_calls or []]
    assert calls == [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                     for c in whole["message"].get("tool_calls", [])]
    assert bool(calls) == ("<tool_call>{" in reply.replace("\n", ""))


def test_tool_choice_none_leaves_tools_out(model, monkeypatch):
    """OpenAI's tool_choice: "auto" (and None) give the tools to the template; "none" means no
    tool call, so the template gets no tools and a <tool_call> block stays text."""
    reply = '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'
    prompts = _script_tool_reply(model, monkeypatch, reply)
    msgs = [{"role": "user", "content": "Weather?"}]
    auto = model.create_chat_completion(msgs, tools=TOOLS, tool_choice="auto", temperature=0)
    assert prompts[-1].startswith("TOOLS:") and auto["choices"][0]["finish_reason"] == "tool_calls"
    none = model.create_chat_completion(msgs, tools=TOOLS, tool_choice="none", temperature=0)
    assert not prompts[-1].startswith("TOOLS:")
    assert none["choices"][0]["finish_reason"] == "stop" and none["choices"][0]["message"]["content"] == reply


FORCED_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"unit": {"enum": ["C", "F"]}, "metric": {"type": "boolean"}},
        "required": ["unit", "metric"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["tz"],
        "additionalProperties": False}}}]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_forced_tool_choice_always_calls_the_tool(model, seed):
    """tool_choice {"type": "function", "function": {"name": N}} or "required" (OpenAI's, as
    llama-cpp-python honours them; they were refused): whatever a random-weight model samples, the
    reply is one call to N (or to one of the tools) whose arguments satisfy its parameters (no
    free strings or numbers here: a random model would write them until max_tokens)."""
    msgs = [{"role": "user", "content": "Weather?"}]
    for choice, names in (({"type": "function", "function": {"name": "get_weather"}}, {"get_weather"}),
                          ("required", {"get_weather", "get_time"})):
        r = model.create_chat_completion(msgs, tools=FORCED_TOOLS, tool_choice=choice, temperature=1.0, seed=seed,
                                         max_tokens=120)
        c = r["choices"][0]
        assert c["finish_reason"] == "tool_calls", c
        (call,) = c["message"]["tool_calls"]
        args = json.loads(call["function"]["arguments"])
        assert call["function"]["name"] in names
        if call["function"]["name"] == "get_weather":
            assert set(args) == {"unit", "metric"} and args["unit"] in ("C", "F") and type(args["metric"]) is bool
        else:
            assert args in ({"tz": "UTC"}, {"tz": "CET"})
    for bad in ({"type": "function", "function": {"name": "nope"}}, "sometimes", {"type": "function"}):
        with pytest.raises(ValueError, match="tool_choice"):
            model.create_chat_completion(msgs, tools=FORCED_TOOLS, tool_choice=bad)
    with pytest.raises(ValueError, match="no tools"):
        model.create_chat_completion(msgs, tool_choice="required")


def test_llama_takes_llama_cpp_python_constructor_arguments(s260_bin):
    """Llama() takes llama-cpp-python's constructor arguments (they were TypeErrors from load()):
    n_ctx=0 is the training context; type_k / type_v are ggml type ids of the KV cache; the
    layout ones are accepted (a value other than the default warns); what llamix cannot honour is
    an error naming the argument; an unknown keyword is a TypeError naming Llama()."""
    llm = llamix.Llama(model_path=str(s260_bin), n_ctx=0, embedding=True, use_mmap=False, use_mlock=False,
                       flash_attn=False, n_threads_batch=2, n_ubatch=256, offload_kqv=True, type_k=1, type_v=0,
                       rope_freq_base=0.0, rope_freq_scale=0.0, main_gpu=0, lora_path=None, lora_scale=1.0,
                       chat_handler=None, last_n_tokens_size=64, logits_all=False, numa=False, tensor_split=None,
                       split_mode=1)
    assert llm.n_ctx == llm.config.context_length == 512
    assert (llm.kv_cache_k, llm.kv_cache_v) == ("f16", "f32")
    assert llamix.Llama(str(s260_bin), rope_freq_base=llm.config.rope_theta).n_ctx == 512   # the model's own
    with pytest.warns(UserWarning, match="flash_attn=True has no effect"):
        llamix.Llama(str(s260_bin), flash_attn=True)
    with pytest.warns(UserWarning, match=r"tensor_split=\[0.5, 0.5\] has no effect"):
        llamix.Llama(str(s260_bin), tensor_split=[0.5, 0.5], main_gpu=0)
    for kw, said in ((dict(type_k=12), r"type_k=12 \(q4_k\): the KV cache types are f32 \(0\), f16 \(1\)"),
                     (dict(type_v=99), "type_v=99: the KV cache types are"),
                     (dict(lora_base="base.gguf"), r"Llama\(lora_base='base.gguf'\): not supported"),
                     (dict(chat_handler=print), r"Llama\(chat_handler=.*pass chat_format"),
                     (dict(rope_freq_base=5e5), r"Llama\(rope_freq_base=500000.0\): not supported"),
                     (dict(rope_freq_scale=0.5), r"Llama\(rope_freq_scale=0.5\): not supported"),
                     (dict(n_ctx=-1), "n_ctx must be a positive integer")):
        with pytest.raises(llamix.ArgumentError, match=said):
            llamix.Llama(str(s260_bin), **kw)
    with pytest.raises(FileNotFoundError, match="adapter: no such LoRA adapter file or folder"):
        llamix.Llama(str(s260_bin), lora_path="adapter")   # lora_path is load's lora= (tests/test_lora_load.py)
    with pytest.raises(TypeError, match=r"^Llama\(\) got an unexpected keyword argument 'n_ctxx'$"):
        llamix.Llama(str(s260_bin), n_ctxx=64)
    assert llamix.load(s260_bin, n_ctx=0).n_ctx == 512


def test_wrong_types_of_prompt_and_max_tokens_name_the_argument(model):
    """A prompt that is neither text nor token ids, and a max_tokens that is not an integer, end
    in an ArgumentError naming them (were a bare TypeError: "'int' object is not iterable",
    "'<=' not supported between instances of 'str' and 'int'")."""
    for prompt in (5, None, 2.5):
        with pytest.raises(llamix.ArgumentError, match="prompt must be"):
            model.create_completion(prompt, max_tokens=2)
    with pytest.raises(llamix.ArgumentError, match=r"prompt\[1\] must be an integer token id"):
        model.create_completion([1, "a"], max_tokens=2)
    for call in (model.create_completion, lambda p, **kw: model.create_chat_completion(MESSAGES, **kw),
                 lambda p, **kw: model.generate(p, **kw)):
        with pytest.raises(llamix.ArgumentError, match=r"max_tokens.*must be an integer, got (str )?'5'"):
            call("Hi", max_tokens="5")
    # llama-cpp-python's meanings stay: None or <= 0 is until the context is full
    assert model.create_completion("Hi", max_tokens=0, temperature=0)["usage"]["completion_tokens"] > 0


def test_embedding_input_of_the_wrong_type_names_it(model):
    """embed / create_embedding of something neither text nor a list of texts or token ids: an
    ArgumentError naming ``input`` (was a bare TypeError "'NoneType' object is not iterable")."""
    for bad in (None, 5, 2.5):
        for call in (model.embed, model.create_embedding):
            with pytest.raises(llamix.ArgumentError, match="input must be"):
                call(bad)
    with pytest.raises(llamix.ArgumentError, match=r"input\[1\] must be"):
        model.embed(["ok", None])


def test_chat_messages_checked_and_text_parts_joined(model):
    """create_chat_completion's messages as OpenAI sends them: content given as text parts is
    their text (as llamix serve takes it; was a template TypeError "can only concatenate str (not
    "list") to str"); messages that are not a list of role/content mappings, or parts that are not
    text, are an ArgumentError naming the message (a str was "dictionary update sequence element
    #0 has length 1")."""
    parts = [{"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hello."}]}]
    plain = [{"role": "user", "content": "Say hello."}]
    assert model.apply_chat_template(parts) == model.apply_chat_template(plain)
    a = model.create_chat_completion(parts, temperature=0, max_tokens=4)
    b = model.create_chat_completion(plain, temperature=0, max_tokens=4)
    assert a["choices"][0]["message"] == b["choices"][0]["message"]
    with pytest.raises(llamix.ArgumentError, match="messages must be a list of messages"):
        model.create_chat_completion("hello", max_tokens=2)
    with pytest.raises(llamix.ArgumentError, match=r"messages\[1\] must be a mapping"):
        model.create_chat_completion([plain[0], "hi"], max_tokens=2)
    with pytest.raises(llamix.ArgumentError, match=r"messages\[0\]\.role must be a string"):
        model.create_chat_completion([{"content": "hi"}], max_tokens=2)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(llamix.ArgumentError, match=r"messages\[0\]\.content\[1\]: only text parts"):
        model.create_chat_completion([{"role": "user", "content": [{"type": "text", "text": "x"}, image]}])
    with pytest.raises(llamix.ArgumentError, match=r"messages\[0\]\.content must be"):
        model.create_chat_completion([{"role": "user", "content": 5}], max_tokens=2)


def test_n_threads_checked_by_type_and_minus_one_is_the_default(s260_bin):
    """Llama(n_threads=...) / load(n_threads=...): a value that is not an integer is an
    ArgumentError naming n_threads (a str was int()'s bare "invalid literal for int()", 2.5 was
    cut to 2 silently); a negative one is the default (one per physical core), as llama.cpp's
    -t and the command line's -t take it (-1 was "threads must be >= 0")."""
    for bad in ("abc", 2.5, "2"):
        with pytest.raises(llamix.ArgumentError, match=r"n_threads \(<= 0: one per physical core\) must be an integer"):
            llamix.Llama(model_path=str(s260_bin), n_threads=bad)
    before = llamix.cpu_info()["threads"]
    try:
        llamix.Llama(model_path=str(s260_bin), n_threads=-1, n_ctx=64)
        assert llamix.cpu_info()["threads"] == llamix.cpu_info()["physical_cores"]
    finally:
        llamix.set_threads(before)
