"""Matmul speed table: llamix Q4_0 / Q8_0 (and F16) against numpy float32 and the machine's
memory bandwidth, all measured in one run.

    python bench/matmul_table.py [--quick] [--f16] [--types q4_0,q8_0,q4_K,...] [--rounds N]

Types llamix reads but cannot write (q4_1, q2_k, q3_k, iq4_nl, iq4_xs until their quantizers
land) are timed on random blocks with weight-sized fp16 scales: the speed does not depend on the
values, and the answer is still checked against the dequantized weights.

GEMV (1 token): effective GB/s of weight bytes, cycling through enough distinct weight matrices
that the working set (512 MiB) is beyond the last-level cache's reach (as a model's layers are),
next to a STREAM-like read probe of the same size (`_C.stream_read`: each thread one contiguous
lane, read as 1, 4 or 8 interleaved streams, the fastest of the three kept) and numpy's float32
matvec (also cycled). Each
GEMV timing streams the whole working set, right after an untimed pass of the same length: on these VMs a core that idled (waiting
for the other tool's turn) streams at about half speed for its first tens of milliseconds (probe
after a 1.5 s sleep, 2 threads: 13-20 GB/s on the first 512 MiB pass, 29-32 on the second), and a
decode keeps the cores busy, so every contender (probe, llamix, numpy) is timed warm, alike. "% of probe" is against the
probe, "% of numpy matvec" against numpy's float32 matvec of the same round (bytes per second of
its float32 matrices), "% of read BW" against the better of the two (numpy's matvec is itself a
read stream, and sometimes the faster one).
GEMM (512 tokens): GFLOP/s against numpy's float32 matmul. numpy runs in a subprocess whose
environment has OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed, so OpenBLAS uses its own
(AVX-512) kernels. llamix, the probe and numpy are timed in turn, round by round (this VM's
bandwidth drifts by tens of percent over minutes); times are medians over the rounds, ratios and
bandwidth fractions medians of the per-round ratios, and
answers are checked before timing.
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
from llamix.quant import qtype_info

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (32000, 4096)]


# Each contender streams this many bytes of distinct copies, so that it reads from memory: on the
# Xeon VM of these tables (sysfs reports the host's whole 480 MiB L3) a 128 MiB working set read at
# 46-51 GB/s, 512 MiB and 1 GiB at 28-30; 4 x 480 MiB per contender (numpy's copies, llamix's, the
# probe) made the VM thrash (numpy's matvec at 9-17 GB/s).
WORKING_SET = 512 << 20
TOKENS = 512
# Each GEMV timing streams at least this much, and at least the whole working set: a few
# milliseconds right after the other tool's turn measure the threads' and the clock's wake-up more
# than the memory.
STREAM_BYTES = WORKING_SET
# The read probe reads its buffer with 1, 4 and 8 interleaved streams per thread and keeps the
# fastest: on the Zen 3 VM one stream per thread (the probe before 2026-12-01) read 15-40% below
# numpy's float32 matvec (OpenBLAS reads 4 rows at a time), 4-8 streams as fast or faster.
PROBE_STREAMS = (1, 4, 8)
# OpenBLAS's idle threads spin for a while after each call (2^28 cycles by default) and would
# take the cores from whatever is timed next: let them fall asleep first.
SETTLE_S = 0.3


def gemv_calls(copies: int, nbytes: int) -> int:
    """Whole cycles through the copies, at least STREAM_BYTES in all (numpy's side counts alike)."""
    return copies * max(1, -(-STREAM_BYTES // (copies * nbytes)))


def median_time(f, rounds: int) -> float:
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


# fp16 scales (byte offsets in a block) and a value for them that gives weight-sized numbers, for
# types timed on random blocks
RANDOM_BLOCK_SCALES = {"q4_1": ((0, 2), 0.01), "iq4_nl": ((0,), 2e-4), "q2_k": ((80, 82), 1e-3),
                       "q3_k": ((108,), 2e-4), "iq4_xs": ((0,), 1e-5)}


def weight(w: np.ndarray, qtype: str, rng) -> llamix.QuantizedTensor:
    """w quantized to qtype, or (a type llamix cannot write) random blocks of w's shape."""
    if qtype.lower() not in RANDOM_BLOCK_SCALES:
        return llamix.quantize(w, qtype)
    try:
        return llamix.quantize(w, qtype)
    except ValueError:
        pass
    info = qtype_info(qtype)
    rows, k = w.shape
    data = rng.integers(0, 256, (rows, k // info.block_size, info.block_bytes), dtype=np.uint8)
    offsets, scale = RANDOM_BLOCK_SCALES[qtype.lower()]
    for off in offsets:
        data[..., off:off + 2] = np.full(data.shape[:2], scale, np.float16).view(np.uint8).reshape(*data.shape[:2], 2)
    return llamix.QuantizedTensor(data.reshape(rows, -1), info, (rows, k))


def check_answer(qt: llamix.QuantizedTensor, x: np.ndarray) -> None:
    """The result against float64 math on the dequantized weights (bound: 8-bit activations)."""
    y = llamix.matmul(x, qt)
    ref = x.astype(np.float64) @ qt.dequantize().T.astype(np.float64)
    rel = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    assert rel < 2e-2, f"{qt}: relative error {rel:.3g}"


class NumpyPeer:
    """numpy in a subprocess (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed from its environment),
    asked for one timing at a time so its rounds interleave with ours."""

    def __init__(self, shapes):
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        job = json.dumps({"shapes": shapes, "working_set": WORKING_SET, "tokens": TOKENS, "stream_bytes": STREAM_BYTES})
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_numpy_peer.py")), job], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._answer()  # its setup (GBs of random matrices) must not overlap our timings
        time.sleep(SETTLE_S)

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"numpy peer exited with code {self.proc.wait()}")
        return json.loads(line)

    def ask(self, op: str, shape: str = "") -> dict:
        self.proc.stdin.write(json.dumps({"op": op, "shape": shape}) + "\n")
        self.proc.stdin.flush()
        answer = self._answer()
        time.sleep(SETTLE_S)
        return answer

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 4096x4096")
    ap.add_argument("--f16", action="store_true", help="also time F16 weights")
    ap.add_argument("--types", default="q4_0,q8_0", help="weight types, comma-separated (e.g. q4_K,q5_K,q6_K)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    shapes = SHAPES[:1] if args.quick else SHAPES
    qtypes = args.types.split(",") + (["f16"] if args.f16 else [])
    rng = np.random.default_rng(0)

    probe = np.ones(WORKING_SET // 8, np.uint64)   # the working set's size, as the GEMV streams
    _C.stream_read(probe)  # touches the pages
    probe_gbs = []
    peer = NumpyPeer(shapes)

    rows_out = []
    for rows, k in shapes:
        shape = f"{rows}x{k}"
        w = rng.standard_normal((rows, k), dtype=np.float32)
        x1 = rng.standard_normal((1, k), dtype=np.float32)
        X = rng.standard_normal((TOKENS, k), dtype=np.float32)
        for qtype in qtypes:
            qt = weight(w, qtype, rng)
            check_answer(qt, x1)
            check_answer(qt, X[:64])
            n_copies = max(2, -(-WORKING_SET // qt.nbytes))
            info = qt.info
            mats = [qt.prepared()] + [_C.PreparedWeight(qt.data.copy(), info.gguf_id, k) for _ in range(n_copies - 1)]
            y1 = np.empty((1, rows), np.float32)
            calls = gemv_calls(len(mats), qt.nbytes)
            for m in mats:
                m.matmul(x1, y1)

            def stream():
                for i in range(calls):
                    mats[i % len(mats)].matmul(x1, y1)

            def gemv():
                stream()  # untimed: the cores warm up after the peer's turn (see the docstring)
                t0 = time.perf_counter()
                stream()
                return time.perf_counter() - t0

            def probe_s():
                best = float("inf")
                for streams in PROBE_STREAMS:  # the best of these ways to read the buffer
                    _C.stream_read(probe, streams)  # untimed, as gemv()
                    best = min(best, median_time(lambda: _C.stream_read(probe, streams), 1))
                return best

            def gemm():
                mats[0].matmul(X, Y)  # untimed, as gemv()
                return median_time(lambda: mats[0].matmul(X, Y), 1)

            Y = np.empty((TOKENS, rows), np.float32)
            mats[0].matmul(X, Y)
            t = {"gemv": [], "probe": [], "np_gemv": [], "gemm": [], "np_gemm": []}
            for r in range(args.rounds):  # interleaved, so all see the same machine load
                t["gemv"].append(gemv() / calls)
                t["probe"].append(probe_s())
                t["np_gemv"].append(peer.ask("gemv", shape)["s"])
                t["gemm"].append(gemm())
                t["np_gemm"].append(peer.ask("gemm", shape)["s"])
            # Ratios per round, then their median: robust to the drift between rounds.
            v = {key: np.array(val) for key, val in t.items()}
            read_bw = np.maximum(probe.nbytes / v["probe"], 4.0 * rows * k / v["np_gemv"])
            med = {key: float(np.median(val)) for key, val in v.items()}
            probe_gbs.append(probe.nbytes / med["probe"])
            rows_out.append({"shape": shape, "qtype": qtype, "bytes": qt.nbytes, "flops": 2.0 * TOKENS * rows * k,
                             "copies": n_copies, **med,
                             "bw_frac": float(np.median(qt.nbytes / v["gemv"] / read_bw)),
                             "probe_frac": float(np.median(qt.nbytes / v["gemv"] / (probe.nbytes / v["probe"]))),
                             "np_frac": float(np.median(qt.nbytes / v["gemv"] / (4.0 * rows * k / v["np_gemv"]))),
                             "gemv_ratio": float(np.median(v["np_gemv"] / v["gemv"])),
                             "gemm_ratio": float(np.median(v["np_gemm"] / v["gemm"]))})
            del mats
        del w
    core = peer.ask("info")["core"]
    peer.close()

    info = llamix.cpu_info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs "
          "(other processes share the machine: compare within a row)")
    print(f"llamix isa={info['isa']} threads={info['threads']}; numpy {np.__version__} OpenBLAS core: {core}")
    print(f"read bandwidth (STREAM-like probe, {WORKING_SET >> 20} MiB, best of {'/'.join(map(str, PROBE_STREAMS))} "
          f"streams per thread, same run): median {np.median(probe_gbs) / 1e9:.1f} GB/s")
    print(f"GEMV working set >= {WORKING_SET >> 20} MiB; GEMM {TOKENS} tokens\n")
    print("| shape (rows x k) | type | GEMV us | GEMV GB/s | % of probe | % of numpy matvec | % of read BW "
          "| numpy f32 GEMV us (GB/s) | GEMV vs numpy | GEMM-512 ms | GEMM GFLOP/s | numpy sgemm GFLOP/s | GEMM vs numpy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows_out:
        gbs = r["bytes"] / r["gemv"] / 1e9
        print(f"| {r['shape']} | {r['qtype']} | {r['gemv'] * 1e6:.0f} | {gbs:.1f} | {100 * r['probe_frac']:.0f}% "
              f"| {100 * r['np_frac']:.0f}% | {100 * r['bw_frac']:.0f}% "
              f"| {r['np_gemv'] * 1e6:.0f} ({4e-9 * r['flops'] / 2 / TOKENS / r['np_gemv']:.1f}) | {r['gemv_ratio']:.1f}x "
              f"| {r['gemm'] * 1e3:.1f} | {r['flops'] / r['gemm'] / 1e9:.0f} | {r['flops'] / r['np_gemm'] / 1e9:.0f} "
              f"| {r['gemm_ratio']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
