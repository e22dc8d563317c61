// The read-bandwidth probe (stream_read): XOR of every word, each thread one contiguous lane read
// as several interleaved streams.
#include "common/bandwidth.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>

#include "common/thread_pool.h"

namespace llamix {

namespace {
// Pieces of the buffer: each thread reads a contiguous lane of them (ThreadPool::parallel_ranges),
// and each piece as `streams` equal parts read a 64-byte line of each in turn.
constexpr int64_t kPieceBytes = 4 << 20;
constexpr int64_t kLine = 64;

// XOR of the words of `lines` lines of each of S parts, `part` bytes apart, read line by line in
// turn: S memory streams in flight on one core. 8 independent 64-bit lanes, which the compiler
// turns into vector loads (baseline code), far faster than DRAM.
template <int S>
uint64_t xor_streams(const uint8_t* p, int64_t part, int64_t lines) {
    uint64_t acc[8] = {};
    for (int64_t l = 0; l < lines; ++l)
        for (int s = 0; s < S; ++s) {
            const uint8_t* q = p + s * part + l * kLine;
            for (int j = 0; j < 8; ++j) {
                uint64_t v;
                std::memcpy(&v, q + 8 * j, 8);
                acc[j] ^= v;
            }
        }
    uint64_t r = 0;
    for (uint64_t a : acc) r ^= a;
    return r;
}

uint64_t xor_piece(const uint8_t* p, int64_t bytes, int streams) {
    const int64_t lines = bytes / (kLine * streams), part = lines * kLine;
    uint64_t r = 0;
    switch (streams) {
        case 1: r = xor_streams<1>(p, part, lines); break;
        case 2: r = xor_streams<2>(p, part, lines); break;
        case 4: r = xor_streams<4>(p, part, lines); break;
        case 8: r = xor_streams<8>(p, part, lines); break;
        default: r = xor_streams<16>(p, part, lines); break;
    }
    for (int64_t i = streams * part; i + 8 <= bytes; i += 8) {  // the tail
        uint64_t v;
        std::memcpy(&v, p + i, 8);
        r ^= v;
    }
    return r;
}
}  // namespace

uint64_t stream_read(const void* data, int64_t bytes, int streams) {
    if (streams != 1 && streams != 2 && streams != 4 && streams != 8 && streams != 16)
        throw std::invalid_argument("stream_read: streams must be 1, 2, 4, 8 or 16");
    const auto* p = static_cast<const uint8_t*>(data);
    std::atomic<uint64_t> result{0};
    ThreadPool::instance().parallel_ranges(ceil_div(bytes, kPieceBytes), 1, [&](int64_t b0, int64_t b1, int) {
        const int64_t begin = b0 * kPieceBytes, end = std::min(bytes, b1 * kPieceBytes);
        uint64_t r = 0;
        for (int64_t o = begin; o < end; o += kPieceBytes) r ^= xor_piece(p + o, std::min(kPieceBytes, end - o) / 8 * 8, streams);
        result.fetch_xor(r, std::memory_order_relaxed);
    });
    return result.load();
}

}  // namespace llamix
