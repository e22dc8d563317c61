// Task-vector sparsifiers: random and DELLA masks from the counter-based hash, rank masks from
// their radix-selected rules, and the L1 rescale factor.
#include "drivers/merge_sparsify.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "common/thread_pool.h"
#include "drivers/merge_tiling.h"
#include "kernels/kernels.h"

namespace llamix {
namespace merge_detail {

namespace {

uint32_t threshold24(double p) {
    if (!(p > 0.0)) return 0;
    if (p >= 1.0) return 1u << 24;
    return uint32_t(std::floor(p * 16777216.0));
}

std::vector<uint8_t> random_mask_bits(int64_t n, double density, const MaskKey& key) {
    std::vector<uint8_t> bits(size_t(ceil_div(n, 8)), 0);
    const Tiling tl(n, 1);
    const uint32_t th24 = threshold24(density);
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int) {
        const int64_t off = tl.begin(task);
        kernels().merge.random_mask(key.k0_for(off), key.k1, uint32_t(off), th24, bits.data() + off / 8, tl.size(task));
    });
    return bits;
}

// One row's ranking state, per thread: the row's keys, buckets and draws, and its bucket counts.
struct DellaRow {
    // Buckets of 1/64 octave (key >> 17), the top kBuckets below the row's largest key; smaller
    // keys share bucket 0. The bucket is monotone in the key, so bucket b holds ranks [cum[b], cum[b + 1]).
    static constexpr int kShift = 17, kBuckets = 1024;
    std::vector<uint32_t> key, draw, cum;
    std::vector<uint16_t> bucket;
    explicit DellaRow(int64_t L) : key(size_t(L)), draw(size_t(L)), cum(kBuckets + 1), bucket(size_t(L)) {}
};

// The DELLA keep bits of one row (delta d, L elements starting at element off) into bits, whose bit 0
// is element bit0 (a multiple of 8; the row's bits are zero on entry):
// element i is kept when draw_i < thr[rank_i], ranks by |d| ascending, ties by index. The bucket
// of an element brackets its rank, and the thresholds of the bracket's ends decide unless the draw
// falls between them (about one element in a hundred); those few get their exact rank by counting.
// The bits are the ones a full stable sort of the row gives.
void della_row(const float* d, int64_t L, int64_t off, const uint32_t* thr, const MaskKey& key, DellaRow& w,
               uint8_t* bits, int64_t bit0) {
    constexpr int NB = DellaRow::kBuckets;
    const MergeKernels& K = kernels().merge;
    uint32_t* k = w.key.data();
    uint32_t kmax = 0;
    for (int64_t i = 0; i < L; ++i) {
        k[i] = mag_key(d[i]);
        kmax = std::max(kmax, k[i]);
    }
    // the draws, in pieces that do not cross a multiple of 2^32 (where the key changes)
    uint32_t* h = w.draw.data();
    for (int64_t i = 0; i < L;) {
        const int64_t idx = off + i, len = std::min(L - i, int64_t((uint64_t(idx) | 0xffffffffull) + 1) - idx);
        K.mask_hash24(key.k0_for(idx), key.k1, uint32_t(idx), h + i, len);
        i += len;
    }
    const int32_t b0 = int32_t(kmax >> DellaRow::kShift) - (NB - 1);
    uint32_t* cum = w.cum.data();
    std::fill(cum, cum + NB + 1, 0u);
    uint16_t* bk = w.bucket.data();
    for (int64_t i = 0; i < L; ++i) {
        const int32_t b = std::max(int32_t(k[i] >> DellaRow::kShift) - b0, 0);
        bk[i] = uint16_t(b);
        cum[b + 1]++;
    }
    for (int b = 0; b < NB; ++b) cum[b + 1] += cum[b];
    // 8 elements to a byte of keep bits (the row may start inside a byte)
    for (int64_t i0 = 0; i0 < L;) {
        const int64_t idx0 = off + i0, n8 = std::min<int64_t>(L - i0, 8 - (idx0 & 7));
        unsigned byte = 0, amb = 0;
        for (int64_t j = 0; j < n8; ++j) {
            const int b = bk[i0 + j];
            const uint32_t t0 = thr[cum[b]], t1 = thr[cum[b + 1] - 1], v = h[i0 + j];
            const uint32_t lo = std::min(t0, t1), hi = std::max(t0, t1);  // any sign of epsilon
            byte |= unsigned(v < lo) << j;
            amb |= unsigned(v >= lo && v < hi) << j;
        }
        while (amb) {  // the exact rank decides
            const int j = __builtin_ctz(amb);
            amb &= amb - 1;
            const int64_t i = i0 + j;
            byte |= unsigned(h[i] < thr[K.rank_of(k, L, i)]) << j;
        }
        bits[(idx0 - bit0) >> 3] |= uint8_t(byte << (idx0 & 7));
        i0 += n8;
    }
}

// DELLA (Deep et al. 2024): within each row, rank |delta| ascending (ties by index) and keep rank
// r (0-based) with probability density - eps + 2 eps r / (L - 1). Each task takes a span of whole
// kChunk chunks and ranks the rows overlapping it (a row crossing a span boundary is ranked by both
// tasks, each keeping the bits inside its span): with part set, the task also adds the L1 sums of
// each of its chunks before and after masking (part[2 c], part[2 c + 1]), the rescale's pass.
std::vector<uint8_t> della_mask_bits(const TaskVectorSource& src, int64_t n, int64_t rows, double density,
                                     double eps, const MaskKey& key, std::vector<double>* part) {
    rows = std::max<int64_t>(rows, 1);
    const int64_t L = n / rows;
    if (L * rows != n) throw std::invalid_argument("merge: tensor size is not a multiple of the row count");
    std::vector<uint8_t> bits(size_t(ceil_div(n, 8)), 0);
    // The keep threshold of each rank: the same for every row.
    std::vector<uint32_t> thr(static_cast<size_t>(L));
    for (int64_t rank = 0; rank < L; ++rank) {
        const double frac = L > 1 ? double(rank) / double(L - 1) : 0.0;
        thr[size_t(rank)] = threshold24((density - eps) + frac * 2.0 * eps);
    }
    // at least 4 chunks and 16 rows a span: boundary rows cost at most an eighth more ranking
    const int64_t chunks = ceil_div(n, kChunk);
    const int64_t span = std::min(chunks, std::max<int64_t>(4, ceil_div(16 * L, kChunk))) * kChunk;
    const int64_t cap = std::min(n, span + 2 * L);  // the elements of the rows overlapping a span
    Scratch scratch(2, cap);
    const size_t T = size_t(ThreadPool::instance().threads());
    std::vector<DellaRow> work(T, DellaRow(L));
    std::vector<std::vector<uint8_t>> local(T, std::vector<uint8_t>(size_t(ceil_div(cap, 8)) + 2));
    const MergeKernels& K = kernels().merge;
    ThreadPool::instance().parallel_for(ceil_div(n, span), [&](int64_t task, int th) {
        const int64_t s0 = task * span, s1 = std::min(n, s0 + span);
        const int64_t e0 = s0 / L * L, e1 = ceil_div(s1, L) * L, bit0 = e0 & ~int64_t(7);
        float* d = scratch.get(th, 0);
        uint8_t* lb = local[th].data();
        src.delta(e0, e1 - e0, d, scratch.get(th, 1));
        std::fill(lb, lb + ceil_div(e1 - bit0, 8), uint8_t(0));
        for (int64_t r0 = e0; r0 < e1; r0 += L) della_row(d + (r0 - e0), L, r0, thr.data(), key, work[th], lb, bit0);
        std::copy(lb + (s0 - bit0) / 8, lb + ceil_div(s1 - bit0, 8), bits.data() + s0 / 8);
        if (part)
            for (int64_t c0 = s0; c0 < s1; c0 += kChunk)
                K.abs_sums(d + (c0 - e0), lb + (c0 - bit0) / 8, std::min(kChunk, s1 - c0), &(*part)[size_t(c0 / kChunk) * 2]);
    });
    return bits;
}

}  // namespace

ModelMask sparsify_mask(const MergeCommon& c, const TaskVectorSource& src, const Sparsify& sp, const MaskKey& key,
                        int64_t rows, bool rescale, const RankRule& rule, bool materialize) {
    const int64_t n = c.n;
    const Tiling tl(n, 1);
    ModelMask mm;
    std::vector<double> part(size_t(tl.tasks()) * 2);  // per chunk: L1 norms before and after masking
    switch (sp.kind) {
        case Sparsify::none: return mm;
        case Sparsify::rank:
            if (rule.keep_all) return mm;
            if (!rescale && !materialize) {
                mm.rule = &rule;  // the final pass computes it chunk by chunk
                return mm;
            }
            mm.bits.assign(size_t(ceil_div(n, 8)), 0);
            break;
        case Sparsify::random:
            if (sp.density >= 1.0) return mm;
            mm.bits = random_mask_bits(n, sp.density, key);
            break;
        case Sparsify::della:
            if (sp.density >= 1.0) return mm;
            if (sp.density <= 0.0) {
                mm.bits.assign(size_t(ceil_div(n, 8)), 0);
                return mm;  // mergekit returns zeros without rescaling
            }
            mm.bits = della_mask_bits(src, n, rows, sp.density, sp.epsilon, key, rescale ? &part : nullptr);
            break;
    }
    if (!rescale && sp.kind != Sparsify::rank) return mm;
    // One pass: the rank mask (if stored) and the L1 norms before and after masking (DELLA's pass
    // has added those).
    Scratch scratch(2, kChunk);
    if (sp.kind != Sparsify::della) ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        float* d = scratch.get(th, 0);
        const int64_t off = tl.begin(task), len = tl.size(task);
        src.delta(off, len, d, scratch.get(th, 1));
        if (sp.kind == Sparsify::rank) rule.mask(task, d, len, mm.bits.data() + off / 8);
        if (rescale) kernels().merge.abs_sums(d, mm.bits.data() + off / 8, len, &part[size_t(task) * 2]);
    });
    if (rescale) {
        double before = 0, after = 0;
        for (int64_t t = 0; t < tl.tasks(); ++t) {
            before += part[t * 2];
            after += part[t * 2 + 1];
        }
        // rescale unless either norm is tiny (eps 1e-7), in float32 as mergekit
        const float b = float(before), a = float(after);
        if (!(b < 1e-7f || a < 1e-7f)) mm.rescale = b / a;
    }
    return mm;
}

}  // namespace merge_detail
}  // namespace llamix
