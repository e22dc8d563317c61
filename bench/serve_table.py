"""Serving throughput: `llamix serve` against llama.cpp's `llama-server`, same GGUF, same threads.

    python bench/serve_table.py [--model FILE] [--threads 2] [--streams 1,4,8] [--rounds 3]

Both servers run as child processes with 8 slots (`-np 8 -c 8192 -t T`; llama-server also `-cb`)
on 127.0.0.1. For each number of concurrent streams C, C clients each send `--requests` chat
requests one after another (streamed, greedy, `--tokens` tokens: the end-of-turn tokens get a
logit bias of -100 so every reply is that long on both servers) with a different question each.
Reported per server and C: aggregate generated tokens per second (all completion tokens over the
wall time of the whole run) and the median and 95th percentile time to first token (request sent
to first content event). The servers are measured in turn, round by round, and the table gives
medians over rounds; the ratio is the median of the per-round ratios. llama-server comes from
bench/llama_cpp_tools.py (`tool("llama-server")`); run under `flock /work/bench.lock` so that no
other benchmark shares the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_tools import tool  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = Path.home() / ".cache" / "llamix-real-models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
TOPICS = ["reverses a linked list", "parses a CSV line", "computes a moving average", "checks for a palindrome",
          "merges two sorted lists", "counts word frequencies", "flattens a nested list", "finds prime numbers",
          "converts Roman numerals", "validates an email address", "computes a factorial iteratively",
          "implements binary search", "transposes a matrix", "removes duplicates keeping order",
          "computes Fibonacci numbers", "formats a duration in seconds", "sorts a dictionary by value",
          "reads a JSON file safely", "implements a stack class", "rotates an array by k"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(cmd: list[str], port: int, name: str, env=None):
    """A server child process, ready (GET /health is 200) until the block ends; then terminated."""
    log = tempfile.NamedTemporaryFile("w+", prefix=f"serve-{name}-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{name} did not start:\n{Path(log.name).read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        os.unlink(log.name)


def chat(url: str, question: str, tokens: int, bias: dict) -> tuple[float, int]:
    """One streamed greedy chat request: (seconds to the first content event, completion tokens)."""
    body = {"model": "m", "messages": [{"role": "user", "content": f"Write a Python function that {question}."}],
            "max_tokens": tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            "logit_bias": bias}
    t0 = time.perf_counter()
    ttft, n = None, 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if ttft is None and any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                ttft = time.perf_counter() - t0
            if event.get("usage"):
                n = event["usage"]["completion_tokens"]
    return (ttft if ttft is not None else time.perf_counter() - t0), n


def run_load(url: str, streams: int, requests: int, tokens: int, bias: dict, offset: int) -> dict:
    """``streams`` clients, each ``requests`` requests in a row: tokens/s and TTFTs."""
    ttfts: list[float] = []
    counts: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        try:
            for k in range(requests):
                q = TOPICS[(offset + i * requests + k) % len(TOPICS)]
                t, n = chat(url, q, tokens, bias)
                with lock:
                    ttfts.append(t)
                    counts.append(n)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    ttfts.sort()
    return {"tps": sum(counts) / wall, "tokens": sum(counts), "p50": statistics.median(ttfts),
            "p95": ttfts[min(len(ttfts) - 1, int(round(0.95 * (len(ttfts) - 1))))]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", default="1,4,8")
    ap.add_argument("--requests", type=int, default=2, help="requests per stream")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=8, help="slots of both servers")
    ap.add_argument("--ctx", type=int, default=8192)
    args = ap.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    lcpp = tool("llama-server")
    if lcpp is None:
        print("llama-server is not built: run python bench/llama_cpp_tools.py", file=sys.stderr)
        return 1
    # Qwen2's end-of-turn and end-of-text tokens: biased away so every reply has --tokens tokens
    bias = {"151645": -100, "151643": -100}
    common = ["-m", args.model, "-np", str(args.parallel), "-c", str(args.ctx), "-t", str(args.threads),
              "--host", "127.0.0.1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]),
           "LLAMIX_QUIET": "1"}
    p1, p2 = free_port(), free_port()
    results: dict[tuple[str, int], list[dict]] = {}
    with server([sys.executable, "-m", "llamix", "serve", *common, "--port", str(p1)], p1, "llamix", env) as u1, \
            server([str(lcpp), *common, "-cb", "--port", str(p2)], p2, "llama-server") as u2:
        for url in (u1, u2):   # warm up: weights paged in, threads started
            run_load(url, 2, 1, 8, bias, 0)
        for r in range(args.rounds):
            for c in streams:
                for name, url in (("llamix", u1), ("llama-server", u2)):
                    res = run_load(url, c, args.requests, args.tokens, bias, offset=r * 7 + c)
                    results.setdefault((name, c), []).append(res)
                    print(f"round {r + 1} {name:12s} {c} streams: {res['tps']:.1f} t/s, TTFT p50 "
                          f"{res['p50'] * 1e3:.0f} ms p95 {res['p95'] * 1e3:.0f} ms ({res['tokens']} tokens)",
                          file=sys.stderr, flush=True)
    med = lambda name, c, key: statistics.median(x[key] for x in results[(name, c)])  # noqa: E731
    print(f"\nload average {os.getloadavg()[0]:.1f}; {args.rounds} rounds, medians; {args.requests} requests per "
          f"stream of {args.tokens} tokens; both servers -np {args.parallel} -c {args.ctx} -t {args.threads}\n")
    print("| streams | llamix t/s | llama-server t/s | llamix / llama-server | llamix TTFT p50 / p95 ms | "
          "llama-server TTFT p50 / p95 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c in streams:
        ratio = statistics.median(a["tps"] / b["tps"] for a, b in zip(results[("llamix", c)],
                                                                         results[("llama-server", c)]))
        print(f"| {c} | {med('llamix', c, 'tps'):.1f} | {med('llama-server', c, 'tps'):.1f} | {ratio:.2f} | "
              f"{med('llamix', c, 'p50') * 1e3:.0f} / {med('llamix', c, 'p95') * 1e3:.0f} | "
              f"{med('llama-server', c, 'p50') * 1e3:.0f} / {med('llama-server', c, 'p95') * 1e3:.0f} |")
    for name in ("llamix", "llama-server"):
        if 1 in streams and max(streams) > 1:
            top = max(streams)
            print(f"\n{name}: {top} streams give {med(name, top, 'tps') / med(name, 1, 'tps'):.2f}x the tokens/s of one",
                  end="")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
