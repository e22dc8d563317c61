// Weight memory: 64-byte aligned, or huge-page aligned (and advised on Linux) for large buffers.
#include "common/weight_memory.h"

#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace llamix {

namespace {
constexpr size_t kHugePage = size_t(2) << 20;
}

std::shared_ptr<uint8_t> allocate_weight_memory(size_t bytes) {
    const size_t align = bytes >= kHugePage ? kHugePage : 64;
    const size_t size = (bytes + align - 1) / align * align;  // aligned_alloc wants a multiple
    auto* mem = static_cast<uint8_t*>(std::aligned_alloc(align, size == 0 ? align : size));
    if (!mem) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Advice only: where THP is off or unavailable the pages stay 4 KiB and nothing else changes.
    if (align == kHugePage) madvise(mem, size, MADV_HUGEPAGE);
#endif
    return std::shared_ptr<uint8_t>(mem, [](uint8_t* m) { std::free(m); });
}

}  // namespace llamix
