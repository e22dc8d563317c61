// A STREAM-like read-bandwidth probe: reads a buffer once with the thread pool (benchmarks
// compare kernels' effective GB/s with what this machine's memory delivers in the same run).
#pragma once
#include <cstdint>

namespace llamix {

// XOR of all 64-bit words of data (bytes rounded down to 8). Each thread reads a contiguous lane
// of 4 MiB pieces, each piece as `streams` (1, 2, 4, 8 or 16) equal parts read a line of each in
// turn: one stream per core leaves a Zen 3's memory partly idle (a single stream per thread read
// ~15-25% below numpy's float32 matvec, which OpenBLAS runs over 4 rows at a time).
uint64_t stream_read(const void* data, int64_t bytes, int streams = 4);

}  // namespace llamix
