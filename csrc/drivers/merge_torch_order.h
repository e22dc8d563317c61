// torch's float32 reductions, step for step, for the methods whose mergekit formulas take a norm
// or a sum of a whole tensor and use it as a coefficient (Multi-SLERP, the Karcher mean, SCE's
// weights). torch sums these in float32 in a fixed order that does not depend on its thread count:
//
// - the 2-norm of a contiguous row: 8 float lanes, lane j += x[i + j]^2 (the square rounded, then
//   the add) over the whole 8-element groups in order; then lane 0 += lanes 1..7 in order; then the
//   last n % 8 squares added to it; then a float square root. On a 1M-element tensor its relative
//   error is about 1e-5, hundreds of float32 ulps of a coefficient, so an accurate norm would not
//   give mergekit's result;
// - the sum of a contiguous row (cascade_sum's inner reduction, 8-float vectors): the vectors in
//   groups of 4, each of the 4 accumulated into its own partial sum through 4 cascade levels of
//   2^max(4, ceil_log2(groups) / 4) groups each; the 0-3 vectors left over into partial 0; the
//   partials 1..3 into partial 0; a scalar sum from 0 of the last n % 8 elements, then of partial
//   0's 8 lanes; rows shorter than 8 the same over scalars.
//
// Both are sequential in the row, so the values must be fed in order: a parallel pass computes each
// chunk's values in parallel and hands them to an OrderedFeed, which feeds them in task order.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "common/formats.h"

namespace llamix {
namespace merge_detail {

// Feeds chunk values to sequential reductions in task order without making tasks wait for each
// other: a task copies its values (`arrays` arrays of up to kChunk floats) into a ring of slots
// and marks them ready; whichever thread finds the next chunk ready feeds it (one at a time), so a
// thread descheduled mid-task delays the feeding, never the other threads' work. A task waits only
// if the ring is full (its chunk is a ring's length ahead of the one being fed). finish() feeds what is
// left; call it after the parallel region.
class OrderedFeed {
   public:
    using Step = std::function<void(int64_t task, const float* const* values, int64_t len)>;
    OrderedFeed(int64_t tasks, int arrays, Step step);
    void put(int64_t task, const float* const* values, int64_t len);
    void put(int64_t task, const std::vector<float*>& values, int64_t len) { put(task, values.data(), len); }
    void put(int64_t task, const float* value, int64_t len) { put(task, &value, len); }
    // As put, for values that stay where they are until finish(): their addresses are kept, not
    // the values copied.
    void put_stable(int64_t task, const float* const* values, int64_t len);
    void put_stable(int64_t task, const std::vector<float*>& values, int64_t len) { put_stable(task, values.data(), len); }
    void put_stable(int64_t task, const float* value, int64_t len) { put_stable(task, &value, len); }
    // As put, for values written straight into the ring: slot(task) waits for the task's slot to be
    // free and returns its arrays (`arrays` of kChunk floats); publish(task, len) marks them ready.
    float* const* slot(int64_t task);
    void publish(int64_t task, int64_t len);
    void finish();
    // The task body f(task, thread) wrapped so that an exception in it stops tasks waiting for a
    // slot (they would wait for a chunk that never comes) before it propagates.
    template <class F>
    auto guard(F&& f) {
        return [this, &f](int64_t task, int th) {
            try {
                f(task, th);
            } catch (...) {
                aborted_.store(true, std::memory_order_release);
                throw;
            }
        };
    }

   private:
    static constexpr int kSlots = 64;  // at most
    // The ring's size in bytes it aims for: chunks fed soon after they are written are still in
    // L2 (a 64-slot ring of two arrays, 8 MB, made every write and read go to L3 or memory). It
    // has at least 2 slots per thread, so that no thread waits for one while others compute.
    static constexpr int64_t kRingBytes = int64_t(1) << 20;
    static int64_t slot_count(int64_t tasks, int arrays);
    void drain();
    size_t claim(int64_t task);
    void ready(int64_t task, size_t slot, int64_t len);
    int64_t tasks_;
    int arrays_;
    Step step_;
    int64_t slots_;                           // slot_count(tasks, arrays)
    std::unique_ptr<float[]> data_;           // slots x arrays x kChunk, uninitialised
    std::vector<int64_t> len_;
    std::vector<const float*> where_;         // per slot and array: the values (in data_, or stable)
    std::vector<float*> own_;                 // per slot and array: its place in data_
    std::unique_ptr<std::atomic<int64_t>[]> ready_;  // per slot: task + 1 once its values are in
    std::atomic<int64_t> next_{0};            // the next task to feed
    std::atomic<bool> draining_{false};
    std::atomic<bool> aborted_{false};
};

// torch's float32 2-norm of a row of n elements, fed in order.
class TorchNorm {
   public:
    explicit TorchNorm(int64_t n = 0) : n_(n), full_(n - n % 8) {}
    // The next len elements; len is a multiple of 8 unless the row ends with this feed.
    void feed(const float* x, int64_t len);
    // As feed, of the deltas x[i] - base[i] (x[i] without a base) of two arrays in their stored
    // types (F32, F16, BF16), float32 differences, without writing them to memory.
    void feed_deltas(const void* x, QType tx, const void* base, QType tb, int64_t len);
    float result() const;

   private:
    int64_t n_, full_, pos_ = 0;
    float lanes_[8] = {};
    std::vector<float> tail_;
};

// torch's float32 sum of a row of n elements, fed in order.
class TorchSum {
   public:
    explicit TorchSum(int64_t n = 0);
    // The next len elements; len is a multiple of 32 unless the row ends with this feed.
    void feed(const float* x, int64_t len);
    float result() const;

   private:
    void add_groups(const float* x, int64_t groups);
    int64_t n_, width_, items_, groups_, main_groups_, level_power_, level_step_;
    int64_t pos_ = 0, group_ = 0;
    std::vector<float> acc_;   // [4 levels][4 partials][width]
    std::vector<float> rest_;  // the elements after the last whole group, kept for result()
};

// torch.sum of a short list of floats (a 1-D tensor), e.g. weights.
float torch_sum(const std::vector<float>& v);

}  // namespace merge_detail
}  // namespace llamix
