// How a merge driver cuts one tensor into tasks: chunks of a fixed size (never dependent on the
// thread count, so results are not either), per-thread float32 scratch, and the in-order sum of
// per-task partials.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "common/thread_pool.h"

namespace llamix {
namespace merge_detail {

constexpr int64_t kChunk = 16384;  // elements per task; a power of two dividing 2^32 (mask counters)
constexpr int64_t kL1Block = 2048;  // elements a streaming pass keeps in L1 (8 KB of float32)

// Per-thread float32 scratch: `count` buffers of `len` floats for each pool thread. Left
// uninitialised (every user writes before reading): zeroing it would cost a pass per tensor.
class Scratch {
   public:
    Scratch(int count, int64_t len)
        : count_(count), len_(len), data_(new float[size_t(ThreadPool::instance().threads()) * count * len + 16]) {}
    float* get(int thread, int j) { return data_.get() + (int64_t(thread) * count_ + j) * len_; }

   private:
    int count_;
    int64_t len_;
    std::unique_ptr<float[]> data_;
};

// Element-wise methods (no reduction, so any chunking gives the same bits) take bigger tasks:
// fewer pread calls per byte read.
constexpr int64_t kStreamChunk = 4 * kChunk;

// Vectors of length L laid out as `rows` contiguous runs, each split into chunks of `chunk`
// elements (kChunk unless a method without reductions asks for more).
struct Tiling {
    int64_t rows, len, per_row, chunk;
    Tiling(int64_t n, int64_t r, int64_t c = kChunk)
        : rows(std::max<int64_t>(r, 1)), len(n / std::max<int64_t>(r, 1)), chunk(c) {
        if (rows * len != n) throw std::invalid_argument("merge: tensor size is not a multiple of the row count");
        per_row = std::max<int64_t>(1, ceil_div(len, chunk));
    }
    int64_t tasks() const { return rows * per_row; }
    int64_t row(int64_t task) const { return task / per_row; }
    int64_t begin(int64_t task) const { return row(task) * len + (task % per_row) * chunk; }
    int64_t size(int64_t task) const { return std::min(chunk, len - (task % per_row) * chunk); }
};

// Sum per-task partials row by row, in task order: deterministic for any thread count.
inline std::vector<double> sum_rows(const Tiling& tl, const std::vector<double>& part, int width) {
    std::vector<double> out(size_t(tl.rows) * width, 0.0);
    for (int64_t t = 0; t < tl.tasks(); ++t)
        for (int j = 0; j < width; ++j) out[tl.row(t) * width + j] += part[t * width + j];
    return out;
}

}  // namespace merge_detail
}  // namespace llamix
