"""Chat speed, llamix against llama.cpp on the same GGUF file: a five-turn conversation at
temperature 0, each side keeping the conversation in its KV cache. Per turn: the prompt tokens
each engine evaluated (only the new turn, when the cache is reused), prompt and generation
tokens/s; then the totals and llamix's generation speed as a multiple of llama.cpp's.

llama.cpp runs through llama-cpp-python (``create_chat_completion``) in a child process with CPU
buffers only, the same thread count and context size; its counters are llama.cpp's own
(llama_perf_context). Both render the file's chat template.

    python bench/chat_speed.py [--model FILE] [-t THREADS] [-n MAX_TOKENS] [--json]

Measured on the 2-core Xeon this project is developed on (shared, load average 4-6 at the time, so
every figure is noisy), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, 1 thread: both engines evaluated
[33, 20, 21, 15, 19] prompt tokens over the five turns (only each new turn); llamix 107 prompt
tokens/s and 11.0 generated tokens/s, llama.cpp 53 and 9.2 (x2.0 and x1.2).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

import llamix  # noqa: E402
from llamix.model.chat import ChatSession  # noqa: E402

DEFAULT_MODEL = Path(os.environ.get("LLAMIX_REAL_MODELS") or Path.home() / ".cache" / "llamix-real-models") / \
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SYSTEM = "You are a concise assistant."
TURNS = ["Hi! My name is Ada. What can you help me with?", "Write a Python function that reverses a string.",
         "Now make it handle None by returning an empty string.", "What is my name?",
         "Summarise our conversation in one sentence."]


def run_llamix(model: Path, threads: int, n_ctx: int, max_tokens: int) -> list[dict]:
    m = llamix.load(model, n_ctx=n_ctx, n_threads=threads)
    s = ChatSession(m, system_prompt=SYSTEM)
    out = []
    for user in TURNS:
        t0 = time.perf_counter()
        reply = "".join(s.send(user, temperature=0, max_tokens=max_tokens))
        st = s.stats
        out.append({"prompt_tokens": st.prompt_tokens, "prompt_s": st.prompt_s, "eval_tokens": st.eval_tokens,
                    "eval_s": st.eval_s, "generated": st.generated, "prompt_total": st.prompt_total,
                    "wall_s": time.perf_counter() - t0, "reply": reply})
    return out


def run_llamacpp(model: Path, threads: int, n_ctx: int, max_tokens: int) -> list[dict]:
    req = {"model": str(model), "threads": threads, "n_ctx": n_ctx, "max_tokens": max_tokens, "system": SYSTEM,
           "turns": TURNS}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(req, f)
    try:
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "_chat_llamacpp_child.py"), f.name],
                           capture_output=True, text=True, timeout=1800)
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp child failed ({r.returncode}): {r.stderr[-2000:]}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def _tps(n: int, s: float) -> float:
    return n / s if s > 0 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("-t", "--threads", type=int, default=1,
                    help="threads of both engines (1 by default: llama.cpp's spinning thread barrier collapses when "
                         "another process wants a core, which on a shared 2-core machine measures the neighbours)")
    ap.add_argument("-c", "--ctx-size", type=int, default=2048)
    ap.add_argument("-n", "--max-tokens", type=int, default=96)
    ap.add_argument("--json", action="store_true", help="print the raw per-turn results as JSON")
    a = ap.parse_args()
    if not a.model.is_file():
        sys.exit(f"{a.model}: no such file (fetch_real_models.py in the test assets fetches it)")
    results = {"llamix": run_llamix(a.model, a.threads, a.ctx_size, a.max_tokens),
               "llama.cpp": run_llamacpp(a.model, a.threads, a.ctx_size, a.max_tokens)}
    if a.json:
        print(json.dumps(results, indent=1))
        return
    print(f"# chat speed: {a.model.name}, {a.threads} threads, n_ctx {a.ctx_size}, greedy, <= {a.max_tokens} tokens a reply")
    print(f"{'turn':>4} | {'engine':>9} | {'prompt':>6} | {'evaluated':>9} | {'pp t/s':>8} | {'generated':>9} | {'tg t/s':>7}")
    for i in range(len(TURNS)):
        for eng, res in results.items():
            r = res[i]
            print(f"{i + 1:>4} | {eng:>9} | {r['prompt_total']:>6} | {r['prompt_tokens']:>9} | "
                  f"{_tps(r['prompt_tokens'], r['prompt_s']):>8.1f} | {r['generated']:>9} | "
                  f"{_tps(r['eval_tokens'], r['eval_s']):>7.1f}")
    tot = {}
    for eng, res in results.items():
        pp = _tps(sum(r["prompt_tokens"] for r in res), sum(r["prompt_s"] for r in res))
        tg = _tps(sum(r["eval_tokens"] for r in res), sum(r["eval_s"] for r in res))
        tot[eng] = (pp, tg)
        print(f"total {eng:>9}: prompt {pp:.1f} tokens/s, generation {tg:.1f} tokens/s, "
              f"evaluated per turn {[r['prompt_tokens'] for r in res]}")
    print(f"llamix / llama.cpp: prompt x{tot['llamix'][0] / tot['llama.cpp'][0]:.2f}, "
          f"generation x{tot['llamix'][1] / tot['llama.cpp'][1]:.2f}")


if __name__ == "__main__":
    main()
