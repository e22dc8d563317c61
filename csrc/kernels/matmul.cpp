// The threaded matmul driver shared by every ISA: quantize the activations once (block weights),
// then split the output into tasks of (token chunk, run of row groups). Task boundaries depend on
// the shape only and every output element is computed whole by one task (k is never split), so
// results are bit-identical for any thread count.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/kernels.h"

namespace llamix {

namespace {

constexpr int64_t kFloatRowsPerTask = 16;
// Activations of one token chunk should stay in L2 while the chunk meets every weight group.
constexpr int64_t kActChunkBytes = 512 * 1024;
// Weight bytes per decode task: long contiguous runs keep each core's hardware prefetcher on one
// stream (small interleaved tasks measured ~25% slower); at least 16 tasks so two threads balance.
constexpr int64_t kDecodeTaskBytes = 256 * 1024;

int64_t group_block_bytes(QType t) { return t == QType::Q4_0 ? kQ4GroupBlockBytes : kQ8GroupBlockBytes; }

struct Plan {
    int64_t groups, groups_per_task, row_tasks;
    int64_t tokens_per_chunk, token_chunks;
    int64_t tasks() const { return row_tasks * token_chunks; }
};

Plan make_plan(int64_t rows, int64_t nb, int64_t n, int64_t group_bytes) {
    Plan p;
    p.groups = ceil_div(rows, kGroupRows);
    p.groups_per_task = 1;
    if (n < 8) p.groups_per_task = std::clamp<int64_t>(kDecodeTaskBytes / group_bytes, 1, std::max<int64_t>(1, p.groups / 16));
    p.row_tasks = ceil_div(p.groups, p.groups_per_task);
    const int64_t act_row_bytes = nb * int64_t(sizeof(block_q8a));
    p.tokens_per_chunk = std::max<int64_t>(8, kActChunkBytes / act_row_bytes / 8 * 8);
    p.token_chunks = ceil_div(n, p.tokens_per_chunk);
    return p;
}

// Per-thread buffers reused across calls (no allocation on the decode path).
std::vector<block_q8a>& act_buffer() {
    static thread_local std::vector<block_q8a> buf;
    return buf;
}
std::vector<uint8_t>& pack_buffer() {
    static thread_local std::vector<uint8_t> buf;
    return buf;
}

const block_q8a* quantize_activations(const MatmulKernels& K, const float* x, int64_t n, int64_t k) {
    const int64_t nb = k / QK8_0;
    auto& buf = act_buffer();
    if (buf.size() < size_t(n * nb)) buf.resize(size_t(n * nb));
    block_q8a* xq = buf.data();
    if (n == 1) {
        K.quantize_act_q8a(x, xq, k);
    } else {
        ThreadPool::instance().parallel_for(n, [&](int64_t t, int) { K.quantize_act_q8a(x + t * k, xq + t * nb, k); });
    }
    return xq;
}

using GemmFn = void (*)(const uint8_t*, int64_t, const block_q8a*, int64_t, float*, int64_t, int);
using PackFn = void (*)(const uint8_t*, int64_t, int, int64_t, uint8_t*);

// Block weights: `packed` is the prepared buffer, or null to pack each group from `raw` per task.
void matmul_blocks(const float* x, int64_t n, int64_t k, QType t, const uint8_t* packed, const uint8_t* raw,
                   int64_t rows, float* y) {
    const MatmulKernels& K = kernels().matmul;
    const GemmFn gemm = t == QType::Q4_0 ? K.gemm_q4_0 : K.gemm_q8_0;
    const PackFn pack = t == QType::Q4_0 ? pack_group_q4_0 : pack_group_q8_0;
    const int64_t nb = k / QK8_0;
    const int64_t group_bytes = nb * group_block_bytes(t);
    const int64_t row_bytes = qtype_row_bytes(t, k);
    const Plan p = make_plan(rows, nb, n, group_bytes);
    const block_q8a* xq = quantize_activations(K, x, n, k);

    ThreadPool::instance().parallel_for(p.tasks(), [&](int64_t task, int) {
        const int64_t chunk = task / p.row_tasks, rt = task % p.row_tasks;
        const int64_t t0 = chunk * p.tokens_per_chunk, nt = std::min(n - t0, p.tokens_per_chunk);
        const int64_t g1 = std::min(p.groups, (rt + 1) * p.groups_per_task);
        for (int64_t g = rt * p.groups_per_task; g < g1; ++g) {
            const int64_t r0 = g * kGroupRows;
            const int rows_here = int(std::min<int64_t>(kGroupRows, rows - r0));
            const uint8_t* w = packed ? packed + g * group_bytes : nullptr;
            if (!w) {
                auto& buf = pack_buffer();
                if (buf.size() < size_t(group_bytes)) buf.resize(size_t(group_bytes));
                pack(raw + r0 * row_bytes, row_bytes, rows_here, nb, buf.data());
                w = buf.data();
            }
            gemm(w, nb, xq + t0 * nb, nt, y + t0 * rows + r0, rows, rows_here);
        }
    });
}

void matmul_floats(const float* x, int64_t n, int64_t k, const void* w, QType t, int64_t rows, float* y) {
    const MatmulKernels& K = kernels().matmul;
    float (*dot)(int64_t, const void*, const float*) = nullptr;
    switch (t) {
        case QType::F32: dot = K.dot_f32_f32; break;
        case QType::F16: dot = K.dot_f16_f32; break;
        case QType::BF16: dot = K.dot_bf16_f32; break;
        default: throw std::invalid_argument("matmul: unsupported weight type");
    }
    const auto* wbytes = static_cast<const uint8_t*>(w);
    const int64_t row_bytes = qtype_row_bytes(t, k);
    ThreadPool::instance().parallel_for(ceil_div(rows, kFloatRowsPerTask), [&](int64_t task, int) {
        const int64_t r1 = std::min(rows, (task + 1) * kFloatRowsPerTask);
        for (int64_t r = task * kFloatRowsPerTask; r < r1; ++r)
            for (int64_t i = 0; i < n; ++i) y[i * rows + r] = dot(k, wbytes + r * row_bytes, x + i * k);
    });
}

bool is_block_type(QType t) { return t == QType::Q4_0 || t == QType::Q8_0; }

}  // namespace

void pack_group_q4_0(const uint8_t* src, int64_t row_bytes, int rows, int64_t nb, uint8_t* dst) {
    for (int64_t b = 0; b < nb; ++b, dst += kQ4GroupBlockBytes) {
        std::memset(dst, 0, kQ4GroupBlockBytes);
        for (int r = 0; r < rows; ++r) {
            const auto* blk = reinterpret_cast<const block_q4_0*>(src + r * row_bytes) + b;
            std::memcpy(dst + 2 * r, &blk->d, 2);
            for (int c = 0; c < 4; ++c) std::memcpy(dst + 2 * kGroupRows + (c * kGroupRows + r) * 4, blk->qs + 4 * c, 4);
        }
    }
}

void pack_group_q8_0(const uint8_t* src, int64_t row_bytes, int rows, int64_t nb, uint8_t* dst) {
    for (int64_t b = 0; b < nb; ++b, dst += kQ8GroupBlockBytes) {
        std::memset(dst, 0, kQ8GroupBlockBytes);
        for (int r = 0; r < rows; ++r) {
            const auto* blk = reinterpret_cast<const block_q8_0*>(src + r * row_bytes) + b;
            std::memcpy(dst + 2 * r, &blk->d, 2);
            uint8_t* q = dst + 2 * kGroupRows;
            for (int c = 0; c < 8; ++c)
                for (int j = 0; j < 4; ++j)
                    q[(c * kGroupRows + r) * 4 + j] = static_cast<uint8_t>(blk->qs[4 * c + j] ^ 0x80);  // q + 128
        }
    }
}

PreparedWeight prepare_weight(const void* w, QType wtype, int64_t rows, int64_t k) {
    PreparedWeight p{w, wtype, rows, k, nullptr, 0};
    if (!is_block_type(wtype)) return p;
    const int64_t nb = k / QK8_0;
    const int64_t group_bytes = nb * group_block_bytes(wtype);
    const int64_t groups = ceil_div(rows, kGroupRows);
    p.packed_bytes = groups * group_bytes;
    const size_t alloc = size_t(ceil_div(p.packed_bytes, 64) * 64);
    auto* mem = static_cast<uint8_t*>(std::aligned_alloc(64, alloc));
    if (!mem) throw std::bad_alloc();
    p.packed = std::shared_ptr<uint8_t>(mem, [](uint8_t* m) { std::free(m); });
    const PackFn pack = wtype == QType::Q4_0 ? pack_group_q4_0 : pack_group_q8_0;
    const auto* src = static_cast<const uint8_t*>(w);
    const int64_t row_bytes = qtype_row_bytes(wtype, k);
    ThreadPool::instance().parallel_for(groups, [&](int64_t g, int) {
        const int rows_here = int(std::min<int64_t>(kGroupRows, rows - g * kGroupRows));
        pack(src + g * kGroupRows * row_bytes, row_bytes, rows_here, nb, mem + g * group_bytes);
    });
    return p;
}

void matmul_prepared(const float* x, int64_t n, const PreparedWeight& w, float* y) {
    if (n <= 0 || w.rows <= 0) return;
    if (is_kquant(w.type)) return matmul_kquant(x, n, w.k, w.data, w.type, w.rows, y);  // issue 5: K-quants
    if (is_block_type(w.type))
        matmul_blocks(x, n, w.k, w.type, w.packed.get(), static_cast<const uint8_t*>(w.data), w.rows, y);
    else
        matmul_floats(x, n, w.k, w.data, w.type, w.rows, y);
}

void matmul(const float* x, int64_t n, int64_t k, const void* w, QType wtype, int64_t rows, float* y) {
    if (n <= 0 || rows <= 0) return;
    if (is_kquant(wtype)) return matmul_kquant(x, n, k, w, wtype, rows, y);  // issue 5: K-quants
    if (is_block_type(wtype))
        matmul_blocks(x, n, k, wtype, nullptr, static_cast<const uint8_t*>(w), rows, y);
    else
        matmul_floats(x, n, k, w, wtype, rows, y);
}

}  // namespace llamix
