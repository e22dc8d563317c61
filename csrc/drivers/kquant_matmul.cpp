// The threaded matmul for K-quant weights (Q4_K, Q5_K, Q6_K): activations quantized once to
// Q8_K, then packed 16-row groups (when the variant has a group kernel: decode in per-thread
// lanes, prefill in (token chunk, group) tasks) or fixed-size row tasks on the source bytes.
// Every output element is computed whole by one kernel call, so the result never depends on the
// thread count.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/thread_pool.h"
#include "drivers/kquant_matmul.h"
#include "drivers/lowbit_pack.h"
#include "drivers/row_groups.h"
#include "kernels/kernels.h"

namespace llamix {

bool is_kquant(QType t) {
    return t == QType::Q4_K || t == QType::Q5_K || t == QType::Q6_K || t == QType::Q2_K || t == QType::Q3_K ||
           t == QType::IQ4_XS;
}

void dequantize_row_kquant(QType t, const void* x, float* y, int64_t k) {
    const KQuantKernels& K = kernels().kquant;
    switch (t) {
        case QType::Q4_K: K.dequantize_row_q4_K(x, y, k); return;
        case QType::Q5_K: K.dequantize_row_q5_K(x, y, k); return;
        case QType::Q6_K: K.dequantize_row_q6_K(x, y, k); return;
        case QType::Q2_K: K.dequantize_row_q2_K(x, y, k); return;
        case QType::Q3_K: K.dequantize_row_q3_K(x, y, k); return;
        case QType::IQ4_XS: K.dequantize_row_iq4_xs(x, y, k); return;
        default: throw std::invalid_argument("dequantize_row_kquant: not a K-quant family type");
    }
}

int64_t kquant_group_block_bytes(QType t) {
    switch (t) {
        case QType::Q4_K: return kQ4KGroupBlockBytes;
        case QType::Q5_K: return kQ5KGroupBlockBytes;
        case QType::Q6_K: return kQ6KGroupBlockBytes;
        case QType::Q2_K: return kQ2KGroupBlockBytes;
        case QType::Q3_K: return kQ3KGroupBlockBytes;
        case QType::IQ4_XS: return kIQ4XSGroupBlockBytes;
        default: return 0;
    }
}

namespace {

// One Q6_K super-block of one row into its place in a packed group (layout in kernels/kquant.h).
void pack_q6_K(const block_q6_K& x, int r, uint8_t* dst) {
    uint8_t v[QK_K];  // the 6-bit quants, as the reference's dot product reads them
    for (int e = 0; e < QK_K; ++e) {
        const int h = e / 128, c = (e % 128) / 32, l = e % 32;
        const int lo = (x.ql[64 * h + l + 32 * (c % 2)] >> (4 * (c / 2))) & 0xF;
        v[e] = static_cast<uint8_t>(lo | (((x.qh[32 * h + l] >> (2 * c)) & 3) << 4));
    }
    std::memcpy(dst + 2 * r, &x.d, 2);
    for (int q = 0; q < 8; ++q) std::memcpy(dst + 32 + (q * kGroupRows + r) * 2, x.scales + 2 * q, 2);
    uint8_t* ql = dst + 32 + 256;
    uint8_t* qh = ql + 2048;
    for (int c = 0; c < 32; ++c)
        for (int i = 0; i < 4; ++i)
            ql[(c * kGroupRows + r) * 4 + i] = static_cast<uint8_t>((v[4 * c + i] & 0xF) | (v[128 + 4 * c + i] & 0xF) << 4);
    for (int h = 0; h < 16; ++h)
        for (int i = 0; i < 4; ++i) {
            const int e = 8 * h + i;
            qh[(h * kGroupRows + r) * 4 + i] = static_cast<uint8_t>(v[e] >> 4 | (v[128 + e] >> 4) << 2 |
                                                                   (v[e + 4] >> 4) << 4 | (v[128 + e + 4] >> 4) << 6);
        }
}

// Q5KLayout::merged (kernels/kquant.h): row r's 5-bit quants of one super-block into the quant
// area q of a packed Q5_K group block (after d, dmin and the scales, which are as in `nibbles`).
void pack_q5_K_merged(const block_q5_K& x, int r, uint8_t* q) {
    const int h = r / 8;
    for (int p = 0; p < 4; ++p)
        for (int quad = 0; quad < 2; ++quad)
            for (int i = 0; i < 4; ++i) {
                int L[4], H[4];
                for (int k = 0; k < 4; ++k) {
                    const int l = 4 * (4 * quad + k) + i;  // byte of qs[32 p ..] and qh
                    L[k] = (x.qs[32 * p + l] & 0xF) | ((x.qh[l] >> (2 * p)) & 1) << 4;
                    H[k] = (x.qs[32 * p + l] >> 4) | ((x.qh[l] >> (2 * p + 1)) & 1) << 4;
                }
                uint8_t* b = q + ((p * 2 + quad) * 2 + h) * 160 + 4 * (r % 8) + i;
                for (int v = 0; v < 3; ++v) b[32 * v] = static_cast<uint8_t>(L[v] | (H[v] & 7) << 5);
                b[96] = static_cast<uint8_t>(L[3] | (H[0] >> 3) << 5 | ((H[2] >> 3) & 1) << 7);
                b[128] = static_cast<uint8_t>(H[3] | (H[1] >> 3) << 5 | (H[2] >> 4) << 7);
            }
}

}  // namespace

int kquant_pack_layout(QType t) {
    if (t == QType::Q3_K) return int(kernels().kquant.q3_K_layout);
    if (t == QType::Q5_K) return int(kernels().kquant.q5_K_layout);
    return 0;
}

void pack_group_kquant(QType t, const uint8_t* src, int64_t row_bytes, int rows, int64_t nsb, uint8_t* dst,
                       int layout) {
    const int64_t group_bytes = kquant_group_block_bytes(t);
    if (group_bytes == 0) throw std::invalid_argument("pack_group_kquant: not a packed K-quant family type");
    const int64_t block_bytes = group_bytes / kGroupRows;
    for (int64_t b = 0; b < nsb; ++b, dst += group_bytes) {
        std::memset(dst, 0, size_t(group_bytes));
        for (int r = 0; r < rows; ++r) {
            const uint8_t* blk = src + r * row_bytes + b * block_bytes;
            if (t == QType::Q6_K) {
                pack_q6_K(*reinterpret_cast<const block_q6_K*>(blk), r, dst);
                continue;
            }
            if (t == QType::Q2_K || t == QType::Q3_K || t == QType::IQ4_XS) {
                pack_lowbit_kquant(t, blk, r, dst, Q3KLayout(layout));
                continue;
            }
            // Q4_K and Q5_K share d, dmin and scales; Q5_K adds qh before qs
            const auto* head = reinterpret_cast<const block_q4_K*>(blk);
            const uint8_t* qs = t == QType::Q4_K ? head->qs : reinterpret_cast<const block_q5_K*>(blk)->qs;
            std::memcpy(dst + 2 * r, &head->d, 2);
            std::memcpy(dst + 32 + 2 * r, &head->dmin, 2);
            for (int i = 0; i < 3; ++i) std::memcpy(dst + 64 + (i * kGroupRows + r) * 4, head->scales + 4 * i, 4);
            uint8_t* q = dst + 64 + 3 * kGroupRows * 4;
            if (t == QType::Q5_K && Q5KLayout(layout) == Q5KLayout::merged) {
                pack_q5_K_merged(*reinterpret_cast<const block_q5_K*>(blk), r, q);
                continue;
            }
            for (int p = 0; p < 4; ++p)
                for (int c = 0; c < 8; ++c) std::memcpy(q + ((p * 8 + c) * kGroupRows + r) * 4, qs + 32 * p + 4 * c, 4);
            if (t == QType::Q5_K) {
                uint8_t* qh = q + 4 * 8 * kGroupRows * 4;
                const uint8_t* src_qh = reinterpret_cast<const block_q5_K*>(blk)->qh;
                for (int c = 0; c < 8; ++c) std::memcpy(qh + (c * kGroupRows + r) * 4, src_qh + 4 * c, 4);
            }
        }
    }
}

namespace {

constexpr int64_t kRowsPerTask = 16;

KQuantKernels::GroupGemm group_kernel(const KQuantKernels& K, QType t) {
    switch (t) {
        case QType::Q4_K: return K.gemm_q4_K_groups;
        case QType::Q5_K: return K.gemm_q5_K_groups;
        case QType::Q6_K: return K.gemm_q6_K_groups;
        case QType::Q2_K: return K.gemm_q2_K_groups;
        case QType::Q3_K: return K.gemm_q3_K_groups;
        case QType::IQ4_XS: return K.gemm_iq4_xs_groups;
        default: return nullptr;
    }
}

// The decode pair kernel of a packed type, or null (kernels/matmul.h)
MatmulKernels::GemvPair group_gemv_pair(const KQuantKernels& K, QType t) {
    switch (t) {
        case QType::Q4_K: return K.gemv_pair_q4_K;
        case QType::Q5_K: return K.gemv_pair_q5_K;
        case QType::Q6_K: return K.gemv_pair_q6_K;
        case QType::Q2_K: return K.gemv_pair_q2_K;
        case QType::Q3_K: return K.gemv_pair_q3_K;
        case QType::IQ4_XS: return K.gemv_pair_iq4_xs;
        default: return nullptr;
    }
}

// Activations quantized to Q8_K, (n, k / 256) blocks.
std::vector<uint8_t> quantize_q8_K(const KQuantKernels& K, const float* x, int64_t n, int64_t k) {
    const int64_t row_bytes = k / QK_K * static_cast<int64_t>(sizeof(block_q8_K));
    std::vector<uint8_t> xq(static_cast<size_t>(n * row_bytes));
    if (n == 1)
        K.quantize_act_q8_K(x, xq.data(), k);
    else
        ThreadPool::instance().parallel_for(n, [&](int64_t t, int) { K.quantize_act_q8_K(x + t * k, xq.data() + t * row_bytes, k); });
    return xq;
}

}  // namespace

bool kquant_packs(QType t) { return group_kernel(kernels().kquant, t) != nullptr; }

void matmul_kquant_groups(const float* x, int64_t n, int64_t k, const KQuantGroupJob* jobs, int count) {
    struct Job {
        KQuantKernels::GroupGemm gemm;
        MatmulKernels::GemvPair pair;
        const uint8_t* packed;
        int64_t rows, group_bytes;
        float* y;
        const uint8_t* x = nullptr;  // its activations (Q8_K rows)
    };
    const KQuantKernels& K = kernels().kquant;
    const int64_t nsb = k / QK_K;
    std::vector<Job> js;
    std::vector<int64_t> first{0};  // index of each job's first row group
    for (int i = 0; i < count; ++i) {
        const auto gemm = group_kernel(K, jobs[i].type);
        if (!gemm || !jobs[i].packed) throw std::invalid_argument("matmul_kquant_groups: weight has no packed groups");
        js.push_back({gemm, group_gemv_pair(K, jobs[i].type), jobs[i].packed, jobs[i].rows, nsb * kquant_group_block_bytes(jobs[i].type), jobs[i].y, nullptr});
        first.push_back(first.back() + ceil_div(jobs[i].rows, kGroupRows));
    }
    const std::vector<uint8_t> xq = quantize_q8_K(K, x, n, k);
    const int64_t x_row_bytes = nsb * static_cast<int64_t>(sizeof(block_q8_K));
    // Q3_K's `triples` kernels read the activations with each pair of sub-blocks interleaved
    std::vector<uint8_t> xq3;
    if (K.q3_K_layout == Q3KLayout::triples)
        for (int i = 0; i < count; ++i)
            if (jobs[i].type == QType::Q3_K && xq3.empty()) {
                xq3 = xq;
                auto* b = reinterpret_cast<block_q8_K*>(xq3.data());
                if (n == 1)
                    q3_K_pair_activations(b, nsb);
                else
                    ThreadPool::instance().parallel_for(n, [&](int64_t t, int) { q3_K_pair_activations(b + t * nsb, nsb); });
            }
    for (int i = 0; i < count; ++i) js[i].x = jobs[i].type == QType::Q3_K && !xq3.empty() ? xq3.data() : xq.data();
    auto rows_in = [&](const Job& job, int64_t g) { return int(std::min<int64_t>(kGroupRows, job.rows - g * kGroupRows)); };
    auto run = [&](size_t j, int64_t g, int64_t t0, int64_t nt) {
        const Job& job = js[j];
        job.gemm(job.packed + g * job.group_bytes, nsb, job.x + t0 * x_row_bytes, x_row_bytes, nt,
                 job.y + t0 * job.rows + g * kGroupRows, job.rows, rows_in(job, g));
    };
    std::vector<char> paired(js.size());
    for (size_t j = 0; j < js.size(); ++j) paired[j] = js[j].pair != nullptr;
    if (n == 1 && std::find(paired.begin(), paired.end(), 1) != paired.end())
        return run_row_group_pairs(first, paired, run, [&](size_t j, int64_t g0, int64_t g1) {
            const Job& job = js[j];
            job.pair(job.packed + g0 * job.group_bytes, job.packed + g1 * job.group_bytes, nsb, job.x,
                     job.y + g0 * kGroupRows, job.y + g1 * kGroupRows, rows_in(job, g0), rows_in(job, g1));
        });
    run_row_groups(first, n, std::max<int64_t>(8, kActChunkBytes / x_row_bytes), run);
}

void matmul_kquant(const float* x, int64_t n, int64_t k, const void* w, QType wtype, int64_t rows, float* y,
                   const uint8_t* packed) {
    const KQuantKernels& K = kernels().kquant;
    if (packed && group_kernel(K, wtype)) {
        const KQuantGroupJob job{packed, wtype, rows, y};
        return matmul_kquant_groups(x, n, k, &job, 1);
    }
    KQuantKernels::DotRows dot = nullptr;
    switch (wtype) {
        case QType::Q4_K: dot = K.dot_q4_K_q8_K; break;
        case QType::Q5_K: dot = K.dot_q5_K_q8_K; break;
        case QType::Q6_K: dot = K.dot_q6_K_q8_K; break;
        case QType::Q2_K: dot = K.dot_q2_K_q8_K; break;
        case QType::Q3_K: dot = K.dot_q3_K_q8_K; break;
        case QType::IQ4_XS: dot = K.dot_iq4_xs_q8_K; break;
        default: throw std::invalid_argument("matmul_kquant: not a K-quant family type");
    }
    const int64_t x_row_bytes = k / QK_K * static_cast<int64_t>(sizeof(block_q8_K));
    const std::vector<uint8_t> xq = quantize_q8_K(K, x, n, k);
    const auto* wbytes = static_cast<const uint8_t*>(w);
    const int64_t w_row_bytes = qtype_row_bytes(wtype, k);
    // tasks: (run of rows) x (chunk of tokens); each weight row meets kMaxTokens tokens per call
    const int64_t token_chunk = 64, token_chunks = ceil_div(n, token_chunk);
    const int64_t row_tasks = ceil_div(rows, kRowsPerTask);
    ThreadPool::instance().parallel_for(row_tasks * token_chunks, [&](int64_t task, int) {
        const int64_t rt = task % row_tasks, t0 = task / row_tasks * token_chunk;
        const int64_t r1 = std::min(rows, (rt + 1) * kRowsPerTask), t1 = std::min(n, t0 + token_chunk);
        for (int64_t r = rt * kRowsPerTask; r < r1; ++r)
            for (int64_t t = t0; t < t1; t += kMaxTokens)
                dot(k, wbytes + r * w_row_bytes, xq.data() + t * x_row_bytes, x_row_bytes,
                    int(std::min<int64_t>(kMaxTokens, t1 - t)), y + t * rows + r, rows);
    });
}

}  // namespace llamix
