"""Tokenizer speed: llamix vs llama.cpp on the same vocabulary-only GGUF files, ~1 MB of text.

Each tool runs in its own process (a llama.cpp crash, e.g. its AMX path on some Xeons, costs that
row, not the run): it loads the vocabulary (not timed), tokenizes a warm-up text, then the whole
text ``--repeat`` times; the tools take turns for ``--rounds`` processes each and the best time
counts. llamix: ``Tokenizer.from_file(gguf).encode(text,
add_special=False)``; llama.cpp: ``llama_cpp.Llama(model_path=gguf, vocab_only=True)
.tokenize(text, add_bos=False, special=False)``. The ids of both are compared too.

The text is this repository's own Markdown and Python files, with the vocabulary tests' strings
(emoji, CJK, Cyrillic, whitespace runs, digits) mixed in, repeated to ``--mb`` megabytes.

    python bench/tokenizer_speed.py [--vocab DIR_OR_GGUF ...] [--mb 1] [--repeat 2] [--rounds 3] [--json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ROOT.parent / "shared" / "assets" / "vocab"

CHILD = r'''
import hashlib, json, sys, time
tool, gguf, text_path, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
text = open(text_path, encoding="utf-8").read()
if tool == "llamix":
    sys.path.insert(0, sys.argv[5])
    import llamix
    tok = llamix.Tokenizer.from_file(gguf)
    run = lambda t: tok.encode(t, add_special=False)
else:
    import llama_cpp
    kw = {"use_extra_bufts": False} if "use_extra_bufts" in llama_cpp.Llama.__init__.__code__.co_varnames else {}
    llm = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False, **kw)
    run = lambda t: llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)
run(text[:20000])
best = float("inf")
for _ in range(repeat):
    t0 = time.perf_counter()
    ids = run(text)
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"seconds": best, "n_tokens": len(ids),
                  "ids_sha": hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()}))
'''


def make_text(mb: float) -> str:
    parts = []
    for pattern in ("*.md", "docs/*.md", "python/llamix/**/*.py", "tests/*.py"):
        parts += [p.read_text(encoding="utf-8") for p in sorted(ROOT.glob(pattern))]
    for inp in sorted(VOCAB.glob("*.gguf.inp")) if VOCAB.is_dir() else []:
        parts += inp.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    # interleave code and the multilingual strings, so no stretch of the text is one kind only
    text, i, target = [], 0, int(mb * 2**20)
    size = 0
    while size < target and parts:
        piece = parts[i % len(parts)]
        text.append(piece)
        size += len(piece.encode("utf-8"))
        i += 7 if len(parts) % 7 else 5
    return "".join(text)[:target]


def run_child(tool: str, gguf: Path, text_path: str, repeat: int) -> dict:
    cmd = [sys.executable, "-c", CHILD, tool, str(gguf), text_path, str(repeat), str(ROOT / "python")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        return {"error": f"exit {r.returncode}: {(r.stderr or '').strip().splitlines()[-1:] or ''}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", nargs="*", default=[str(VOCAB)], help="vocabulary-only GGUF files or folders of them")
    ap.add_argument("--mb", type=float, default=1.0, help="megabytes of text (default 1)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per process (default 2)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="processes per tool, taking turns with the other tool; the best time counts (default 3)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    files = []
    for v in map(Path, args.vocab):
        files += sorted(v.glob("ggml-vocab-*.gguf")) if v.is_dir() else [v]
    if not files:
        print(f"no vocabulary files found in {args.vocab}", file=sys.stderr)
        return 1
    text = make_text(args.mb)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        text_path = os.path.join(tmp, "text.txt")
        Path(text_path).write_text(text, encoding="utf-8")
        mbytes = len(text.encode("utf-8")) / 2**20
        for f in files:
            # the tools take turns, so a change in the machine's load touches both alike
            ours, theirs = {}, {}
            for _ in range(args.rounds):
                for tool, best in (("llamix", ours), ("llama.cpp", theirs)):
                    r = run_child(tool, f, text_path, args.repeat)
                    if "seconds" in r and r["seconds"] < best.get("seconds", float("inf")):
                        best.clear()
                        best.update(r)
                    elif not best:
                        best.update(r)
            row = {"vocab": f.name, "mb": round(mbytes, 3), "llamix": ours, "llama.cpp": theirs}
            if "seconds" in ours and "seconds" in theirs:
                row["ratio"] = theirs["seconds"] / ours["seconds"]  # > 1: llamix is faster
                row["same_ids"] = ours["ids_sha"] == theirs["ids_sha"]
            rows.append(row)
            if not args.json:
                def cell(r):
                    return f"{r['seconds']:8.3f} s {r['n_tokens']:8d} tok" if "seconds" in r else f"{r['error'][:40]:>22}"
                ratio = f"{row['ratio']:6.2f}x" if "ratio" in row else "    - "
                same = {True: "same ids", False: "IDS DIFFER"}.get(row.get("same_ids"), "")
                print(f"{f.name:36} {mbytes:5.2f} MB  llamix {cell(ours)}  llama.cpp {cell(theirs)}  "
                      f"llama.cpp/llamix {ratio}  {same}", flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    if ratios and not args.json:
        print(f"slowest ratio (llama.cpp time / llamix time): {min(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
