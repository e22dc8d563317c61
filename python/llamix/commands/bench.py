"""``llamix bench``: prompt processing and generation speed, like llama-bench.

``pp``: one forward pass over ``-p`` prompt tokens; ``tg``: ``-n`` single-token decodes; both
after ``-d/--n-depth`` tokens already in the cache (llama-bench's ``-d``; filled once, untimed,
and rewound to that depth before each repetition). The table reports tokens/s, the median over ``-r``
repetitions (after one warm-up); ``-o json|jsonl|csv`` gives llama-bench's records (its field names:
``avg_ts``, ``stddev_ts``, ``samples_ts``, ...). ``--shape 1b|7b|tiny`` measures a synthesized
random-weight LLaMA (no download).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import re
import statistics
import sys
import time

import numpy as np

from .. import __version__
from .._runtime import cpu_info, max_threads, set_threads
from ..formats.gguf import GGUFReader, read_header
from ..loaders import SHAPES, random_checkpoint
from ..model import Model, load
from ..model.model import kv_cache_type
from .common import MODEL_HELP, add_gpu_flags, add_kv_cache, add_qtype, check, warn


_RANGE = re.compile(r"(-?\d+)(?:-(\d+)(?:([+*])(\d+))?)?")   # a negative value is refused later, by name


def _int_list(text: str) -> list[int]:
    """llama-bench's value lists (each value a test): ``512``, ``128,256,512``, and ranges
    ``first-last`` (step 1), ``first-last+step``, ``first-last*factor`` (values up to ``last``)."""
    out = []
    for item in text.split(","):
        m = _RANGE.fullmatch(item.strip())
        if m is None:
            raise argparse.ArgumentTypeError(f"expected an integer, a range (first-last, first-last+step, "
                                             f"first-last*factor) or a comma-separated list of them, got {text!r}")
        first = int(m[1])
        last = int(m[2]) if m[2] else first
        op, step = m[3] or "+", int(m[4]) if m[4] else 1
        i = first
        while i <= last:
            out.append(i)
            i, previous = (i + step if op == "+" else i * step), i
            if i <= previous:
                raise argparse.ArgumentTypeError(f"the range {item!r} does not advance (step {op}{step} from {previous})")
    return out


def _pair(text: str) -> list[tuple[int, int]]:
    """llama-bench's ``-pg pp,tg``: a prompt of ``pp`` tokens then ``tg`` generated, timed together."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected two integers pp,tg, got {text!r}")
    return [(int(parts[0]), int(parts[1]))]


def _values(args, name: str, default: list[int]) -> list[int]:
    """A value-list flag's values: every occurrence's (``-p 64 -p 128`` tests both, as llama-bench),
    or the default when the flag is absent."""
    given = getattr(args, name)
    return default if given is None else given


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", help=MODEL_HELP)
    src.add_argument("--shape", choices=list(SHAPES), help="a random-weight model of this shape (no download)")
    add_qtype(p, help="weight type (default: as stored; q4_0 for --shape)")
    p.add_argument("-p", "--n-prompt", type=_int_list, action="extend", default=None, metavar="N[,N...]",
                   help="prompt tokens (pp test; 0: skip) (default: 512)")
    p.add_argument("-n", "--n-gen", type=_int_list, action="extend", default=None, metavar="N[,N...]",
                   help="generated tokens (tg test; 0: skip) (default: 128)")
    p.add_argument("-pg", type=_pair, action="extend", default=[], metavar="PP,TG", dest="n_pg",
                   help="a prompt of PP tokens then TG generated, timed as one test (llama-bench's ppPP+tgTG); "
                        "repeatable")
    p.add_argument("-t", "--threads", type=_int_list, action="extend", default=None, metavar="N[,N...]",
                   help="compute threads (default: one per physical core)")
    add_gpu_flags(p)
    p.add_argument("-r", "--repetitions", type=int, default=3, metavar="N", help="repetitions of each test (the table: their mean ± standard deviation, as llama-bench)")
    p.add_argument("-d", "--n-depth", type=_int_list, action="extend", default=None, metavar="N[,N...]",
                   help="tokens already in the KV cache when pp and tg are measured (llama-bench's -d) (default: 0)")
    add_kv_cache(p, lists=True)
    p.add_argument("-o", "--output", choices=["md", "json", "jsonl", "csv"], default="md",
                   help="md: llama-bench's Markdown table (default); json, jsonl, csv: one record per test "
                        "with llama-bench's -o field names (avg_ts, samples_ts, n_depth, ...)")
    p.add_argument("--json", action="store_true", help="the same as -o json")


def _samples(m: Model, n_prompt: int, n_gen: int, reps: int, n_depth: int = 0,
             together: bool = False) -> dict[str, list[int]]:
    """Nanoseconds of each repetition of the ``pp`` and ``tg`` tests, after ``n_depth`` tokens
    already in the cache (after one untimed warm-up); ``together``: one ``pg`` test, the prompt
    and then the generation timed as one (llama-bench's ``-pg``)."""
    rng = np.random.default_rng(0)
    vocab = m.config.vocab_size
    depth = rng.integers(3, vocab, n_depth).tolist()
    prompt = rng.integers(3, vocab, n_prompt).tolist() if n_prompt else []
    gen = rng.integers(3, vocab, max(n_gen, 1)).tolist()

    def at_depth() -> None:
        if m.n_past < n_depth:
            m.reset()
            if n_depth:
                m.eval(depth)
        m.rewind(n_depth)

    def pp() -> int:
        at_depth()
        t = time.perf_counter_ns()
        m.eval(prompt)
        return time.perf_counter_ns() - t

    def tg() -> int:
        at_depth()
        t = time.perf_counter_ns()
        for tok in gen[:n_gen]:
            m.eval([tok])
        return time.perf_counter_ns() - t

    def pg() -> int:
        t = pp()
        start = time.perf_counter_ns()
        for tok in gen[:n_gen]:
            m.eval([tok])
        return t + time.perf_counter_ns() - start

    out = {}
    if together:
        pg()  # warm-up
        out["pg"] = [pg() for _ in range(reps)]
        return out
    if n_prompt:
        pp()  # warm-up (first touch of the weights)
        out["pp"] = [pp() for _ in range(reps)]
    if n_gen:
        if not n_prompt:
            tg()
        out["tg"] = [tg() for _ in range(reps)]
    return out


def _medians(samples: dict[str, list[int]], n_prompt: int, n_gen: int) -> dict[str, float]:
    tokens = {"pp": n_prompt, "tg": n_gen}
    return {test: statistics.median(tokens[test] * 1e9 / x for x in ns) for test, ns in samples.items()}


def measure(m: Model, n_prompt: int, n_gen: int, reps: int, n_depth: int = 0) -> dict:
    """Median tokens/s for prompt processing (``pp``) and generation (``tg``) on a loaded Model,
    after ``n_depth`` tokens already in its cache."""
    return _medians(_samples(m, n_prompt, n_gen, reps, n_depth), n_prompt, n_gen)


def _cpu_name() -> str:
    """The CPU's model name as llama-bench's cpu_info gives it (Linux), else the platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# llama.cpp's names of its file types (llama_model_ftype_name), by general.file_type
_FTYPE_NAMES = {0: "all F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K - Medium",
                11: "Q3_K - Small", 12: "Q3_K - Medium", 13: "Q3_K - Large", 14: "Q4_K - Small", 15: "Q4_K - Medium",
                16: "Q5_K - Small", 17: "Q5_K - Medium", 18: "Q6_K", 21: "Q2_K - Small", 25: "IQ4_NL - 4.5 bpw",
                30: "IQ4_XS - 4.25 bpw", 32: "BF16"}


def _file_type_name(source: str) -> str | None:
    """The file type a GGUF file declares (``general.file_type``), named as llama-bench's model
    column names it ("Q4_K - Medium"); None for other sources or a file that does not say."""
    try:
        if read_header(source) is None:
            return None
        ftype = GGUFReader(source).metadata.get("general.file_type")
    except (OSError, ValueError):
        return None
    return _FTYPE_NAMES.get(int(ftype)) if isinstance(ftype, (int, np.integer)) else None


def _records(m: Model, name: str, tests: list[dict]) -> list[dict]:
    """One record per test with llama-bench's field names and meanings where they apply
    (llama-bench's ``-o json``: ``avg_ts`` is the mean of the repetitions' tokens/s), plus
    llamix's ``isa``, ``attn_precision`` and ``median_ts`` (what the table shows)."""
    info = cpu_info()
    n_params = sum(int(np.prod(t.shape)) for t in m.tensors.values())
    size = f"{n_params / 1e9:.0f}B" if n_params >= 1e9 else f"{n_params / 1e6:.0f}M"
    by_type: dict[str, int] = {}
    for t in m.tensors.values():  # quantized tensors, or numpy arrays (norms)
        kind = getattr(t, "qtype", None) or {"float32": "f32", "float16": "f16"}.get(t.dtype.name, t.dtype.name)
        by_type[kind] = by_type.get(kind, 0) + t.nbytes
    # the file's declared type, as llama.cpp reads it; else the type holding the most bytes
    main_type = _file_type_name(m.source) or max(by_type, key=by_type.__getitem__).upper()
    out = []
    for t in tests:
        ns = t["samples_ns"]
        ts = [(t["n_prompt"] + t["n_gen"]) * 1e9 / x for x in ns]
        out.append({
            "build_commit": __version__, "cpu_info": _cpu_name(), "backends": "CPU",
            "model_filename": name, "model_type": f"{m.config.architecture} {size} {main_type}",
            "model_size": m.nbytes, "model_n_params": n_params, "n_threads": t["n_threads"],
            "type_k": m.kv_cache_k, "type_v": m.kv_cache_v,
            "n_prompt": t["n_prompt"], "n_gen": t["n_gen"], "n_depth": t["n_depth"], "test_time": t["test_time"],
            "avg_ns": round(statistics.mean(ns)), "stddev_ns": round(statistics.stdev(ns)) if len(ns) > 1 else 0,
            "avg_ts": statistics.mean(ts), "stddev_ts": statistics.stdev(ts) if len(ts) > 1 else 0.0,
            "samples_ns": ns, "samples_ts": ts,
            "isa": info["isa"], "attn_precision": m.attn_precision, "median_ts": statistics.median(ts)})
    return out


def _print_records(records: list[dict], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(records, indent=2))
    elif fmt == "jsonl":
        for r in records:
            print(json.dumps(r))
    else:  # csv: the lists as llama-bench leaves them out of its CSV
        fields = [k for k in records[0] if not k.startswith("samples_")]
        w = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(records)


def _print_table(records: list[dict]) -> None:
    """llama-bench's Markdown table: model type, size (MiB/GiB), parameters, backend, threads, the
    cache types where they are not llama-bench's default f16, test and t/s as mean ± standard
    deviation of the repetitions; then, on stderr, what each generation test reads per second."""
    kv = any(r["type_k"] != "f16" or r["type_v"] != "f16" for r in records)
    head = ["model", "size", "params", "backend", "threads"] + (["type_k", "type_v"] if kv else []) + ["test", "t/s"]
    print("| " + " | ".join(head) + " |")
    print("| " + " | ".join("---" if h in ("model", "backend", "type_k", "type_v") else "---:" for h in head) + " |")
    for r in records:
        size, n = r["model_size"], r["model_n_params"]
        test = "+".join(([f"pp{r['n_prompt']}"] if r["n_prompt"] else []) + ([f"tg{r['n_gen']}"] if r["n_gen"] else []))
        test += f" @ d{r['n_depth']}" if r["n_depth"] else ""
        row = [r["model_type"], f"{size / 2**20:.2f} MiB" if size < 2**30 else f"{size / 2**30:.2f} GiB",
               f"{n / 1e6:.2f} M" if n < 1e9 else f"{n / 1e9:.2f} B", f"CPU ({r['isa']})", str(r["n_threads"])]
        row += [r["type_k"], r["type_v"]] if kv else []
        row += [test, f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f}"]
        print("| " + " | ".join(row) + " |")
    for r in records:
        if r["n_gen"] and not r["n_prompt"]:
            at = f" @ d{r['n_depth']}" if r["n_depth"] else ""
            plural = "s" if r["n_threads"] != 1 else ""
            print(f"(tg{r['n_gen']}{at} on {r['n_threads']} thread{plural}: median {r['median_ts']:.2f} t/s, "
                  f"{r['model_size'] * r['median_ts'] / 1e9:.1f} GB/s of weights)", file=sys.stderr)


def _tests(m: Model, args) -> list[dict]:
    """Every test of the command line, in llama-bench's order: for each thread count and depth,
    the pp tests of each -p, then the tg tests of each -n."""
    tests = []
    for n_threads in args.threads or [0]:
        if n_threads:
            set_threads(n_threads)
        for depth in args.n_depth:
            runs = [(p, 0) for p in args.n_prompt if p] + [(0, n) for n in args.n_gen if n] + list(args.n_pg)
            for k, (n_prompt, n_gen) in enumerate(runs):
                when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                together = k >= len(runs) - len(args.n_pg)
                samples = _samples(m, n_prompt, n_gen, args.repetitions, depth, together)
                tests.append({"n_prompt": n_prompt, "n_gen": n_gen, "n_depth": depth, "n_threads": cpu_info()["threads"],
                              "test_time": when.replace("+00:00", "Z"), "samples_ns": next(iter(samples.values()))})
    return tests


def run(args) -> int:
    args.n_prompt, args.n_gen, args.n_depth = (_values(args, name, default) for name, default in
                                               (("n_prompt", [512]), ("n_gen", [128]), ("n_depth", [0])))
    for t in args.threads or []:
        check(0 <= t <= max_threads(), "-t/--threads", f"each value in [0, {max_threads()}] (8 per CPU this process "
                                                       f"may use), got {t}")
    for flag, values in (("-p/--n-prompt", args.n_prompt), ("-n/--n-gen", args.n_gen), ("-d/--n-depth", args.n_depth)):
        check(all(v >= 0 for v in values), flag, f"must be >= 0, got {','.join(map(str, values))}")
    check(args.repetitions >= 1, "-r/--repetitions", f"must be >= 1, got {args.repetitions}")
    check(any(args.n_prompt) or any(args.n_gen) or args.n_pg, "-p/-n", "nothing to measure: both -p and -n are 0")
    n_ctx = max(args.n_depth) + max(*args.n_prompt, *args.n_gen, *(p + g for p, g in args.n_pg), 1)
    first_threads = (args.threads or [None])[0] or None
    # llama-bench's -ctk / -ctv value lists: every pair of the two, the keys' type the outer loop
    caches = [(k, v) for k in args.cache_type_k or [None] for v in args.cache_type_v or [None]]
    kv = dict(kv_cache=args.kv_cache, kv_cache_k=caches[0][0], kv_cache_v=caches[0][1],
              attn_precision=args.attn_precision)
    if args.shape:
        qtype = args.qtype or "q4_0"
        m = Model(random_checkpoint(args.shape, qtype), n_ctx=n_ctx, n_threads=first_threads, **kv)
        name = f"random {args.shape} {qtype}"
    else:
        m = load(args.model, qtype=args.qtype, n_threads=first_threads, n_ctx=n_ctx, **kv)
        name = m.source
    for k, v in caches[1:]:   # every pair checked before the first test runs
        for flag, t in (("kv_cache_k", k or args.kv_cache), ("kv_cache_v", v or args.kv_cache)):
            kv_cache_type(flag, t, m.config.head_dim)
    if n_ctx > m.config.context_length:
        warn("bench", f"-d {max(args.n_depth)} plus the test's tokens ({n_ctx}) go beyond the model's training "
                      f"context ({m.config.context_length}): the speed is measured, the text would degrade")
    records = []
    for i, (k, v) in enumerate(caches):
        if i:   # the same weights, another KV cache
            ck = m.checkpoint
            del m
            m = Model(ck, n_ctx=n_ctx, n_threads=first_threads, kv_cache=args.kv_cache, kv_cache_k=k, kv_cache_v=v,
                      attn_precision=args.attn_precision)
        records += _records(m, name, _tests(m, args))
    fmt = "json" if args.json else args.output
    if fmt != "md":
        _print_records(records, fmt)
        return 0
    _print_table(records)
    return 0
