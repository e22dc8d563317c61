// The keep-masks of task vectors (rank, random and DELLA sparsifiers) and mergekit's L1 rescale
// of the kept entries.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "drivers/merge.h"
#include "drivers/merge_io.h"
#include "drivers/merge_rank_select.h"

namespace llamix {
namespace merge_detail {

// 64-bit FNV-1a of the tensor name, then splitmix64: the key of a model's random mask.
inline uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

struct MaskKey {
    uint32_t k0, k1;
    MaskKey(uint64_t seed, const std::string& name, int model) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
        const uint64_t k = splitmix64(splitmix64(seed) ^ splitmix64(h + uint64_t(model)));
        k0 = uint32_t(k);
        k1 = uint32_t(k >> 32);
    }
    // Chunks never straddle a multiple of 2^32, so the index's high half just changes the key.
    uint32_t k0_for(int64_t index) const { return k0 ^ fmix32(uint32_t(uint64_t(index) >> 32) * 0x9e3779b9u); }
};

// The keep-mask of one task vector, plus the L1 rescale factor mergekit applies to kept entries.
struct ModelMask {
    std::vector<uint8_t> bits;      // empty: keep everything (unless rule is set)
    const RankRule* rule = nullptr;  // computed per chunk in the final pass instead of stored
    float rescale = 1.0f;
};

// One model's mask: stored bits, or for a rank rule without rescaling (and unless materialize)
// the rule itself, applied chunk by chunk by the final pass. `rule` must outlive the result.
ModelMask sparsify_mask(const MergeCommon& c, const TaskVectorSource& src, const Sparsify& sp, const MaskKey& key,
                        int64_t rows, bool rescale, const RankRule& rule, bool materialize);

}  // namespace merge_detail
}  // namespace llamix
