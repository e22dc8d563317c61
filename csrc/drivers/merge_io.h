// Reading merge inputs (in memory, or from a file with pread a chunk at a time) as float32 in the
// working dtype's precision, and storing results in the output dtype.
#pragma once
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <vector>

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

// Store raw elements [off, off + len) of the output, already in its type (to memory, or staged for
// its file like store_out).
void store_raw(MergeOutput out, const void* src, int64_t off, int64_t len);

// Held by a merge writing to a file output (out.fd >= 0) from before its driver runs until after
// finish_output: one such merge at a time (merges from several Python threads take turns).
std::mutex& file_merge_mutex();

// After a driver wrote to a file output: write every staged byte (ok), or drop them all (the
// driver failed). Call once the driver has returned, holding file_merge_mutex.
void finish_output(bool ok);

// Whether every input is stored in the working precision (loading them rounds nothing): kernels
// may then read them where they are stored.
inline bool stored_as_work(const MergeCommon& c, const std::vector<MergeInput>& x) {
    return std::all_of(x.begin(), x.end(), [&](const MergeInput& in) { return c.work == QType::F32 || in.type == c.work; });
}

// Whether every input is in memory (none is read from its file with pread).
inline bool in_memory(const std::vector<MergeInput>& x) {
    return std::all_of(x.begin(), x.end(), [](const MergeInput& in) { return in.fd < 0; });
}

// dot3 (|d0|^2, |d1|^2, <d0, d1>) of the deltas x0 - base, x1 - base (x0, x1 without a base) over
// [off, off + len), read where they are stored: the bits of load_work, sub, dot3 for inputs stored
// in the working precision (stored_as_work).
inline void delta_dot3(MergeInput x0, MergeInput x1, const MergeInput* base, int64_t off, int64_t len, double out[3]) {
    double lanes[24] = {};
    kernels().merge.delta_dot3(fetch(x0, off, len, 0), x0.type, fetch(x1, off, len, 1), x1.type,
                               base ? fetch(*base, off, len, 2) : nullptr, base ? base->type : QType::F32, len, lanes);
    for (int j = 0; j < 3; ++j) out[j] = combine_lanes(lanes + 8 * j);
}

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
