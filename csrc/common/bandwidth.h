// A STREAM-like read-bandwidth probe: reads a buffer once with the thread pool (benchmarks
// compare kernels' effective GB/s with what this machine's memory delivers in the same run).
#pragma once
#include <cstdint>

namespace llamix {

// XOR of all 64-bit words of data (bytes rounded down to 8), read in parallel chunks.
uint64_t stream_read(const void* data, int64_t bytes);

}  // namespace llamix
