// The AVX2 drivers of the packed 16-row groups (kernels/matmul.h, kernels/kquant.h), written once
// for every type of this ISA folder (matmul.cpp, kquant.cpp, lowbit.cpp). A type is a struct with
//   using Act = block_q8a or block_q8_K;     // the activation blocks it multiplies
//   static constexpr int64_t kBlockBytes;     // one packed (super-)block of the 16 rows
//   static constexpr int kTile;               // tokens per GEMM tile (4, or 8 where a type unpacks into L1)
//   template <int T> static void step(const uint8_t* blk, const Act* const* a, int h, __m256* acc);
// where step adds one block of rows [8h, 8h + 8) against T tokens' activation blocks a[t] to
// acc[t], with the reference's float expression. Every driver calls step in block order for each
// row, so GEMM tiles, a lone group and decode pairs give the same bits.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/formats.h"
#include "kernels/matmul.h"

namespace llamix {
namespace avx2 {
namespace {

// The 256-element super-block types (K-quants, Q2_K, Q3_K, IQ4_XS: 1.3-3.4 KiB per group block)
// have no AVX2 pair kernels: on a Zen 3, decode pairs and one pass over both halves through the
// one-half step measured 0.68-0.98 of one half at a time in lockstep (docs/PERFORMANCE.md, "AVX2
// decode"). Each has instead a one-token `decode` of both halves that shares each activation
// broadcast between them (gemv_both below; Q4_K / Q5_K / Q6_K 1.0-1.2, Q2_K / Q3_K / IQ4_XS
// 1.06-1.4 of the one-half-at-a-time path in lockstep, docs/PERFORMANCE.md). A type without one
// would decode one half at a time, the first half prefetching the group 4 KiB ahead in software
// and the second reading it again from L2 (half_tile). The 32-block types use gemv_groups.
template <class K>
constexpr bool kSuperBlocks = K::kBlockBytes > 1024;
constexpr int64_t kSuperBlockPrefetch = 4096;
// Types with `kFarPrefetch = true` also ask for the group 16 KiB ahead with prefetcht1 in a
// one-token decode. Measured in lockstep on a Zen 3 at load 8-10 (noisy; 2 threads, 512 MiB):
// Q4_K / Q5_K 1.12-1.15x in a standalone harness (8 and 32 KiB ahead: 1.00-1.04x; two groups
// at once: 0.78-1.04x), Q6_K 1.08x (gemv_ab), Q2_K / Q3_K / IQ4_XS 0.84-0.94x (gemv_ab: left out).
constexpr int64_t kSuperBlockFarPrefetch = 16384;
// Decode's software prefetch lead for the 32-block types (288-544 bytes per group block), in bytes
// of each stream: 1 KiB, a few blocks (1-6 KiB measured within noise of each other on a Zen 3).
constexpr int64_t kPrefetchLead = 1024;

// One 8-row half of a group for T tokens (x: token t's blocks at x + t * x_stride bytes): out[t][row].
template <class K, int T>
void half_tile(const uint8_t* w, int64_t nb, const uint8_t* x, int64_t x_stride, int h, float out[][8]) {
    using Act = typename K::Act;
    __m256 acc[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
#pragma GCC unroll 1
    for (int64_t b = 0; b < nb; ++b) {
        const Act* a[T];
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) a[t] = reinterpret_cast<const Act*>(x + t * x_stride) + b;
        if constexpr (T == 1 && kSuperBlocks<K>) {
            if (h == 0)  // a decode streams the weights once (the second half then hits L2)
                for (int64_t o = 0; o < K::kBlockBytes; o += 64)
                    _mm_prefetch(reinterpret_cast<const char*>(w + b * K::kBlockBytes + kSuperBlockPrefetch + o), _MM_HINT_T0);
        }
        K::template step<T>(w + b * K::kBlockBytes, a, h, acc);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) _mm256_storeu_ps(out[t], acc[t]);
}

// Decode: G groups (G = 2: MatmulKernels::GemvPair) against one token, both halves of each in
// one pass over the blocks, the groups' blocks read alternately, so that each core keeps G memory
// streams in flight (one stream per core leaves the memory idle while the core unpacks; and two
// passes, one per half, re-read every group from L2 with no stream in flight). A type with
// `kDecodeRun = R` reads R blocks of a group in a row before the next group's turn (default 1).
template <class K, class = void>
struct DecodeRun : std::integral_constant<int, 1> {};
template <class K>
struct DecodeRun<K, std::void_t<decltype(K::kDecodeRun)>> : std::integral_constant<int, K::kDecodeRun> {};

// A 32-block type with `kGroupsDecode = true` and `template <int G> static void decode_groups(const
// uint8_t* const* blk, const Act& a, __m256 (*acc)[2][1])` (block b of the G groups, both halves,
// one token) decodes through it.
template <class K, class = void>
struct HasGroupsDecode : std::false_type {};
template <class K>
struct HasGroupsDecode<K, std::void_t<decltype(K::kGroupsDecode)>> : std::bool_constant<K::kGroupsDecode> {};

template <class K, int G>
void gemv_groups(const uint8_t* const* w, int64_t nb, const void* x, float* const* y, const int* rows) {
    using Act = typename K::Act;
    static_assert(!kSuperBlocks<K>, "the super-block types decode one half at a time (see kSuperBlocks)");
    constexpr int R = DecodeRun<K>::value;
    __m256 acc[G][2][1];
#pragma GCC unroll 4
    for (int s = 0; s < G; ++s) acc[s][0][0] = acc[s][1][0] = _mm256_setzero_ps();
    if constexpr (HasGroupsDecode<K>::value) {  // the type's own one-token step over the G groups
        const Act* a = static_cast<const Act*>(x);
#pragma GCC unroll 1
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* blk[G];
#pragma GCC unroll 4
            for (int s = 0; s < G; ++s) {
                blk[s] = w[s] + b * K::kBlockBytes;
#pragma GCC unroll 64
                for (int64_t o = 0; o < K::kBlockBytes; o += 64)
                    _mm_prefetch(reinterpret_cast<const char*>(blk[s] + kPrefetchLead + o), _MM_HINT_T0);
            }
            K::template decode_groups<G>(blk, a[b], acc);
        }
    } else {
        auto block = [&](int s, int64_t b) {
            const Act* a[1] = {static_cast<const Act*>(x) + b};
            const uint8_t* blk = w[s] + b * K::kBlockBytes;
#pragma GCC unroll 64
            for (int64_t o = 0; o < K::kBlockBytes; o += 64)
                _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchLead + o), _MM_HINT_T0);
            K::template step<1>(blk, a, 0, acc[s][0]);
            K::template step<1>(blk, a, 1, acc[s][1]);
            // a run's blocks one after the other (GCC would otherwise interleave them)
            if constexpr (R > 1) __asm__ volatile("" ::: "memory");
        };
        const int64_t nb_runs = nb / R * R;
#pragma GCC unroll 1
        for (int64_t b0 = 0; b0 < nb_runs; b0 += R) {
#pragma GCC unroll 2
            for (int s = 0; s < G; ++s)
#pragma GCC unroll 4
                for (int r = 0; r < R; ++r) block(s, b0 + r);
        }
        for (int64_t b = nb_runs; b < nb; ++b)  // an odd block count's last block (R = 2)
            for (int s = 0; s < G; ++s) block(s, b);
    }
    for (int s = 0; s < G; ++s) {
        float out[16];
        _mm256_storeu_ps(out, acc[s][0][0]);
        _mm256_storeu_ps(out + 8, acc[s][1][0]);
        std::memcpy(y[s], out, size_t(rows[s]) * sizeof(float));  // padding rows are never written
    }
}

// Super-block types with `kDecode = true` and a one-token
// `static void decode(const uint8_t* blk, const Act* a, __m256* acc)`
// (both 8-row halves of a block in one pass: acc[0], acc[1]) decode through it in one pass over
// the group, prefetching kSuperBlockPrefetch ahead; the others one half at a time (half_tile).
template <class K, class = void>
struct HasDecode : std::false_type {};
template <class K>
struct HasDecode<K, std::void_t<decltype(K::kDecode)>> : std::bool_constant<K::kDecode> {};

template <class K, class = void>
struct FarPrefetch : std::false_type {};
template <class K>
struct FarPrefetch<K, std::void_t<decltype(K::kFarPrefetch)>> : std::bool_constant<K::kFarPrefetch> {};

template <class K>
void gemv_both(const uint8_t* w, int64_t nb, const void* x, float* y, int rows) {
    using Act = typename K::Act;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
#pragma GCC unroll 1
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w + b * K::kBlockBytes;
        for (int64_t o = 0; o < K::kBlockBytes; o += 64)
            _mm_prefetch(reinterpret_cast<const char*>(blk + kSuperBlockPrefetch + o), _MM_HINT_T0);
        if constexpr (FarPrefetch<K>::value)
            for (int64_t o = 0; o < K::kBlockBytes; o += 64)
                _mm_prefetch(reinterpret_cast<const char*>(blk + kSuperBlockFarPrefetch + o), _MM_HINT_T1);
        K::decode(blk, static_cast<const Act*>(x) + b, acc);
    }
    float out[16];
    _mm256_storeu_ps(out, acc[0]);
    _mm256_storeu_ps(out + 8, acc[1]);
    std::memcpy(y, out, size_t(rows) * sizeof(float));  // padding rows are never written
}

// One group against n tokens (y[t * y_stride + row]): decode as one pass over the blocks, then
// token tiles of K::kTile and one smaller tile. Results go through a small buffer so rows beyond
// `rows` (padding) are never written.
template <class K, int... Ts>
struct TileTable {
    using Fn = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, int, float[][8]);
    static constexpr Fn fns[sizeof...(Ts) + 1] = {nullptr, half_tile<K, Ts>...};
};

template <class K, class Table>
void group_gemm(const uint8_t* w, int64_t nb, const void* xv, int64_t x_stride, int64_t n, float* y, int64_t y_stride,
                int rows) {
    const auto* x = static_cast<const uint8_t*>(xv);
    if constexpr (!kSuperBlocks<K>) {
        if (n == 1) return gemv_groups<K, 1>(&w, nb, x, &y, &rows);
    } else if constexpr (HasDecode<K>::value) {
        if (n == 1) return gemv_both<K>(w, nb, x, y, rows);
    }
    float out[K::kTile][8];
    for (int64_t t = 0; t < n; t += K::kTile) {
        const int nt = int(n - t < K::kTile ? n - t : K::kTile);
        for (int h = 0; h < 2 && 8 * h < rows; ++h) {
            Table::fns[nt](w, nb, x + t * x_stride, x_stride, h, out);
            const int nr = rows - 8 * h < 8 ? rows - 8 * h : 8;
            for (int i = 0; i < nt; ++i) std::memcpy(y + (t + i) * y_stride + 8 * h, out[i], size_t(nr) * sizeof(float));
        }
    }
}

// The kernel table's entries. MatmulKernels' gemm (Q8_0 activations, nb blocks per token row):
template <class K>
void gemm_q8a(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    static_assert(K::kTile == 4, "one tile function per token count 1..4");
    group_gemm<K, TileTable<K, 1, 2, 3, 4>>(w, nb, x, nb * int64_t(sizeof(block_q8a)), n, y, y_stride, rows);
}

// KQuantKernels' GroupGemm (Q8_K activations, xq_stride bytes apart):
template <class K>
void gemm_q8K(const uint8_t* w, int64_t nsb, const void* xq, int64_t xq_stride, int64_t n, float* y, int64_t y_stride,
              int rows) {
    static_assert(K::kTile == 4 || K::kTile == 8, "one tile function per token count 1..kTile");
    if constexpr (K::kTile == 8)
        group_gemm<K, TileTable<K, 1, 2, 3, 4, 5, 6, 7, 8>>(w, nsb, xq, xq_stride, n, y, y_stride, rows);
    else
        group_gemm<K, TileTable<K, 1, 2, 3, 4>>(w, nsb, xq, xq_stride, n, y, y_stride, rows);
}

// MatmulKernels::GemvPair: two groups of one weight, one token (the 32-block types).
template <class K>
void gemv_pair(const uint8_t* w0, const uint8_t* w1, int64_t nb, const void* x, float* y0, float* y1, int rows0,
               int rows1) {
    const uint8_t* const w[2] = {w0, w1};
    float* const y[2] = {y0, y1};
    const int rows[2] = {rows0, rows1};
    gemv_groups<K, 2>(w, nb, x, y, rows);
}

}  // namespace
}  // namespace avx2
}  // namespace llamix
