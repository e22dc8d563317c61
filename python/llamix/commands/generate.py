"""``llamix generate -m MODEL -p PROMPT``: stream a completion to stdout (llama-cli's flags)."""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..loaders import SHAPES
from ..model import Model
from ..tokenizer import check_text
from .common import (MODEL_HELP, TOKENIZER_HELP, UsageError, add_ctx, add_gpu_flags, add_lora, add_llama_cpp_loading,
                     add_kv_cache, add_qtype, add_sampling, add_threads, check, check_ctx, check_sampling,
                     check_threads, quiet_requested, sampling_kwargs, warn, warn_ctx)
from .model_inputs import open_model, process_escapes, read_prompt


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", help=MODEL_HELP)
    src.add_argument("--random", metavar="SHAPE", choices=list(SHAPES),
                     help=f"no download: a random-weight model of this shape ({', '.join(SHAPES)}); its text is gibberish")
    p.add_argument("-p", "--prompt", help="the text to continue")
    p.add_argument("-f", "--file", help="read the prompt from this file ('-': standard input)")
    p.add_argument("prompt_text", nargs="?", metavar="PROMPT", help="the prompt, if -p/-f are not given")
    p.add_argument("-n", "--n-predict", type=int, default=128, metavar="N",
                   help="tokens to generate (-1: until end-of-sequence or the context is full)")
    p.add_argument("--max-tokens", type=int, dest="n_predict", help=argparse.SUPPRESS)
    add_ctx(p)
    add_threads(p)
    add_gpu_flags(p)
    add_llama_cpp_loading(p)
    add_sampling(p)
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    add_qtype(p)
    add_kv_cache(p)
    add_lora(p)
    p.add_argument("--stats", action="store_true", help="print prompt and generation speed to stderr at the end")
    p.add_argument("--no-display-prompt", action="store_true", help="print only the generated text, not the prompt "
                                                                     "before it (llama-cli's flag)")
    p.add_argument("--ignore-eos", action="store_true",
                   help="never end at an end-of-generation token: generate -n tokens (llama-cli's flag)")
    p.add_argument("-no-cnv", "--no-conversation", action="store_true",
                   help="accepted as llama-cli's flag: generate never holds a conversation (llamix chat does)")
    constraint = p.add_mutually_exclusive_group()
    constraint.add_argument("--grammar", metavar="GBNF", help="constrain the output to this GBNF grammar (llama.cpp's)")
    constraint.add_argument("--grammar-file", metavar="FILE", help="the same, read from a file")
    constraint.add_argument("-j", "--json-schema", metavar="SCHEMA",
                            help="constrain the output to JSON valid against this JSON schema (text)")
    p.add_argument("-e", "--escape", action=argparse.BooleanOptionalAction, default=True,
                   help="process escapes (\\n \\r \\t \\' \\\" \\\\ \\xHH) in -p and --stop, as llama.cpp does "
                        "(--no-escape: take backslashes literally)")


def _check(args) -> None:
    check_threads(args)
    check(args.n_predict >= -1, "-n/--n-predict", f"must be >= -1, got {args.n_predict}")
    check_ctx(args)
    check_sampling(args)


def run(args) -> int:
    _check(args)
    prompt = read_prompt(args)
    if args.escape and args.stop:
        args.stop = [check_text(process_escapes(s), "--stop") for s in args.stop]
    m = open_model(args)
    warn_ctx("generate", args.ctx_size, m.config)
    n_prompt = len(m.tokenize(prompt))
    if n_prompt >= m.n_ctx:
        raise UsageError(f"-c/--ctx-size: the prompt ({n_prompt} tokens) leaves no room in the context ({m.n_ctx} "
                         "tokens)")
    if n_prompt + args.n_predict > m.n_ctx:   # as llama.cpp without context shift: stop where the context ends
        warn("generate", f"the prompt ({n_prompt} tokens) plus -n {args.n_predict} go past the context "
                         f"(-c/--ctx-size {m.n_ctx}): at most {m.n_ctx - n_prompt} tokens are generated")
        args.n_predict = m.n_ctx - n_prompt
    grammar, response_format, flag = _constraint(args)
    # llama-cli's --ignore-eos: every end-of-generation token's logit at -inf
    bias = {i: float("-inf") for i in m.eos_ids} if args.ignore_eos else None
    if grammar is None and response_format is None and bias is None:
        pieces = m.stream(prompt, max_tokens=args.n_predict, **sampling_kwargs(args))
    else:   # the same generation as stream's, under the grammar's mask or the bias
        try:
            request = m.new_request(m.tokenize(prompt, parse_special=True), max_tokens=args.n_predict,
                                    grammar=grammar, response_format=response_format, logit_bias=bias,
                                    **sampling_kwargs(args))
        except ValueError as e:
            raise UsageError(f"{flag}: {e}") from None
        pieces = (step.text for step in m.run(request)) if args.n_predict else iter(())
    out = sys.stdout
    if not args.no_display_prompt:
        out.write(prompt)
        out.flush()
    t0 = time.perf_counter()
    full = False
    try:
        for piece in pieces:
            out.write(piece)
            out.flush()
        full = args.n_predict < 0 and m.n_past + 1 >= m.n_ctx   # ended by the context, not by the model
    finally:  # Ctrl-C or an error: what was generated stays, the terminal gets its newline
        out.write("\n")
        out.flush()
        if full:
            warn("generate", f"the context is full (-c/--ctx-size {m.n_ctx}): generation stopped")
        if args.stats and not quiet_requested(args):
            _print_timings(m, time.perf_counter() - t0)
    return 0


def _constraint(args) -> tuple[str | None, dict | None, str]:
    """(GBNF grammar, JSON response_format, the flag) of --grammar / --grammar-file / -j/--json-schema."""
    if args.grammar_file:
        flag = f"--grammar-file {args.grammar_file}"
        try:
            with open(args.grammar_file, encoding="utf-8") as f:
                return f.read(), None, flag
        except OSError as e:
            raise UsageError(f"{flag}: {e.strerror or e}") from None
    if args.json_schema:
        try:
            schema = json.loads(args.json_schema)
        except json.JSONDecodeError as e:
            raise UsageError(f"-j/--json-schema: not JSON: {e}") from None
        return None, {"type": "json_schema", "json_schema": {"schema": schema}}, "-j/--json-schema"
    return args.grammar or None, None, "--grammar"


def _print_timings(m: Model, total_s: float) -> None:
    """Timings in llama.cpp's words (llama_perf_context_print)."""
    t = m.timings
    def line(what: str, seconds: float, n: int, unit: str) -> str:
        ms = seconds * 1e3
        per = ms / n if n else 0.0
        tps = n / seconds if seconds > 0 else 0.0
        return (f"{what:>16} = {ms:10.2f} ms / {n:5d} {unit} ({per:8.2f} ms per token, {tps:8.2f} tokens per second)")
    print(line("prompt eval time", t.prompt_s, t.prompt_tokens, "tokens"), file=sys.stderr)
    print(line("eval time", t.eval_s, t.eval_tokens, "runs  "), file=sys.stderr)
    print(f"{'total time':>16} = {total_s * 1e3:10.2f} ms / {t.prompt_tokens + t.eval_tokens:5d} tokens", file=sys.stderr)
