// Quantizers for the low-bit GGUF types people publish (Q4_1, Q2_K, Q3_K, IQ4_NL, IQ4_XS), the
// K-quants (Q4_K, Q5_K, Q6_K) and importance-weighted versions of Q4_0/Q5_0/Q5_1 (the mixes'
// fallbacks), each minimising
//     sum_i w_i (x_i - dequantized_i)^2
// over a row, where w_i = importance_i * sqrt(sigma2 + x_i^2) as llama.cpp weights it
// (importance: llama-imatrix's mean squared activation of the input column; sigma2: a mean
// square of the weights around x_i; Q6_K: importance_i alone). When no importance is given,
// Q4_K, Q5_K, IQ4_NL and IQ4_XS take importance_i = 1 in that formula, the others w_i = 1.
// Block layouts are ggml's (ggml-common.h); values
// are what gguf.quants.dequantize computes. Reference (scalar) code: the search, not the memory
// traffic, is the cost, and rows are spread over the thread pool by the binding.
#pragma once
#include <cstdint>

namespace llamix {
namespace lowbit {

// GGUF (ggml_type) ids of the types written here.
enum Type : int { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, IQ4_NL = 20, IQ4_XS = 23 };

bool supported(int type);
int64_t block_elems(int type);  // weights per block (32 or 256)
int64_t block_bytes(int type);  // bytes per block

// One row of k floats (k a multiple of block_elems) -> its blocks. `importance`: k non-negative
// weights, or null (see above). Q4_1 without importance is ggml's reference quantizer
// (byte-identical with gguf.quants.quantize); every other case is a weighted least-squares search.
void quantize_row(int type, const float* x, void* y, int64_t k, const float* importance);

}  // namespace lowbit
}  // namespace llamix
