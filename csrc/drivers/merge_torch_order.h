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
// chunk's values in parallel and feeds them through InOrder, which runs the feeding steps in task
// order (parallel_for hands out tasks in increasing order, so the lowest unfinished task can always
// proceed).
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

namespace llamix {
namespace merge_detail {

// Runs each task's step in task order. A task that fails before or during its step aborts the
// steps still waiting (they throw), so an error never leaves a thread spinning.
class InOrder {
   public:
    class Turn {
       public:
        Turn(InOrder& io, int64_t task) : io_(io), task_(task) {}
        ~Turn() {
            if (!done_) io_.aborted_.store(true, std::memory_order_release);
        }
        Turn(const Turn&) = delete;
        Turn& operator=(const Turn&) = delete;
        template <class F>
        void run(F&& step) {
            io_.wait_for(task_);
            step();
            done_ = true;
            io_.next_.store(task_ + 1, std::memory_order_release);
        }

       private:
        InOrder& io_;
        int64_t task_;
        bool done_ = false;
    };

   private:
    void wait_for(int64_t task);
    std::atomic<int64_t> next_{0};
    std::atomic<bool> aborted_{false};
};

// torch's float32 2-norm of a row of n elements, fed in order.
class TorchNorm {
   public:
    explicit TorchNorm(int64_t n = 0) : n_(n), full_(n - n % 8) {}
    // The next len elements; len is a multiple of 8 unless the row ends with this feed.
    void feed(const float* x, int64_t len);
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
