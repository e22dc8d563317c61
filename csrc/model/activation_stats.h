// Sums of squared matmul inputs per column, gathered during the forward pass when asked for:
// what llama-imatrix collects (the importance of each weight column for quantization). Four
// input points per layer: the normed attention input (q, k, v read it), the attention output
// (wo), the normed FFN input (gate, up) and the gated hidden state (down).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace llamix {

struct ActivationStats {
    enum Point : int { kAttnIn = 0, kAttnOut = 1, kFfnIn = 2, kFfnDownIn = 3, kPoints = 4 };
    std::vector<std::vector<double>> sums;  // [layer * kPoints + point] -> (k) sum over tokens of x^2
    std::vector<int64_t> tokens;            // [layer * kPoints + point] -> tokens summed

    explicit ActivationStats(int64_t n_layers) : sums(std::size_t(n_layers * kPoints)), tokens(std::size_t(n_layers * kPoints)) {}
    // Add n rows of k inputs (row-major) to (layer, point); columns split over the thread pool.
    void add(int64_t layer, int point, const float* x, int64_t n, int64_t k);
};

}  // namespace llamix
