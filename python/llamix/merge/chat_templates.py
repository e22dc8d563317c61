"""``chat_template:`` of a merge config: a built-in name (mergekit's: alpaca, chatml, exaone,
llama3, mistral), ``auto`` (the template most of the input models share), or a Jinja template
string; written into the output's tokenizer_config.json. The built-in templates are written here
from the formats they name."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

from .config import ConfigError

BUILTIN = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    "llama3": (
        "{% for message in messages %}"
        "{% if loop.first %}{{ bos_token }}{% endif %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
    "mistral": (
        "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
        "{%- set turns = messages[1:] %}{%- else %}{%- set turns = messages %}{%- endif %}"
        "{{- bos_token }}"
        "{%- for message in turns %}"
        "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{- raise_exception('After an optional system message, roles must alternate user/assistant') }}"
        "{%- endif %}"
        "{%- if message['role'] == 'user' %}"
        "{%- if loop.first and system is defined %}{{- ' [INST] ' + system + '\\n\\n' + message['content'] + ' [/INST]' }}"
        "{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
        "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
        "{%- else %}{{- raise_exception('Only user and assistant roles, after an optional system message') }}"
        "{%- endif %}"
        "{%- endfor %}"),
    "alpaca": (
        "{% set system = messages | selectattr('role', 'equalto', 'system') | list %}"
        "{% if system %}{{ system[-1]['content'] | trim }}{% endif %}\n\n"
        "{% for message in messages %}"
        "{% if message['role'] == 'user' %}### Instruction:\n{{ message['content'] | trim }}"
        "{% elif message['role'] == 'user_context' %}### Input:\n{{ message['content'] | trim }}"
        "{% elif message['role'] == 'assistant' %}### Response:\n{{ message['content'] | trim }}"
        "{% endif %}"
        "{% if message['role'] != 'system' and not loop.last %}\n\n{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}\n\n### Response:\n{% endif %}"),
    "exaone": (
        "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' %}{{ '[|system|][|endofturn|]\\n' }}{% endif %}"
        "{{ '[|' + message['role'] + '|]' + message['content'] }}"
        "{% if message['role'] == 'user' %}{{ '\\n' }}{% else %}{{ '[|endofturn|]\\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"),
}


def template_of(folder: Path) -> Optional[str]:
    """A model's chat template: chat_template.jinja, else tokenizer_config.json's chat_template."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    try:
        t = json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template")
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(t, list):  # [{name, template}, ...]
        t = next((e.get("template") for e in t if isinstance(e, dict) and e.get("name") == "default"), None)
    if isinstance(t, dict):
        t = t.get("default")
    return t if isinstance(t, str) and t.strip() else None


def resolve_chat_template(value: Optional[str], folders: list[Path]) -> Optional[str]:
    """The template text for the config's chat_template (None: leave the tokenizer's own)."""
    if value is None:
        return None
    if value == "auto":
        found = [t.strip() for t in (template_of(f) for f in folders) if t]
        return Counter(found).most_common(1)[0][0] if found else None
    if value in BUILTIN:
        return BUILTIN[value]
    if len(value) < 20 or "{" not in value:
        raise ConfigError(f"chat_template: {value!r} is neither a built-in template ({', '.join(sorted(BUILTIN))}, auto) "
                          "nor a Jinja template")
    return value
