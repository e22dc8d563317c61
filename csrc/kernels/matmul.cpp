// The threaded matmul driver shared by every ISA: quantize the activations once (for block
// weights), then split the weight rows into fixed-size tasks so the result never depends on
// the thread count.
#include <algorithm>
#include <stdexcept>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/kernels.h"

namespace llamix {

namespace {
constexpr int64_t kRowsPerTask = 16;
}

void matmul(const float* x, int64_t n, int64_t k, const void* w, QType wtype, int64_t rows, float* y) {
    if (is_kquant(wtype)) return matmul_kquant(x, n, k, w, wtype, rows, y);  // issue 5: K-quants
    const MatmulKernels& K = kernels().matmul;
    ThreadPool& pool = ThreadPool::instance();
    const auto* wbytes = static_cast<const uint8_t*>(w);
    const int64_t w_row_bytes = qtype_row_bytes(wtype, k);
    const int64_t n_tasks = ceil_div(rows, kRowsPerTask);

    if (wtype == QType::Q4_0 || wtype == QType::Q8_0) {
        const int64_t x_row_bytes = qtype_row_bytes(QType::Q8_0, k);
        std::vector<uint8_t> xq(static_cast<size_t>(n * x_row_bytes));
        pool.parallel_for(n, [&](int64_t t, int) { K.quantize_act_q8_0(x + t * k, xq.data() + t * x_row_bytes, k); });
        auto dot = wtype == QType::Q4_0 ? K.dot_q4_0_q8_0 : K.dot_q8_0_q8_0;
        pool.parallel_for(n_tasks, [&](int64_t task, int) {
            const int64_t r1 = std::min(rows, (task + 1) * kRowsPerTask);
            for (int64_t r = task * kRowsPerTask; r < r1; ++r)
                for (int64_t t = 0; t < n; ++t)
                    y[t * rows + r] = dot(k, wbytes + r * w_row_bytes, xq.data() + t * x_row_bytes);
        });
        return;
    }
    float (*dot)(int64_t, const void*, const float*) = nullptr;
    switch (wtype) {
        case QType::F32: dot = K.dot_f32_f32; break;
        case QType::F16: dot = K.dot_f16_f32; break;
        case QType::BF16: dot = K.dot_bf16_f32; break;
        default: throw std::invalid_argument("matmul: unsupported weight type");
    }
    pool.parallel_for(n_tasks, [&](int64_t task, int) {
        const int64_t r1 = std::min(rows, (task + 1) * kRowsPerTask);
        for (int64_t r = task * kRowsPerTask; r < r1; ++r)
            for (int64_t t = 0; t < n; ++t) y[t * rows + r] = dot(k, wbytes + r * w_row_bytes, x + t * k);
    });
}

PreparedWeight prepare_weight(const void* w, QType wtype, int64_t rows, int64_t k) {
    return PreparedWeight{w, wtype, rows, k};
}

void matmul_prepared(const float* x, int64_t n, const PreparedWeight& w, float* y) {
    matmul(x, n, w.k, w.data, w.type, w.rows, y);
}

}  // namespace llamix
