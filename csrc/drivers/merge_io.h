// Reading merge inputs (in memory, or from a file with pread a chunk at a time) as float32 in the
// working dtype's precision, and storing results in the output dtype.
#pragma once
#include <algorithm>
#include <cstdint>

#include "drivers/merge.h"
#include "drivers/merge_tiling.h"
#include "kernels/kernels.h"

namespace llamix {
namespace merge_detail {

inline int64_t type_size(QType t) { return t == QType::F32 ? 4 : 2; }

// Elements [off, off + len) of an input in its stored type: in place, or read into the calling
// thread's buffer `slot` (valid until that slot is fetched into again).
const uint8_t* fetch(MergeInput in, int64_t off, int64_t len, int slot);

// Copy elements [off, off + len) of an input, in its stored type, to dst (read straight there
// from its file, or copied from memory).
void copy_raw(MergeInput in, int64_t off, int64_t len, void* dst);

// Load elements [off, off + len) of an input as float32 in the working dtype's precision.
void load_work(const MergeCommon& c, MergeInput in, int64_t off, int64_t len, float* dst);

// Store a float32 result: rounded to the working dtype first when that is narrower than the
// output (mergekit's result lives in the working dtype before `out_dtype` converts it).
void store_out(const MergeCommon& c, float* x, MergeOutput out, int64_t off, int64_t len);

// f(off, len) for each L1-sized block of [begin, end), with both inputs' elements there loaded
// into a and b (float32, working precision); each input's range is read once, in place or from
// its file. Streaming passes stay in L1 instead of round-tripping whole chunks through L2.
template <class F>
void for_l1_blocks(const MergeCommon& c, MergeInput x, MergeInput y, int64_t begin, int64_t end, float* a, float* b,
                   F&& f) {
    const uint8_t* px = fetch(x, begin, end - begin, 0);
    const uint8_t* py = fetch(y, begin, end - begin, 1);
    for (int64_t off = begin; off < end; off += kL1Block) {
        const int64_t len = std::min(kL1Block, end - off);
        load_work(c, MergeInput{px + (off - begin) * type_size(x.type), x.type}, 0, len, a);
        load_work(c, MergeInput{py + (off - begin) * type_size(y.type), y.type}, 0, len, b);
        f(off, len);
    }
}

// The task vector x - base of one model, loaded chunk by chunk.
class TaskVectorSource {
   public:
    TaskVectorSource(const MergeCommon& c, MergeInput base, MergeInput x) : c_(c), base_(base), x_(x) {}
    // delta = x - base over [off, off + len) into d; b is scratch.
    void delta(int64_t off, int64_t len, float* d, float* b) const {
        load_work(c_, base_, off, len, b);
        load_work(c_, x_, off, len, d);
        kernels().merge.sub(d, d, b, len);
    }

   private:
    const MergeCommon& c_;
    MergeInput base_, x_;
};

}  // namespace merge_detail
}  // namespace llamix
