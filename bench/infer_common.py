"""Shared pieces of the inference benchmarks: the synthesized random-weight GGUF files (same file
for llamix and llama.cpp), the real published files when present, timing loops for both (llama.cpp
also in a child process, :class:`LlamaCppChild`), and a read-bandwidth probe."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from llamix import _C
from llamix import Tokenizer, export_gguf, random_checkpoint
from llamix.formats.gguf import GGUFReader
from llamix.formats.gguf_llama import tokenizer_entries_of

ROOT = Path(__file__).resolve().parents[1]
VOCAB_GGUF = ROOT.parent / "shared" / "assets" / "llama_tokenizer" / "ggml-vocab-llama-spm.gguf"
CACHE = Path(os.environ.get("LLAMIX_BENCH_CACHE", "/tmp/llamix-bench"))


def model_file(shape: str, quant: str, seed: int = 0) -> Path:
    """A random-weight LLaMA of ``shape`` as a GGUF file of ``quant`` (made once, then cached).
    The vocabulary is LLaMA's 32000 SentencePiece tokens when the assets are present."""
    path = CACHE / f"random-{shape}-{quant}-s{seed}.gguf"
    if path.exists():
        return path
    ck = random_checkpoint(shape, seed=seed, lazy=True)
    if VOCAB_GGUF.exists() and ck.config.vocab_size == 32000:
        r = GGUFReader(VOCAB_GGUF)
        ck.tokenizer, ck.tokenizer_entries = Tokenizer.from_gguf_metadata(r.metadata), tokenizer_entries_of(r)
    CACHE.mkdir(parents=True, exist_ok=True)
    export_gguf(ck, path, quant, pure=True, name=f"random {shape} {quant}")
    return path


# real published files (the assets' fetch_real_models.py puts them there): name -> file
REAL_MODELS = {"qwen2-0.5b-q4_k_m": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
               "gemma3-270m-q4_k_m": "gemma-3-270m-q4_k_m.gguf"}


def real_model_files() -> dict[str, Path]:
    """The real files present in $LLAMIX_REAL_MODELS (default ~/.cache/llamix-real-models)."""
    folder = Path(os.environ.get("LLAMIX_REAL_MODELS") or Path.home() / ".cache" / "llamix-real-models")
    return {k: folder / f for k, f in REAL_MODELS.items() if (folder / f).is_file()}


class LlamaCppChild:
    """llama.cpp on one file in a child process (bench/_llamacpp_child.py): CPU buffers only, and
    a crash there cannot take the benchmark down with it."""

    def __init__(self, path, n_ctx: int, threads: int):
        self.p = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_llamacpp_child.py")), str(path),
                                   str(n_ctx), str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.n_vocab = self._read()["n_vocab"]

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"the llama.cpp child exited (code {self.p.wait()})")
        return json.loads(line)

    def ask(self, **req) -> dict:
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        return self._read()

    def pp(self, tokens) -> float:
        return self.ask(cmd="pp", tokens=list(map(int, tokens)))["tps"]

    def tg(self, tokens) -> float:
        return self.ask(cmd="tg", tokens=list(map(int, tokens)))["tps"]

    def logits(self, tokens) -> np.ndarray:
        return np.asarray(self.ask(cmd="logits", tokens=list(map(int, tokens)))["logits"], dtype=np.float32)

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=60)


def prompt_tokens(n: int, vocab: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(3, vocab, n).tolist()


def llamix_pp(m, tokens) -> float:
    m.reset()
    t = time.perf_counter()
    m.eval(tokens)
    return len(tokens) / (time.perf_counter() - t)


def llamix_tg(m, tokens) -> float:
    m.reset()
    t = time.perf_counter()
    for tok in tokens:
        m.eval([tok])
    return len(tokens) / (time.perf_counter() - t)


def read_bandwidth(threads: int, mib: int = 512, rounds: int = 5) -> float:
    """Bytes/s for reading a buffer far larger than the caches once, median of rounds. Uses the
    kernels' STREAM-like probe when this build has it, else numpy reductions on ``threads``
    Python threads (numpy releases the GIL)."""
    buf = np.ones(mib << 17, dtype=np.uint64)  # mib MiB
    probe = getattr(_C, "stream_read", None)
    if probe is not None:
        run = lambda: probe(buf)  # noqa: E731
    else:
        parts = np.array_split(buf, threads)

        def run():
            ts = [threading.Thread(target=np.bitwise_xor.reduce, args=(p,)) for p in parts]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
    run()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return buf.nbytes / statistics.median(times)


def decode_bytes_per_token(model) -> int:
    """Weight bytes a one-token decode reads: every matrix except the embedding (one row)."""
    c = model.config
    total = sum(t.nbytes for n, t in model.tensors.items() if n != "token_embd.weight")
    if c.tie_embeddings:
        total += model.tensors["token_embd.weight"].nbytes
    return total
