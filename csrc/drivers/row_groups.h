// How the block matmuls (Q4_0 / Q8_0 and the packed K-quant groups) share out their work: one or
// several weights, each a run of 16-row groups, against the same quantized activations.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/thread_pool.h"

namespace llamix {

// Up to this many tokens a matmul is a weight stream (decode): each thread reads one contiguous
// lane of row groups (ThreadPool::parallel_ranges). 256 KiB tasks taken in turn restarted each
// core's prefetcher every task and left one core idle at the end: lanes measured 2-5% faster.
constexpr int64_t kDecodeTokens = 7;
// Each weight group is read once per token chunk and the chunk's activations are streamed once per
// group, from L3: large chunks (a quarter of the 32 MiB L3 here) read the weights fewest times.
// Measured at 512 tokens: 512 KiB chunks (L2-sized) gave 630 GFLOP/s at 4096x11008, 8 MiB 950.
constexpr int64_t kActChunkBytes = 8 << 20;

// Calls run(job, group, t0, nt) once for every row group of every job (job j has
// first[j + 1] - first[j] groups) and every chunk of up to tokens_per_chunk (> kDecodeTokens) of
// the n tokens: a decode streams all groups in a row in per-thread lanes, a prefill runs
// (token chunk, group) tasks. Each call computes its outputs whole, so results do not depend on
// the thread count.
template <class F>
void run_row_groups(const std::vector<int64_t>& first, int64_t n, int64_t tokens_per_chunk, F&& run) {
    const int64_t groups = first.back();
    auto run_at = [&](int64_t i, int64_t t0, int64_t nt) {
        size_t j = 0;  // a short scan: a handful of jobs at most
        while (i >= first[j + 1]) ++j;
        run(j, i - first[j], t0, nt);
    };
    ThreadPool& pool = ThreadPool::instance();
    if (n <= kDecodeTokens) {
        pool.parallel_ranges(groups, 1, [&](int64_t g0, int64_t g1, int) {
            for (int64_t i = g0; i < g1; ++i) run_at(i, 0, n);
        });
        return;
    }
    pool.parallel_for(groups * ceil_div(n, tokens_per_chunk), [&](int64_t task, int) {
        const int64_t t0 = task / groups * tokens_per_chunk;
        run_at(task % groups, t0, std::min(tokens_per_chunk, n - t0));
    });
}

// One token (decode), where job j has a two-group kernel if paired[j]: run_pair(j, g0, g1) reads
// groups g0 and g1 of job j at once, their blocks alternately. A job's groups are paired (i, i + h),
// h = half its groups (an odd last group runs alone through run(j, g, 0, 1)), and each thread
// takes a lane of consecutive pairs: two streams per core, each through half of the thread's rows.
// One stream per core read 0.72-0.79 of the read probe, two 0.85-0.9 (docs/PERFORMANCE.md, GEMV
// round 6). Each output is still computed whole by one call, the same values as run alone.
template <class F, class P>
void run_row_group_pairs(const std::vector<int64_t>& first, const std::vector<char>& paired, F&& run, P&& run_pair) {
    const size_t jobs = paired.size();
    std::vector<int64_t> piece_first{0};  // each job's first piece: a pair, or a group alone
    for (size_t j = 0; j < jobs; ++j) {
        const int64_t groups = first[j + 1] - first[j];
        piece_first.push_back(piece_first.back() + (paired[j] ? groups - groups / 2 : groups));
    }
    ThreadPool::instance().parallel_ranges(piece_first.back(), 1, [&](int64_t p0, int64_t p1, int) {
        for (int64_t p = p0; p < p1; ++p) {
            size_t j = 0;  // a short scan: a handful of jobs at most
            while (p >= piece_first[j + 1]) ++j;
            const int64_t i = p - piece_first[j], groups = first[j + 1] - first[j], half = groups / 2;
            if (paired[j] && i < half)
                run_pair(j, i, i + half);
            else
                run(j, paired[j] ? groups - 1 : i, 0, 1);
        }
    });
}

}  // namespace llamix
