// The threaded matmul for K-quant weights (Q4_K, Q5_K, Q6_K): activations quantized once to
// Q8_K, then fixed-size row tasks, so the result never depends on the thread count.
#include <algorithm>
#include <stdexcept>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/kernels.h"

namespace llamix {

bool is_kquant(QType t) {
    return t == QType::Q4_K || t == QType::Q5_K || t == QType::Q6_K || t == QType::Q5_0 || t == QType::Q5_1;
}

void dequantize_row_kquant(QType t, const void* x, float* y, int64_t k) {
    const KQuantKernels& K = kernels().kquant;
    switch (t) {
        case QType::Q4_K: K.dequantize_row_q4_K(x, y, k); return;
        case QType::Q5_K: K.dequantize_row_q5_K(x, y, k); return;
        case QType::Q6_K: K.dequantize_row_q6_K(x, y, k); return;
        case QType::Q5_0: K.dequantize_row_q5_0(x, y, k); return;
        case QType::Q5_1: K.dequantize_row_q5_1(x, y, k); return;
        default: throw std::invalid_argument("dequantize_row_kquant: not a K-quant family type");
    }
}

namespace {

constexpr int64_t kRowsPerTask = 16;

// Q5_0 / Q5_1 only appear as fallbacks for small tensors: dequantize, then float32 dots.
void matmul_dequantized(const float* x, int64_t n, int64_t k, const void* w, QType wtype, int64_t rows, float* y) {
    const KernelTable& K = kernels();
    auto deq = wtype == QType::Q5_0 ? K.kquant.dequantize_row_q5_0 : K.kquant.dequantize_row_q5_1;
    const auto* wbytes = static_cast<const uint8_t*>(w);
    const int64_t w_row_bytes = qtype_row_bytes(wtype, k);
    ThreadPool::instance().parallel_for(ceil_div(rows, kRowsPerTask), [&](int64_t task, int) {
        std::vector<float> row(static_cast<size_t>(k));
        const int64_t r1 = std::min(rows, (task + 1) * kRowsPerTask);
        for (int64_t r = task * kRowsPerTask; r < r1; ++r) {
            deq(wbytes + r * w_row_bytes, row.data(), k);
            for (int64_t t = 0; t < n; ++t) y[t * rows + r] = K.matmul.dot_f32_f32(k, row.data(), x + t * k);
        }
    });
}

}  // namespace

void matmul_kquant(const float* x, int64_t n, int64_t k, const void* w, QType wtype, int64_t rows, float* y) {
    if (wtype == QType::Q5_0 || wtype == QType::Q5_1) return matmul_dequantized(x, n, k, w, wtype, rows, y);
    const KQuantKernels& K = kernels().kquant;
    auto dot = wtype == QType::Q4_K ? K.dot_q4_K_q8_K : wtype == QType::Q5_K ? K.dot_q5_K_q8_K : K.dot_q6_K_q8_K;
    ThreadPool& pool = ThreadPool::instance();
    const int64_t x_row_bytes = k / QK_K * static_cast<int64_t>(sizeof(block_q8_K));
    std::vector<uint8_t> xq(static_cast<size_t>(n * x_row_bytes));
    pool.parallel_for(n, [&](int64_t t, int) { K.quantize_act_q8_K(x + t * k, xq.data() + t * x_row_bytes, k); });
    const auto* wbytes = static_cast<const uint8_t*>(w);
    const int64_t w_row_bytes = qtype_row_bytes(wtype, k);
    pool.parallel_for(ceil_div(rows, kRowsPerTask), [&](int64_t task, int) {
        const int64_t r1 = std::min(rows, (task + 1) * kRowsPerTask);
        for (int64_t r = task * kRowsPerTask; r < r1; ++r)
            for (int64_t t = 0; t < n; ++t) y[t * rows + r] = dot(k, wbytes + r * w_row_bytes, xq.data() + t * x_row_bytes);
    });
}

}  // namespace llamix
