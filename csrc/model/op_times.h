// Wall time per op of one-token forward calls (decoding), for profiling a decode step: set
// LLAMIX_OP_TIMES=1 and the process prints, at exit, each op's time per call and its share (to
// stderr); calls of several tokens are not counted. Off by default (one predictable branch per
// op); the clock is read only when it is on.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace llamix {

class OpTimes {
   public:
    enum Op { embed, norm, qkv, rope, store_kv, attention, wo, residual, gate_up, glu, down, output, n_ops };

    static OpTimes& instance() {
        static OpTimes t;
        return t;
    }
    bool on() const { return recording_; }
    void add(Op op, int64_t ns) { ns_[op] += ns; }
    // A forward call of n tokens starts: timed when it is a single token.
    void start_call(int64_t n) {
        recording_ = on_ && n == 1;
        if (recording_) ++calls_;
    }

    ~OpTimes() {
        if (!on_ || calls_ == 0) return;
        static const char* names[n_ops] = {"embed+rope tables", "rmsnorm", "q/k/v matmul", "bias/norm/rope", "store kv",
                                           "attention", "wo matmul", "residual", "gate/up matmul", "glu",
                                           "down matmul", "output norm+matmul"};
        int64_t total = 0;
        for (int64_t v : ns_) total += v;
        std::fprintf(stderr, "llamix op times over %lld forward calls (ms per call, share):\n", (long long)calls_);
        for (int i = 0; i < n_ops; ++i)
            std::fprintf(stderr, "  %-20s %8.3f  %5.1f%%\n", names[i], ns_[i] / 1e6 / double(calls_),
                         total ? 100.0 * double(ns_[i]) / double(total) : 0.0);
        std::fprintf(stderr, "  %-20s %8.3f\n", "total", total / 1e6 / double(calls_));
    }

   private:
    OpTimes() {
        const char* env = std::getenv("LLAMIX_OP_TIMES");
        on_ = env && *env && *env != '0';
    }
    bool on_ = false, recording_ = false;
    int64_t calls_ = 0;
    int64_t ns_[n_ops] = {};
};

// Times its scope as op (when LLAMIX_OP_TIMES is on).
class OpTimer {
   public:
    OpTimer(OpTimes::Op op) : op_(op), on_(OpTimes::instance().on()) {
        if (on_) t0_ = std::chrono::steady_clock::now();
    }
    ~OpTimer() {
        if (on_)
            OpTimes::instance().add(
                op_, std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0_).count());
    }

   private:
    OpTimes::Op op_;
    bool on_;
    std::chrono::steady_clock::time_point t0_;
};

}  // namespace llamix
