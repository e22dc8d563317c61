// Memory for weights the kernels stream every token (repacked Q4_0 / Q8_0 groups).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace llamix {

// An uninitialised buffer of at least `bytes`, 64-byte aligned. Buffers of 2 MiB or more are
// aligned to 2 MiB and asked for transparent huge pages where the OS has them (Linux, THP in
// "madvise" or "always" mode), as numpy does for its large arrays: a decode streams each weight
// once, and on 4 KiB pages every 4 KiB of it costs a TLB miss (Q4_0 GEMV on Zen 5: +4-12% GB/s).
std::shared_ptr<uint8_t> allocate_weight_memory(size_t bytes);

}  // namespace llamix
