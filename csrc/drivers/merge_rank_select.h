// Radix selection of task-vector entries by magnitude (the rank / top-k sparsifiers): which
// ranks of |x - base| a model keeps, found without sorting.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "common/fp16.h"
#include "drivers/merge.h"

namespace llamix {
namespace merge_detail {

// |x| as an order-preserving integer (NaN above +inf).
inline uint32_t mag_key(float v) { return f32_bits(v) & 0x7fffffffu; }

// Ranks [r0, r1) of |delta| ascending, equal magnitudes ordered by index, for several models at
// once: radix selection on the magnitude bits, never a sort. Pass 1 histograms the high 16 bits
// of every model's |delta|; pass 2 collects the low 16 bits of the elements inside the bins that
// hold the boundary ranks, which gives the exact boundary keys and, per chunk, how many equal
// keys precede it (tie ordinals). The mask of any chunk then follows from the rule alone, so the
// final pass can compute it inline instead of storing it.
struct RankRule {
    struct Boundary {
        bool active = false;
        int64_t rank = 0;
        int bin = -1;
        uint32_t key = 0;
        int64_t below = 0;            // elements with a smaller key
        std::vector<int64_t> prefix;  // per task: elements equal to key in earlier tasks
        std::vector<int64_t> count;   // per task: elements equal to key in it
    };
    bool keep_all = true, keep_none = false;
    int64_t r0 = 0, r1 = 0;
    Boundary lo, hi;  // the first kept rank r0 (if > 0) and the last kept rank r1 - 1 (if < n - 1)

    // Keep bits of chunk `task` (delta d, len elements) into bits (len / 8 rounded up bytes):
    // keys strictly between the boundary keys by one vector compare, then the few elements equal
    // to a boundary key by their tie ordinal.
    void mask(int64_t task, const float* d, int64_t len, uint8_t* bits) const;
};

// The rule of each model (keep_all for those that are not rank-sparsified), from two passes over
// the task vectors of all rank-sparsified models at once.
std::vector<RankRule> rank_rules(const MergeCommon& c, MergeInput base, const std::vector<MergeInput>& x,
                                 const std::vector<Sparsify>& sp);

// The same selection over any values: values(task, thread, out) writes the A value arrays of one
// chunk of a Tiling(n, 1) (out[a] has room for kChunk floats); they are ranked by |v|.
using RankValues = std::function<void(int64_t task, int th, float* const* out)>;

// Pass 1: per value array, the cumulative histogram of the high 16 bits of |v| and the number of
// exact zeros.
struct RankHistogram {
    std::vector<std::vector<int64_t>> cum;  // per array: 65537 entries
    std::vector<int64_t> zeros;
};
RankHistogram rank_histogram(int64_t n, int A, const RankValues& values);

// Pass 2: rules[a] (r0, r1, keep_all / keep_none and the active boundaries set, or null to skip)
// gets its boundary keys and tie ordinals.
void rank_finish(int64_t n, const std::vector<RankRule*>& rules, const RankHistogram& h, const RankValues& values);

}  // namespace merge_detail
}  // namespace llamix
