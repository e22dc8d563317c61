// AVX2 matmul kernels on the packed 16-row groups (kernels/matmul.h), one 8-row half at a time:
// a ymm holds 4 bytes of each of 8 rows, pmaddubsw against a broadcast 4-byte piece of one
// activation block gives each row two int16 partial sums, pmaddwd with ones folds them to int32.
// Q4_0: nibbles (0..15) times int8 (|x| <= 127) keep all 8 partial sums of a block within int16
// (8 * 2 * 15 * 127 = 30480), so one pmaddwd per block suffices. Q8_0 uses the sign trick
// (|w| times sign-adjusted activations) and widens per 4-byte piece. The float accumulation is the
// reference's: (d_w * d_x) * float(isum), added in block order. Each type is one block step;
// token_tiles.h runs it as GEMM tiles, a lone group, or a decode pair (both halves of two groups).
#include <immintrin.h>

#include <cstring>

#include "kernels/matmul.h"
#include "kernels/x86_avx2/token_tiles.h"

namespace llamix {
namespace avx2 {

void quantize_act_q8a(const float* x, block_q8a* y, int64_t k);  // x86_avx2/quant.cpp

namespace {

inline __m256i bcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

inline __m256 accumulate(__m256 acc, __m256 dw, const block_q8a& xb, __m256i dot, int offset) {
    const __m256i isum = _mm256_sub_epi32(dot, _mm256_set1_epi32(offset * xb.sum));
    const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(xb.d));
    return _mm256_add_ps(acc, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(isum)));
}

// The packed nibble formats: Q4_0 (d, nibbles; q - 8), Q5_0 (d, nibbles, fifth bits; q - 16) and
// Q5_1 (d, m, nibbles, fifth bits; d * q + m).
enum class Nibbles { q4_0, q5_0, q5_1 };

// One block of rows [8h, 8h + 8) against T tokens (the step of token_tiles.h), chunk by chunk,
// so only one chunk's unpacked weights, T int16 sums and T float accumulators are live (16 ymm).
// Q5 adds the fifth bits (bit c of the qh bytes to bit 4, as the AVX-512 kernel). Unsigned 5-bit
// weights times int8 reach 2 * 31 * 127 per pmaddubsw lane, so Q5 widens each chunk's two products
// (at most 15748 in int16) to int32; Q4_0's 8 products of a block fit int16 (30480), one widening.
// Q5_1 adds Q4_1's min term, m_w * (d_x * sum_x), to each block's product before accumulating.
template <Nibbles F>
struct NibbleGroups {
    using Act = block_q8a;
    static constexpr bool Q5 = F != Nibbles::q4_0, kMins = F == Nibbles::q5_1;
    static constexpr int64_t kBlockBytes = F == Nibbles::q4_0 ? kQ4GroupBlockBytes
                                           : F == Nibbles::q5_0 ? kQ5GroupBlockBytes
                                                                : kQ51GroupBlockBytes;
    static constexpr int kTile = 4;
    static constexpr int64_t kQs = kMins ? 4 * kGroupRows : 2 * kGroupRows;
    static constexpr int kOffset = F == Nibbles::q4_0 ? 8 : F == Nibbles::q5_0 ? 16 : 0;

    template <int T>
    static inline void step(const uint8_t* blk, const block_q8a* const* x, int h, __m256* acc) {
        const __m256i m4 = _mm256_set1_epi8(0x0f), bit4 = _mm256_set1_epi8(0x10), ones = _mm256_set1_epi16(1);
        __m256i qh = _mm256_setzero_si256();
        if constexpr (Q5) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQs + 256 + 32 * h));
        __m256i s[T];
#pragma GCC unroll 4
        for (int i = 0; i < T; ++i) s[i] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQs + 64 * c + 32 * h));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if constexpr (Q5) {
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(qh, 4 - c), bit4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_srli_epi16(qh, c), bit4));
            }
#pragma GCC unroll 4
            for (int i = 0; i < T; ++i) {
                const int8_t* q = x[i]->qs;
                const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, bcast4(q + 4 * c)),
                                                   _mm256_maddubs_epi16(hi, bcast4(q + 16 + 4 * c)));
                if constexpr (Q5) s[i] = _mm256_add_epi32(s[i], _mm256_madd_epi16(p, ones));
                else s[i] = _mm256_add_epi16(s[i], p);
            }
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * h)));
        const __m256 mw = kMins ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2 * kGroupRows + 16 * h)))
                                : _mm256_setzero_ps();
#pragma GCC unroll 4
        for (int i = 0; i < T; ++i) {
            const block_q8a& xb = *x[i];
            const __m256i isum = Q5 ? s[i] : _mm256_madd_epi16(s[i], ones);
            if constexpr (kMins) {  // (d_w * d_x) * isum + m_w * (d_x * sum_x), as kernels/ref
                const __m256 prod = _mm256_mul_ps(_mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), _mm256_cvtepi32_ps(isum));
                acc[i] = _mm256_add_ps(acc[i], _mm256_add_ps(prod, _mm256_mul_ps(mw, _mm256_set1_ps(xb.d * float(xb.sum)))));
            } else {
                acc[i] = accumulate(acc[i], dw, xb, isum, kOffset);
            }
        }
    }
};

// Q8_0: the sign trick (|w| times sign-adjusted activations), widened per 4-byte piece; each
// chunk's weights are unpacked once for the T tokens. A decode pair reads two blocks (1088
// bytes, 17 lines) of a group before the other group's turn (kDecodeRun): on a Zen 3 with two
// threads from memory 1.09-1.17x of one block per turn in lockstep (docs/PERFORMANCE.md, "Q8_0
// and IQ4_NL decode"); the other 32-block types measured 0.94-1.02x with runs of 2 or 4.
struct Q8Groups {
    using Act = block_q8a;
    static constexpr int64_t kBlockBytes = kQ8GroupBlockBytes;
    static constexpr int kTile = 4;
    static constexpr int kDecodeRun = 2;

    template <int T>
    static inline void step(const uint8_t* blk, const block_q8a* const* x, int h, __m256* acc) {
        const __m256i bias = _mm256_set1_epi8(char(0x80)), ones = _mm256_set1_epi16(1);
        __m256i s[T];
#pragma GCC unroll 4
        for (int i = 0; i < T; ++i) s[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int c = 0; c < 8; ++c) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2 * kGroupRows + 64 * c + 32 * h));
            const __m256i ws = _mm256_xor_si256(v, bias);  // back to int8
            const __m256i aw = _mm256_sign_epi8(ws, ws);
#pragma GCC unroll 4
            for (int i = 0; i < T; ++i) {
                // |w| times x with w's sign: x is within [-127, 127], so negating it never overflows
                // (a weight of -128, which other tools may write, becomes 128 unsigned)
                const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(bcast4(x[i]->qs + 4 * c), ws));
                s[i] = _mm256_add_epi32(s[i], _mm256_madd_epi16(p, ones));
            }
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * h)));
#pragma GCC unroll 4
        for (int i = 0; i < T; ++i) acc[i] = accumulate(acc[i], dw, *x[i], s[i], 0);
    }
};

// Float weights: 4 accumulators of 8 lanes; the tail goes through a zero-padded vector.
inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

template <class W, class Load>
float dot_float(int64_t k, const W* w, const float* x, Load load) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= k; i += 32)
        for (int j = 0; j < 4; ++j) acc[j] = _mm256_fmadd_ps(load(w + i + 8 * j), _mm256_loadu_ps(x + i + 8 * j), acc[j]);
    for (; i + 8 <= k; i += 8) acc[0] = _mm256_fmadd_ps(load(w + i), _mm256_loadu_ps(x + i), acc[0]);
    if (i < k) {
        W wt[8] = {};
        float xt[8] = {};
        std::memcpy(wt, w + i, size_t(k - i) * sizeof(W));
        std::memcpy(xt, x + i, size_t(k - i) * sizeof(float));
        acc[1] = _mm256_fmadd_ps(load(wt), _mm256_loadu_ps(xt), acc[1]);
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
}

}  // namespace

float dot_f32_f32(int64_t k, const void* w, const float* x) {
    return dot_float(k, static_cast<const float*>(w), x, [](const float* p) { return _mm256_loadu_ps(p); });
}

float dot_f16_f32(int64_t k, const void* w, const float* x) {
    return dot_float(k, static_cast<const uint16_t*>(w), x, [](const uint16_t* p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    });
}

float dot_bf16_f32(int64_t k, const void* w, const float* x) {
    return dot_float(k, static_cast<const uint16_t*>(w), x, [](const uint16_t* p) {
        const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
    });
}

// Float weights, many rows and tokens: this ISA's row dots (the weight row stays in L1 across tokens).
template <float (*Dot)(int64_t, const void*, const float*), int64_t ElemBytes>
void gemm_float(const void* w, int64_t rows, int64_t k, const float* x, int64_t n, float* y, int64_t y_stride) {
    const auto* wb = static_cast<const uint8_t*>(w);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t t = 0; t < n; ++t) y[t * y_stride + r] = Dot(k, wb + r * k * ElemBytes, x + t * k);
}

}  // namespace avx2

void fill_matmul_avx2(MatmulKernels& k) {
    k.quantize_act_q8a = avx2::quantize_act_q8a;
    using namespace avx2;
    k.gemm_q4_0 = gemm_q8a<NibbleGroups<Nibbles::q4_0>>;
    k.gemm_q8_0 = gemm_q8a<Q8Groups>;
    k.gemm_q5_0 = gemm_q8a<NibbleGroups<Nibbles::q5_0>>;
    k.gemm_q5_1 = gemm_q8a<NibbleGroups<Nibbles::q5_1>>;
    k.gemv_pair_q4_0 = gemv_pair<NibbleGroups<Nibbles::q4_0>>;
    k.gemv_pair_q8_0 = gemv_pair<Q8Groups>;
    k.gemv_pair_q5_0 = gemv_pair<NibbleGroups<Nibbles::q5_0>>;
    k.gemv_pair_q5_1 = gemv_pair<NibbleGroups<Nibbles::q5_1>>;
    k.dot_f32_f32 = avx2::dot_f32_f32;
    k.dot_f16_f32 = avx2::dot_f16_f32;
    k.dot_bf16_f32 = avx2::dot_bf16_f32;
    k.gemm_f16 = avx2::gemm_float<avx2::dot_f16_f32, 2>;
    k.gemm_bf16 = avx2::gemm_float<avx2::dot_bf16_f32, 2>;
    k.gemm_f32 = avx2::gemm_float<avx2::dot_f32_f32, 4>;
}

}  // namespace llamix
