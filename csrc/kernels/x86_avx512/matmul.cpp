// AVX-512 VNNI matmul kernels on the packed 16-row groups (kernels/matmul.h).
// One zmm holds 4 bytes of each of the 16 rows, so vpdpbusd against a broadcast 4-byte piece of
// one activation block accumulates 16 row dots at once: no horizontal sums. A tile of up to
// kTile tokens reuses every unpacked weight vector; decode is the same code with one token.
// Per block the integer dot is corrected by the activation sum (weights are unsigned: nibbles, or
// int8 + 128), then (d_w * d_x) * isum is added in block order, exactly as the reference does.
// GCC 12 warns inside its own headers about _mm512_undefined_*() (GCC bug 105593), e.g. in the
// _mm512_reduce_* helpers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <array>
#include <cstring>
#include <utility>

#include "kernels/matmul.h"

namespace llamix {
namespace avx512 {

void quantize_act_q8a(const float* x, block_q8a* y, int64_t k);  // x86_avx512/quant.cpp

namespace {

// Decode streams the weights once: a software prefetch this far ahead keeps more lines in flight
// than the hardware prefetcher does while the core unpacks nibbles (Q4_0: +7-10% GB/s measured;
// Q8_0, with half the work per byte, streams as fast without it).
constexpr int64_t kPrefetchBytes = 4096;
constexpr int kTile = 12;  // tokens per register tile: 12 float accumulators + 8 weight vectors + temporaries

inline __m512i bcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

inline __m512 scales(const uint8_t* blk) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
}

// acc += (d_w * d_x) * float(isum): the reference's expression, without FMA.
inline __m512 accumulate(__m512 acc, __m512 dw, const block_q8a& xb, __m512i isum) {
    const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(xb.d));
    return _mm512_add_ps(acc, _mm512_mul_ps(scale, _mm512_cvtepi32_ps(isum)));
}

// The integer dots start from -offset * sum_x, which removes the weights' unsigned offset.
// With few tokens a second chain halves the dependency chain of one token's 8 vpdpbusd; with
// many tokens the tokens themselves are independent chains.
template <int T, int Chunks, class Weights>
inline __m512i block_dot(const Weights& wv, const block_q8a& xb, int offset) {
    __m512i s0 = _mm512_set1_epi32(-offset * xb.sum);
    if constexpr (T < 4) {
        __m512i s1 = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int c = 0; c < Chunks; c += 2) {
            s0 = _mm512_dpbusd_epi32(s0, wv[c], bcast4(xb.qs + wv.offset(c)));
            s1 = _mm512_dpbusd_epi32(s1, wv[c + 1], bcast4(xb.qs + wv.offset(c + 1)));
        }
        return _mm512_add_epi32(s0, s1);
    } else {
#pragma GCC unroll 8
        for (int c = 0; c < Chunks; ++c) s0 = _mm512_dpbusd_epi32(s0, wv[c], bcast4(xb.qs + wv.offset(c)));
        return s0;
    }
}

// One block's weights of 16 rows as 8 vectors of 4 bytes per row, and where each vector's
// 4 activation bytes sit in the block.
// kMins: the group has Q4_1's layout (d, m, then the quants) and adds m_w * (d_x * sum_x).
struct Q4Weights {
    static constexpr bool kPrefetch = true, kMins = false;
    __m512i v[8];  // low nibbles of chunks 0..3, then high nibbles
    const __m512i& operator[](int c) const { return v[c]; }
    static constexpr int offset(int c) { return c < 4 ? 4 * c : 16 + 4 * (c - 4); }
    inline void load(const uint8_t* qs) {
        const __m512i m4 = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m512i raw = _mm512_loadu_si512(qs + 64 * c);
            v[c] = _mm512_and_si512(raw, m4);
            v[c + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
        }
    }
};

// Q5_0: Q4_0's nibbles with the fifth bit of chunk c moved from bit c of the qh bytes to bit 4
// (16-bit shifts by at most 4 never carry a bit across a byte's bit 4).
struct Q5Weights {
    static constexpr bool kPrefetch = true, kMins = false;
    __m512i v[8];
    const __m512i& operator[](int c) const { return v[c]; }
    static constexpr int offset(int c) { return Q4Weights::offset(c); }
    inline void load(const uint8_t* qs) {
        const __m512i m4 = _mm512_set1_epi8(0x0f), bit4 = _mm512_set1_epi8(0x10);
        const __m512i qh = _mm512_loadu_si512(qs + 4 * 64);
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m512i raw = _mm512_loadu_si512(qs + 64 * c);
            const __m512i lo = _mm512_and_si512(raw, m4), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            v[c] = _mm512_ternarylogic_epi32(lo, _mm512_slli_epi16(qh, 4 - c), bit4, 0xF8);  // lo | (h & bit4)
            v[c + 4] = _mm512_ternarylogic_epi32(hi, _mm512_srli_epi16(qh, c), bit4, 0xF8);
        }
    }
};

// Q5_1: Q5_0's quants after the rows' d and m.
struct Q51Weights : Q5Weights {
    static constexpr bool kMins = true;
};

struct Q8Weights {
    static constexpr bool kPrefetch = false, kMins = false;
    __m512i v[8];  // int8 + 128 of chunks 0..7
    const __m512i& operator[](int c) const { return v[c]; }
    static constexpr int offset(int c) { return 4 * c; }
    inline void load(const uint8_t* qs) {
#pragma GCC unroll 8
        for (int c = 0; c < 8; ++c) v[c] = _mm512_loadu_si512(qs + 64 * c);
    }
};

// G > 1 (decode): G groups at once, their blocks interleaved, so that each core keeps G memory
// streams in flight (the hardware prefetcher runs ahead on each: one stream per core streamed at
// about 0.75 of the read probe, two at 0.9). Each stream advances G times slower, so its prefetch
// leads by 1 / G the bytes (the same time ahead: measured 1.00-1.10x against the full distance).
// Each group's sums are the same operations as alone.
template <class Weights, int64_t BlockBytes, int Offset, int T, int G = 1>
void tile(const uint8_t* const* w, int64_t nb, const block_q8a* x, float* const* y, int64_t y_stride, const __mmask16* rows) {
    __m512 acc[G][T];
#pragma GCC unroll 16
    for (int s = 0; s < G; ++s)
        for (int i = 0; i < T; ++i) acc[s][i] = _mm512_setzero_ps();
#pragma GCC unroll 1
    for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 2
        for (int s = 0; s < G; ++s) {
            const uint8_t* blk = w[s] + b * BlockBytes;
            if constexpr (T <= 2 && Weights::kPrefetch) {
#pragma GCC unroll 8
                for (int64_t o = 0; o < BlockBytes; o += 64)
                    _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBytes / G + o), _MM_HINT_T0);
            }
            const __m512 dw = scales(blk);
            Weights wv;
            wv.load(blk + (Weights::kMins ? 4 : 2) * kGroupRows);
            if constexpr (Weights::kMins) {  // (d_w * d_x) * isum + m_w * (d_x * sum_x), as kernels/ref
                const __m512 mw = scales(blk + 2 * kGroupRows);
#pragma GCC unroll 16
                for (int i = 0; i < T; ++i) {
                    const block_q8a& xb = x[i * nb + b];
                    const __m512 prod = _mm512_mul_ps(_mm512_mul_ps(dw, _mm512_set1_ps(xb.d)), _mm512_cvtepi32_ps(block_dot<T, 8>(wv, xb, 0)));
                    acc[s][i] = _mm512_add_ps(acc[s][i], _mm512_add_ps(prod, _mm512_mul_ps(mw, _mm512_set1_ps(xb.d * float(xb.sum)))));
                }
            } else {
#pragma GCC unroll 16
                for (int i = 0; i < T; ++i) {
                    const block_q8a& xb = x[i * nb + b];
                    acc[s][i] = accumulate(acc[s][i], dw, xb, block_dot<T, 8>(wv, xb, Offset));
                }
            }
        }
    }
#pragma GCC unroll 16
    for (int s = 0; s < G; ++s)
        for (int i = 0; i < T; ++i) _mm512_mask_storeu_ps(y[s] + i * y_stride, rows[s], acc[s][i]);
}

// One group, T tokens.
template <class Weights, int64_t BlockBytes, int Offset, int T>
void tile1(const uint8_t* w, int64_t nb, const block_q8a* x, float* y, int64_t y_stride, __mmask16 rows) {
    tile<Weights, BlockBytes, Offset, T>(&w, nb, x, &y, y_stride, &rows);
}

// Two groups, one token (MatmulKernels::GemvPair).
template <class Weights, int64_t BlockBytes, int Offset>
void gemv_pair(const uint8_t* w0, const uint8_t* w1, int64_t nb, const void* x, float* y0, float* y1, int rows0, int rows1) {
    const uint8_t* const w[2] = {w0, w1};
    float* const y[2] = {y0, y1};
    const __mmask16 rows[2] = {__mmask16((1u << rows0) - 1), __mmask16((1u << rows1) - 1)};
    tile<Weights, BlockBytes, Offset, 1, 2>(w, nb, static_cast<const block_q8a*>(x), y, 0, rows);
}

using TileFn = void (*)(const uint8_t*, int64_t, const block_q8a*, float*, int64_t, __mmask16);

template <template <int> class K, int... I>
constexpr std::array<TileFn, sizeof...(I)> tail_table(std::integer_sequence<int, I...>) {
    return {(I == 0 ? nullptr : K<(I == 0 ? 1 : I)>::f)...};
}

// Full tiles of kTile tokens, then one smaller tile for the rest: the only tail handling.
template <template <int> class K>
void run_tiles(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    static constexpr auto tails = tail_table<K>(std::make_integer_sequence<int, kTile>{});
    const __mmask16 mask = __mmask16((1u << rows) - 1);
    int64_t t = 0;
    for (; t + kTile <= n; t += kTile) K<kTile>::f(w, nb, x + t * nb, y + t * y_stride, y_stride, mask);
    if (t < n) tails[n - t](w, nb, x + t * nb, y + t * y_stride, y_stride, mask);
}

template <int T> struct Q4 { static constexpr TileFn f = tile1<Q4Weights, kQ4GroupBlockBytes, 8, T>; };
template <int T> struct Q8 { static constexpr TileFn f = tile1<Q8Weights, kQ8GroupBlockBytes, 128, T>; };
template <int T> struct Q5 { static constexpr TileFn f = tile1<Q5Weights, kQ5GroupBlockBytes, 16, T>; };
template <int T> struct Q51 { static constexpr TileFn f = tile1<Q51Weights, kQ51GroupBlockBytes, 0, T>; };

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

// Weight rows as float32 vectors: 16 elements from element i of row r (masked for the tail).
struct LoadF32 {
    static constexpr int64_t bytes = 4;
    static __m512 at(const void* w, int64_t k, int r, int64_t i) { return _mm512_loadu_ps(static_cast<const float*>(w) + r * k + i); }
    static __m512 at(const void* w, int64_t k, int r, int64_t i, __mmask16 m) {
        return _mm512_maskz_loadu_ps(m, static_cast<const float*>(w) + r * k + i);
    }
};
struct LoadF16 {
    static constexpr int64_t bytes = 2;
    static __m512 at(const void* w, int64_t k, int r, int64_t i) {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + r * k + i)));
    }
    static __m512 at(const void* w, int64_t k, int r, int64_t i, __mmask16 m) {
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(w) + r * k + i));
    }
};
struct LoadBF16 {
    static constexpr int64_t bytes = 2;
    static __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
    static __m512 at(const void* w, int64_t k, int r, int64_t i) {
        return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + r * k + i)));
    }
    static __m512 at(const void* w, int64_t k, int r, int64_t i, __mmask16 m) {
        return widen(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(w) + r * k + i));
    }
};

// R weight rows x T tokens in R*T accumulators: each loaded vector feeds R or T FMAs.
template <class L, int R, int T>
void float_tile(const void* w, int64_t k, const float* x, float* y, int64_t y_stride) {
    __m512 acc[R][T];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    auto step = [&](int64_t i, auto... mask) {
        __m512 wv[R], xv[T];
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) wv[r] = L::at(w, k, r, i, mask...);
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
            if constexpr (sizeof...(mask) == 0) xv[t] = _mm512_loadu_ps(x + t * k + i);
            else xv[t] = _mm512_maskz_loadu_ps(mask..., x + t * k + i);
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv[r], xv[t], acc[r][t]);
    };
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) step(i);
    if (i < k) step(i, tail_mask(k - i));
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) y[t * y_stride + r] = _mm512_reduce_add_ps(acc[r][t]);
}

constexpr int kFloatTile = 4;
using FloatTileFn = void (*)(const void*, int64_t, const float*, float*, int64_t);

template <class L, int... I>
constexpr std::array<FloatTileFn, sizeof...(I)> float_tiles(std::integer_sequence<int, I...>) {
    return {float_tile<L, I / kFloatTile + 1, I % kFloatTile + 1>...};
}

// Tiles of 4 rows x 4 tokens over the whole of k (so a token's result does not depend on the
// others in the call); the last row and token tiles pick smaller instantiations.
template <class L>
void gemm_float(const void* w, int64_t rows, int64_t k, const float* x, int64_t n, float* y, int64_t y_stride) {
    static constexpr auto tiles = float_tiles<L>(std::make_integer_sequence<int, kFloatTile * kFloatTile>{});
    const auto* wb = static_cast<const uint8_t*>(w);
    for (int64_t r = 0; r < rows; r += kFloatTile) {
        const int nr = rows - r < kFloatTile ? int(rows - r) : kFloatTile;
        for (int64_t t = 0; t < n; t += kFloatTile) {
            const int nt = n - t < kFloatTile ? int(n - t) : kFloatTile;
            tiles[(nr - 1) * kFloatTile + nt - 1](wb + r * k * L::bytes, k, x + t * k, y + t * y_stride + r, y_stride);
        }
    }
}

}  // namespace

void gemm_q4_0(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    run_tiles<Q4>(w, nb, x, n, y, y_stride, rows);
}

void gemm_q8_0(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    run_tiles<Q8>(w, nb, x, n, y, y_stride, rows);
}

void gemm_q5_0(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    run_tiles<Q5>(w, nb, x, n, y, y_stride, rows);
}

void gemm_q5_1(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    run_tiles<Q51>(w, nb, x, n, y, y_stride, rows);
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
    k.gemm_q5_0 = avx512::gemm_q5_0;
    k.gemm_q5_1 = avx512::gemm_q5_1;
    k.gemv_pair_q4_0 = avx512::gemv_pair<avx512::Q4Weights, kQ4GroupBlockBytes, 8>;
    k.gemv_pair_q8_0 = avx512::gemv_pair<avx512::Q8Weights, kQ8GroupBlockBytes, 128>;
    k.gemv_pair_q5_0 = avx512::gemv_pair<avx512::Q5Weights, kQ5GroupBlockBytes, 16>;
    k.gemv_pair_q5_1 = avx512::gemv_pair<avx512::Q51Weights, kQ51GroupBlockBytes, 0>;
    k.dot_f32_f32 = avx512::dot_f32_f32;
    k.dot_f16_f32 = avx512::dot_f16_f32;
    k.dot_bf16_f32 = avx512::dot_bf16_f32;
    k.gemm_f32 = avx512::gemm_float<avx512::LoadF32>;
    k.gemm_f16 = avx512::gemm_float<avx512::LoadF16>;
    k.gemm_bf16 = avx512::gemm_float<avx512::LoadBF16>;
}

}  // namespace llamix
