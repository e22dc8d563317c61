#include "model/activation_stats.h"

#include <algorithm>

#include "common/thread_pool.h"

namespace llamix {

void ActivationStats::add(int64_t layer, int point, const float* x, int64_t n, int64_t k) {
    const size_t slot = size_t(layer * kPoints + point);
    std::vector<double>& s = sums[slot];
    if (s.size() != size_t(k)) s.assign(size_t(k), 0.0);
    tokens[slot] += n;
    constexpr int64_t kCols = 256;  // columns per task: contiguous within every row
    double* sp = s.data();
    ThreadPool::instance().parallel_for((k + kCols - 1) / kCols, [&](int64_t task, int) {
        const int64_t c0 = task * kCols, c1 = std::min(k, c0 + kCols);
        for (int64_t t = 0; t < n; ++t) {
            const float* row = x + t * k;
            for (int64_t j = c0; j < c1; ++j) sp[j] += double(row[j]) * row[j];
        }
    });
}

}  // namespace llamix
