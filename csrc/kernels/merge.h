// Merge primitives (weighted sums, SLERP, task-vector sparsify / sign consensus); the threaded
// per-tensor drivers built on them are in drivers/merge.h.
//
// The table holds element-wise kernels on float32 chunks; every ISA must produce the same bits
// as the reference (ref/merge_ref.cpp is the spec):
// - no contraction: a*b + c is two roundings unless the kernel says "fused";
// - reductions accumulate in double over 8 lanes, element i going to lane i % 8, lanes combined
//   as ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)). Products of two floats are exact in double, so the
//   result depends only on this order, never on the ISA or on the thread count (the drivers sum
//   chunk partials of a fixed size in chunk order).
// - random masks come from mask_hash(key, element index): a counter-based generator, so a mask
//   is the same for any order, thread count or ISA.
#pragma once
#include <cstdint>

#include "common/formats.h"
#include "common/fp16.h"

namespace llamix {

// Sign-consensus rules of TIES (Yadav et al. 2023): majority sign by summed mass or by count.
enum class Consensus : int { none = 0, sum = 1, count = 2 };

// Lane sums of one chunk: out[j] accumulates over elements i with i % 8 == j.
inline double combine_lanes(const double l[8]) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// murmur3's 32-bit finaliser: a bijection with good avalanche.
inline uint32_t fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

// Counter-based random bits for element `index` under a 64-bit key (two 32-bit halves).
// Tensors are < 2^32 elements per 32-bit counter block; the high half of the index is folded
// into the key by the drivers (MaskKey::k0_for in drivers/).
inline uint32_t mask_hash(uint32_t k0, uint32_t k1, uint32_t index) {
    return fmix32(fmix32(index ^ k0) + k1);
}

// 1 / d when d is a power of two whose reciprocal is a normal float, else 0: then x * (1 / d)
// is x / d exactly (both round the same exact value), for every x.
inline float exact_reciprocal(float d) {
    const uint32_t b = f32_bits(d), e = (b >> 23) & 0xffu;
    if ((b & 0x7fffffu) != 0 || e < 2 || e > 252) return 0.0f;  // not 2^k, or 2^-k not normal
    return 1.0f / d;
}

// Multi-SLERP's element-wise work (drivers/merge_more.cpp, mergekit 0.1.5's multislerp), one stage
// per pass over the inputs. Per element, each operation rounded to float32, in this order:
//   d_m = x_m - b (x_m itself without a base);  u_m = d_m / den[m];
//   mean = ((w[0] u_0 + w[1] u_1) + w[2] u_2) + ...;  mn = mean / mean_norm;
//   t_m = u_m + (-dots[m]) mn;  acc = t_0 w[0], then acc = acc + w[m] t_m for m >= 1;
//   r = ((cos_tn mn + sinc acc) avg_norm) + b (no + b without a base).
// What a stage writes: deltas: out[m] = d_m; mean: out[0] = mean; dots: out[m] = u_m mn;
// tangent: out[0] = acc; result: out[0] = r; tangent_result: out[0] = acc and out[1] = r (the
// driver's pass 4 and 5 in one, where it can tell in advance that cos_tn and sinc are 1). The same
// bits as the driver's former chain of load / sub / div / lincomb2 / mul / scale / add calls, in
// one pass over registers.
enum class SlerpStage : int { deltas, mean, dots, tangent, result, tangent_result };
struct MultislerpArgs {
    int n_models = 0;                // at least 2
    const void* const* x = nullptr;  // the models' elements 0 .. n-1, of types type[m] (F32, F16, BF16)
    const QType* type = nullptr;
    const void* base = nullptr;      // null: no base
    QType base_type = QType::F32;
    const float* w = nullptr;        // per model: weight, |d_m| + eps, dot with the mean
    const float* den = nullptr;
    const float* dots = nullptr;
    float mean_norm = 1.0f, cos_tn = 1.0f, sinc = 0.0f, avg_norm = 1.0f;
};

// The Karcher mean's iteration (drivers/merge_more.cpp, karcher_step below): k inputs of types
// type[p] (F32, F16, BF16), the norms they are divided by, and the iteration's coefficients.
struct KarcherArgs {
    int k = 0;
    const void* const* x = nullptr;
    const QType* type = nullptr;
    const float* norm = nullptr;
    const float* recip = nullptr;  // per input: karcher_recip(norm[p], type[p]) (0: divide), or null
    const float* dot = nullptr;
    const float* coef = nullptr;
    float div = 0.0f, tn = 1.0f, cos_tn = 1.0f, sin_tn = 0.0f;
    // true: an earlier karcher_step over the same inputs, norms, recip, off and n returned true
    // (its units were all in the reciprocal's exact range), so this one need not test them again
    bool in_range = false;
};

struct MergeKernels {
    // dst[i] = float(src[i]); src is float32, float16 or bfloat16 (QType F32/F16/BF16).
    void (*load)(const void* src, QType type, float* dst, int64_t n) = nullptr;
    // dst[i] = src[i] rounded (nearest even) to type.
    void (*store)(const float* src, void* dst, QType type, int64_t n) = nullptr;
    // acc[i] = fma(x[i], w, acc[i])  (fused: one rounding, as torch's addcmul_ on CPU)
    void (*fma_acc)(float* acc, const float* x, float w, int64_t n) = nullptr;
    // acc[i] = fma(float(x[i]), w, acc[i]) with x of type F32/F16/BF16 read in place (load + fma_acc
    // without the float32 copy)
    void (*fma_acc_typed)(float* acc, const void* x, QType type, float w, int64_t n) = nullptr;
    // out[i] = fma(float(x[k-1][i]), w[k-1], ... fma(float(x[0][i]), w[0], 0.0f)) / d: linear's weighted
    // sum of k inputs of types F32/F16/BF16 read in place, one pass (d == 1: no division). The same
    // bits as filling acc with zeros, k fma_acc_typed calls, then div.
    void (*weighted_sum)(float* out, const void* const* x, const QType* type, const float* w, int k, float d,
                         int64_t n) = nullptr;
    // out[i] = ((((float(x[0][i]) - b) * w[0]) + ... + ((float(x[k-1][i]) - b) * w[k-1])) / d) * lambda + b
    // with b = float(base[i]): task arithmetic's base plus its weighted deltas (no masks), the inputs
    // of types F32/F16/BF16 read in place, one pass (d == 1: no division; lambda == 1: no multiply).
    // The same bits as load, sub and scale per model, the deltas added in model order, div, scale,
    // then add the base.
    void (*task_sum)(float* out, const void* base, QType tb, const void* const* x, const QType* type, const float* w,
                     int k, float d, float lambda, int64_t n) = nullptr;
    // out[i] = (ca * ((float(x[0][i]) + ... + float(x[k-1][i])) / k)) + (cb * float(base[i])): Model
    // Stock's mix of the models' mean and the base, the inputs of types F32/F16/BF16 read in place,
    // one pass. The same bits as load, add per model, div by k, then lincomb2(ca, cb, 1).
    void (*stock_mix)(float* out, const void* base, QType tb, const void* const* x, const QType* type, int k, float ca,
                      float cb, int64_t n) = nullptr;
    // x[i] = x[i] / d
    void (*div)(float* x, float d, int64_t n) = nullptr;
    // out[i] = ((ca * a[i]) + (cb * b[i])) / d, each operation rounded
    void (*lincomb2)(float* out, const float* a, float ca, const float* b, float cb, float d, int64_t n) = nullptr;
    // out[i] = a[i] - b[i]
    void (*sub)(float* out, const float* a, const float* b, int64_t n) = nullptr;
    // Lane sums (see above) of a*a, b*b, a*b in double: out[0..2]. b may equal a.
    void (*dot3)(const float* a, const float* b, int64_t n, double out[3]) = nullptr;
    // dot3 of the deltas d_k = float(x_k[i]) - float(base[i]) (one float32 rounding; d_k = float(x_k[i])
    // when base is null), the inputs of types F32/F16/BF16 read in place, ADDED to the running lanes
    // lanes[0..7] (d0*d0), lanes[8..15] (d1*d1), lanes[16..23] (d0*d1), element i to lane i % 8. From
    // zero lanes, one call, then combine_lanes: the bits of sub, sub, dot3 on float32 copies. A
    // chunk may be fed in several calls of multiples of 8 elements.
    void (*delta_dot3)(const void* x0, QType t0, const void* x1, QType t1, const void* base, QType tb, int64_t n,
                       double lanes[24]) = nullptr;
    // Lane sum of |x[i]|, and of |x[i]| where bit i of mask is set: out[0], out[1].
    // mask may be null (then out[1] = out[0]). The chunk starts at a multiple of 8 elements.
    void (*abs_sums)(const float* x, const uint8_t* mask, int64_t n, double out[2]) = nullptr;
    // Bit i of mask = (mask_hash(k0, k1, index0 + i) >> 8) < threshold24  (keep with probability
    // threshold24 / 2^24). n is a multiple of 8 except for the last chunk; index0 % 8 == 0.
    void (*random_mask)(uint32_t k0, uint32_t k1, uint32_t index0, uint32_t threshold24, uint8_t* mask,
                        int64_t n) = nullptr;
    // h[i] = mask_hash(k0, k1, index0 + i) >> 8: the 24-bit draws of random_mask, for a caller
    // whose threshold differs per element (DELLA's rank-dependent densities).
    void (*mask_hash24)(uint32_t k0, uint32_t k1, uint32_t index0, uint32_t* h, int64_t n) = nullptr;
    // The rank of element i among n keys, ascending, ties by index: #{j : key[j] < key[i]} +
    // #{j < i : key[j] == key[i]} (keys <= 0x7fffffff).
    int64_t (*rank_of)(const uint32_t* key, int64_t n, int64_t i) = nullptr;
    // Bit i of mask = lo <= key(x[i]) <= hi with key = the bits of |x[i]| as uint32 (an
    // order-preserving integer; lo, hi <= 0x7fffffff). The chunk starts at a multiple of 8.
    void (*range_mask)(const float* x, uint32_t lo, uint32_t hi, uint8_t* mask, int64_t n) = nullptr;
    // x[i] = mask bit i ? x[i] * s : 0 (x times a 0/1 mask, then rescaled, as mergekit does
    // (x * m) * s); s == 1 skips the multiply. mask may be null (keep all).
    void (*mask_scale)(float* x, const uint8_t* mask, float s, int64_t n) = nullptr;
    // x[i] = x[i] * w
    void (*scale)(float* x, float w, int64_t n) = nullptr;
    // The TIES vote over n_models weighted deltas d[m] (each n floats), weights w[m]:
    //   sum:   sigma = (sum_m d[m][i]) >= 0 ? +1 : -1     count: sigma = (sum_m sign d[m][i]) >= 0 ? +1 : -1
    //   agree_m = sign(d[m][i]) == sigma   (a zero never agrees)
    //   out[i] = sum_m (agree_m ? d[m][i] : 0), div[i] = sum_m (agree_m ? w[m] : 0), 0 -> 1
    // Sums run in model order from the first term, in float32.
    void (*consensus)(const float* const* d, const float* w, int n_models, Consensus rule, float* out, float* div,
                      int64_t n) = nullptr;
    // acc[i] += x[i]   (plain float32 add)
    void (*add)(float* acc, const float* x, int64_t n) = nullptr;
    // x[i] = x[i] / d[i]
    void (*div_elementwise)(float* x, const float* d, int64_t n) = nullptr;

    // --- nearswap, RAM, SCE and arcee_fusion (drivers/merge_more.cpp) ---
    // One Karcher iteration on float32 elements, every operation rounded, in this order (mergekit's
    // float32 steps; the bits of load, div, then per model 2 lincomb2, div, lincomb2), over the units
    // u_p = float(x[p][off + i]) / norm[p] of the inputs read where they are stored (KarcherArgs):
    //   if div != 0: m = m / div;  tan = +0;  for p < k: tan = tan + coef[p] * (u_p + (-dot[p]) * m);
    //   tan = tan / tn;  m = cos_tn * m + sin_tn * tan.
    // m holds the call's n elements (m[i] is element off + i). Returns true when every input has a
    // reciprocal and the units of every whole SIMD vector were formed with it (none divided), a
    // property of the inputs, norms and element range alone: a later call over the same ones may
    // then set a.in_range and skip the test (same bits). The reference returns false.
    bool (*karcher_step)(const KarcherArgs& a, float* m, int64_t off, int64_t n) = nullptr;
    // The reciprocal karcher_step may multiply by instead of dividing by d for every input of type
    // t (F16 or BF16: its 65536 values checked, all bits equal to x / d), else 0 (it divides).
    float (*karcher_recip)(float d, QType t) = nullptr;
    // NearSwap: w = min(max((1 / max(|a[i] - b[i]|, 1e-6)) * t, 0), 1); out[i] = w b[i] + (1 - w) a[i],
    // every operation rounded (mergekit's t / x is torch's reciprocal(x) * t). NaN propagates.
    void (*nearswap)(const float* a, const float* b, float t, float* out, int64_t n) = nullptr;
    // RAM over n_models task vectors d[m]: z_m = d[m][i] if |d[m][i]| > eps else d[m][i] * 0, c the
    // number of models with |d| > eps; out[i] = sum_m (((z_m * [c == 1]) * lambda[m]) + (z_m * [c > 1]) / max(c, 1)),
    // summed in model order from the first term (lambda[m] == 1 for plain RAM).
    void (*ram)(const float* const* d, const float* lambda, int n_models, float eps, float* out, int64_t n) = nullptr;
    // RAM+ counts, added to shared[m] / unique[m]: elements where |d[m]| > eps and c > 1 / c == 1.
    void (*ram_counts)(const float* const* d, int n_models, float eps, int64_t* shared, int64_t* unique,
                       int64_t n) = nullptr;
    // out[i] = float(population variance over m of d[m][i]): mean and squares summed in double in
    // model order, one division each, rounded once to float32.
    void (*variance)(const float* const* d, int n_models, float* out, int64_t n) = nullptr;
    // SCE: sigma = (sum_m d[m][i]) >= 0 ? +1 : -1 (float32, model order); e_m = w[m] * [sign d[m][i] == sigma];
    // out[i] = (sum_m d[m][i] * e_m) / max(sum_m e_m, 1e-6), sums in model order from the first term.
    void (*sce)(const float* const* d, const float* w, int n_models, float* out, int64_t n) = nullptr;
    // The largest x[i], NaN ignored (-inf when there is none).
    float (*max)(const float* x, int64_t n) = nullptr;
    // e[i] = exp_f32(x[i] - m) (merge_math.h); returns the lane sum of e in double.
    double (*exp_sum)(const float* x, float m, float* e, int64_t n) = nullptr;
    // Lane sum in double of p * log_f32(p / q) with p = ex[i] * sx + eps, q = ey[i] * sy + eps, each
    // operation rounded to float32 (one row's KL divergence).
    double (*kl_sum)(const float* ex, float sx, const float* ey, float sy, float eps, int64_t n) = nullptr;
    // x[i] = |x[i]| * s
    void (*abs_scale)(float* x, float s, int64_t n) = nullptr;
    // x[i] = x[i] * (key[i] >= th ? 1 : 0)  (a dropped entry keeps its sign: x * 0)
    void (*keep_ge)(float* x, const float* key, float th, int64_t n) = nullptr;
    // out[i] = a[i] * b[i]
    void (*mul)(float* out, const float* a, const float* b, int64_t n) = nullptr;

    // --- torch's float32 reduction orders (drivers/merge_torch_order.h) ---
    // lanes[j] = lanes[j] + x[i + j] * x[i + j] for i = 0, 8, 16, ... (n a multiple of 8; each
    // product rounded, then the add): the loop of torch's 2-norm over a contiguous row.
    void (*sq_lanes8)(float* lanes, const float* x, int64_t n) = nullptr;
    // sq_lanes8 over the deltas d = x[i] - base[i] (d = x[i] without a base), read where they are
    // stored (F32, F16 or BF16): lanes[j] = lanes[j] + d * d for i = 0, 8, 16, ... (n a multiple of
    // 8; the difference, the product and the add each rounded to float32, as sq_lanes8 over the
    // float32 deltas). Multi-SLERP's first pass, one model's chain per call.
    void (*delta_sq_lanes8)(float* lanes, const void* x, QType tx, const void* base, QType tb, int64_t n) = nullptr;
    // acc[k][j] = acc[k][j] + x[32 g + 8 k + j] for g = 0 .. groups - 1, k < 4, j < 8 (float32, in g
    // order): the inner loop of torch's cascade sum over 8-float vectors.
    void (*sum_groups32)(float* acc, const float* x, int64_t groups) = nullptr;

    // --- Multi-SLERP (see SlerpStage above) ---
    void (*multislerp)(const MultislerpArgs& a, SlerpStage stage, float* const* out, int64_t n) = nullptr;
};

void fill_merge_ref(MergeKernels& k);
void fill_merge_avx2(MergeKernels& k);
void fill_merge_avx512(MergeKernels& k);
// the primitives of nearswap, RAM, SCE and arcee_fusion (merge_more.cpp), called by the above
void fill_merge_more_ref(MergeKernels& k);
void fill_merge_more_avx2(MergeKernels& k);
void fill_merge_more_avx512(MergeKernels& k);
void fill_merge_neon(MergeKernels& k);

}  // namespace llamix
