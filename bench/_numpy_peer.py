"""numpy float32 timings for bench/matmul_table.py, run in a subprocess whose environment has
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed (so OpenBLAS picks its own, AVX-512, kernels).
Reads a JSON job on argv[1], prints a JSON result."""
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


def median_time(f, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main() -> None:
    job = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    out = {"core": openblas_core(), "shapes": {}}
    for rows, k in job["shapes"]:
        w = rng.standard_normal((rows, k), dtype=np.float32)
        n_copies = max(2, -(-job["working_set"] // w.nbytes))
        mats = [w] + [w.copy() for _ in range(n_copies - 1)]
        x = rng.standard_normal(k, dtype=np.float32)
        y = np.empty(rows, np.float32)
        calls = max(len(mats), 8 // len(mats) * len(mats))
        for m in mats:
            np.matmul(m, x, out=y)

        def gemv():
            for i in range(calls):
                np.matmul(mats[i % len(mats)], x, out=y)

        t_gemv = median_time(gemv, job["rounds"]) / calls
        X = rng.standard_normal((job["tokens"], k), dtype=np.float32)
        Y = np.empty((job["tokens"], rows), np.float32)
        np.matmul(X, w.T, out=Y)
        t_gemm = median_time(lambda: np.matmul(X, w.T, out=Y), job["rounds"])
        out["shapes"][f"{rows}x{k}"] = {"gemv_s": t_gemv, "gemv_bytes": w.nbytes, "gemm_s": t_gemm, "copies": n_copies}
        del mats, w
    print(json.dumps(out))


if __name__ == "__main__":
    main()
