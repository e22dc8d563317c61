"""OpenAI request bodies -> the keyword arguments of ``Model.prepare_completion`` /
``prepare_chat_completion`` / ``create_embedding``; llama-server's own ``/completion``,
``/tokenize`` and ``/detokenize`` bodies likewise (native_* below).

Fields the server does not know are ignored (clients send extras: ``user``, ``store``, ...); a
known field of the wrong JSON type, or a value llamix cannot honour (a llama-server sampler
llamix does not have set away from its neutral value, ``n`` outside 1..128), is a :class:`BadRequest` naming
the field. llama-server's ``n_predict`` is ``max_tokens`` when that is absent. Values are then checked where they are used (the sampler,
the chat template, the tokenizer) and those errors are 400 too.
"""
from __future__ import annotations

import re
from typing import Any

NUMBER, INT, BOOL, STR, LIST, OBJECT, NULL = "number", "integer", "boolean", "string", "array", "object", "null"


class BadRequest(ValueError):
    """A request the server refuses with 400: ``message`` and the offending ``param``."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, **extra):
        super().__init__(message)
        self.param, self.code, self.extra = param, code, extra


def type_of(v: Any) -> str:
    if v is None:
        return NULL
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return INT
    if isinstance(v, float):
        return NUMBER
    if isinstance(v, str):
        return STR
    if isinstance(v, list):
        return LIST
    if isinstance(v, dict):
        return OBJECT
    return type(v).__name__


def _check(body: dict, name: str, *types: str, within: str = "") -> Any:
    """body[name] (None when absent), or BadRequest when its JSON type is not one of ``types``
    (an integer counts as a number). ``within``: the field ``body`` is (``"stream_options."``)."""
    if name not in body:
        return None
    v = body[name]
    t = type_of(v)
    if t in types or (t == INT and NUMBER in types):
        return v
    raise BadRequest(f"'{within}{name}' must be {' or '.join(types)}, got {t}", param=within + name,
                     code="invalid_type")


# sampling fields shared by completions and chat: OpenAI's plus llama.cpp's extras
_SAMPLING = {"temperature": (NUMBER, NULL), "top_p": (NUMBER, NULL), "top_k": (INT, NULL), "min_p": (NUMBER, NULL),
             "presence_penalty": (NUMBER, NULL), "frequency_penalty": (NUMBER, NULL),
             "repeat_penalty": (NUMBER, NULL), "repeat_last_n": (INT, NULL), "seed": (INT, NULL),
             "response_format": (OBJECT, NULL)}


# llama-server's samplers that llamix does not have, with the value that turns each off: clients
# often send them at that value, and anything else would be silently not done
_NEUTRAL = {"typical_p": 1.0, "mirostat": 0, "tfs_z": 1.0, "dynatemp_range": 0.0, "xtc_probability": 0.0,
            "dry_multiplier": 0.0}


NO_LIMIT = -1   # llama-server's max_tokens / n_predict: until the end of generation or the slot's context is full


def _max_tokens(body: dict, *names: str) -> dict:
    """``{"max_tokens": n}`` of the first of ``names`` the body gives (not null), else of
    llama-server's ``n_predict``; ``{}`` when none is given (the endpoint's default). Each given
    must be an integer >= 1 (OpenAI's bound), or -1, llama-server's explicit "no limit" (its
    aliases of ``n_predict`` take -1 too): ``max_tokens`` None, until the end of generation or the
    slot's context is full. 0 or below -1 is a 400 naming the field (was: until the context was full)."""
    given = {}
    for name in (*names, "n_predict"):
        v = _check(body, name, INT, NULL)
        if v is None:
            continue
        if v < 1 and v != NO_LIMIT:
            raise BadRequest(f"'{name}' must be an integer >= 1 (or -1 for no limit, as llama-server), got {v}",
                             param=name, code="integer_below_min_value")
        given.setdefault("max_tokens", None if v == NO_LIMIT else v)
    return given


def _common(body: dict) -> tuple[dict, bool, bool]:
    """Sampling keyword arguments, stream, include_usage."""
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type_of(body)}")
    kw = {}
    for name, types in _SAMPLING.items():
        v = _check(body, name, *types)
        if v is not None:
            kw[name] = v
    for name, neutral in _NEUTRAL.items():
        v = _check(body, name, NUMBER, NULL)
        if v is not None and v != neutral:
            raise BadRequest(f"'{name}' is not supported by llamix (leave it out, or {neutral} to turn it off)",
                             param=name, code="unsupported")
    stop = _check(body, "stop", STR, LIST, NULL)
    if isinstance(stop, list):
        if not all(isinstance(s, str) for s in stop):
            raise BadRequest("'stop' must be a string or an array of strings", param="stop", code="invalid_type")
    if stop:
        kw["stop"] = stop
    bias = _check(body, "logit_bias", OBJECT, LIST, NULL)
    if bias:
        kw["logit_bias"] = _logit_bias(bias)
    schema = _check(body, "json_schema", OBJECT, NULL)   # llama-server's field for response_format's schema
    if schema is not None:
        if "response_format" in kw:
            raise BadRequest("give 'json_schema' or 'response_format', not both", param="json_schema")
        kw["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
    grammar = _check(body, "grammar", STR, NULL)   # llama-server's GBNF
    if grammar:
        if "response_format" in kw:
            raise BadRequest("give 'grammar' or 'json_schema' / 'response_format', not both", param="grammar")
        kw["grammar"] = grammar
    stream = bool(_check(body, "stream", BOOL, NULL))
    options = _check(body, "stream_options", OBJECT, NULL) or {}
    usage = _check(options, "include_usage", BOOL, NULL, within="stream_options.")
    return kw, stream, bool(usage)


# fields of a body whose values the model checks itself; its errors start with the field's name
# (the model's arguments share the body's names: "top_p (0: greedy) must be ...", "logit_bias: ...")
_MODEL_CHECKED = {*_SAMPLING, "logit_bias", "stop", "grammar", "tools", "tool_choice", "logprobs", "top_logprobs",
                  "suffix", "echo"}
_ABOUT_THE_PROMPT = ("prompt", "empty prompt", "chat template", "input ")


def param_named(message: str, prompt_param: str | None = None) -> str | None:
    """The body field a ValueError of the model (not a :class:`BadRequest`) is about: the field
    its message starts with, the field ``llamix`` says it does not support, or ``prompt_param``
    (the endpoint's prompt field: ``prompt``, ``messages``, ``input``) for an error about the
    prompt (its tokens, the chat template's refusal); None when the message names no field."""
    word = re.match(r"\w*", message)[0]
    if word in _MODEL_CHECKED:
        return word
    if message.startswith(_ABOUT_THE_PROMPT):
        return prompt_param
    m = re.match(r"not supported by llamix: (\w+)", message)
    return m[1] if m else None


MAX_CHOICES = 128   # OpenAI's bound on ``n``


def n_choices(body: dict) -> int:
    """OpenAI's ``n``: how many choices to generate for the prompt (default 1, at most 128)."""
    n = _check(body, "n", INT, NULL)
    if n is None:
        return 1
    if not 1 <= n <= MAX_CHOICES:
        raise BadRequest(f"'n' must be from 1 to {MAX_CHOICES} (choices to generate), got {n}", param="n")
    return n


def _logit_bias(bias: dict | list) -> dict[int, float]:
    """OpenAI's ``{"id": bias}``, or llama-server's ``[[id, bias], ...]`` where a bias of ``false``
    bans the token."""
    if isinstance(bias, dict):
        pairs = list(bias.items())
    elif all(isinstance(e, list) and len(e) == 2 for e in bias):
        pairs = [tuple(e) for e in bias]
    else:
        raise BadRequest("'logit_bias' as an array holds [token id, bias] pairs", param="logit_bias")
    out = {}
    for k, v in pairs:
        try:
            out[int(k)] = float("-inf") if v is False else float(v)
        except (TypeError, ValueError):
            raise BadRequest(f"'logit_bias' maps token ids to numbers (or false), got {k!r}: {v!r}; token text is "
                             "not taken: /tokenize gives its ids", param="logit_bias") from None
    return out


def completion_kwargs(body: dict) -> tuple[dict, list, bool, bool]:
    """(keyword arguments of ``prepare_completion`` less the prompt, the prompts, stream,
    include_usage) of a ``/v1/completions`` body. ``prompt`` is a string, an array of token ids, or
    (as OpenAI and llama-server take it) an array of several prompts, strings or token arrays, each
    answered with its own ``n`` choices."""
    kw, stream, usage = _common(body)
    kw["llama_cpp_sampling"] = True   # as llama-server samples: the penalties count the prompt
    kw.update(_max_tokens(body, "max_tokens"))
    for name, types in {"echo": (BOOL, NULL), "logprobs": (INT, NULL), "suffix": (STR, NULL)}.items():
        v = _check(body, name, *types)
        if v is not None:
            kw[name] = v
    prompts = _completion_prompts(body)
    n = n_choices(body)
    if len(prompts) * n > MAX_CHOICES:
        raise BadRequest(f"{len(prompts)} prompts of {n} choices each are {len(prompts) * n} choices, over the "
                         f"limit of {MAX_CHOICES} per request", param="prompt")
    return kw, prompts, stream, usage


def _completion_prompts(body: dict) -> list:
    """The prompts of a ``/v1/completions`` body: each a string or a list of token ids."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(type_of(i) == INT for i in prompt):   # one prompt of token ids
            return [prompt]
        if all(isinstance(p, str) for p in prompt):
            return prompt
        if all(isinstance(p, list) and p and all(type_of(i) == INT for i in p) for p in prompt):
            return prompt
    raise BadRequest(f"'prompt' must be a string, an array of token ids, or a non-empty array of prompts (strings or "
                     f"non-empty arrays of token ids, not mixed), got {type_of(prompt)}", param="prompt",
                     code="invalid_type" if "prompt" in body else "missing")


def chat_kwargs(body: dict) -> tuple[dict, bool, bool]:
    """(keyword arguments of ``prepare_chat_completion``, stream, include_usage) of a
    ``/v1/chat/completions`` body. Message content given as parts keeps their text (images are
    refused)."""
    kw, stream, usage = _common(body)
    kw["llama_cpp_sampling"] = True   # as llama-server samples: the penalties count the prompt
    messages = _check(body, "messages", LIST)
    if not messages:
        raise BadRequest("'messages' must be a non-empty array of messages", param="messages",
                         code="invalid_type" if "messages" in body else "missing")
    kw["messages"] = [_message(m, i) for i, m in enumerate(messages)]
    kw.update(_max_tokens(body, "max_completion_tokens", "max_tokens"))
    for name, types in {"logprobs": (BOOL, NULL), "top_logprobs": (INT, NULL), "tools": (LIST, NULL)}.items():
        v = _check(body, name, *types)
        if v is not None:
            kw[name] = v
    choice = _check(body, "tool_choice", STR, OBJECT, NULL)
    if choice is not None:
        kw["tool_choice"] = choice
    return kw, stream, usage


ROLES = ("system", "developer", "user", "assistant", "tool", "function")   # OpenAI's message roles


def _message(m: Any, i: int) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise BadRequest(f"'{where}' must be an object, got {type_of(m)}", param=where, code="invalid_type")
    if not isinstance(m.get("role"), str):
        raise BadRequest(f"'{where}.role' must be a string", param=f"{where}.role", code="invalid_type")
    if m["role"] not in ROLES:   # as OpenAI: an unknown role is not handed to the template
        raise BadRequest(f"'{where}.role' must be one of {', '.join(map(repr, ROLES))}, got {m['role']!r}",
                         param=f"{where}.role", code="invalid_value")
    content = m.get("content")
    if isinstance(content, list):   # content parts: [{"type": "text", "text": ...}, ...]
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(f"'{where}.content': only text parts are supported", param=f"{where}.content")
            texts.append(part["text"])
        m = {**m, "content": "".join(texts)}
    elif content is not None and not isinstance(content, str):
        raise BadRequest(f"'{where}.content' must be a string, an array of text parts or null, got "
                         f"{type_of(content)}", param=f"{where}.content", code="invalid_type")
    elif content is None and m["role"] != "assistant":   # OpenAI: null only for an assistant's tool calls
        raise BadRequest(f"'{where}.content' must be a string or an array of text parts (null only in an "
                         f"assistant message), got null", param=f"{where}.content", code="invalid_type")
    return m


def embedding_input(body: dict, n_vocab: int, n_embd: int) -> tuple[list[str | list[int]], bool]:
    """(the inputs of a ``/v1/embeddings`` body, whether the result goes as base64 floats). An
    input is a string, or token ids (in ``[0, n_vocab)``), as OpenAI and llama-server take them: a
    string, an array of strings, an array of ids (one input) or an array of arrays of ids. An
    empty input is refused, as OpenAI refuses it; so is a ``dimensions`` other than the model's
    ``n_embd`` (llamix does not shorten embeddings)."""
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type_of(body)}")
    inputs = _check(body, "input", STR, LIST)
    if isinstance(inputs, str) or (inputs and all(type_of(i) == INT for i in inputs)):
        inputs = [inputs]
    if not inputs or not (all(isinstance(t, str) for t in inputs)
                          or all(isinstance(t, list) and all(type_of(i) == INT for i in t) for t in inputs)):
        raise BadRequest("'input' must be a string, an array of strings, an array of token ids or an array of arrays "
                         "of token ids", param="input", code="invalid_type" if "input" in body else "missing")
    for k, t in enumerate(inputs):
        if not t:
            raise BadRequest(f"'input' {k} is empty: nothing to embed", param="input", code="invalid_value")
        bad = [i for i in t if not 0 <= i < n_vocab] if isinstance(t, list) else []
        if bad:
            raise BadRequest(f"'input' {k}: token id {bad[0]} is outside the vocabulary (0 to {n_vocab - 1})",
                             param="input", code="invalid_value")
    dimensions = _check(body, "dimensions", INT, NULL)
    if dimensions is not None and dimensions != n_embd:
        raise BadRequest(f"'dimensions' is not supported for this model: its embeddings have {n_embd} dimensions "
                         f"(leave 'dimensions' out, or give {n_embd}), got {dimensions}", param="dimensions",
                         code="unsupported")
    fmt = _check(body, "encoding_format", STR, NULL) or "float"
    if fmt not in ("float", "base64"):
        raise BadRequest(f"'encoding_format' must be 'float' or 'base64', got {fmt!r}", param="encoding_format")
    return inputs, fmt == "base64"


# --- llama-server's own endpoints -------------------------------------------------------------------
def native_prompt_ids(model, prompt: Any, add_special: bool, parse_special: bool = True,
                      field: str = "prompt") -> list[int]:
    """Token ids of a llama-server prompt: a string, token ids, or strings and ids mixed. BOS (where
    the vocabulary asks for it) only when ``add_special`` and the first element is text, as
    llama-server's ``tokenize_mixed``."""
    parts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(parts, list) or not parts or not all(type_of(p) in (STR, INT) for p in parts):
        raise BadRequest(f"'{field}' must be a string, an array of token ids, or an array of both mixed",
                         param=field, code="invalid_type" if prompt is not None else "missing")
    ids: list[int] = []
    for i, p in enumerate(parts):
        if isinstance(p, str):
            ids += model.tokenize(p, add_special=add_special and i == 0, parse_special=parse_special)
        else:
            ids.append(p)
    return ids


def native_completion_prompt(body: Any) -> Any:
    """The one prompt of a ``/completion`` body. llama-server reads an array of strings, or of
    arrays, as several prompts (``tokenize_input_prompts``) and answers each; llamix answers one
    prompt per request, so such an array is refused rather than run as one joined prompt. An array
    holding a single prompt is that prompt."""
    prompt = body.get("prompt") if isinstance(body, dict) else None
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
        return prompt[0]
    if isinstance(prompt, list) and len(prompt) > 1 and (all(isinstance(p, str) for p in prompt)
                                                         or any(isinstance(p, list) for p in prompt)):
        raise BadRequest(f"'prompt' holds {len(prompt)} prompts (an array of strings or of arrays); llamix answers "
                         "one prompt per request: send one request for each", param="prompt", code="unsupported")
    return prompt


def native_completion_kwargs(body: Any) -> tuple[dict, bool, dict]:
    """(keyword arguments of ``Model.new_request`` less the prompt, stream, options) of a
    ``/completion`` body; options: ``n_predict`` (or, as llama-server, its aliases
    ``max_completion_tokens`` and ``max_tokens``; -1 no limit, 0 nothing generated),
    ``return_tokens``, ``n_probs``."""
    kw, stream, _ = _common(body)
    if n_choices(body) != 1:   # llama-server's /completion answers one completion per prompt
        raise BadRequest("'n' must be 1 on /completion (one completion per request); /v1/completions takes n > 1",
                         param="n")
    given = []
    for name in ("n_predict", "max_completion_tokens", "max_tokens"):   # llama-server's aliases, in its order
        v = _check(body, name, INT, NULL)
        if v is not None and v < -1:
            raise BadRequest(f"'{name}' must be -1 (no limit) or >= 0, got {v}", param=name,
                             code="integer_below_min_value")
        if v is not None:
            given.append(v)
    n_predict = given[0] if given else -1
    n_probs = _check(body, "n_probs", INT, NULL) or 0
    if n_probs < 0:
        raise BadRequest(f"'n_probs' must be >= 0, got {n_probs}", param="n_probs")
    for name in ("return_tokens", "cache_prompt", "post_sampling_probs"):
        _check(body, name, BOOL, NULL)
    if body.get("post_sampling_probs"):
        raise BadRequest("'post_sampling_probs' is not supported by llamix (n_probs gives log-probabilities)",
                         param="post_sampling_probs", code="unsupported")
    kw["max_tokens"] = None if n_predict == -1 else n_predict
    if n_probs:
        kw["logprobs"] = n_probs
    return kw, stream, {"n_predict": n_predict, "return_tokens": bool(body.get("return_tokens")), "n_probs": n_probs}


def native_template_body(body: Any) -> tuple[dict, bool]:
    """(keyword arguments as ``chat_kwargs``, add_generation_prompt) of an ``/apply-template`` body:
    llama-server ends the prompt with the assistant's header unless ``add_generation_prompt`` is false."""
    kw, _, _ = chat_kwargs(body)
    return kw, _check(body, "add_generation_prompt", BOOL, NULL) is not False


def native_tokenize_body(body: Any) -> tuple[Any, bool, bool, bool]:
    """(content, add_special, parse_special, with_pieces) of a ``/tokenize`` body."""
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type_of(body)}")
    content = _check(body, "content", STR, LIST)
    if content is None:
        raise BadRequest("'content' (the text to tokenize) is required", param="content", code="missing")
    flags = [_check(body, name, BOOL, NULL) for name in ("add_special", "parse_special", "with_pieces")]
    return content, bool(flags[0]), flags[1] is not False, bool(flags[2])


def native_detokenize_body(body: Any, vocab_size: int) -> list[int]:
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type_of(body)}")
    ids = _check(body, "tokens", LIST) or []
    bad = [i for i in ids if type_of(i) != INT or not 0 <= i < vocab_size]
    if bad:
        raise BadRequest(f"'tokens' must be token ids from 0 to {vocab_size - 1}, got {bad[0]!r}", param="tokens")
    return ids
