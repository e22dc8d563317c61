// The cache budget, the buffer pool and the resident inputs of the multi-pass merge methods.
#include "drivers/merge_memory.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <utility>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/thread_pool.h"
#include "common/weight_memory.h"
#include "drivers/merge_io.h"

namespace llamix {

namespace merge_detail {

namespace {

std::atomic<int64_t>& cache_budget_bytes() {
    static std::atomic<int64_t> bytes{[] {
        const char* env = std::getenv("LLAMIX_MERGE_CACHE_MB");
        return (env && *env ? std::max<int64_t>(0, std::atoll(env)) : 512) << 20;
    }()};
    return bytes;
}

constexpr size_t kPoolBytes = size_t(512) << 20;  // kept when idle, at most

std::mutex& pool_mutex() {
    static std::mutex m;
    return m;
}

std::vector<std::pair<std::shared_ptr<uint8_t>, size_t>>& pool() {
    static std::vector<std::pair<std::shared_ptr<uint8_t>, size_t>> p;
    return p;
}

// Mapped ranges cut into pieces of at most 4 MiB (a page multiple), for the threads to share.
std::vector<std::pair<uint8_t*, size_t>> split(const std::vector<std::pair<void*, size_t>>& maps) {
    constexpr size_t kPiece = size_t(4) << 20;
    std::vector<std::pair<uint8_t*, size_t>> pieces;
    for (const auto& [p, len] : maps)
        for (size_t at = 0; at < len; at += kPiece)
            pieces.emplace_back(static_cast<uint8_t*>(p) + at, std::min(kPiece, len - at));
    return pieces;
}

}  // namespace

int64_t cache_budget() { return cache_budget_bytes().load(); }

void BufferPool::Lease::take(size_t bytes) {
    {
        std::lock_guard<std::mutex> lock(pool_mutex());
        auto& free = pool();
        size_t best = free.size();  // the smallest that fits
        for (size_t i = 0; i < free.size(); ++i)
            if (free[i].second >= bytes && (best == free.size() || free[i].second < free[best].second)) best = i;
        if (best < free.size()) {
            mem_ = std::move(free[best].first);
            size_ = free[best].second;
            free.erase(free.begin() + std::ptrdiff_t(best));
            return;
        }
    }
    mem_ = allocate_weight_memory(bytes);
    size_ = bytes;
}

BufferPool::Lease::~Lease() {
    if (!mem_) return;
    std::lock_guard<std::mutex> lock(pool_mutex());
    auto& free = pool();
    free.emplace_back(std::move(mem_), size_);
    size_t total = 0;
    for (auto& f : free) total += f.second;
    while (total > kPoolBytes && !free.empty()) {  // drop the smallest first
        auto it = std::min_element(free.begin(), free.end(), [](auto& a, auto& b) { return a.second < b.second; });
        total -= it->second;
        free.erase(it);
    }
}

ResidentInputs::ResidentInputs(const std::vector<MergeInput>& in, int64_t n, Unmapped fallback) : in_(in), mem_(in) {
    int64_t bytes = 0;
    for (const MergeInput& x : in)
        if (x.fd >= 0) bytes += n * type_size(x.type);
    if (bytes == 0 || bytes > cache_budget()) return;
    on_ = true;
    if (map_files(n)) return;
    if (fallback == Unmapped::pread) {
        on_ = false;
        return;
    }
    lease_.take(size_t(bytes));
    uint8_t* p = lease_.bytes();
    dst_.assign(in.size(), nullptr);
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i].fd < 0) continue;
        dst_[i] = p;
        mem_[i] = MergeInput{p, in[i].type};
        p += n * type_size(in[i].type);
    }
}

bool ResidentInputs::map_files(int64_t n) {
    const int64_t page = ::sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < in_.size(); ++i) {
        if (in_[i].fd < 0) continue;
        const int64_t start = in_[i].file_offset / page * page, lead = in_[i].file_offset - start;
        const size_t len = size_t(lead + n * type_size(in_[i].type));
        // a file shorter than the tensor (truncated since it was opened) is left to pread, which
        // reports it; a mapping would fault (SIGBUS) past its end
        struct stat st;
        void* m = MAP_FAILED;
        if (::fstat(in_[i].fd, &st) == 0 && int64_t(st.st_size) >= start + int64_t(len))
            m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, in_[i].fd, off_t(start));
        if (m == MAP_FAILED) {
            unmap();
            mem_ = in_;
            return false;
        }
        maps_.emplace_back(m, len);
        mem_[i] = MergeInput{static_cast<uint8_t*>(m) + lead, in_[i].type};
    }
    populate();
    return true;
}

void ResidentInputs::populate() const {
#ifdef MADV_POPULATE_READ
    // Page-table entries for every mapped page, set up by all threads at once: MAP_POPULATE would
    // have the calling thread do it alone while the others wait (5-9% of the merge's wall time
    // for linear, model_stock and task_arithmetic in this project's merge bench, compute only).
    // Where the kernel lacks it (before Linux 5.14) the pages fault in on first read instead.
    const std::vector<std::pair<uint8_t*, size_t>> pieces = split(maps_);
    ThreadPool::instance().parallel_for(int64_t(pieces.size()), [&](int64_t k, int) {
        ::madvise(pieces[size_t(k)].first, pieces[size_t(k)].second, MADV_POPULATE_READ);
    });
#endif
}

void ResidentInputs::unmap() {
    for (auto& [p, len] : maps_) ::munmap(p, len);
    maps_.clear();
}

ResidentInputs::~ResidentInputs() { unmap(); }

void ResidentInputs::fill(int64_t off, int64_t len) const {
    if (!on_ || dst_.empty()) return;
    for (size_t i = 0; i < in_.size(); ++i)
        if (dst_[i]) copy_raw(in_[i], off, len, dst_[i] + off * type_size(in_[i].type));
}

}  // namespace merge_detail

int64_t merge_cache_budget(int64_t bytes) {
    return bytes < 0 ? merge_detail::cache_budget() : merge_detail::cache_budget_bytes().exchange(bytes);
}

}  // namespace llamix
