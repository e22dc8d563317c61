"""pytest-benchmark timings for issue 5 (run: python -m pytest bench/test_quality_bench.py --benchmark-only):
K-quant matmuls next to Q4_0 on the same shape, and quantization throughput next to the gguf
package's numpy quantizers. Each benchmark checks its answer first. bench/quality_table.py prints
the full tables (llama.cpp's quantizer and perplexity speed, the quality table)."""
from __future__ import annotations

import numpy as np
import pytest

import llamix

ROWS, K = 4096, 4096


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((ROWS, K), dtype=np.float32), rng.standard_normal((1, K), dtype=np.float32),
            rng.standard_normal((64, K), dtype=np.float32))


@pytest.mark.parametrize("qtype", ["q4_0", "q4_k", "q5_k", "q6_k"])
@pytest.mark.parametrize("n", [1, 64])
def test_matmul(benchmark, data, qtype, n):
    w, x1, x64 = data
    x = x1 if n == 1 else x64
    q = llamix.quantize(w, qtype)
    ref = x.astype(np.float64) @ q.dequantize().T.astype(np.float64)
    y = llamix.matmul(x, q)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 2e-2  # 8-bit activation rounding
    p = q.prepared()
    benchmark.extra_info["weight_bytes"] = q.nbytes
    benchmark(p.matmul, x)


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0", "q4_0_mse", "q4_k", "q6_k"])
def test_quantize_llamix(benchmark, data, qtype):
    w = data[0][:1024]
    benchmark.extra_info["input_bytes"] = w.nbytes
    benchmark(llamix.quantize, w, qtype)


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0"])
def test_quantize_gguf_numpy(benchmark, data, qtype):
    from gguf import GGMLQuantizationType, quants

    w = data[0][:1024]
    gt = getattr(GGMLQuantizationType, qtype.upper())
    np.testing.assert_array_equal(quants.quantize(w, gt), llamix.quantize(w, qtype).data)
    benchmark.extra_info["input_bytes"] = w.nbytes
    benchmark(quants.quantize, w, gt)
