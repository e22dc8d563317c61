// Task-vector sparsifiers: random and DELLA masks from the counter-based hash, rank masks from
// their radix-selected rules, and the L1 rescale factor.
#include "drivers/merge_sparsify.h"

#include <algorithm>
#include <cmath>
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

// Sorts (key << 32 | index) words, given in index order, by their 31-bit key: three stable LSD
// passes of 11 bits (ties keep index order, as a full sort of the words would). The result is in
// `a`; `tmp` is scratch of the same length. Passes whose digit is the same for all words are skipped.
void radix_sort_keys(uint64_t* a, uint64_t* tmp, int64_t L) {
    if (L < 256) {  // a comparison sort is quicker on short rows; the order is the same
        std::sort(a, a + L);
        return;
    }
    constexpr int kBits = 11, kPasses = 3;
    constexpr uint32_t kMask = (1u << kBits) - 1;
    uint32_t hist[kPasses][1u << kBits] = {};
    for (int64_t i = 0; i < L; ++i) {
        const uint32_t k = uint32_t(a[i] >> 32);
        for (int p = 0; p < kPasses; ++p) ++hist[p][(k >> (p * kBits)) & kMask];
    }
    uint64_t* src = a;
    uint64_t* dst = tmp;
    for (int p = 0; p < kPasses; ++p) {
        uint32_t* h = hist[p];
        if (h[(uint32_t(src[0] >> 32) >> (p * kBits)) & kMask] == uint32_t(L)) continue;
        uint32_t sum = 0;
        for (uint32_t d = 0; d <= kMask; ++d) {
            const uint32_t c = h[d];
            h[d] = sum;
            sum += c;
        }
        const int shift = 32 + p * kBits;
        for (int64_t i = 0; i < L; ++i) dst[h[(src[i] >> shift) & kMask]++] = src[i];
        std::swap(src, dst);
    }
    if (src != a) std::copy(src, src + L, a);
}

// DELLA (Deep et al. 2024): within each row, rank |delta| ascending (ties by index) and keep rank
// r (0-based) with probability density - eps + 2 eps r / (L - 1). Rows are ranked with a stable
// radix sort of their 31-bit magnitude keys (ties stay in index order); tasks take 8 rows so each
// writes whole mask bytes.
std::vector<uint8_t> della_mask_bits(const TaskVectorSource& src, int64_t n, int64_t rows, double density,
                                     double eps, const MaskKey& key) {
    rows = std::max<int64_t>(rows, 1);
    const int64_t L = n / rows;
    std::vector<uint8_t> bits(size_t(ceil_div(n, 8)) + 1, 0);
    // Rows per task: a multiple of 8 unless L is (so tasks start on a mask byte), and about kChunk
    // elements, so short rows are read with few pread calls.
    const int64_t group = (L % 8 == 0) ? 1 : 8;
    const int64_t per_task = ceil_div(std::max<int64_t>(1, kChunk / std::max<int64_t>(L, 1)), group) * group;
    // The keep threshold of each rank: the same for every row.
    std::vector<uint32_t> thr(static_cast<size_t>(L));
    for (int64_t rank = 0; rank < L; ++rank) {
        const double frac = L > 1 ? double(rank) / double(L - 1) : 0.0;
        thr[size_t(rank)] = threshold24((density - eps) + frac * 2.0 * eps);
    }
    const int64_t block = std::min(rows, per_task) * L;
    Scratch scratch(2, block);
    const size_t T = size_t(ThreadPool::instance().threads());
    std::vector<std::vector<uint64_t>> order(T, std::vector<uint64_t>(size_t(L) * 2));
    std::vector<std::vector<uint32_t>> hashes(T, std::vector<uint32_t>(size_t(L)));
    ThreadPool::instance().parallel_for(ceil_div(rows, per_task), [&](int64_t task, int th) {
        float* d = scratch.get(th, 0);
        uint64_t* ord = order[th].data();
        uint32_t* h = hashes[th].data();
        const int64_t r0 = task * per_task, r1 = std::min(rows, r0 + per_task);
        src.delta(r0 * L, (r1 - r0) * L, d, scratch.get(th, 1));
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t off = r * L;
            const float* dr = d + (r - r0) * L;
            for (int64_t i = 0; i < L; ++i) ord[i] = (uint64_t(mag_key(dr[i])) << 32) | uint64_t(i);
            radix_sort_keys(ord, ord + L, L);
            if ((off >> 32) == ((off + L - 1) >> 32)) {  // one key for the row
                const uint32_t k0 = key.k0_for(off);
                for (int64_t i = 0; i < L; ++i) h[i] = mask_hash(k0, key.k1, uint32_t(off + i)) >> 8;
            } else {
                for (int64_t i = 0; i < L; ++i) h[i] = mask_hash(key.k0_for(off + i), key.k1, uint32_t(off + i)) >> 8;
            }
            for (int64_t rank = 0; rank < L; ++rank) {
                const int64_t i = int64_t(ord[rank] & 0xffffffffu);
                const int64_t idx = off + i;
                if (h[i] < thr[size_t(rank)]) bits[size_t(idx >> 3)] |= uint8_t(1u << (idx & 7));
            }
        }
    });
    bits.resize(size_t(ceil_div(n, 8)));
    return bits;
}

}  // namespace

ModelMask sparsify_mask(const MergeCommon& c, const TaskVectorSource& src, const Sparsify& sp, const MaskKey& key,
                        int64_t rows, bool rescale, const RankRule& rule, bool materialize) {
    const int64_t n = c.n;
    const Tiling tl(n, 1);
    ModelMask mm;
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
            mm.bits = della_mask_bits(src, n, rows, sp.density, sp.epsilon, key);
            break;
    }
    if (!rescale && sp.kind != Sparsify::rank) return mm;
    // One pass: the rank mask (if stored) and the L1 norms before and after masking.
    Scratch scratch(2, kChunk);
    std::vector<double> part(size_t(tl.tasks()) * 2);
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
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
