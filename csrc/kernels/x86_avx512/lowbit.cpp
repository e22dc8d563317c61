// AVX-512 VNNI kernels of Q4_1 and IQ4_NL on the packed 16-row groups (kernels/matmul.h): one zmm
// holds 4 bytes of each of the 16 rows, vpdpbusd against a broadcast 4-byte piece of one
// activation block accumulates 16 row dots at once, as the Q4_0 kernel of matmul.cpp. IQ4_NL's
// nibbles are looked up (vpshufb) as kvalues_iq4nl + 128, unsigned, and 128 * sum_x is removed.
// Q2_K, Q3_K, IQ4_XS row dots: kernels/x86_shared/lowbit_kquant.h compiled with this folder's
// flags. Exact integer sums combined in float32 as kernels/ref/lowbit_ref.cpp: bit-identical.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstring>

#include "kernels/lowbit.h"
#include "kernels/x86_shared/lowbit_kquant.h"

namespace llamix {
namespace avx512 {

namespace {

constexpr int64_t kPrefetchBytes = 4096;  // decode: lines in flight ahead of the unpack (as Q4_0)
constexpr int kTile = 8;                  // tokens per register tile

inline __m512i bcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

inline __m512 half_scales(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }

// Q41: Q4_1 groups (d, m, nibbles); otherwise IQ4_NL groups (d, nibbles as Q4_0's).
template <bool Q41, int T>
void tile(const uint8_t* w, int64_t nb, const block_q8a* x, float* y, int64_t y_stride, __mmask16 rows) {
    constexpr int64_t kBlockBytes = Q41 ? kQ41GroupBlockBytes : kQ4GroupBlockBytes;
    constexpr int64_t kQs = Q41 ? 4 * kGroupRows : 2 * kGroupRows;
    constexpr int kOffset = Q41 ? 0 : 128;
    __m512 acc[T];
    for (int i = 0; i < T; ++i) acc[i] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    alignas(16) uint8_t levels[16];  // kvalues_iq4nl + 128
    for (int i = 0; i < 16; ++i) levels[i] = uint8_t(kvalues_iq4nl[i] + 128);
    const __m512i table = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(levels)));
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w + b * kBlockBytes;
        if constexpr (T <= 2) {
            for (int64_t o = 0; o < kBlockBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBytes + o), _MM_HINT_T0);
        }
        __m512i v[8];  // low nibbles of chunks 0..3 (elements 4c..), then high nibbles (16 + 4c..)
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m512i raw = _mm512_loadu_si512(blk + kQs + 64 * c);
            v[c] = _mm512_and_si512(raw, m4);
            v[c + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            if constexpr (!Q41) {
                v[c] = _mm512_shuffle_epi8(table, v[c]);
                v[c + 4] = _mm512_shuffle_epi8(table, v[c + 4]);
            }
        }
        const __m512 dw = half_scales(blk);
#pragma GCC unroll 8
        for (int i = 0; i < T; ++i) {
            const block_q8a& xb = x[i * nb + b];
            __m512i s0 = _mm512_set1_epi32(-kOffset * xb.sum), s1 = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int c = 0; c < 4; ++c) {
                s0 = _mm512_dpbusd_epi32(s0, v[c], bcast4(xb.qs + 4 * c));
                s1 = _mm512_dpbusd_epi32(s1, v[c + 4], bcast4(xb.qs + 16 + 4 * c));
            }
            __m512 t = _mm512_mul_ps(_mm512_mul_ps(dw, _mm512_set1_ps(xb.d)), _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)));
            if constexpr (Q41) t = _mm512_add_ps(t, _mm512_mul_ps(half_scales(blk + 2 * kGroupRows), _mm512_set1_ps(xb.d * float(xb.sum))));
            acc[i] = _mm512_add_ps(acc[i], t);
        }
    }
    for (int i = 0; i < T; ++i) _mm512_mask_storeu_ps(y + i * y_stride, rows, acc[i]);
}

using TileFn = void (*)(const uint8_t*, int64_t, const block_q8a*, float*, int64_t, __mmask16);

template <bool Q41>
void run_tiles(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    static constexpr TileFn tails[kTile] = {nullptr, tile<Q41, 1>, tile<Q41, 2>, tile<Q41, 3>,
                                            tile<Q41, 4>, tile<Q41, 5>, tile<Q41, 6>, tile<Q41, 7>};
    const __mmask16 mask = __mmask16((1u << rows) - 1);
    int64_t t = 0;
    for (; t + kTile <= n; t += kTile) tile<Q41, kTile>(w, nb, x + t * nb, y + t * y_stride, y_stride, mask);
    if (t < n) tails[n - t](w, nb, x + t * nb, y + t * y_stride, y_stride, mask);
}

}  // namespace

}  // namespace avx512

void fill_lowbit_avx512(QuantKernels&, MatmulKernels& m, KQuantKernels& k) {
    m.gemm_q4_1 = avx512::run_tiles<true>;
    m.gemm_iq4_nl = avx512::run_tiles<false>;
    x86_shared::fill_lowbit_kquant_dots(k);
}

}  // namespace llamix
