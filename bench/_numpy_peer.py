"""numpy float32 timings for bench/matmul_table.py, served from a subprocess whose environment has
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed (so OpenBLAS picks its own, AVX-512, kernels).

The parent starts it with a JSON job on argv[1] (shapes, working set, tokens), waits for its
{"ready": true} line (setting up GBs of random matrices), then sends one command per line and reads one JSON answer per line, so numpy's timings interleave with llamix's
round by round and both see the same machine (this VM's memory bandwidth drifts by tens of percent
over minutes):
    {"op": "info"}                         -> {"core": ...}
    {"op": "gemv", "shape": "RxK"}         -> {"s": seconds per matvec, cycling the copies}
    {"op": "gemm", "shape": "RxK"}         -> {"s": seconds per (tokens x K) @ (K x R)}
"""
from __future__ import annotations

import ctypes
import json
import sys
import time

import numpy as np


def openblas_core() -> str:
    """The OpenBLAS kernel family in use (threadpoolctl reports the same via openblas_get_corename)."""
    try:
        import threadpoolctl  # noqa: F401

        for info in threadpoolctl.threadpool_info():
            if info.get("internal_api") == "openblas":
                return f"{info.get('architecture')} ({info.get('num_threads')} threads)"
    except ImportError:
        pass
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "openblas" in line.split()[-1].lower()}
    for lib in libs:
        dll = ctypes.CDLL(lib)
        for sym in ("openblas_get_corename", "scipy_openblas_get_corename64_", "openblas_get_corename64_"):
            fn = getattr(dll, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode() + " (via openblas_get_corename)"
    return "unknown (threadpoolctl not installed, no openblas symbol found)"


class Shape:
    """Enough distinct copies of one float32 weight matrix to exceed the working set."""

    def __init__(self, rows: int, k: int, working_set: int, stream_bytes: int, tokens: int, rng):
        w = rng.standard_normal((rows, k), dtype=np.float32)
        self.mats = [w] + [w.copy() for _ in range(max(2, -(-working_set // w.nbytes)) - 1)]
        self.x = rng.standard_normal(k, dtype=np.float32)
        self.y = np.empty(rows, np.float32)
        # whole cycles through the copies, at least stream_bytes (the parent counts alike)
        self.calls = len(self.mats) * max(1, -(-stream_bytes // (len(self.mats) * w.nbytes)))
        self.X = rng.standard_normal((tokens, k), dtype=np.float32)
        self.Y = np.empty((tokens, rows), np.float32)
        for m in self.mats:
            np.matmul(m, self.x, out=self.y)
        np.matmul(self.X, w.T, out=self.Y)

    def stream(self) -> None:
        for i in range(self.calls):
            np.matmul(self.mats[i % len(self.mats)], self.x, out=self.y)

    def gemv(self) -> float:
        self.stream()  # untimed: wakes OpenBLAS's threads and warms the cores, as the parent does
        t = time.perf_counter()
        self.stream()
        return (time.perf_counter() - t) / self.calls

    def gemm(self) -> float:
        np.matmul(self.X, self.mats[0].T, out=self.Y)  # untimed, as gemv
        t = time.perf_counter()
        np.matmul(self.X, self.mats[0].T, out=self.Y)
        return time.perf_counter() - t


def main() -> None:
    job = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    shapes = {f"{r}x{k}": Shape(r, k, job["working_set"], job["stream_bytes"], job["tokens"], rng) for r, k in job["shapes"]}
    print(json.dumps({"ready": True}), flush=True)  # setup takes both cores for seconds: not while the parent times
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "info":
            answer = {"core": openblas_core()}
        else:
            answer = {"s": getattr(shapes[cmd["shape"]], cmd["op"])()}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
