"""Chat prompts: a model's own Jinja chat template, or a built-in format chosen by name.

A checkpoint's template (GGUF ``tokenizer.chat_template``; a Hugging Face folder's
``chat_template.jinja`` or ``tokenizer_config.json`` ``chat_template``) is rendered with jinja2 in
an :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` (templates are code from the internet;
the sandbox refuses attribute access to internals and any mutation of the values passed in) and
with the environment transformers' ``apply_chat_template`` sets up, so the rendered text is the
same byte for byte: ``trim_blocks`` / ``lstrip_blocks``, the ``loopcontrols`` extension, a
``{% generation %}`` block tag that renders its body, a ``tojson`` filter that is plain
``json.dumps`` (keys in their order, non-ASCII kept), and the variables ``messages``,
``add_generation_prompt``, ``bos_token``, ``eos_token``, ``tools``, ``raise_exception`` and
``strftime_now``. Messages' ``None`` values are dropped first, as transformers drops them (a
template then sees a missing key, which ``is defined`` tests handle).

Files without a template (gemma-3-270m has none) use a built-in format by name (``chat_format=``):
:data:`BUILTIN_FORMATS`. Each is a Jinja template of its own, rendered the same way.

jinja2 is imported on first use (it takes about 0.1 s to import).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence

from .errors import ArgumentError, ChatTemplateError, FormatError, describe

# The built-in formats, written from each model family's published prompt layout. ``bos`` /
# ``eos`` in the templates are the vocabulary's own BOS / EOS texts.
_CHATML = (
    "{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}")
# Llama 2 chat: the system prompt inside the first [INST] block between <<SYS>> markers, each
# exchange wrapped in BOS ... EOS
_LLAMA2 = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{%- set sys = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}{%- set msgs = messages[1:] %}"
    "{%- else %}{%- set sys = '' %}{%- set msgs = messages %}{%- endif %}"
    "{%- for m in msgs %}"
    "{%- if m['role'] == 'user' %}{{ bos_token + '[INST] ' + (sys if loop.first else '') + m['content'] | trim + ' [/INST]' }}"
    "{%- elif m['role'] == 'assistant' %}{{ ' ' + m['content'] | trim + ' ' + eos_token }}"
    "{%- else %}{{ raise_exception('llama-2 has user, assistant and a leading system message only') }}{%- endif %}"
    "{%- endfor %}")
_LLAMA3 = (
    "{{- bos_token }}{%- for m in messages %}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
# Mistral instruct (v0.3 layout): the system prompt joins the first user message
_MISTRAL = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{%- set sys = messages[0]['content'] + '\\n\\n' %}{%- set msgs = messages[1:] %}"
    "{%- else %}{%- set sys = '' %}{%- set msgs = messages %}{%- endif %}"
    "{{- bos_token }}{%- for m in msgs %}"
    "{%- if m['role'] == 'user' %}{{- '[INST] ' + (sys if loop.first else '') + m['content'] + '[/INST]' }}"
    "{%- elif m['role'] == 'assistant' %}{{- m['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('mistral has user, assistant and a leading system message only') }}{%- endif %}"
    "{%- endfor %}")
# Gemma: roles user and model; a system prompt is put before the first user message
_GEMMA = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{%- set sys = messages[0]['content'] + '\\n\\n' %}{%- set msgs = messages[1:] %}"
    "{%- else %}{%- set sys = '' %}{%- set msgs = messages %}{%- endif %}"
    "{{- bos_token }}{%- for m in msgs %}"
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + (sys if loop.first else '') + m['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}")
_PHI3 = (
    "{%- for m in messages %}{{- '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}")


@dataclass(frozen=True)
class BuiltinFormat:
    template: str
    stop: tuple[str, ...]    # the end-of-turn text, a stop string where the vocabulary lacks it as a token
    marker: str              # a token whose presence in a vocabulary suggests this format


BUILTIN_FORMATS: dict[str, BuiltinFormat] = {
    "chatml": BuiltinFormat(_CHATML, ("<|im_end|>",), "<|im_start|>"),
    "llama-3": BuiltinFormat(_LLAMA3, ("<|eot_id|>",), "<|start_header_id|>"),
    "gemma": BuiltinFormat(_GEMMA, ("<end_of_turn>",), "<start_of_turn>"),
    "phi-3": BuiltinFormat(_PHI3, ("<|end|>",), "<|assistant|>"),
    "mistral": BuiltinFormat(_MISTRAL, (), "[INST]"),
    "llama-2": BuiltinFormat(_LLAMA2, (), "[INST]"),
}
# other spellings, llama-cpp-python's among them ("mistral-instruct", "qwen")
ALIASES = {"llama2": "llama-2", "llama3": "llama-3", "phi3": "phi-3", "gemma3": "gemma", "qwen": "chatml",
           "mistral-instruct": "mistral"}
CHOSEN_BY_MODEL = ("model", "auto")   # names that take the checkpoint's own template


@dataclass
class ChatFormat:
    """A chat template ready to render (see :meth:`render`). ``name`` is ``"model"`` for a
    checkpoint's own template, else the built-in format's name; ``stop`` are end-of-turn texts to
    stop at when the model writes them as text; ``source`` says where the template came from (a
    file and its field: ``m/tokenizer_config.json: chat_template``), for messages."""
    template: str
    name: str = "model"
    bos_token: str = ""
    eos_token: str = ""
    stop: tuple[str, ...] = ()
    source: str = ""
    _compiled: Any = field(default=None, repr=False, compare=False)
    _object_arguments: Any = field(default=None, repr=False, compare=False)

    def with_object_arguments(self, messages: Sequence[Mapping]) -> list:
        """``messages`` with each tool call's ``arguments`` given as a JSON string (as OpenAI
        clients send them) parsed to an object, when this template writes arguments with
        ``tojson`` and so would encode a string twice (``"arguments": "{\\"city\\": ...}"``);
        llama-server does the same for such templates. Other messages, and every message for
        other templates, are returned as they are (checked and their text parts joined:
        :func:`chat_messages`)."""
        messages = chat_messages(messages)
        if not any(m.get("tool_calls") for m in messages) or not self._needs_objects():
            return messages
        return [_parsed_arguments(m) if m.get("tool_calls") else m for m in messages]

    def _needs_objects(self) -> bool:
        """Whether a call's arguments render as JSON when given as an object and encoded twice
        when given as a string (found by rendering one probe call both ways, as llama-server's
        template capabilities are)."""
        if self._object_arguments is None:
            def render(arguments) -> str:
                call = {"id": "call_1", "type": "function", "function": {"name": "probe", "arguments": arguments}}
                try:
                    return self.render([{"role": "user", "content": "x"},
                                        {"role": "assistant", "content": "", "tool_calls": [call]}], False)
                except ValueError:
                    return ""
            probe = {"llamix_probe": "value"}
            self._object_arguments = json.dumps(probe)[1:-1] in render(probe) and \
                '\\"llamix_probe\\"' in render(json.dumps(probe))
        return self._object_arguments

    def render(self, messages: Sequence[Mapping], add_generation_prompt: bool = True, tools: list | None = None,
               **extra) -> str:
        """The prompt text of ``messages`` (dicts with ``role`` and ``content``, as the OpenAI API
        has them). ``tools``: OpenAI tool definitions, for templates that describe them.
        ``extra`` become further template variables. Raises ValueError for what the template
        refuses (``raise_exception``) or cannot render."""
        jinja2 = _jinja()
        if self._compiled is None:
            try:
                self._compiled = _environment().from_string(self.template)
            except jinja2.TemplateError as e:
                raise ValueError(f"chat template ({self.name}) does not parse: {e}") from None
        msgs = [_plain({k: v for k, v in m.items() if v is not None}) for m in chat_messages(messages)]
        try:
            return self._compiled.render(messages=msgs, add_generation_prompt=bool(add_generation_prompt),
                                         bos_token=self.bos_token, eos_token=self.eos_token,
                                         tools=_plain(list(tools)) if tools else None, **_plain(extra))
        except (jinja2.TemplateError, TypeError, AttributeError, KeyError, IndexError) as e:
            raise ChatTemplateError(f"{self.label}: {e}") from None

    @property
    def label(self) -> str:
        """The template as messages name it: ``chat template (m/tokenizer_config.json: chat_template)``."""
        return f"chat template ({self.source or self.name})"

    def compile(self) -> "ChatFormat":
        """Parse the template now (rendering does it on first use): a
        :class:`~llamix.FormatError` naming where the template came from when it is not valid
        Jinja. Returns self."""
        if self._compiled is None:
            jinja2 = _jinja()
            try:
                self._compiled = _environment().from_string(self.template)
            except jinja2.TemplateSyntaxError as e:
                line = f" (line {e.lineno})" if e.lineno else ""
                raise FormatError(f"{self.label} does not parse: {e.message}{line}") from None
            except jinja2.TemplateError as e:
                raise FormatError(f"{self.label} does not parse: {e}") from None
        return self


def format_names(aliases: bool = False) -> list[str]:
    """The built-in formats' names (with ``aliases``: also their other spellings and the names that
    choose the model's own template)."""
    return list(BUILTIN_FORMATS) + (list(ALIASES) + list(CHOSEN_BY_MODEL) if aliases else [])


def check_format_name(name: str | None) -> str | None:
    """``name`` if it names a chat format (built in, an alias, ``"model"``/``"auto"``) or is None;
    else :func:`builtin_format`'s ValueError listing the names."""
    if name is not None and str(name).lower() not in CHOSEN_BY_MODEL:
        builtin_format(name)
    return name


def builtin_format(name: str, bos_token: str = "", eos_token: str = "") -> ChatFormat:
    """A built-in format by name (:data:`BUILTIN_FORMATS`, or an alias such as ``llama3``)."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in BUILTIN_FORMATS:
        raise ValueError(f"unknown chat format {name!r} (built in: {', '.join(BUILTIN_FORMATS)}; also "
                         f"{', '.join(ALIASES)}; 'model' for the model's own template)")
    f = BUILTIN_FORMATS[key]
    return ChatFormat(f.template, key, bos_token, eos_token, f.stop)


def guess_format(tokens: Sequence[str]) -> str:
    """The built-in format a vocabulary's special tokens point to (``chatml`` when none does, as
    llama.cpp defaults to it)."""
    have = set(tokens)
    for name, f in BUILTIN_FORMATS.items():
        if f.marker in have:
            return name
    return "chatml"


def chat_format_for(template: str | None, chat_format: str | None, bos_token: str, eos_token: str,
                    tokens: Sequence[str] = (), source: str = "") -> ChatFormat:
    """The format a model chats in: ``chat_format`` by name if given (``"model"`` or ``None``:
    the checkpoint's ``template``, which came from ``source``); without a template, the built-in
    format its vocabulary points to (:func:`guess_format`)."""
    if chat_format not in (None, *CHOSEN_BY_MODEL):
        return builtin_format(chat_format, bos_token, eos_token)
    if template:
        return ChatFormat(template, "model", bos_token, eos_token, source=source)
    if chat_format == "model":
        raise ValueError("the model has no chat template; choose a built-in chat format "
                         f"({', '.join(BUILTIN_FORMATS)})")
    return builtin_format(guess_format(tokens), bos_token, eos_token)


# --- the jinja2 environment ---------------------------------------------------------------------------
_ENV = None


def _jinja():
    try:
        import jinja2
    except ImportError:
        raise ImportError("chat templates need jinja2: pip install 'jinja2>=3.1.6'") from None
    return jinja2


def _environment():
    """One sandboxed environment for every template (compiled templates are kept by ChatFormat)."""
    global _ENV
    if _ENV is None:
        import jinja2.ext
        import jinja2.sandbox

        class GenerationBlock(jinja2.ext.Extension):
            """``{% generation %}...{% endgeneration %}`` (transformers marks assistant text with it):
            the body is rendered as it is."""
            tags = {"generation"}

            def parse(self, parser):
                next(parser.stream)
                return parser.parse_statements(("name:endgeneration",), drop_needle=True)

        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                           extensions=[GenerationBlock, jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        _ENV = env
    return _ENV


def _tojson(x, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    # jinja2's own tojson sorts keys and escapes <>&' for HTML; chat templates expect plain JSON
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message):
    raise _jinja().TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _parsed_arguments(message: Mapping) -> dict:
    """A message whose tool calls' JSON-string ``arguments`` (at the call or its ``function``)
    are parsed to objects (strings that are not a JSON object stay as they are)."""
    def parsed(holder):
        args = holder.get("arguments") if isinstance(holder, Mapping) else None
        if not isinstance(args, str):
            return holder
        try:
            value = json.loads(args)
        except ValueError:
            return holder
        return {**holder, "arguments": value} if isinstance(value, dict) else holder

    calls = []
    for call in message["tool_calls"]:
        call = parsed(call)
        if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
            call = {**call, "function": parsed(call["function"])}
        calls.append(call)
    return {**message, "tool_calls": calls}


def chat_messages(messages) -> list[dict]:
    """``messages`` as a template takes them: a list of mappings, each with a string ``role``;
    content given as OpenAI's text parts (``[{"type": "text", "text": ...}, ...]``) becomes their
    text, as ``llamix serve`` reads it. ArgumentError naming the message for anything else (a
    string, a message that is not a mapping, content that is not text, null or text parts)."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ArgumentError(f"messages must be a list of messages ({{'role': ..., 'content': ...}}), "
                            f"got {describe(messages)}")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise ArgumentError(f"{where} must be a mapping with 'role' and 'content', got {describe(m)}")
        if not isinstance(m.get("role"), str):
            raise ArgumentError(f"{where}.role must be a string, got {describe(m.get('role'))}")
        m = dict(m)
        content = m.get("content")
        if isinstance(content, (list, tuple)):
            for k, part in enumerate(content):
                if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ArgumentError(f"{where}.content[{k}]: only text parts ({{'type': 'text', 'text': ...}}) "
                                        f"are supported, got {describe(part)}")
            m["content"] = "".join(part["text"] for part in content)
        elif content is not None and not isinstance(content, str):
            raise ArgumentError(f"{where}.content must be a string, a list of text parts or None, got "
                                f"{describe(content)}")
        out.append(m)
    return out


def _plain(value):
    """Only JSON-like data reaches a template (no objects with methods of their own)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return str(value)
