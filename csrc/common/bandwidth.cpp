// The read-bandwidth probe (stream_read): XOR of every word, in per-thread 1 MiB chunks.
#include "common/bandwidth.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "common/thread_pool.h"

namespace llamix {

namespace {
constexpr int64_t kChunkBytes = 1 << 20;  // contiguous per task, so each core's prefetcher streams
constexpr int64_t kPrefetchBytes = 4096;

// Baseline code: 8 independent 64-bit lanes the compiler turns into SSE2 loads, far faster than
// DRAM, so the probe measures memory and not the loop.
uint64_t xor_words(const uint8_t* p, int64_t n_words) {
    uint64_t acc[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n_words; i += 8) {
        __builtin_prefetch(p + 8 * i + kPrefetchBytes);  // more lines in flight than the hardware prefetcher keeps
        for (int j = 0; j < 8; ++j) {
            uint64_t v;
            std::memcpy(&v, p + 8 * (i + j), 8);
            acc[j] ^= v;
        }
    }
    for (; i < n_words; ++i) {
        uint64_t v;
        std::memcpy(&v, p + 8 * i, 8);
        acc[0] ^= v;
    }
    uint64_t r = 0;
    for (uint64_t a : acc) r ^= a;
    return r;
}
}  // namespace

uint64_t stream_read(const void* data, int64_t bytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    std::atomic<uint64_t> result{0};
    ThreadPool::instance().parallel_for(ceil_div(bytes, kChunkBytes), [&](int64_t t, int) {
        const int64_t begin = t * kChunkBytes, end = std::min(bytes, begin + kChunkBytes);
        result.fetch_xor(xor_words(p + begin, (end - begin) / 8), std::memory_order_relaxed);
    });
    return result.load();
}

}  // namespace llamix
