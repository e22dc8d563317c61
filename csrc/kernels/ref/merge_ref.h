// The reference merge primitives, callable by SIMD variants for their tails.
#pragma once
#include "kernels/merge.h"

namespace llamix {
namespace ref {
void load(const void* src, QType type, float* dst, int64_t n);
void store(const float* src, void* dst, QType type, int64_t n);
void fma_acc(float* acc, const float* x, float w, int64_t n);
void fma_acc_typed(float* acc, const void* x, QType type, float w, int64_t n);
void weighted_sum(float* out, const void* const* x, const QType* type, const float* w, int k, float d, int64_t n);
// weighted_sum's elements [begin, n) (the SIMD variants' tails)
void weighted_sum_from(float* out, const void* const* x, const QType* type, const float* w, int k, float d,
                       int64_t begin, int64_t n);
void task_sum(float* out, const void* base, QType tb, const void* const* x, const QType* type, const float* w, int k,
              float d, float lambda, int64_t n);
// task_sum's elements [begin, n) (the SIMD variants' tails)
void task_sum_from(float* out, const void* base, QType tb, const void* const* x, const QType* type, const float* w,
                   int k, float d, float lambda, int64_t begin, int64_t n);
void stock_mix(float* out, const void* base, QType tb, const void* const* x, const QType* type, int k, float ca,
               float cb, int64_t n);
// stock_mix's elements [begin, n) (the SIMD variants' tails)
void stock_mix_from(float* out, const void* base, QType tb, const void* const* x, const QType* type, int k, float ca,
                    float cb, int64_t begin, int64_t n);
void div(float* x, float d, int64_t n);
void lincomb2(float* out, const float* a, float ca, const float* b, float cb, float d, int64_t n);
bool karcher_step(const KarcherArgs& a, float* m, int64_t off, int64_t n);
// karcher_step's elements [begin, n) (the SIMD variants' tails)
void karcher_step_from(const KarcherArgs& a, float* m, int64_t off, int64_t begin, int64_t n);
float karcher_recip(float d, QType t);
void sub(float* out, const float* a, const float* b, int64_t n);
void dot3(const float* a, const float* b, int64_t n, double out[3]);
void delta_dot3(const void* x0, QType t0, const void* x1, QType t1, const void* base, QType tb, int64_t n,
                double lanes[24]);
void abs_sums(const float* x, const uint8_t* mask, int64_t n, double out[2]);
void random_mask(uint32_t k0, uint32_t k1, uint32_t index0, uint32_t threshold24, uint8_t* mask, int64_t n);
int64_t rank_of(const uint32_t* key, int64_t n, int64_t i);
void mask_hash24(uint32_t k0, uint32_t k1, uint32_t index0, uint32_t* h, int64_t n);
void range_mask(const float* x, uint32_t lo, uint32_t hi, uint8_t* mask, int64_t n);
void mask_scale(float* x, const uint8_t* mask, float s, int64_t n);
void scale(float* x, float w, int64_t n);
void consensus(const float* const* d, const float* w, int n_models, Consensus rule, float* out, float* div, int64_t n);
void accumulate(float* acc, const float* x, int64_t n);
void div_elementwise(float* x, const float* d, int64_t n);
void nearswap(const float* a, const float* b, float t, float* out, int64_t n);
void ram(const float* const* d, const float* lambda, int n_models, float eps, float* out, int64_t n);
void ram_counts(const float* const* d, int n_models, float eps, int64_t* shared, int64_t* unique, int64_t n);
void variance(const float* const* d, int n_models, float* out, int64_t n);
void sce(const float* const* d, const float* w, int n_models, float* out, int64_t n);
float max(const float* x, int64_t n);
double exp_sum(const float* x, float m, float* e, int64_t n);
double kl_sum(const float* ex, float sx, const float* ey, float sy, float eps, int64_t n);
void abs_scale(float* x, float s, int64_t n);
void keep_ge(float* x, const float* key, float th, int64_t n);
void mul(float* out, const float* a, const float* b, int64_t n);
void sq_lanes8(float* lanes, const float* x, int64_t n);
void sum_groups32(float* acc, const float* x, int64_t groups);
void delta_sq_lanes8(float* lanes, const void* x, QType tx, const void* base, QType tb, int64_t n);
void multislerp(const MultislerpArgs& a, SlerpStage stage, float* const* out, int64_t n);
// multislerp's elements [begin, n) (the SIMD variants' tails)
void multislerp_from(const MultislerpArgs& a, SlerpStage stage, float* const* out, int64_t begin, int64_t n);
}  // namespace ref
}  // namespace llamix
