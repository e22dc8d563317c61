// AVX-512 VNNI matmul kernels on the packed 16-row groups (kernels/matmul.h).
// One zmm holds 4 bytes of each of the 16 rows, so vpdpbusd against a broadcast 4-byte piece of
// one activation block accumulates 16 row dots at once: no horizontal sums. A tile of up to
// kTile tokens reuses every unpacked weight vector; decode is the same code with one token.
// Per block the integer dot is corrected by the activation sum (weights are unsigned: nibbles, or
// int8 + 128), then (d_w * d_x) * isum is added in block order, exactly as the reference does.
// GCC 12 warns inside its own headers about _mm512_undefined_*() (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "kernels/matmul.h"

namespace llamix {
namespace avx512 {

void quantize_act_q8a(const float* x, block_q8a* y, int64_t k);  // x86_avx512/quant.cpp

namespace {

constexpr int kTile = 8;  // tokens per register tile: 8 float accumulators + 8 weight vectors

inline __m512i bcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

inline __m512 scales(const uint8_t* blk) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
}

// acc += (d_w * d_x) * float(dot - offset * sum_x)
inline __m512 accumulate(__m512 acc, __m512 dw, const block_q8a& xb, __m512i dot, int offset) {
    const __m512i isum = _mm512_sub_epi32(dot, _mm512_set1_epi32(offset * xb.sum));
    const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(xb.d));
    return _mm512_add_ps(acc, _mm512_mul_ps(scale, _mm512_cvtepi32_ps(isum)));
}

template <int T>
void q4_0_tile(const uint8_t* w, int64_t nb, const block_q8a* x, float* y, int64_t y_stride, __mmask16 rows) {
    __m512 acc[T];
    for (int i = 0; i < T; ++i) acc[i] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w + b * kQ4GroupBlockBytes;
        const __m512 dw = scales(blk);
        __m512i lo[4], hi[4];
        for (int c = 0; c < 4; ++c) {
            const __m512i v = _mm512_loadu_si512(blk + 2 * kGroupRows + 64 * c);
            lo[c] = _mm512_and_si512(v, m4);
            hi[c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
        for (int i = 0; i < T; ++i) {
            const block_q8a& xb = x[i * nb + b];
            // two chains so one token's dependency chain is half as long
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int c = 0; c < 4; ++c) {
                s0 = _mm512_dpbusd_epi32(s0, lo[c], bcast4(xb.qs + 4 * c));
                s1 = _mm512_dpbusd_epi32(s1, hi[c], bcast4(xb.qs + 16 + 4 * c));
            }
            acc[i] = accumulate(acc[i], dw, xb, _mm512_add_epi32(s0, s1), 8);
        }
    }
    for (int i = 0; i < T; ++i) _mm512_mask_storeu_ps(y + i * y_stride, rows, acc[i]);
}

template <int T>
void q8_0_tile(const uint8_t* w, int64_t nb, const block_q8a* x, float* y, int64_t y_stride, __mmask16 rows) {
    __m512 acc[T];
    for (int i = 0; i < T; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w + b * kQ8GroupBlockBytes;
        const __m512 dw = scales(blk);
        __m512i q[8];
        for (int c = 0; c < 8; ++c) q[c] = _mm512_loadu_si512(blk + 2 * kGroupRows + 64 * c);
        for (int i = 0; i < T; ++i) {
            const block_q8a& xb = x[i * nb + b];
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int c = 0; c < 8; c += 2) {
                s0 = _mm512_dpbusd_epi32(s0, q[c], bcast4(xb.qs + 4 * c));
                s1 = _mm512_dpbusd_epi32(s1, q[c + 1], bcast4(xb.qs + 4 * c + 4));
            }
            acc[i] = accumulate(acc[i], dw, xb, _mm512_add_epi32(s0, s1), 128);
        }
    }
    for (int i = 0; i < T; ++i) _mm512_mask_storeu_ps(y + i * y_stride, rows, acc[i]);
}

using TileFn = void (*)(const uint8_t*, int64_t, const block_q8a*, float*, int64_t, __mmask16);

// Full tiles of kTile tokens, then one smaller tile for the rest: the only tail handling.
template <template <int> class K>
void run_tiles(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    static constexpr TileFn tails[kTile] = {nullptr, K<1>::f, K<2>::f, K<3>::f, K<4>::f, K<5>::f, K<6>::f, K<7>::f};
    const __mmask16 mask = __mmask16((1u << rows) - 1);
    int64_t t = 0;
    for (; t + kTile <= n; t += kTile) K<kTile>::f(w, nb, x + t * nb, y + t * y_stride, y_stride, mask);
    if (t < n) tails[n - t](w, nb, x + t * nb, y + t * y_stride, y_stride, mask);
}

template <int T> struct Q4 { static void f(const uint8_t* w, int64_t nb, const block_q8a* x, float* y, int64_t s, __mmask16 m) { q4_0_tile<T>(w, nb, x, y, s, m); } };
template <int T> struct Q8 { static void f(const uint8_t* w, int64_t nb, const block_q8a* x, float* y, int64_t s, __mmask16 m) { q8_0_tile<T>(w, nb, x, y, s, m); } };

// Float weights: 4 independent accumulators of 16 lanes; masked loads for the tail.
inline __mmask16 tail_mask(int64_t left) { return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1); }

template <class Load>
float dot_float(int64_t k, const float* x, Load load) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t i = 0;
    for (; i + 64 <= k; i += 64)
        for (int j = 0; j < 4; ++j)
            acc[j] = _mm512_fmadd_ps(load(i + 16 * j, __mmask16(0xffff)), _mm512_loadu_ps(x + i + 16 * j), acc[j]);
    for (; i < k; i += 16) {
        const __mmask16 m = tail_mask(k - i);
        acc[0] = _mm512_fmadd_ps(load(i, m), _mm512_maskz_loadu_ps(m, x + i), acc[0]);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

}  // namespace

void gemm_q4_0(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    run_tiles<Q4>(w, nb, x, n, y, y_stride, rows);
}

void gemm_q8_0(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    run_tiles<Q8>(w, nb, x, n, y, y_stride, rows);
}

float dot_f32_f32(int64_t k, const void* wv, const float* x) {
    const auto* w = static_cast<const float*>(wv);
    return dot_float(k, x, [w](int64_t i, __mmask16 m) { return _mm512_maskz_loadu_ps(m, w + i); });
}

float dot_f16_f32(int64_t k, const void* wv, const float* x) {
    const auto* w = static_cast<const uint16_t*>(wv);
    return dot_float(k, x, [w](int64_t i, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + i)); });
}

float dot_bf16_f32(int64_t k, const void* wv, const float* x) {
    const auto* w = static_cast<const uint16_t*>(wv);
    return dot_float(k, x, [w](int64_t i, __mmask16 m) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w + i)), 16));
    });
}

}  // namespace avx512

void fill_matmul_avx512(MatmulKernels& k) {
    k.quantize_act_q8a = avx512::quantize_act_q8a;
    k.gemm_q4_0 = avx512::gemm_q4_0;
    k.gemm_q8_0 = avx512::gemm_q8_0;
    k.dot_f32_f32 = avx512::dot_f32_f32;
    k.dot_f16_f32 = avx512::dot_f16_f32;
    k.dot_bf16_f32 = avx512::dot_bf16_f32;
}

}  // namespace llamix
