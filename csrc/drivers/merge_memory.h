// Memory the multi-pass merge methods keep for one tensor: the cache budget, a pool of
// tensor-sized buffers reused from tensor to tensor, and a tensor's inputs held as stored.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "drivers/merge.h"

namespace llamix {
namespace merge_detail {

// The memory a multi-pass method may keep for one tensor between passes (merge_cache_budget,
// LLAMIX_MERGE_CACHE_MB, default 512 MiB; 0 turns keeping off).
int64_t cache_budget();

// Tensor-sized buffers handed from one tensor's merge to the next: a merge runs tensor after
// tensor of a few sizes, and fresh memory would have every page faulted in and zeroed again (slow
// in a VM). Huge-page memory (common/weight_memory.h); at most 512 MiB kept when idle.
class BufferPool {
   public:
    // A buffer of at least `bytes`, uninitialised, given back to the pool when it goes.
    class Lease {
       public:
        Lease() = default;
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        ~Lease();
        void take(size_t bytes);  // once
        uint8_t* bytes() const { return mem_.get(); }
        float* data() const { return reinterpret_cast<float*>(mem_.get()); }

       private:
        std::shared_ptr<uint8_t> mem_;
        size_t size_ = 0;
    };
};

// A tensor's inputs held in memory as stored (no conversion: f16 / bf16 take 2 bytes an element),
// for methods that make several passes, so that every pass reads memory instead of calling pread
// chunk by chunk. File-backed inputs are mapped (read-only, shared with the page cache, populated
// at once by all threads: no copy, and no fresh pages to zero); where mapping fails they are
// copied, the first pass reading each chunk from the file into a pooled buffer (fill). Inputs already in memory are
// used where they are. Off (the inputs as given) when the file-backed ones do not fit the cache
// budget. Mapped or copied, they count in the resident set until the tensor is done.
//
// Single-pass methods map their inputs too (fallback pread: where mapping fails they read the files
// chunk by chunk as if not resident): reading the mapped pages costs about 40% less CPU than
// pread's copy into a buffer in this project's merge bench (linear: 1.6 -> 1.0 s of CPU).
class ResidentInputs {
   public:
    enum class Unmapped { copy, pread };  // where mapping fails: copy into memory, or leave the inputs as given
    ResidentInputs(const std::vector<MergeInput>& in, int64_t n, Unmapped fallback = Unmapped::copy);
    ~ResidentInputs();
    ResidentInputs(const ResidentInputs&) = delete;
    ResidentInputs& operator=(const ResidentInputs&) = delete;
    bool on() const { return on_; }
    // Whether fill() copies anything (the inputs are read into memory, not mapped).
    bool copies() const { return on_ && !dst_.empty(); }
    // Copy elements [off, off + len) of every file-backed input into memory, unless mapped (call once
    // per chunk, in the first pass).
    void fill(int64_t off, int64_t len) const;
    // The inputs to read: in memory when on (a chunk once filled), else the inputs as given.
    const std::vector<MergeInput>& inputs() const { return on_ ? mem_ : in_; }
    const MergeInput& operator[](size_t i) const { return inputs()[i]; }

   private:
    bool map_files(int64_t n);
    void populate() const;
    void unmap();
    std::vector<MergeInput> in_, mem_;
    std::vector<std::pair<void*, size_t>> maps_;
    std::vector<uint8_t*> dst_;  // per input: where its bytes go in memory (null: used where it is)
    bool on_ = false;
    BufferPool::Lease lease_;
};

// The inputs of the methods over a base and models, in the order their ResidentInputs keep them:
// the base first, then the models; models_of gives back the models' part.
inline std::vector<MergeInput> base_first(MergeInput base, const std::vector<MergeInput>& x) {
    std::vector<MergeInput> all{base};
    all.insert(all.end(), x.begin(), x.end());
    return all;
}
inline std::vector<MergeInput> models_of(const ResidentInputs& res) {
    return std::vector<MergeInput>(res.inputs().begin() + 1, res.inputs().end());
}

}  // namespace merge_detail
}  // namespace llamix
