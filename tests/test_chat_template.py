"""Chat templates: llamix's rendering equals transformers' ``apply_chat_template(tokenize=False)``
on the same template, byte for byte (peers), for published templates (Llama 3, Gemma 3, Mistral;
the real Qwen2.5-Coder file's ChatML with its tools branch, read from its GGUF metadata) and
message lists with system / user / assistant turns, tool calls and tool results, non-ASCII text;
the built-in formats' layouts; where templates are kept (GGUF metadata, Hugging Face folders) and
written back when exporting GGUF."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import llamix
from llamix.chat_format import BUILTIN_FORMATS, ChatFormat, builtin_format, chat_format_for, guess_format
from llamix.model.chat import ChatSession
from llamix.formats.gguf import GGUFReader

from conftest import require_peer
from helpers import skip_or_fail, tiny_tensors, write_model

DATA = Path(__file__).parent / "data" / "chat_templates"
QWEN_FILE = Path.home() / ".cache" / "llamix-real-models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City, e.g. Zürich"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}]

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello!"}],
    "system-user": [{"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "What is 2+2?"}],
    "multi-turn": [{"role": "system", "content": "  You answer in one word.  "},
                   {"role": "user", "content": "Capital of France?"},
                   {"role": "assistant", "content": "Paris"},
                   {"role": "user", "content": "And of Italy?\n"}],
    "no-system-multi": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                        {"role": "user", "content": "c"}],
    "unicode": [{"role": "user", "content": "Ça va? \"quoted\" <tag> & 日本語 \\ 🙂\n\n  spaced  "}],
    "tools": [{"role": "system", "content": "Use tools when useful."},
              {"role": "user", "content": "Weather in Zürich?"},
              {"role": "assistant", "content": None, "tool_calls": [
                  {"id": "call_1", "type": "function",
                   "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "c"}}}]},
              {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
              {"role": "assistant", "content": "21 °C and clear."},
              {"role": "user", "content": "STOP"},
              {"role": "user", "content": "after the break"}],
}
TEMPLATE_FILES = sorted(p.name for p in DATA.glob("*.jinja"))


def hf_tokenizer(template: str, bos: str, eos: str):
    """A transformers fast tokenizer carrying ``template`` and the special tokens (its vocabulary
    does not matter for rendering)."""
    tokenizers = require_peer("tokenizers")
    transformers = require_peer("transformers")
    vocab = {t: i for i, t in enumerate(["<unk>", bos, eos, "hello"])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token="<unk>",
                                                chat_template=template)


def transformers_render(template, messages, bos, eos, add_generation_prompt, tools=None):
    """(text, None) or (None, error) from transformers' apply_chat_template."""
    tok = hf_tokenizer(template, bos, eos)
    try:
        return tok.apply_chat_template(messages, tools=tools, tokenize=False,
                                       add_generation_prompt=add_generation_prompt), None
    except Exception as e:  # noqa: BLE001 - compared with llamix's refusal
        return None, e


def llamix_render(template, messages, bos, eos, add_generation_prompt, tools=None):
    try:
        return ChatFormat(template, "test", bos, eos).render(messages, add_generation_prompt, tools=tools), None
    except ValueError as e:
        return None, e


def check_parity(template: str, bos: str, eos: str) -> int:
    """Every conversation, with and without the generation prompt and tools; returns how many
    renderings were compared (both refusing counts as agreement)."""
    n = 0
    for name, messages in CONVERSATIONS.items():
        for gen in (True, False):
            for tools in ((None, TOOLS) if name in ("tools", "user") else (None,)):
                want, werr = transformers_render(template, messages, bos, eos, gen, tools)
                got, gerr = llamix_render(template, messages, bos, eos, gen, tools)
                assert (werr is None) == (gerr is None), f"{name}: transformers {werr!r}, llamix {gerr!r}"
                assert got == want, f"{name} (generation prompt {gen}, tools {tools is not None}):\n{got!r}\n!=\n{want!r}"
                n += want is not None
    return n


@pytest.mark.peers
@pytest.mark.parametrize("fname", TEMPLATE_FILES)
def test_published_templates_render_as_transformers(fname):
    template = (DATA / fname).read_text()
    bos, eos = ("<|begin_of_text|>", "<|eot_id|>") if "llama3" in fname else ("<bos>", "<eos>") \
        if "gemma" in fname else ("<s>", "</s>")
    assert check_parity(template, bos, eos) >= 3


@pytest.mark.peers
@pytest.mark.parametrize("name", list(BUILTIN_FORMATS))
def test_builtin_formats_render_as_transformers(name):
    f = builtin_format(name, "<s>", "</s>")
    assert check_parity(f.template, "<s>", "</s>") >= 3


@pytest.mark.peers
@pytest.mark.realmodels
def test_qwen2_file_template_with_tools_renders_as_transformers():
    """The real Qwen2.5-Coder GGUF's ChatML template (tools branch included), read from the file's
    metadata; BOS/EOS as the file names them."""
    if not QWEN_FILE.is_file():
        skip_or_fail(f"{QWEN_FILE} is absent (fetch_real_models.py in the test assets fetches it)")
    r = GGUFReader(QWEN_FILE)
    template = r.get("tokenizer.chat_template")
    assert "tools" in template and "<tool_call>" in template
    tokens = r.get("tokenizer.ggml.tokens")
    bos, eos = tokens[r.get("tokenizer.ggml.bos_token_id")], tokens[r.get("tokenizer.ggml.eos_token_id")]
    assert (bos, eos) == ("<|endoftext|>", "<|im_end|>")
    assert check_parity(template, bos, eos) >= 10
    # the tools branch really ran: the tool's JSON is in the prompt, as json.dumps writes it
    text = ChatFormat(template, "qwen2", bos, eos).render(CONVERSATIONS["tools"], tools=TOOLS)
    assert json.dumps(TOOLS[0], ensure_ascii=False) in text and "<tool_response>" in text


# --- without peers ----------------------------------------------------------------------------------
def test_string_arguments_become_objects_only_where_the_template_needs_them():
    """OpenAI clients send a tool call's arguments as a JSON string; a template that writes them
    with tojson would encode that string twice, so they are parsed first (as llama-server does);
    a template that writes them as they are keeps the string. (Against llama-server:
    test_server_native.)"""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"city": "Zürich"}'}}
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    loop = "{%- for m in messages %}{{ m.role }}:{{ m.content }}{%- for c in m.tool_calls or [] %}"
    needs = ChatFormat(loop + "[{{ c.function.arguments | tojson }}]{%- endfor %}\n{%- endfor %}")
    raw = ChatFormat(loop + "[{{ c.function.arguments }}]{%- endfor %}\n{%- endfor %}")
    assert needs.render(needs.with_object_arguments(msgs)).endswith('[{"city": "Zürich"}]')
    assert raw.render(raw.with_object_arguments(msgs)).endswith('[{"city": "Zürich"}]')
    assert raw.with_object_arguments(msgs) == msgs and msgs[1]["tool_calls"][0] is call   # inputs left alone
    model = builtin_format("chatml")
    assert model.with_object_arguments(msgs) == msgs     # no tool calls written at all


def test_builtin_layouts():
    """The built-in formats' text for a system + user + assistant + user conversation, written out."""
    msgs = CONVERSATIONS["multi-turn"][:1] + [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                                              {"role": "user", "content": "Bye"}]
    msgs[0] = {"role": "system", "content": "Sys"}
    want = {
        "chatml": "<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo"
                  "<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
        "llama-3": "<B><|start_header_id|>system<|end_header_id|>\n\nSys<|eot_id|><|start_header_id|>user<|end_header_id|>"
                   "\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|><|start_header_id|>"
                   "user<|end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "gemma": "<B><start_of_turn>user\nSys\n\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n"
                 "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
        "phi-3": "<|system|>\nSys<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nYo<|end|>\n<|user|>\nBye<|end|>\n"
                 "<|assistant|>\n",
        "mistral": "<B>[INST] Sys\n\nHi[/INST]Yo<E>[INST] Bye[/INST]",
        "llama-2": "<B>[INST] <<SYS>>\nSys\n<</SYS>>\n\nHi [/INST] Yo <E><B>[INST] Bye [/INST]",
    }
    assert set(want) == set(BUILTIN_FORMATS)
    for name, text in want.items():
        assert builtin_format(name, "<B>", "<E>").render(msgs) == text, name


def test_format_choice():
    assert chat_format_for("{{ 'x' }}", None, "", "").render([]) == "x"
    assert chat_format_for("{{ 'x' }}", "gemma", "", "").name == "gemma"       # a name overrides the file's
    assert chat_format_for(None, None, "", "", ["<start_of_turn>", "a"]).name == "gemma"
    assert chat_format_for(None, None, "", "", ["a", "b"]).name == "chatml"   # llama.cpp's default
    assert guess_format(["<|start_header_id|>"]) == "llama-3"
    assert builtin_format("Llama3").name == "llama-3"
    with pytest.raises(ValueError, match="unknown chat format 'vicuna'.*chatml"):
        builtin_format("vicuna")
    with pytest.raises(ValueError, match="no chat template"):
        chat_format_for(None, "model", "", "")
    assert builtin_format("mistral-instruct").name == "mistral"   # llama-cpp-python's name


def test_unknown_format_is_refused_when_the_model_is_made():
    """As llama-cpp-python's Llama(chat_format=...), but a name llamix does not know is an
    ArgumentError naming the argument at once, not at the first chat."""
    ck = llamix.random_checkpoint("tiny", "q8_0", seed=1)
    with pytest.raises(llamix.ArgumentError, match="chat_format: unknown chat format 'nonsense'"):
        llamix.Model(ck, n_ctx=32, chat_format="nonsense")
    assert llamix.Model(ck, n_ctx=32, chat_format="llama3").chat_format == "llama3"


def test_template_errors_and_sandbox():
    with pytest.raises(ValueError, match="roles must alternate"):
        ChatFormat((DATA / "mistral-instruct.jinja").read_text()).render([{"role": "assistant", "content": "x"}])
    with pytest.raises(ValueError, match="does not parse"):
        ChatFormat("{% for %}").render([])
    # the sandbox: no reaching into Python internals, no mutating what is passed in
    with pytest.raises(ValueError):
        ChatFormat("{{ messages.__class__.__mro__ }}").render([]).startswith("(")
    msgs = [{"role": "user", "content": "a"}]
    with pytest.raises(ValueError):
        ChatFormat("{{ messages.append(1) }}").render(msgs)
    assert msgs == [{"role": "user", "content": "a"}]


# --- where templates are kept ------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["chat_template.jinja", "tokenizer_config.json", "tokenizer_config-list"])
def test_hf_folder_template_loads_and_exports_to_gguf(tmp_path, where, assets):
    """A Hugging Face folder's template (chat_template.jinja, or tokenizer_config.json as a string
    or a list of named templates) is the checkpoint's, and export_gguf writes it as
    tokenizer.chat_template, which gguf-py reads back and llamix loads again."""
    gguf = require_peer("gguf")
    folder = write_model(tmp_path / "m", tiny_tensors(1, vocab=512), vocab=512)
    (folder / "tokenizer.model").write_bytes((assets / "stories260K" / "tok512.model").read_bytes())
    template = (DATA / "llama3.jinja").read_text()
    if where == "chat_template.jinja":
        (folder / "chat_template.jinja").write_text(template)
    else:
        cfg = json.loads((folder / "tokenizer_config.json").read_text())
        cfg["chat_template"] = template if where == "tokenizer_config.json" else \
            [{"name": "tool_use", "template": "x"}, {"name": "default", "template": template}]
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert llamix.load_checkpoint(folder).chat_template == template
    out = tmp_path / "m.gguf"
    llamix.export_gguf(folder, out, qtype="f32")
    f = gguf.GGUFReader(str(out)).fields["tokenizer.chat_template"]
    assert bytes(f.parts[f.data[0]]).decode() == template
    ck = llamix.load_checkpoint(out)
    assert ck.chat_template == template
    # GGUF -> GGUF keeps it too (the tokenizer entries are copied)
    out2 = tmp_path / "m2.gguf"
    llamix.export_gguf(out, out2, qtype="q8_0")
    assert llamix.load_checkpoint(out2).chat_template == template


def test_no_template_is_none(tmp_path):
    folder = write_model(tmp_path / "m", tiny_tensors(2))
    assert llamix.load_checkpoint(folder).chat_template is None


# --- a template that does not parse, or refuses the messages -------------------------------------------
BROKEN = "{% for m in messages %}{{ m['content'] }}{% endfor %}{{ 'x' } }}"
REFUSES_SYSTEM = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                  "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")


def hf_model_with_template(tmp_path, assets, template: str) -> Path:
    folder = write_model(tmp_path / "m", tiny_tensors(1, vocab=512), vocab=512)
    (folder / "tokenizer.model").write_bytes((assets / "stories260K" / "tok512.model").read_bytes())
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return folder


def chat_cli(argv, monkeypatch, capsys, stdin="hello\n"):
    import io

    from llamix.cli import main
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    rc = main(["chat", *argv, "-n", "2", "-t", "1"])
    return rc, capsys.readouterr()


def test_a_template_that_does_not_parse_is_an_error_naming_its_file(tmp_path, assets, monkeypatch, capsys):
    """llamix chat with an unparseable template said "[chat template (model) does not parse: ...]"
    and exited 0; now it is one error line naming the file and field, exit 1, before any reply;
    ChatSession raises a FormatError at once (was a ValueError at the first message)."""
    folder = hf_model_with_template(tmp_path, assets, BROKEN)
    rc, cap = chat_cli(["-m", str(folder)], monkeypatch, capsys)
    assert rc == 1 and cap.out == ""
    assert cap.err.startswith(f"llamix chat: error: chat template ({folder / 'tokenizer_config.json'}: chat_template) "
                              "does not parse: unexpected '}'") and cap.err.count("\n") == 1, cap.err
    with pytest.raises(llamix.FormatError, match="tokenizer_config.json: chat_template.*does not parse"):
        ChatSession(llamix.load(folder, n_ctx=64))
    # a GGUF's template is named by its key
    out = tmp_path / "m.gguf"
    llamix.export_gguf(folder, out, qtype="f32")
    with pytest.raises(llamix.FormatError, match=r"m\.gguf: tokenizer\.chat_template\) does not parse"):
        ChatSession(llamix.load(out, n_ctx=64))
    # a built-in format instead works
    rc, cap = chat_cli(["-m", str(folder), "--chat-format", "chatml"], monkeypatch, capsys)
    assert rc == 0, cap.err


def test_a_template_that_refuses_the_messages_ends_chat_with_its_message(tmp_path, assets, monkeypatch, capsys):
    """raise_exception('System role not supported') with -sys: an error line naming the template
    and its message, exit 1 (was a bracketed note and exit 0); a ChatTemplateError in Python."""
    folder = hf_model_with_template(tmp_path, assets, REFUSES_SYSTEM)
    rc, cap = chat_cli(["-m", str(folder), "-sys", "Be brief."], monkeypatch, capsys)
    assert rc == 1
    assert cap.err.strip().splitlines()[-1] == (f"llamix chat: error: chat template ({folder / 'tokenizer_config.json'}"
                                                 ": chat_template): System role not supported"), cap.err
    rc, cap = chat_cli(["-m", str(folder)], monkeypatch, capsys)   # no system message: fine
    assert rc == 0, cap.err
    session = ChatSession(llamix.load(folder, n_ctx=64), system_prompt="x")
    with pytest.raises(llamix.ChatTemplateError, match="System role not supported"):
        session.send("hi")


def test_chat_template_flags_as_llama_cpp(tmp_path, assets, monkeypatch, capsys):
    """llama.cpp's --chat-template NAME_OR_JINJA and --chat-template-file FILE (were unknown
    flags): a built-in name, a Jinja text or file replaces the model's template; a file that does
    not parse is named by the flag; --jinja is accepted."""
    folder = hf_model_with_template(tmp_path, assets, BROKEN)
    good = tmp_path / "t.jinja"
    good.write_text(REFUSES_SYSTEM)
    for flags in (["--chat-template", "chatml"], ["--chat-template", REFUSES_SYSTEM, "--jinja"],
                  ["--chat-template-file", str(good)]):
        rc, cap = chat_cli(["-m", str(folder), *flags], monkeypatch, capsys)
        assert rc == 0, (flags, cap.err)
    rc, cap = chat_cli(["-m", str(folder), "--chat-template-file", str(good), "-sys", "x"], monkeypatch, capsys)
    assert rc == 1 and f"chat template (--chat-template-file {good}): System role not supported" in cap.err
    bad = tmp_path / "bad.jinja"
    bad.write_text(BROKEN)
    rc, cap = chat_cli(["-m", str(folder), "--chat-template-file", str(bad)], monkeypatch, capsys)
    assert rc == 1 and f"chat template (--chat-template-file {bad}) does not parse" in cap.err
    rc, cap = chat_cli(["-m", str(folder), "--chat-template", "vicuna-x"], monkeypatch, capsys)
    assert rc == 1 and "--chat-template 'vicuna-x': neither a built-in format" in cap.err
