// The bf16 attention products (kernels/ops.h, attn_bf16_*) on AVX2: the exact emulation of
// TDPBF16PS (kernels/ref/tdpbf16.h) as in the AVX-512 variant, 8 lanes wide: float32 FMA chains
// under MXCSR DAZ + FTZ, even and odd apart, then c + (even + odd). The packing stays the
// reference's (this level serves only an explicit attn_precision="bf16" without AVX-512).
#include <immintrin.h>

#include <cstring>

#include "kernels/ops.h"
#include "kernels/x86_shared/denormals_as_zero.h"

namespace llamix {
namespace avx2 {

namespace {

inline float bf16_scalar(uint16_t h) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline __m256 even_of(__m256i pairs) { return _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16)); }
inline __m256 odd_of(__m256i pairs) {
    return _mm256_castsi256_ps(_mm256_and_si256(pairs, _mm256_set1_epi32(int(0xffff0000u))));
}

// Rows r0..r0+NR-1 of s against keys 8 h .. 8 h + 7.
template <int NR>
inline void scores_rows(const uint16_t* q, int64_t r0, int64_t hd32, const uint16_t* kp, float* s) {
    for (int64_t h = 0; h < 8; ++h) {
        __m256 acc[NR];
        for (int i = 0; i < NR; ++i) acc[i] = _mm256_setzero_ps();
        for (int64_t b = 0; b < hd32 / 32; ++b) {
            const uint16_t* blk = kp + (b * 4 + h / 2) * 512 + 16 * (h % 2);
            __m256 e[NR], o[NR];
            for (int i = 0; i < NR; ++i) e[i] = o[i] = _mm256_setzero_ps();
            for (int64_t i2 = 0; i2 < 16; ++i2) {
                const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32 * i2));
                const __m256 ke = even_of(pairs), ko = odd_of(pairs);
                for (int i = 0; i < NR; ++i) {
                    const uint16_t* qr = q + (r0 + i) * hd32 + 32 * b + 2 * i2;
                    e[i] = _mm256_fmadd_ps(_mm256_set1_ps(bf16_scalar(qr[0])), ke, e[i]);
                    o[i] = _mm256_fmadd_ps(_mm256_set1_ps(bf16_scalar(qr[1])), ko, o[i]);
                }
            }
            for (int i = 0; i < NR; ++i) acc[i] = _mm256_add_ps(acc[i], _mm256_add_ps(e[i], o[i]));
        }
        for (int i = 0; i < NR; ++i) _mm256_storeu_ps(s + (r0 + i) * kAttnTile + 8 * h, acc[i]);
    }
}

__attribute__((noinline)) void scores_daz(const uint16_t* q, int64_t n_rows, int64_t hd32, const uint16_t* kp, float* s) {
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) scores_rows<4>(q, r, hd32, kp, s);
    for (; r < n_rows; ++r) scores_rows<1>(q, r, hd32, kp, s);
}

// Output columns 8 h .. 8 h + 7 of rows r0..r0+NR-1, both 32-key blocks in order.
template <int NR>
inline void accumulate_rows(const uint16_t* p, int64_t r0, int64_t hd32, const uint16_t* vp, float* o) {
    const int64_t col_blocks = hd32 / 16;
    for (int64_t h = 0; h < hd32 / 8; ++h) {
        __m256 acc[NR];
        for (int i = 0; i < NR; ++i) acc[i] = _mm256_loadu_ps(o + (r0 + i) * hd32 + 8 * h);
        for (int64_t b = 0; b < 2; ++b) {
            const uint16_t* blk = vp + (b * col_blocks + h / 2) * 512 + 16 * (h % 2);
            __m256 e[NR], od[NR];
            for (int i = 0; i < NR; ++i) e[i] = od[i] = _mm256_setzero_ps();
            for (int64_t i2 = 0; i2 < 16; ++i2) {
                const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32 * i2));
                const __m256 ve = even_of(pairs), vo = odd_of(pairs);
                for (int i = 0; i < NR; ++i) {
                    const uint16_t* pr = p + (r0 + i) * kAttnTile + 32 * b + 2 * i2;
                    e[i] = _mm256_fmadd_ps(_mm256_set1_ps(bf16_scalar(pr[0])), ve, e[i]);
                    od[i] = _mm256_fmadd_ps(_mm256_set1_ps(bf16_scalar(pr[1])), vo, od[i]);
                }
            }
            for (int i = 0; i < NR; ++i) acc[i] = _mm256_add_ps(acc[i], _mm256_add_ps(e[i], od[i]));
        }
        for (int i = 0; i < NR; ++i) _mm256_storeu_ps(o + (r0 + i) * hd32 + 8 * h, acc[i]);
    }
}

__attribute__((noinline)) void accumulate_daz(const uint16_t* p, int64_t n_rows, int64_t hd32, const uint16_t* vp,
                                              float* o) {
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) accumulate_rows<4>(p, r, hd32, vp, o);
    for (; r < n_rows; ++r) accumulate_rows<1>(p, r, hd32, vp, o);
}

// o rows times alpha (float32, under the caller's MXCSR), rows whose alpha is 1 left alone.
__attribute__((noinline)) void scale_rows(int64_t n_rows, int64_t hd32, const float* alpha, float* o) {
    for (int64_t r = 0; r < n_rows; ++r) {
        if (alpha[r] == 1.0f) continue;
        const __m256 a = _mm256_set1_ps(alpha[r]);
        for (int64_t c = 0; c < hd32; c += 8)
            _mm256_storeu_ps(o + r * hd32 + c, _mm256_mul_ps(a, _mm256_loadu_ps(o + r * hd32 + c)));
    }
}

}  // namespace

void attn_bf16_scores(const uint16_t* q, int64_t n_rows, int64_t hd32, const uint16_t* kp, float* s) {
    DenormalsAsZero daz;
    scores_daz(q, n_rows, hd32, kp, s);
}

void attn_bf16_accumulate(const uint16_t* p, int64_t n_rows, int64_t hd32, const uint16_t* vp, const float* alpha,
                          float* o) {
    scale_rows(n_rows, hd32, alpha, o);
    DenormalsAsZero daz;
    accumulate_daz(p, n_rows, hd32, vp, o);
}

}  // namespace avx2

void fill_attn_bf16_tiles_avx2(OpsKernels& k) {
    k.attn_bf16_scores = avx2::attn_bf16_scores;
    k.attn_bf16_accumulate = avx2::attn_bf16_accumulate;
}

}  // namespace llamix
