// Reads of merge inputs (pread of file-backed tensors into per-thread buffers) and the
// working-dtype rounding applied on load and store.
#include "drivers/merge_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace llamix {
namespace merge_detail {

namespace {

const void* at(MergeInput in, int64_t offset) {
    return static_cast<const uint8_t*>(in.data) + offset * type_size(in.type);
}

void read_exact(int fd, void* dst, int64_t bytes, int64_t offset) {
    auto* p = static_cast<uint8_t*>(dst);
    while (bytes > 0) {
        const ssize_t got = ::pread(fd, p, size_t(bytes), off_t(offset));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            throw std::runtime_error("merge: reading an input tensor failed at byte " + std::to_string(offset) + ": " +
                                     (got == 0 ? std::string("unexpected end of file") : std::strerror(errno)));
        p += got, bytes -= got, offset += got;
    }
}

// A per-thread byte buffer; `slot` tells apart the buffers one task holds at the same time.
uint8_t* thread_buffer(int slot, int64_t bytes) {
    static thread_local std::vector<std::vector<uint8_t>> buffers;
    if (buffers.size() <= size_t(slot)) buffers.resize(size_t(slot) + 1);
    std::vector<uint8_t>& b = buffers[size_t(slot)];
    if (b.size() < size_t(bytes)) b.resize(size_t(bytes));
    return b.data();
}

// Round float32 values to the working dtype and back (mergekit casts inputs to `dtype` on load).
void round_to(QType work, float* x, int64_t n) {
    if (work == QType::F32) return;
    const MergeKernels& K = kernels().merge;
    uint16_t tmp[1024];
    for (int64_t i = 0; i < n; i += 1024) {
        const int64_t m = std::min<int64_t>(1024, n - i);
        K.store(x + i, tmp, work, m);
        K.load(tmp, work, x + i, m);
    }
}

}  // namespace

const uint8_t* fetch(MergeInput in, int64_t off, int64_t len, int slot) {
    if (in.fd < 0) return static_cast<const uint8_t*>(at(in, off));
    const int64_t size = type_size(in.type);
    uint8_t* buf = thread_buffer(slot, len * size);
    read_exact(in.fd, buf, len * size, in.file_offset + off * size);
    return buf;
}

void copy_raw(MergeInput in, int64_t off, int64_t len, void* dst) {
    const int64_t size = type_size(in.type);
    if (in.fd >= 0) read_exact(in.fd, dst, len * size, in.file_offset + off * size);
    else std::memcpy(dst, at(in, off), size_t(len * size));
}

void load_work(const MergeCommon& c, MergeInput in, int64_t off, int64_t len, float* dst) {
    if (in.fd >= 0 && in.type == QType::F32) {
        read_exact(in.fd, dst, len * 4, in.file_offset + off * 4);  // already float32: straight in
    } else {
        kernels().merge.load(fetch(in, off, len, 0), in.type, dst, len);
    }
    if (c.work != QType::F32 && in.type != c.work) round_to(c.work, dst, len);
}

void store_out(const MergeCommon& c, float* x, MergeOutput out, int64_t off, int64_t len) {
    if (c.work != QType::F32 && c.work != out.type) round_to(c.work, x, len);
    kernels().merge.store(x, static_cast<uint8_t*>(out.data) + off * type_size(out.type), out.type, len);
}

}  // namespace merge_detail
}  // namespace llamix
