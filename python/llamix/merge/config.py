"""mergekit's YAML merge configuration, parsed and validated before any work starts.

Schema (mergekit 0.1.5, https://github.com/arcee-ai/mergekit/blob/main/docs/): exactly one of
``models`` (``- model: PATH`` with optional ``parameters``) or ``slices`` (``- sources: [{model,
layer_range: [start, end], parameters}]`` with optional slice ``parameters`` / ``base_model``);
``merge_method``, ``base_model``, global ``parameters``, ``dtype``, ``out_dtype``,
``tokenizer_source``. Every problem raises :class:`ConfigError` naming the field, e.g.
``models[1].parameters.weight``.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import ConfigError
from .kernels import dtype_name

__all__ = ["ConfigError", "MergeConfig", "Slice", "Source", "load_config", "parse_config"]


TOP_LEVEL = {"models", "slices", "merge_method", "base_model", "dtype", "out_dtype", "tokenizer_source", "parameters",
             "tokenizer", "chat_template", "modules", "name"}
# Keys mergekit accepts that llamix refuses, with the reason.
UNSUPPORTED = {
    "modules": "multi-module (e.g. vision-language) merges are not supported; use `models` or `slices`",
}


@dataclass
class TokenSource:
    """Where one token's embedding (and output-head row) comes from (mergekit's ``tokens:``):
    kind "model" (the token's own row in `model`), "model_token" (row `token_id` or the row of
    `token` in `model`), "zero"; None lets the default rule decide. force: use it even where the
    model has the token itself."""
    kind: Optional[str] = None
    model: Optional[str] = None
    token: Optional[str] = None
    token_id: Optional[int] = None
    force: bool = False


@dataclass
class TokenizerConfig:
    source: str = "union"  # "union", "base" or a model
    tokens: dict = field(default_factory=dict)  # token text -> TokenSource
    pad_to_multiple_of: Optional[int] = None


@dataclass
class Source:
    """One input: a model folder, its parameters and (in slices) its layer range."""
    model: str
    parameters: dict = field(default_factory=dict)
    layer_range: Optional[tuple[int, int]] = None
    where: str = ""  # the field path, for messages


@dataclass
class Slice:
    sources: list[Source]
    parameters: dict = field(default_factory=dict)
    base_model: Optional[str] = None
    where: str = ""


@dataclass
class MergeConfig:
    merge_method: str
    models: Optional[list[Source]] = None
    slices: Optional[list[Slice]] = None
    base_model: Optional[str] = None
    dtype: Optional[str] = None
    out_dtype: Optional[str] = None
    tokenizer_source: Optional[str] = None
    tokenizer: Optional[TokenizerConfig] = None
    chat_template: Optional[str] = None
    parameters: dict = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)  # relative model paths resolve here too
    text: str = ""  # the YAML as given (recorded in the output README)
    source: str = "merge config"  # the file it came from, named by every error

    def referenced_models(self) -> list[str]:
        """Every model the config names, in first-mention order (base first if set)."""
        seen: list[str] = []
        for m in ([self.base_model] if self.base_model else []) + [
                s.model for s in (self.models or [])] + [
                s.model for sl in (self.slices or []) for s in sl.sources] + [
                sl.base_model for sl in (self.slices or []) if sl.base_model]:
            if m not in seen:
                seen.append(m)
        return seen


def load_config(config: Any) -> MergeConfig:
    """A config from a path, a YAML string, a dict, or a MergeConfig (returned as is)."""
    if isinstance(config, MergeConfig):
        return config
    base_dir = Path.cwd()
    source = "merge config"
    if isinstance(config, (str, os.PathLike)):
        text = str(config)
        is_path = isinstance(config, os.PathLike) or ("\n" not in text and (
            text.endswith((".yml", ".yaml")) or Path(text).is_file() or Path(text).is_dir()))
        if is_path:
            path = Path(config)
            if path.is_dir():
                raise ConfigError(f"{path}: a folder, not a merge config (a YAML file)")
            if not path.is_file():
                raise FileNotFoundError(f"{path}: merge config not found")
            raw = path.read_bytes()
            source = str(path)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(f"{path}: not UTF-8 text (byte {raw[e.start]:#04x} at {e.start})") from None
            base_dir = path.resolve().parent
        data = _parse_yaml(text, source)
    elif isinstance(config, dict):
        data = config
        try:
            text = yaml.safe_dump(config, sort_keys=False)
        except (yaml.YAMLError, RecursionError) as e:
            raise ConfigError(f"{source}: cannot be written as YAML ({type(e).__name__})") from None
    else:
        raise ConfigError(f"config must be a path, a YAML string or a dict, not {type(config).__name__}")
    try:
        cfg = parse_config(data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    cfg.base_dir = base_dir
    cfg.text = text
    cfg.source = source
    return cfg


# libyaml's parser where PyYAML has it: the same documents as yaml.safe_load, about 100x faster on
# hostile input (200 KB of nested brackets: 7 ms, where the pure-Python scanner took 1.4-9 s before
# giving up at the recursion limit).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _NamedText(io.StringIO):
    """The config's text under its file's name, which PyYAML's error marks then show (for a plain
    string they say "<unicode string>")."""

    def __init__(self, text: str, name: str):
        super().__init__(text)
        self.name = name


def _parse_yaml(text: str, source: str):
    try:
        return yaml.load(_NamedText(text, source), Loader=_YAML_LOADER)
    except yaml.YAMLError as e:
        # one line: "<context> (line, column): <problem> (line, column)", as PyYAML's marks say
        def at(mark):
            return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if "nesting depth" in problem:
            problem = "nested too deeply"
        context = getattr(e, "context", None)
        context = f"{context}{at(getattr(e, 'context_mark', None))}: " if context else ""
        raise ConfigError(f"{source}: not valid YAML: {context}{problem}{at(getattr(e, 'problem_mark', None))}") \
            from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None


def parse_config(data: Any) -> MergeConfig:
    if not isinstance(data, dict):
        raise ConfigError("the merge config must be a mapping (merge_method, models or slices, ...)")
    for key in data:
        if key not in TOP_LEVEL:
            raise ConfigError(f"{key}: unknown field (known: {', '.join(sorted(TOP_LEVEL))})")
        if key in UNSUPPORTED and data[key] is not None:
            raise ConfigError(f"{key}: {UNSUPPORTED[key]}")
    method = data.get("merge_method")
    if not isinstance(method, str) or not method:
        raise ConfigError("merge_method: required, a method name such as linear, slerp or ties")
    has_models, has_slices = bool(data.get("models")), bool(data.get("slices"))
    if has_models == has_slices:
        raise ConfigError("models / slices: exactly one of them must be given (and not be empty)")
    cfg = MergeConfig(merge_method=method)
    cfg.base_model = _model_ref(data.get("base_model"), "base_model", optional=True)
    for key in ("dtype", "out_dtype"):
        if data.get(key) is not None:
            try:
                setattr(cfg, key, dtype_name(data[key]))
            except ValueError:
                raise ConfigError(f"{key}: unsupported dtype {data[key]!r} (float32, float16 or bfloat16)") from None
    ts = data.get("tokenizer_source")
    if ts is not None:
        cfg.tokenizer_source = ts if ts in ("union", "base") else _model_ref(ts, "tokenizer_source")
    if data.get("tokenizer") is not None:
        if ts is not None:
            raise ConfigError("tokenizer / tokenizer_source: give one of them, not both (as mergekit)")
        cfg.tokenizer = _tokenizer(data["tokenizer"])
    ct = data.get("chat_template")
    if ct is not None:
        if not isinstance(ct, str) or not ct.strip():
            raise ConfigError("chat_template: expected a built-in template name, 'auto' or a Jinja template string")
        cfg.chat_template = ct
    cfg.parameters = _parameters(data.get("parameters"), "parameters")
    if has_models:
        cfg.models = [_source(m, f"models[{i}]", slices=False) for i, m in enumerate(_list(data["models"], "models"))]
        first: dict[str, str] = {}
        for src in cfg.models:  # mergekit refuses these too ("Duplicate merge inputs")
            if src.model in first:
                raise ConfigError(f"{src.where}.model: {src.model!r} is listed twice (also {first[src.model]}); "
                                  "give it once, with the weight you mean")
            first[src.model] = src.where
    else:
        cfg.slices = []
        for i, s in enumerate(_list(data["slices"], "slices")):
            where = f"slices[{i}]"
            if not isinstance(s, dict):
                raise ConfigError(f"{where}: expected a mapping with `sources`")
            for key in s:
                if key not in ("sources", "parameters", "base_model", "residual_weight"):
                    raise ConfigError(f"{where}.{key}: unknown field")
            if s.get("residual_weight") is not None:
                raise ConfigError(f"{where}.residual_weight: not supported")
            sources = [_source(x, f"{where}.sources[{j}]", slices=True)
                       for j, x in enumerate(_list(s.get("sources"), f"{where}.sources"))]
            lengths = {src.layer_range[1] - src.layer_range[0] for src in sources}
            if len(lengths) > 1:
                raise ConfigError(f"{where}.sources: all sources of a slice must span the same number of layers "
                                  f"(got {sorted(lengths)})")
            cfg.slices.append(Slice(sources, _parameters(s.get("parameters"), f"{where}.parameters"),
                                    _model_ref(s.get("base_model"), f"{where}.base_model", optional=True), where))
    return cfg


def _tokenizer(t) -> TokenizerConfig:
    if not isinstance(t, dict):
        raise ConfigError("tokenizer: expected a mapping (source, tokens, pad_to_multiple_of)")
    for key in t:
        if key not in ("source", "tokens", "pad_to_multiple_of"):
            raise ConfigError(f"tokenizer.{key}: unknown field (expected source, tokens, pad_to_multiple_of)")
    out = TokenizerConfig()
    src = t.get("source", "union")
    out.source = src if src in ("union", "base") else _model_ref(src, "tokenizer.source")
    pad = t.get("pad_to_multiple_of")
    if pad is not None:
        if not isinstance(pad, int) or isinstance(pad, bool) or pad <= 0:
            raise ConfigError(f"tokenizer.pad_to_multiple_of: expected a positive integer, got {pad!r}")
        out.pad_to_multiple_of = pad
    tokens = t.get("tokens") or {}
    if not isinstance(tokens, dict):
        raise ConfigError("tokenizer.tokens: expected a mapping of token text to {source, force}")
    for tok, spec in tokens.items():
        where = f"tokenizer.tokens[{tok!r}]"
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - {"source", "force"}:
            raise ConfigError(f"{where}: expected {{source, force}}")
        ts = TokenSource(force=bool(spec.get("force", False)))
        src = spec.get("source")
        if isinstance(src, dict) and "kind" in src:
            kind = src["kind"]
            if kind == "zero":
                if set(src) != {"kind"}:
                    raise ConfigError(f"{where}.source: a zero source has no other fields")
                ts.kind = "zero"
            elif kind == "model_token":
                if set(src) - {"kind", "model", "token", "token_id"}:
                    raise ConfigError(f"{where}.source: unknown fields {sorted(set(src) - {'kind', 'model', 'token', 'token_id'})}")
                if (src.get("token") is None) == (src.get("token_id") is None):
                    raise ConfigError(f"{where}.source: give exactly one of token and token_id")
                if src.get("token_id") is not None and (not isinstance(src["token_id"], int) or src["token_id"] < 0):
                    raise ConfigError(f"{where}.source.token_id: expected a non-negative integer")
                ts.kind, ts.model = "model_token", _model_ref(src.get("model"), f"{where}.source.model")
                ts.token, ts.token_id = src.get("token"), src.get("token_id")
            else:
                raise ConfigError(f"{where}.source.kind: expected model_token or zero, got {kind!r}")
        elif src is not None:
            ts.kind, ts.model = "model", _model_ref(src, f"{where}.source")
        out.tokens[str(tok)] = ts
    return out


def _list(value, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list")
    return value


def _model_ref(value, where: str, optional: bool = False) -> Optional[str]:
    """A model reference as a string: PATH, org/name[@REV], either optionally +LORA[@REV]; mergekit's
    mapping form {model: {path, revision}, lora: {path, revision}} is written the same way."""
    if value is None and optional:
        return None
    if isinstance(value, dict) and set(value) <= {"model", "lora", "override_architecture"}:
        if value.get("override_architecture") is not None:
            raise ConfigError(f"{where}.override_architecture: not supported")

        def text(v, w):
            if isinstance(v, dict) and isinstance(v.get("path"), str):
                return v["path"] + (f"@{v['revision']}" if v.get("revision") else "")
            if isinstance(v, str) and v:
                return v
            raise ConfigError(f"{w}: expected a path (or {{path, revision}})")
        model = text(value.get("model"), f"{where}.model")
        value = model if value.get("lora") is None else f"{model}+{text(value['lora'], f'{where}.lora')}"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a model folder or Hugging Face repo id")
    return value


def _source(m, where: str, slices: bool) -> Source:
    if isinstance(m, str) and not slices:
        return Source(_model_ref(m, where), where=where)
    if not isinstance(m, dict):
        raise ConfigError(f"{where}: expected a mapping with `model`")
    allowed = {"model", "parameters", "layer_range"} if slices else {"model", "parameters"}
    for key in m:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown field (expected {', '.join(sorted(allowed))})")
    src = Source(_model_ref(m.get("model"), f"{where}.model"), _parameters(m.get("parameters"), f"{where}.parameters"),
                 where=where)
    if slices:
        lr = m.get("layer_range")
        if (not isinstance(lr, (list, tuple)) or len(lr) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                         for v in lr) or not 0 <= lr[0] <= lr[1]):
            raise ConfigError(f"{where}.layer_range: expected [start, end) with 0 <= start <= end, got {lr!r}")
        src.layer_range = (lr[0], lr[1])
    return src


def _scalar_ok(v) -> bool:
    return isinstance(v, (bool, int, float, str))


def _parameters(p, where: str) -> dict:
    """Check the shape of every parameter setting: scalar, gradient, or filtered entries."""
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise ConfigError(f"{where}: expected a mapping of parameter names to values")
    out = {}
    for name, setting in p.items():
        out[name] = _setting(setting, f"{where}.{name}")
    return out


def _setting(s, where: str):
    if _scalar_ok(s):
        return s
    if isinstance(s, dict):
        s = [s]
    if isinstance(s, list) and s:
        if all(_scalar_ok(v) for v in s):
            return list(s)
        entries = []
        for i, e in enumerate(s):
            if not isinstance(e, dict):
                raise ConfigError(f"{where}[{i}]: mix of plain values and filtered entries")
            for key in e:
                if key not in ("filter", "pattern", "value"):
                    raise ConfigError(f"{where}[{i}].{key}: unknown field (expected filter and value)")
            if "value" not in e:
                raise ConfigError(f"{where}[{i}]: a filtered entry needs a `value`")
            # `pattern` is what older mergekit examples call `filter`
            flt = e.get("filter", e.get("pattern"))
            if flt is not None and not isinstance(flt, str):
                raise ConfigError(f"{where}[{i}].filter: expected a string")
            value = e["value"]
            if not (_scalar_ok(value) or (isinstance(value, list) and value and all(_scalar_ok(v) for v in value))):
                raise ConfigError(f"{where}[{i}].value: expected a number or a list of numbers")
            entries.append({"filter": flt, "value": value})
        return entries
    raise ConfigError(f"{where}: expected a number, a list of numbers (gradient) or filtered entries, got {s!r}")
