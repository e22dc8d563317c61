// The cache budget, the buffer pool and the resident inputs of the multi-pass merge methods.
#include "drivers/merge_memory.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <utility>

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
    if (std::getenv("LLAMIX_DEBUG_POOL")) std::fprintf(stderr, "pool: new %zu\n", bytes);
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

ResidentInputs::ResidentInputs(const std::vector<MergeInput>& in, int64_t n) : in_(in), mem_(in) {
    int64_t bytes = 0;
    for (const MergeInput& x : in)
        if (x.fd >= 0) bytes += n * type_size(x.type);
    if (bytes == 0 || bytes > cache_budget()) return;
    lease_.take(size_t(bytes));
    uint8_t* p = lease_.bytes();
    dst_.assign(in.size(), nullptr);
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i].fd < 0) continue;
        dst_[i] = p;
        mem_[i] = MergeInput{p, in[i].type};
        p += n * type_size(in[i].type);
    }
    on_ = true;
}

void ResidentInputs::fill(int64_t off, int64_t len) const {
    if (!on_) return;
    for (size_t i = 0; i < in_.size(); ++i)
        if (dst_[i]) copy_raw(in_[i], off, len, dst_[i] + off * type_size(in_[i].type));
}

}  // namespace merge_detail

int64_t merge_cache_budget(int64_t bytes) {
    return bytes < 0 ? merge_detail::cache_budget() : merge_detail::cache_budget_bytes().exchange(bytes);
}

}  // namespace llamix
