// The Q8_K activation quantizer (KQuantKernels::quantize_act_q8_K), written once with 256-bit
// AVX2 intrinsics and compiled by each x86 ISA folder that includes it (internal linkage, a
// template of the including ISA's tag type, as kernels/x86_shared/lowbit_kquant.h). Bytes equal
// kernels/ref/kquant_ref.cpp's: the same float operations (amax, d = amax / 127, 1 / d, x * id,
// round half away from zero, clamp to +-127; no FMA); a block holding a NaN is handed to it.
#pragma once
#if !defined(__AVX2__)
#error "kernels/x86_shared/ is ISA code: include it only from an x86 ISA folder"
#endif
#include <immintrin.h>

#include <cstdint>

#include "kernels/kquant.h"

namespace llamix {
namespace x86_shared {
namespace {

template <class Isa>
inline __m256 q8k_abs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// roundf, then non-finite lanes to 0 and saturation to [-127, 127], as the reference
template <class Isa>
inline __m256i q8k_round(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 away = _mm256_cmp_ps(q8k_abs<Isa>(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, _mm256_set1_ps(-0.0f)));
    __m256 r = _mm256_add_ps(t, _mm256_and_ps(away, one));
    r = _mm256_and_ps(r, _mm256_cmp_ps(q8k_abs<Isa>(r), _mm256_set1_ps(__builtin_inff()), _CMP_LT_OQ));
    r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    return _mm256_cvtps_epi32(r);
}

template <class Isa>
void quantize_act_q8_K(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q8_K*>(out);
    for (int64_t b = 0; b < k / QK_K; ++b, x += QK_K) {
        __m256 m = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
        for (int i = 0; i < QK_K; i += 8) {
            const __m256 v = _mm256_loadu_ps(x + i);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            m = _mm256_max_ps(m, q8k_abs<Isa>(v));
        }
        if (!_mm256_testz_ps(nan, nan)) {
            ref::quantize_act_q8_K(x, y + b, QK_K);
            continue;
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float d = _mm_cvtss_f32(h) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = d;
        const __m256 vid = _mm256_set1_ps(id);
        for (int g = 0; g < QK_K / 16; ++g) {  // 16 quants: their bytes and their sum
            const __m256i q0 = q8k_round<Isa>(_mm256_mul_ps(_mm256_loadu_ps(x + 16 * g), vid));
            const __m256i q1 = q8k_round<Isa>(_mm256_mul_ps(_mm256_loadu_ps(x + 16 * g + 8), vid));
            const __m256i w = _mm256_packs_epi32(q0, q1);  // int16: q0[0..3] q1[0..3] | q0[4..7] q1[4..7]
            const __m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
            const __m128i bytes = _mm_shuffle_epi32(_mm_packs_epi16(lo, hi), _MM_SHUFFLE(3, 1, 2, 0));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].qs + 16 * g), bytes);
            __m128i s = _mm_add_epi32(_mm256_castsi256_si128(_mm256_add_epi32(q0, q1)), _mm256_extracti128_si256(_mm256_add_epi32(q0, q1), 1));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
            y[b].bsums[g] = int16_t(_mm_cvtsi128_si32(s));
        }
    }
}

}  // namespace
}  // namespace x86_shared
}  // namespace llamix
