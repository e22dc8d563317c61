// The threaded matmul driver shared by every ISA: quantize the activations once (block weights),
// then run the row groups: a decode streams them in one contiguous lane per thread, a prefill as
// tasks of (token chunk, row group). Every output element is computed whole by one kernel call
// (k is never split), so results are bit-identical for any thread count.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/thread_pool.h"
#include "common/weight_memory.h"
#include "drivers/kquant_matmul.h"
#include "drivers/matmul.h"
#include "drivers/row_groups.h"
#include "kernels/kernels.h"

namespace llamix {

namespace {

constexpr int64_t kFloatRowsPerTask = 16;

int64_t group_block_bytes(QType t) {
    switch (t) {
        case QType::Q4_0: case QType::IQ4_NL: return kQ4GroupBlockBytes;
        case QType::Q4_1: return kQ41GroupBlockBytes;
        case QType::Q5_0: return kQ5GroupBlockBytes;
        case QType::Q5_1: return kQ51GroupBlockBytes;
        default: return kQ8GroupBlockBytes;
    }
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

GemmFn group_gemm(const MatmulKernels& K, QType t) {
    switch (t) {
        case QType::Q4_0: return K.gemm_q4_0;
        case QType::Q4_1: return K.gemm_q4_1;
        case QType::IQ4_NL: return K.gemm_iq4_nl;
        case QType::Q5_0: return K.gemm_q5_0;
        case QType::Q5_1: return K.gemm_q5_1;
        default: return K.gemm_q8_0;
    }
}

// The decode pair kernel of a type, or null (kernels/matmul.h)
MatmulKernels::GemvPair group_gemv_pair(const MatmulKernels& K, QType t) {
    switch (t) {
        case QType::Q4_0: return K.gemv_pair_q4_0;
        case QType::Q4_1: return K.gemv_pair_q4_1;
        case QType::IQ4_NL: return K.gemv_pair_iq4_nl;
        case QType::Q5_0: return K.gemv_pair_q5_0;
        case QType::Q5_1: return K.gemv_pair_q5_1;
        case QType::Q8_0: return K.gemv_pair_q8_0;
        default: return nullptr;
    }
}

// IQ4_NL blocks have Q4_0's layout (fp16 d, 16 bytes of nibbles): packed alike.
PackFn group_packer(QType t) {
    switch (t) {
        case QType::Q4_0: case QType::IQ4_NL: return pack_group_q4_0;
        case QType::Q4_1: return pack_group_q4_1;
        case QType::Q5_0: return pack_group_q5_0;
        case QType::Q5_1: return pack_group_q5_1;
        default: return pack_group_q8_0;
    }
}

// One block-weight matmul, row group by row group, over already quantized activations.
// `packed` is the prepared buffer, or null to pack each group from `raw` when it runs.
struct BlockJob {
    GemmFn gemm;
    MatmulKernels::GemvPair pair;  // null, or decode of two prepared groups at once
    PackFn pack;
    const uint8_t* packed;
    const uint8_t* raw;
    int64_t rows, nb, group_bytes, row_bytes, groups;
    float* y;

    BlockJob(const MatmulKernels& K, QType t, int64_t k, const uint8_t* packed_, const uint8_t* raw_, int64_t rows_,
             float* y_)
        : gemm(group_gemm(K, t)),
          pair(packed_ ? group_gemv_pair(K, t) : nullptr),
          pack(group_packer(t)),
          packed(packed_), raw(raw_), rows(rows_), nb(k / QK8_0), group_bytes(nb * group_block_bytes(t)),
          row_bytes(qtype_row_bytes(t, k)), groups(ceil_div(rows_, kGroupRows)), y(y_) {}

    // Row group g for tokens [t0, t0 + nt).
    void run_group(int64_t g, const block_q8a* xq, int64_t t0, int64_t nt) const {
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

    // Row groups g0 and g1 at once, one token (pair is set).
    void run_pair(int64_t g0, int64_t g1, const block_q8a* xq) const {
        pair(packed + g0 * group_bytes, packed + g1 * group_bytes, nb, xq, y + g0 * kGroupRows, y + g1 * kGroupRows,
             rows_in(g0), rows_in(g1));
    }
    int rows_in(int64_t g) const { return int(std::min<int64_t>(kGroupRows, rows - g * kGroupRows)); }
};

// Several block-weight matmuls (same k) on the same activations, quantized once, in one
// parallel region.
void run_block_jobs(const BlockJob* jobs, size_t count, const block_q8a* xq, int64_t n) {
    std::vector<int64_t> first{0};  // index of each job's first row group
    for (size_t j = 0; j < count; ++j) first.push_back(first.back() + jobs[j].groups);
    auto run = [&](size_t j, int64_t g, int64_t t0, int64_t nt) { jobs[j].run_group(g, xq, t0, nt); };
    std::vector<char> paired(count);
    for (size_t j = 0; j < count; ++j) paired[j] = jobs[j].pair != nullptr;
    if (n == 1 && std::find(paired.begin(), paired.end(), 1) != paired.end())
        return run_row_group_pairs(first, paired, run, [&](size_t j, int64_t g0, int64_t g1) { jobs[j].run_pair(g0, g1, xq); });
    const int64_t act_row_bytes = jobs[0].nb * int64_t(sizeof(block_q8a));
    const int64_t tokens_per_chunk = std::max<int64_t>(8, kActChunkBytes / act_row_bytes / 8 * 8);
    run_row_groups(first, n, tokens_per_chunk, run);
}

void matmul_blocks(const float* x, int64_t n, int64_t k, QType t, const uint8_t* packed, const uint8_t* raw,
                   int64_t rows, float* y) {
    const MatmulKernels& K = kernels().matmul;
    const BlockJob job(K, t, k, packed, raw, rows, y);
    run_block_jobs(&job, 1, quantize_activations(K, x, n, k), n);
}

void matmul_floats(const float* x, int64_t n, int64_t k, const void* w, QType t, int64_t rows, float* y) {
    const MatmulKernels& K = kernels().matmul;
    MatmulKernels::FloatGemm gemm = nullptr;
    switch (t) {
        case QType::F32: gemm = K.gemm_f32; break;
        case QType::F16: gemm = K.gemm_f16; break;
        case QType::BF16: gemm = K.gemm_bf16; break;
        default: throw std::invalid_argument("matmul: unsupported weight type");
    }
    const auto* wbytes = static_cast<const uint8_t*>(w);
    const int64_t row_bytes = qtype_row_bytes(t, k);
    // (16 rows) x (a token chunk whose activations stay in L2)
    const int64_t row_tasks = ceil_div(rows, kFloatRowsPerTask);
    const int64_t tokens_per_chunk = std::max<int64_t>(4, kActChunkBytes / 2 / (k * int64_t(sizeof(float))) / 4 * 4);
    const int64_t chunks = ceil_div(n, tokens_per_chunk);
    ThreadPool::instance().parallel_for(row_tasks * chunks, [&](int64_t task, int) {
        const int64_t chunk = task / row_tasks, r0 = (task % row_tasks) * kFloatRowsPerTask;
        const int64_t t0 = chunk * tokens_per_chunk;
        gemm(wbytes + r0 * row_bytes, std::min(kFloatRowsPerTask, rows - r0), k, x + t0 * k,
             std::min(tokens_per_chunk, n - t0), y + t0 * rows + r0, rows);
    });
}

bool is_block_type(QType t) {
    return t == QType::Q4_0 || t == QType::Q8_0 || t == QType::Q4_1 || t == QType::IQ4_NL || t == QType::Q5_0 ||
           t == QType::Q5_1;
}

// One row of a packed Q5_0 / Q5_1 group block: the nibbles as Q4_0's, and per byte j of the row
// the fifth bits of the 8 elements its chunks hold at j (kernels/matmul.h).
void pack_q5_row(const uint8_t* src_qs, const uint8_t* src_qh, int r, uint8_t* qs, uint8_t* qh) {
    for (int c = 0; c < 4; ++c) std::memcpy(qs + (c * kGroupRows + r) * 4, src_qs + 4 * c, 4);
    uint32_t bits;  // bit e: the fifth bit of element e
    std::memcpy(&bits, src_qh, 4);
    for (int j = 0; j < 4; ++j) {  // chunk c holds element 4c + j (c < 4), 16 + 4(c - 4) + j (c >= 4)
        uint8_t v = 0;
        for (int c = 0; c < 8; ++c) v = uint8_t(v | ((bits >> ((c < 4 ? 4 * c : 16 + 4 * (c - 4)) + j) & 1u) << c));
        qh[r * 4 + j] = v;
    }
}

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

void pack_group_q4_1(const uint8_t* src, int64_t row_bytes, int rows, int64_t nb, uint8_t* dst) {
    for (int64_t b = 0; b < nb; ++b, dst += kQ41GroupBlockBytes) {
        std::memset(dst, 0, kQ41GroupBlockBytes);
        for (int r = 0; r < rows; ++r) {
            const auto* blk = reinterpret_cast<const block_q4_1*>(src + r * row_bytes) + b;
            std::memcpy(dst + 2 * r, &blk->d, 2);
            std::memcpy(dst + 2 * kGroupRows + 2 * r, &blk->m, 2);
            for (int c = 0; c < 4; ++c) std::memcpy(dst + 4 * kGroupRows + (c * kGroupRows + r) * 4, blk->qs + 4 * c, 4);
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

void pack_group_q5_0(const uint8_t* src, int64_t row_bytes, int rows, int64_t nb, uint8_t* dst) {
    for (int64_t b = 0; b < nb; ++b, dst += kQ5GroupBlockBytes) {
        std::memset(dst, 0, kQ5GroupBlockBytes);
        uint8_t* qs = dst + 2 * kGroupRows;
        for (int r = 0; r < rows; ++r) {
            const auto* blk = reinterpret_cast<const block_q5_0*>(src + r * row_bytes) + b;
            std::memcpy(dst + 2 * r, &blk->d, 2);
            pack_q5_row(blk->qs, blk->qh, r, qs, qs + 4 * kGroupRows * 4);
        }
    }
}

void pack_group_q5_1(const uint8_t* src, int64_t row_bytes, int rows, int64_t nb, uint8_t* dst) {
    for (int64_t b = 0; b < nb; ++b, dst += kQ51GroupBlockBytes) {
        std::memset(dst, 0, kQ51GroupBlockBytes);
        uint8_t* qs = dst + 4 * kGroupRows;
        for (int r = 0; r < rows; ++r) {
            const auto* blk = reinterpret_cast<const block_q5_1*>(src + r * row_bytes) + b;
            std::memcpy(dst + 2 * r, &blk->d, 2);
            std::memcpy(dst + 2 * kGroupRows + 2 * r, &blk->m, 2);
            pack_q5_row(blk->qs, blk->qh, r, qs, qs + 4 * kGroupRows * 4);
        }
    }
}

PreparedWeight prepare_weight(const void* w, QType wtype, int64_t rows, int64_t k) {
    PreparedWeight p{w, wtype, rows, k, nullptr, 0};
    // K-quants are packed only for a variant that multiplies packed groups; the others read the
    // source bytes (so does any variant chosen later that has no group kernel).
    const bool kquant = is_kquant(wtype) && kquant_packs(wtype);
    if (!is_block_type(wtype) && !kquant) return p;
    const int64_t blocks = kquant ? k / QK_K : k / QK8_0;
    const int64_t group_bytes = blocks * (kquant ? kquant_group_block_bytes(wtype) : group_block_bytes(wtype));
    const int64_t groups = ceil_div(rows, kGroupRows);
    p.packed_bytes = groups * group_bytes;
    p.packed = allocate_weight_memory(size_t(p.packed_bytes));
    if (kquant) p.layout = kquant_pack_layout(wtype);
    uint8_t* mem = p.packed.get();
    const auto* src = static_cast<const uint8_t*>(w);
    const int64_t row_bytes = qtype_row_bytes(wtype, k);
    ThreadPool::instance().parallel_for(groups, [&](int64_t g, int) {
        const int rows_here = int(std::min<int64_t>(kGroupRows, rows - g * kGroupRows));
        const uint8_t* first = src + g * kGroupRows * row_bytes;
        uint8_t* dst = mem + g * group_bytes;
        if (kquant)
            pack_group_kquant(wtype, first, row_bytes, rows_here, blocks, dst, p.layout);
        else
            group_packer(wtype)(first, row_bytes, rows_here, blocks, dst);
    });
    return p;
}

void matmul_prepared(const float* x, int64_t n, const PreparedWeight& w, float* y) {
    if (n <= 0 || w.rows <= 0) return;
    if (is_kquant(w.type))  // packed groups in another variant's layout: the source bytes
        return matmul_kquant(x, n, w.k, w.data, w.type, w.rows, y,
                             w.layout == kquant_pack_layout(w.type) ? w.packed.get() : nullptr);
    if (is_block_type(w.type))
        matmul_blocks(x, n, w.k, w.type, w.packed.get(), static_cast<const uint8_t*>(w.data), w.rows, y);
    else
        matmul_floats(x, n, w.k, w.data, w.type, w.rows, y);
}

void matmul_prepared_many(const float* x, int64_t n, const PreparedWeight* const* ws, float* const* ys, int count) {
    if (n <= 0 || count <= 0) return;
    const int64_t k = ws[0]->k;
    for (int i = 0; i < count; ++i)
        if (ws[i]->k != k) throw std::invalid_argument("matmul_prepared_many: weights have different row lengths");
    const MatmulKernels& K = kernels().matmul;
    std::vector<BlockJob> jobs;
    std::vector<KQuantGroupJob> kjobs;
    for (int i = 0; i < count; ++i) {
        const PreparedWeight& w = *ws[i];
        if (is_kquant(w.type) && w.packed && kquant_packs(w.type) && w.layout == kquant_pack_layout(w.type))
            kjobs.push_back({w.packed.get(), w.type, w.rows, ys[i]});
        else if (is_kquant(w.type))
            matmul_kquant(x, n, k, w.data, w.type, w.rows, ys[i]);
        else if (!is_block_type(w.type))
            matmul_floats(x, n, k, w.data, w.type, w.rows, ys[i]);
        else if (w.rows > 0)
            jobs.emplace_back(K, w.type, k, w.packed.get(), static_cast<const uint8_t*>(w.data), w.rows, ys[i]);
    }
    if (!jobs.empty()) run_block_jobs(jobs.data(), jobs.size(), quantize_activations(K, x, n, k), n);
    if (!kjobs.empty()) matmul_kquant_groups(x, n, k, kjobs.data(), int(kjobs.size()));
}

void matmul(const float* x, int64_t n, int64_t k, const void* w, QType wtype, int64_t rows, float* y) {
    if (n <= 0 || rows <= 0) return;
    if (is_kquant(wtype)) return matmul_kquant(x, n, k, w, wtype, rows, y);
    if (is_block_type(wtype))
        matmul_blocks(x, n, k, wtype, nullptr, static_cast<const uint8_t*>(w), rows, y);
    else
        matmul_floats(x, n, k, w, wtype, rows, y);
}

}  // namespace llamix
