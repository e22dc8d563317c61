"""The fuzz targets, run inside a child process (see fuzz_harness.py): each writes a case's files into
a fresh folder, feeds them to llamix the way a user would (``llamix info``, load, a forward pass,
tokenize, merge), and reports how it ended:

``ok``       accepted (and the result made sense);
``clear``    refused with a :class:`llamix.LlamixError` or an ``OSError`` whose message names the
             file (for the argument targets: a LlamixError);
``unclear``  anything else: another exception type, a message without the file, or a bad input
             accepted (``Wrong``: floats taken as token ids, a nested list from ``tokenize``).

Crashes and hangs are seen by the parent (the child dies, or misses its deadline; faulthandler
writes the hung stack to the child's log first).
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import os
import re
import resource
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

import fuzz_formats as ff
from fuzz_mutators import decode_arg

import llamix
from llamix.commands import info as info_command

try:
    from llamix import LlamixError
except ImportError:  # a tree from before llamix.errors: nothing counts as the one error type
    class LlamixError(Exception):
        pass


class Wrong(Exception):
    """A bad input was accepted, or an accepted input gave a malformed result."""


def setup(mem_bytes: int) -> int:
    """Once per child: the address-space limit, one kernel thread, quiet progress."""
    resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    llamix.set_threads(1)
    os.environ["LLAMIX_QUIET"] = "1"
    return os.getpid()


# --- what each target does with its folder ------------------------------------------------------
def _exercise(ck) -> None:
    """A forward pass, and the tokenizer both ways, on a loaded checkpoint."""
    m = llamix.Model(ck, n_ctx=8)
    m.eval([1 % ck.config.vocab_size, 0])
    if ck.tokenizer is not None:
        ids = m.tokenize("Once upon a time")
        if not all(isinstance(i, int) and 0 <= i < ck.config.vocab_size for i in ids):
            raise Wrong(f"tokenize gave ids outside the model's vocabulary: {ids}")
        m.detokenize(list(range(ck.tokenizer.vocab_size)))
        m.reset()
        m.generate("ab", max_tokens=2, temperature=0)


def _load(path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        info_command.run(argparse.Namespace(model=str(path), tokenizer=None, json=True))
    _exercise(llamix.load_checkpoint(path))


def t_gguf(folder: Path, args: dict) -> None:
    _load(folder / "model.gguf")


def t_hf(folder: Path, args: dict) -> None:
    _load(folder)


def t_llama2c(folder: Path, args: dict) -> None:
    _load(folder / "model.bin")


def _merge_fixtures(folder: Path) -> None:
    tok = ff.spm_model_bytes(ff.H_VOCAB)
    for name, seed, layers in (("a", 0, ff.H_LAYERS), ("b", 1, ff.H_LAYERS), ("c", 2, 3), ("d", 3, ff.H_LAYERS)):
        d = folder / name
        d.mkdir()
        for f, raw in ff.hf_folder_files(seed, layers).items():
            (d / f).write_bytes(raw)
        (d / "tokenizer.model").write_bytes(tok)
    (folder / "g.gguf").write_bytes(ff.base_gguf())
    (folder / "s.bin").write_bytes(ff.l2c_bytes(ff.L2C_BASE, 1, ff.l2c_floats(ff.L2C_BASE, 1)))
    (folder / "text.gguf").write_text("not a model\n")


def t_merge(folder: Path, args: dict) -> None:
    _merge_fixtures(folder)
    cfg = folder / "merge.yml"
    if args.get("out") == "gguf":
        llamix.merge_to_gguf(cfg, folder / "out.gguf", "q8_0")
    else:
        llamix.merge(cfg, folder / "out")


_TOKENIZERS: dict = {}


def _tokenizers():
    if not _TOKENIZERS:
        ck = llamix.random_checkpoint("tiny", "q8_0", dim=64, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=64)
        _TOKENIZERS["model"] = llamix.Model(ck, n_ctx=64)
        _TOKENIZERS["spm"] = ck.tokenizer
        byte_chars = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + \
            [chr(c) for c in range(174, 256)] + [chr(256 + i) for i in range(68)]
        tokens = byte_chars + ["\u0120t", "he", "\u0120the", "<|endoftext|>"]
        meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default", "tokenizer.ggml.tokens": tokens,
                "tokenizer.ggml.token_type": np.array([1] * (len(tokens) - 1) + [3], np.int32),
                "tokenizer.ggml.merges": ["\u0120 t", "h e", "\u0120t he"],
                "tokenizer.ggml.eos_token_id": len(tokens) - 1}
        _TOKENIZERS["bpe"] = llamix.Tokenizer.from_gguf_metadata(meta, source="fuzz BPE vocabulary")
    return _TOKENIZERS


def _check_ids(ids, n: int) -> None:
    if not isinstance(ids, list) or not all(type(i) is int and 0 <= i < n for i in ids):
        raise Wrong(f"expected a list of token ids in [0, {n}), got {ids!r:.80}")


def _integers(arg) -> bool:
    return isinstance(arg, (list, tuple)) and all(type(i) is int for i in arg)


def t_tokenizer(folder: Path, args: dict) -> None:
    toks = _tokenizers()
    call, arg = args["call"], decode_arg(args["arg"])
    m = toks["model"]
    if call in ("encode_spm", "encode_bpe", "model_tokenize"):
        tok = toks["spm"] if call == "encode_spm" else toks["bpe"] if call == "encode_bpe" else m.tokenizer
        ids = m.tokenize(arg) if call == "model_tokenize" else tok.encode(arg)
        _check_ids(ids, tok.vocab_size)
        if not isinstance(arg, (str, bytes)):
            raise Wrong(f"{call} accepted a {type(arg).__name__}: {arg!r:.60}")
    elif call in ("decode_spm", "decode_bpe", "model_detokenize"):
        tok = toks["spm"] if call == "decode_spm" else toks["bpe"] if call == "decode_bpe" else m.tokenizer
        text = m.detokenize(arg) if call == "model_detokenize" else tok.decode(arg)
        if not isinstance(text, str):
            raise Wrong(f"{call} returned {type(text).__name__}")
        if not _integers(arg):
            raise Wrong(f"{call} accepted {arg!r:.60} as token ids")
    elif call == "model_generate":
        m.reset()
        text = m.generate(arg, max_tokens=2, temperature=0)
        if not isinstance(text, str):
            raise Wrong(f"generate returned {type(text).__name__}")
        if not (isinstance(arg, (str, bytes)) or _integers(arg)):
            raise Wrong(f"generate accepted {arg!r:.60} as a prompt")
    else:
        raise KeyError(call)


def t_spm(folder: Path, args: dict) -> None:
    tok = llamix.Tokenizer.from_file(folder / "tokenizer.model")
    _check_ids(tok.encode("Once upon a time, abc"), tok.vocab_size)
    tok.decode(list(range(tok.vocab_size)))
    for i in range(tok.vocab_size):
        tok.decode([i], special=True)


def t_quant(folder: Path, args: dict) -> None:
    n, layout = int(args["nbytes"]), args["layout"]
    if layout == "bytes":
        data = bytes(n)
    elif layout == "array":
        data = np.zeros(n, np.uint8)
    elif layout == "strided":
        data = np.zeros(2 * n, np.uint8)[::2]
    else:
        data = np.zeros(n // 4, np.float32)
    qt = llamix.QuantizedTensor.from_bytes(data, args["qtype"], args["shape"])
    rows, k = qt.shape
    if rows * k:
        w = qt.dequantize()
        if w.shape != (rows, k):
            raise Wrong(f"dequantize gave {w.shape} for a tensor of shape {qt.shape}")


TARGETS = {"gguf": t_gguf, "safetensors": t_hf, "hf_config": t_hf, "llama2c": t_llama2c, "merge_yaml": t_merge,
           "tokenizer_text": t_tokenizer, "spm_model": t_spm, "quant_bytes": t_quant}
# targets whose input is an argument, not a file: a clear error is a LlamixError naming it
ARGUMENT_TARGETS = {"tokenizer_text": re.compile(r"\b(text|token|tokens|ids?|prompt|bytes)\b"),
                    "quant_bytes": re.compile(r"\b(shape|qtype|bytes|data|type|rows?)\b")}


def _location(e: BaseException) -> str:
    """The innermost frame inside llamix (else the innermost), as file:line function."""
    frames = traceback.extract_tb(e.__traceback__)
    inner = [f for f in frames if "/llamix/" in f.filename] or frames
    if not inner:
        return "?"
    f = inner[-1]
    return f"{os.path.basename(f.filename)} {f.name}"


def classify(target: str, e: BaseException, folder: Path) -> str:
    msg = str(e)
    if isinstance(e, Wrong):
        return "unclear"
    if target in ARGUMENT_TARGETS:
        names = ARGUMENT_TARGETS[target].search(msg) is not None
    else:
        names = str(folder) in msg
    if isinstance(e, (LlamixError, OSError)) and names:
        return "clear"
    if isinstance(e, ValueError) and names:
        return "named_valueerror"  # a clear message, but not the one error type
    return "unclear"


def run(target: str, case: dict, timeout: float) -> dict:
    """Run one case; the result says how it ended (see the module's docstring)."""
    folder = Path(tempfile.mkdtemp(prefix="llamix-fuzz-"))
    faulthandler.dump_traceback_later(timeout, exit=False)  # the stack of a hang, before the parent kills us
    try:
        for name, raw in case["files"].items():
            (folder / name).write_bytes(raw)
        TARGETS[target](folder, case.get("args", {}))
        return {"outcome": "ok"}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - every way of failing is what we measure
        kind = classify(target, e, folder)
        out = {"outcome": kind, "type": type(e).__name__, "message": str(e).replace(str(folder), "<case>")[:500],
               "where": _location(e)}
        if kind == "unclear":
            out["traceback"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:]
        return out
    finally:
        faulthandler.cancel_dump_traceback_later()
        shutil.rmtree(folder, ignore_errors=True)
        sys.stdout.flush()
