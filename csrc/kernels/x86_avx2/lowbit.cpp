// AVX2 kernels of Q4_1, IQ4_NL (packed 16-row groups against Q8_0 activations, one 8-row half
// at a time as the Q4_0 kernel in matmul.cpp) and Q2_K, Q3_K, IQ4_XS (row dots against Q8_K:
// kernels/x86_shared/lowbit_kquant.h). Exact integer sums, combined in float32 as
// kernels/ref/lowbit_ref.cpp does: bit-identical with the reference.
#include <immintrin.h>

#include <cstring>

#include "kernels/lowbit.h"
#include "kernels/x86_shared/lowbit_kquant.h"

namespace llamix {
namespace avx2 {

namespace {

constexpr int kTile = 4;  // tokens per register tile

inline __m256i bcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

inline __m256 half_scales(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// Q4_1: unsigned nibbles, all 8 maddubs of a block summed in int16 (8 * 2 * 15 * 127 < 2^15);
// per block acc += (d_w * d_x) * isum + m_w * (d_x * sum_x).
template <int T>
void q4_1_half(const uint8_t* w, int64_t nb, const block_q8a* x, int h, float out[][8]) {
    __m256 acc[T];
    for (int i = 0; i < T; ++i) acc[i] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w + b * kQ41GroupBlockBytes;
        __m256i s[T];
        for (int i = 0; i < T; ++i) s[i] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 4 * kGroupRows + 64 * c + 32 * h));
            const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            for (int i = 0; i < T; ++i) {
                const int8_t* q = x[i * nb + b].qs;
                s[i] = _mm256_add_epi16(s[i], _mm256_maddubs_epi16(lo, bcast4(q + 4 * c)));
                s[i] = _mm256_add_epi16(s[i], _mm256_maddubs_epi16(hi, bcast4(q + 16 + 4 * c)));
            }
        }
        const __m256 dw = half_scales(blk + 16 * h), mw = half_scales(blk + 2 * kGroupRows + 16 * h);
        for (int i = 0; i < T; ++i) {
            const block_q8a& xb = x[i * nb + b];
            const __m256 prod = _mm256_mul_ps(_mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), _mm256_cvtepi32_ps(_mm256_madd_epi16(s[i], ones)));
            const __m256 mins = _mm256_mul_ps(mw, _mm256_set1_ps(xb.d * float(xb.sum)));
            acc[i] = _mm256_add_ps(acc[i], _mm256_add_ps(prod, mins));
        }
    }
    for (int i = 0; i < T; ++i) _mm256_storeu_ps(out[i], acc[i]);
}

// IQ4_NL: nibbles looked up in kvalues_iq4nl (pshufb), then |v| times x with v's sign
// (pairs at most 2 * 127 * 127, widened per piece); per block acc += (d_w * d_x) * isum.
template <int T>
void iq4_nl_half(const uint8_t* w, int64_t nb, const block_q8a* x, int h, float out[][8]) {
    __m256 acc[T];
    for (int i = 0; i < T; ++i) acc[i] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kvalues_iq4nl)));
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w + b * kQ4GroupBlockBytes;
        __m256i s[T];
        for (int i = 0; i < T; ++i) s[i] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2 * kGroupRows + 64 * c + 32 * h));
            const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(v, m4));
            const __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
            const __m256i alo = _mm256_sign_epi8(lo, lo), ahi = _mm256_sign_epi8(hi, hi);
            for (int i = 0; i < T; ++i) {
                const int8_t* q = x[i * nb + b].qs;
                const __m256i plo = _mm256_maddubs_epi16(alo, _mm256_sign_epi8(bcast4(q + 4 * c), lo));
                const __m256i phi = _mm256_maddubs_epi16(ahi, _mm256_sign_epi8(bcast4(q + 16 + 4 * c), hi));
                s[i] = _mm256_add_epi32(s[i], _mm256_add_epi32(_mm256_madd_epi16(plo, ones), _mm256_madd_epi16(phi, ones)));
            }
        }
        const __m256 dw = half_scales(blk + 16 * h);
        for (int i = 0; i < T; ++i) {
            const block_q8a& xb = x[i * nb + b];
            acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(_mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), _mm256_cvtepi32_ps(s[i])));
        }
    }
    for (int i = 0; i < T; ++i) _mm256_storeu_ps(out[i], acc[i]);
}

using HalfFn = void (*)(const uint8_t*, int64_t, const block_q8a*, int, float[][8]);

// Token tiles of kTile, then one smaller tile; results through a small buffer so padding rows
// are never written.
template <HalfFn F1, HalfFn F2, HalfFn F3, HalfFn F4>
void run_tiles(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    static constexpr HalfFn fns[kTile + 1] = {nullptr, F1, F2, F3, F4};
    float out[kTile][8];
    for (int64_t t = 0; t < n; t += kTile) {
        const int nt = int(n - t < kTile ? n - t : kTile);
        for (int h = 0; h < 2 && 8 * h < rows; ++h) {
            fns[nt](w, nb, x + t * nb, h, out);
            const int nr = rows - 8 * h < 8 ? rows - 8 * h : 8;
            for (int i = 0; i < nt; ++i) std::memcpy(y + (t + i) * y_stride + 8 * h, out[i], size_t(nr) * sizeof(float));
        }
    }
}

}  // namespace

}  // namespace avx2

void fill_lowbit_avx2(QuantKernels&, MatmulKernels& m, KQuantKernels& k) {
    using namespace avx2;
    m.gemm_q4_1 = run_tiles<q4_1_half<1>, q4_1_half<2>, q4_1_half<3>, q4_1_half<4>>;
    m.gemm_iq4_nl = run_tiles<iq4_nl_half<1>, iq4_nl_half<2>, iq4_nl_half<3>, iq4_nl_half<4>>;
    x86_shared::fill_lowbit_kquant_dots(k);
}

}  // namespace llamix
