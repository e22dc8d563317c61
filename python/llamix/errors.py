"""llamix's errors, and the checks that raise them.

Every input llamix refuses (a malformed file, a config value, an argument, an environment
variable) raises a :class:`LlamixError`, a ``ValueError``, whose message names the file (or the
argument) and the field, tensor or flag: ``model/config.json: num_attention_heads must be an
integer >= 1, got 0``. The subclasses say what kind of input it was:

- :class:`FormatError`: a file's bytes or structure (truncated, corrupt, not the format its name
  or magic says: GGUF, safetensors, llama2.c, a tokenizer or JSON file);
- :class:`ConfigError`: a value in a configuration, of the wrong type or out of range (a model's
  hyper-parameters in config.json or GGUF metadata, a merge config);
- :class:`ArgumentError`: an argument of a function, a command-line flag or an environment variable;
- :class:`ChatTemplateError`: a chat template that refuses the messages it is given
  (``raise_exception``) or cannot render them; the message names the template and says its words.

An error may carry the command line's wording of its advice (``cli=``: flags instead of keyword
arguments); the ``llamix`` command prints :func:`cli_message`, Python code sees ``str(e)``.

A missing or unreadable file is an ``OSError`` naming the file, as Python raises it.

The checks (:func:`check_value`, :func:`get_field`, :func:`parse_json`) validate a value where it
is read, against its type and range, so one helper serves every field. A base module: it imports
nothing of llamix.
"""
from __future__ import annotations

import json
import math
import numbers
from typing import Any, Mapping

__all__ = ["ArgumentError", "ChatTemplateError", "ConfigError", "FormatError", "LlamixError", "REQUIRED", "check_value",
           "cli_message", "describe", "get_field", "parse_json"]


class LlamixError(ValueError):
    """An input llamix refuses; the message names the file (or argument) and the field.
    ``cli``: the same message in the command line's words (flags, not keyword arguments)."""

    def __init__(self, *args, cli: str | None = None):
        super().__init__(*args)
        self.cli = cli


def cli_message(e: BaseException) -> str:
    """What the command line says for ``e``: its ``cli`` wording where it has one, else ``str(e)``."""
    cli = getattr(e, "cli", None)
    return cli if isinstance(cli, str) and cli else str(e)


class FormatError(LlamixError):
    """A file is truncated, corrupt, or not in the format it claims to be."""


class ConfigError(LlamixError):
    """A configuration value (hyper-parameters, a merge config) has the wrong type or is out of range."""


class ArgumentError(LlamixError):
    """A function argument, command-line flag or environment variable has a wrong value."""


class ChatTemplateError(LlamixError):
    """A chat template refuses the messages (its ``raise_exception``) or cannot render them."""


REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()


def describe(v: Any, limit: int = 40) -> str:
    """A short description of a value for a message: ``str 'abc'``, ``a list of 3``, ``None``."""
    if v is None:
        return "None"
    if isinstance(v, (list, tuple, dict)) or (hasattr(v, "shape") and getattr(v, "ndim", 0) > 0):
        kind = "an object" if isinstance(v, dict) else "an array"
        try:
            return f"{kind} of {len(v)}"
        except TypeError:  # pragma: no cover - an object with shape but no length
            return kind
    s = repr(v)
    if len(s) > limit:
        s = s[:limit] + "..."
    return f"{type(v).__name__} {s}"


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def check_value(value: Any, kind: type, where: str, *, lo: float | None = None, hi: float | None = None,
                error: type[LlamixError] = ConfigError) -> Any:
    """``value`` checked and converted to ``kind``, or ``error`` naming ``where``.

    ``kind``: ``int`` (an integer; not a bool, not a float), ``float`` (a finite real number;
    integers are accepted), ``str`` or ``bool``. Numbers must lie in [``lo``, ``hi``] (either may
    be None). ``where`` names the file and the field, e.g. ``"m/config.json: num_hidden_layers"``;
    the message reads ``{where} must be an integer >= 1, got str '32'``. numpy scalars count as
    the Python numbers they hold.
    """
    is_bool = isinstance(value, bool) or type(value).__name__ == "bool_"
    if kind is bool:
        if not is_bool:
            raise error(f"{where} must be true or false, got {describe(value)}")
        return bool(value)
    if kind is str:
        if not isinstance(value, str):
            raise error(f"{where} must be a string, got {describe(value)}")
        return value
    if kind is int:
        if is_bool or not isinstance(value, numbers.Integral):
            raise error(f"{where} must be an integer{_range_text(lo, hi)}, got {describe(value)}")
        v: Any = int(value)
    elif kind is float:
        if is_bool or not isinstance(value, numbers.Real):
            raise error(f"{where} must be a number{_range_text(lo, hi)}, got {describe(value)}")
        try:
            v = float(value)
        except OverflowError:  # an integer beyond float range
            v = math.inf
        if not math.isfinite(v):
            raise error(f"{where} must be a finite number{_range_text(lo, hi)}, got {describe(value)}")
    else:
        raise TypeError(f"check_value: unsupported kind {kind!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        what = "an integer" if kind is int else "a number"
        raise error(f"{where} must be {what}{_range_text(lo, hi)}, got {value!r}")
    return v


def get_field(mapping: Mapping, key: str, kind: type, source: str, default: Any = REQUIRED, *,
              lo: float | None = None, hi: float | None = None, error: type[LlamixError] = ConfigError) -> Any:
    """``mapping[key]`` checked by :func:`check_value` as ``"{source}: {key}"``. A missing key (or
    ``None``, as JSON's null) gives ``default``, or ``error`` when the field is required."""
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    if value is None:
        if default is REQUIRED:
            raise error(f"{source}: required field {key!r} is missing")
        return default
    return check_value(value, kind, f"{source}: {key}", lo=lo, hi=hi, error=error)


def parse_json(raw: bytes | str, source: str, *, want: type | None = dict, error: type[LlamixError] = FormatError):
    """A JSON document (UTF-8 bytes or text) parsed, or ``error`` naming ``source``: text that is
    not UTF-8, invalid JSON, nesting too deep for Python's parser, or (with ``want``) a top-level
    value of another type (default: an object)."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(f"{source}: not UTF-8 text (byte {e.start} is {raw[e.start:e.start + 1]!r})") from None
    else:
        text = raw
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{source}: invalid JSON ({e})") from None
    except RecursionError:
        raise error(f"{source}: JSON nested too deeply") from None
    if want is not None and not isinstance(value, want):
        kind = {dict: "object", list: "array"}.get(want, want.__name__)
        raise error(f"{source}: expected a JSON {kind} at the top level, got {describe(value)}")
    return value
