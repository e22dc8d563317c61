// The reference merge primitives, callable by SIMD variants for their tails.
#pragma once
#include "kernels/merge.h"

namespace llamix {
namespace ref {
void load(const void* src, QType type, float* dst, int64_t n);
void store(const float* src, void* dst, QType type, int64_t n);
void fma_acc(float* acc, const float* x, float w, int64_t n);
void fma_acc_typed(float* acc, const void* x, QType type, float w, int64_t n);
void div(float* x, float d, int64_t n);
void lincomb2(float* out, const float* a, float ca, const float* b, float cb, float d, int64_t n);
void sub(float* out, const float* a, const float* b, int64_t n);
void dot3(const float* a, const float* b, int64_t n, double out[3]);
void abs_sums(const float* x, const uint8_t* mask, int64_t n, double out[2]);
void random_mask(uint32_t k0, uint32_t k1, uint32_t index0, uint32_t threshold24, uint8_t* mask, int64_t n);
void range_mask(const float* x, uint32_t lo, uint32_t hi, uint8_t* mask, int64_t n);
void mask_scale(float* x, const uint8_t* mask, float s, int64_t n);
void scale(float* x, float w, int64_t n);
void consensus(const float* const* d, const float* w, int n_models, Consensus rule, float* out, float* div, int64_t n);
void accumulate(float* acc, const float* x, int64_t n);
void div_elementwise(float* x, const float* d, int64_t n);
}  // namespace ref
}  // namespace llamix
