"""Matmul speed table: llamix Q4_0 / Q8_0 (and F16) against numpy float32 and the machine's
memory bandwidth, all measured in one run.

    python bench/matmul_table.py [--quick] [--f16] [--rounds N]

GEMV (1 token): effective GB/s of weight bytes, cycling through enough distinct weight matrices
that the working set is several times the last-level cache (as a model's layers are), next to a
STREAM-like read probe measured in the same rounds and numpy's float32 matvec (also cycled).
GEMM (512 tokens): GFLOP/s against numpy's float32 matmul. numpy runs in a subprocess whose
environment has OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed, so OpenBLAS uses its own
(AVX-512) kernels. Every figure is a median over rounds; answers are checked before timing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import llamix
from llamix import _C

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (32000, 4096)]
LLC_BYTES = 32 << 20
WORKING_SET = 4 * LLC_BYTES
TOKENS = 512


def median_time(f, rounds: int) -> float:
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def check_answer(qt: llamix.QuantizedTensor, x: np.ndarray) -> None:
    """The result against float64 math on the dequantized weights (bound: 8-bit activations)."""
    y = llamix.matmul(x, qt)
    ref = x.astype(np.float64) @ qt.dequantize().T.astype(np.float64)
    rel = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    assert rel < 2e-2, f"{qt}: relative error {rel:.3g}"


def numpy_peer(shapes, rounds: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    job = json.dumps({"shapes": shapes, "working_set": WORKING_SET, "tokens": TOKENS, "rounds": rounds})
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("_numpy_peer.py")), job], env=env,
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 4096x4096")
    ap.add_argument("--f16", action="store_true", help="also time F16 weights")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    shapes = SHAPES[:1] if args.quick else SHAPES
    qtypes = ["q4_0", "q8_0"] + (["f16"] if args.f16 else [])
    rng = np.random.default_rng(0)

    probe = np.ones(WORKING_SET * 4 // 8, np.uint64)  # 512 MiB
    _C.stream_read(probe)
    probe_gbs = []

    rows_out = []
    for rows, k in shapes:
        w = rng.standard_normal((rows, k), dtype=np.float32)
        x1 = rng.standard_normal((1, k), dtype=np.float32)
        X = rng.standard_normal((TOKENS, k), dtype=np.float32)
        for qtype in qtypes:
            qt = llamix.quantize(w, qtype)
            check_answer(qt, x1)
            check_answer(qt, X[:64])
            n_copies = max(2, -(-WORKING_SET // qt.nbytes))
            info = qt.info
            mats = [qt.prepared()] + [_C.PreparedWeight(qt.data.copy(), info.gguf_id, k) for _ in range(n_copies - 1)]
            y1 = np.empty((1, rows), np.float32)
            calls = max(len(mats), 16 // len(mats) * len(mats))
            for m in mats:
                m.matmul(x1, y1)

            def gemv():
                for i in range(calls):
                    mats[i % len(mats)].matmul(x1, y1)

            t_gemv, t_probe = [], []
            for _ in range(args.rounds):  # interleaved, so both see the same machine load
                t_gemv.append(median_time(gemv, 1) / calls)
                t_probe.append(median_time(lambda: _C.stream_read(probe), 1))
            t_gemv = float(np.median(t_gemv))
            bw = probe.nbytes / float(np.median(t_probe))
            probe_gbs.append(bw)
            Y = np.empty((TOKENS, rows), np.float32)
            mats[0].matmul(X, Y)
            t_gemm = median_time(lambda: mats[0].matmul(X, Y), max(3, args.rounds // 2))
            rows_out.append({"shape": f"{rows}x{k}", "qtype": qtype, "gemv_s": t_gemv, "bytes": qt.nbytes,
                             "bw": bw, "gemm_s": t_gemm, "flops": 2.0 * TOKENS * rows * k, "copies": n_copies})
            del mats
        del w

    peer = numpy_peer(shapes, max(3, args.rounds // 2))
    info = llamix.cpu_info()
    print(f"llamix isa={info['isa']} threads={info['threads']}; numpy {np.__version__} OpenBLAS core: {peer['core']}")
    print(f"read bandwidth (STREAM-like probe, 512 MiB, same run): median {np.median(probe_gbs) / 1e9:.1f} GB/s")
    print(f"GEMV working set >= {WORKING_SET >> 20} MiB (LLC {LLC_BYTES >> 20} MiB); GEMM {TOKENS} tokens\n")
    print("| shape (rows x k) | type | GEMV us | GEMV GB/s | % of read BW | numpy f32 GEMV us | GEMV vs numpy "
          "| GEMM-512 ms | GEMM GFLOP/s | numpy sgemm GFLOP/s | GEMM vs numpy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows_out:
        p = peer["shapes"][r["shape"]]
        gbs = r["bytes"] / r["gemv_s"] / 1e9
        print(f"| {r['shape']} | {r['qtype']} | {r['gemv_s'] * 1e6:.0f} | {gbs:.1f} | {100 * gbs * 1e9 / r['bw']:.0f}% "
              f"| {p['gemv_s'] * 1e6:.0f} | {p['gemv_s'] / r['gemv_s']:.1f}x | {r['gemm_s'] * 1e3:.1f} "
              f"| {r['flops'] / r['gemm_s'] / 1e9:.0f} | {r['flops'] / p['gemm_s'] / 1e9:.0f} | {p['gemm_s'] / r['gemm_s']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
