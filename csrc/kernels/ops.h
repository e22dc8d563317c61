// The transformer's hot operations (everything but the matmuls), float32.
// Reference semantics in kernels/ref/ops_ref.cpp; SIMD variants must match them to float32
// rounding (their exp is a polynomial accurate to a few ulp).
#pragma once
#include <cstdint>

namespace llamix {

// GELU's tanh approximation: 2 sqrt(2/pi) and the cubic coefficient, shared by every variant.
constexpr float kGeluTwoSqrt2OverPi = 1.5957691216057308f;
constexpr float kGeluCubic = 0.044715f;
// Keys per flash-attention tile (the attn_tile_* entries below).
constexpr int64_t kAttnTile = 64;

struct OpsKernels {
    // y = x / sqrt(mean(x^2) + eps) * w, one row of n.
    void (*rmsnorm)(const float* x, const float* w, float* y, int64_t n, float eps) = nullptr;
    // RoPE on adjacent pairs (Meta / GGUF layout), in place: x is (n_heads, head_dim); pair i of
    // every head (x[2i], x[2i+1]) is rotated by the angle whose cosine and sine are cos[i], sin[i].
    void (*rope)(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) = nullptr;
    // SwiGLU: y = silu(g) * u = g / (1 + exp(-g)) * u, n elements.
    void (*swiglu)(const float* g, const float* u, float* y, int64_t n) = nullptr;
    // GeGLU with GELU's tanh approximation (Gemma): y = gelu_tanh(g) * u, n elements, where
    //   gelu_tanh(g) = 0.5 g (1 + tanh(z)) = g / (1 + exp(-2z)),  z = sqrt(2/pi) (g + 0.044715 g^3)
    // (the second form has no cancellation). z is computed with the same float32 operations in
    // every variant; only exp differs (a polynomial in the SIMD variants, a few ulp from libm's).
    void (*geglu)(const float* g, const float* u, float* y, int64_t n) = nullptr;
    // y += x, n elements (the residual connection).
    void (*add)(float* y, const float* x, int64_t n) = nullptr;
    // One query of one head against n_keys cached positions:
    //   s_j = scale * dot(q, k_j);  p = softmax(s);  out = sum_j p_j v_j
    // q, out: (head_dim); k_j = k + j * stride, v_j = v + j * stride (float32);
    // scratch: n_keys floats.
    void (*attention)(const float* q, const float* k, const float* v, int64_t stride, int64_t n_keys,
                      int64_t head_dim, float scale, float* out, float* scratch) = nullptr;
    // Grouped-query attention: n_q query heads that share one key/value head, in one pass over the
    // keys and values (the cache is read once for the group instead of once per head). Optional:
    // callers go through attention_group() (drivers/attention.h), which loops over attention()
    // where it is unset.
    // q: n_q rows q_stride apart; out: n_q rows out_stride apart; scratch: n_q * n_keys floats.
    // Each head's result is defined as attention() of that head.
    void (*attention_group)(const float* q, int64_t q_stride, int64_t n_q, const float* k, const float* v,
                            int64_t stride, int64_t n_keys, int64_t head_dim, float scale, float* out,
                            int64_t out_stride, float* scratch) = nullptr;
    void (*attention_group_f16)(const float* q, int64_t q_stride, int64_t n_q, const uint16_t* k, const uint16_t* v,
                                int64_t stride, int64_t n_keys, int64_t head_dim, float scale, float* out,
                                int64_t out_stride, float* scratch) = nullptr;
    // The same with keys and values stored as fp16 (IEEE half bit patterns).
    void (*attention_f16)(const float* q, const uint16_t* k, const uint16_t* v, int64_t stride, int64_t n_keys,
                          int64_t head_dim, float scale, float* out, float* scratch) = nullptr;

    // Flash-attention tiles (Dao et al. 2022, "FlashAttention"), driven by attention_causal()
    // (drivers/attention.h): a tile is kAttnTile keys; rows are query heads, head_dim floats each.
    // kt (head_dim, kAttnTile) = the tile's keys k (kAttnTile, head_dim) transposed.
    void (*attn_tile_transpose)(const float* k, int64_t head_dim, float* kt) = nullptr;
    // s (n_rows, kAttnTile) = q (n_rows, head_dim) . kt (q already scaled).
    void (*attn_tile_scores)(const float* q, int64_t n_rows, int64_t head_dim, const float* kt, float* s) = nullptr;
    // Online softmax of a tile of scores, row by row (-inf marks a masked key):
    //   m' = max(m[r], max_j s[r][j]);  s[r][j] <- exp(s[r][j] - m') (exactly 0 where masked);
    //   alpha[r] = exp(m[r] - m');  l[r] <- alpha[r] l[r] + sum_j s[r][j];  m[r] <- m'.
    // A row with no key yet (m' = -inf) gets alpha 1 and zeros. alpha is exactly 1 when m' = m.
    void (*attn_tile_softmax)(float* s, int64_t n_rows, float* m, float* l, float* alpha) = nullptr;
    // Optional (nullptr: attn_tile_softmax, then the probabilities rounded by f32_to_bf16): the
    // bf16 products' softmax, attn_tile_softmax's contract with the probabilities written rounded
    // to bf16 (nearest even, NaN kept quiet) into pb (n_rows, kAttnTile) in one pass (s is left
    // undefined); its exp may differ from attn_tile_softmax's (the bf16 rounding follows it).
    void (*attn_tile_softmax_bf16)(float* s, int64_t n_rows, float* m, float* l, float* alpha,
                                   uint16_t* pb) = nullptr;
    // o (n_rows, head_dim) = alpha[r] o + p (n_rows, kAttnTile) . v (kAttnTile, head_dim).
    void (*attn_tile_accumulate)(const float* p, int64_t n_rows, const float* v, int64_t head_dim,
                                 const float* alpha, float* o) = nullptr;
    // Optional (nullptr: the driver widens the tile to float32 and calls the entries above):
    // attn_tile_scores and attn_tile_accumulate reading an F16 tile (kt (head_dim, kAttnTile),
    // v (kAttnTile, head_dim)) straight from the cache, widening in registers; the same float32
    // arithmetic in the same order as the float32 entries of the same table, so the same bits.
    // next: the next tile's keys (values) in the cache, fetched into cache a line at a time while
    // this one computes (nullptr: none); it does not change the result.
    void (*attn_tile_scores_f16)(const float* q, int64_t n_rows, int64_t head_dim, const uint16_t* kt, float* s,
                                 const uint16_t* next) = nullptr;
    void (*attn_tile_accumulate_f16)(const float* p, int64_t n_rows, const uint16_t* v, int64_t head_dim,
                                     const float* alpha, float* o, const uint16_t* next) = nullptr;

    // bf16 attention products (attn_precision "bf16"; drivers/attention.h): the products of a tile
    // in the arithmetic of AMX's TDPBF16PS, which every variant reproduces bit for bit
    // (kernels/ref/tdpbf16.h is the spec). A block of 32 bf16 products a_i b_i added to a float32
    // c gives  c + (e + o),  e = the chain of the 16 even products from +0, o = the 16 odd ones,
    // each step one fused multiply-add rounded to nearest even (the product of two bf16 is exact),
    // denormal inputs read as zero and denormal results flushed to zero; no MXCSR dependence.
    // Operands (hd32 = head_dim rounded up to a multiple of 32, zero padded):
    //   q, p: bf16 rows, q (n_rows, hd32), p (n_rows, kAttnTile);
    //   kp: a tile's keys as (hd32 / 32) x 4 blocks of 512 bf16, block (b, n) at (b * 4 + n) * 512
    //       holding element d = 32 b + 2 i + e of key 16 n + j at i * 32 + 2 j + e (AMX's pair layout);
    //   vp: a tile's values as 2 x (hd32 / 16) blocks, block (b, c) at (b * hd32 / 16 + c) * 512
    //       holding key 32 b + 2 i + e of column 16 c + j at i * 32 + 2 j + e.
    // s (n_rows, kAttnTile) = q . keys, over the d blocks in order from +0.
    void (*attn_bf16_scores)(const uint16_t* q, int64_t n_rows, int64_t hd32, const uint16_t* kp, float* s) = nullptr;
    // o (n_rows, hd32) = alpha[r] o (a float32 multiply, skipped where alpha is 1), then + p . values
    // over the two 32-key blocks in order.
    void (*attn_bf16_accumulate)(const uint16_t* p, int64_t n_rows, int64_t hd32, const uint16_t* vp,
                                 const float* alpha, float* o) = nullptr;
    // The same two with AMX tiles (optional; only where amx_usable(), in blocks of m rows: n_rows
    // a multiple of m, buffers padded to it), called between attn_bf16_amx_begin(m) (loads this
    // thread's tile configuration for blocks of m rows, 1..16) and attn_bf16_amx_end (releases
    // the tiles) on the same thread, with no other AMX user in between: another library on the
    // thread (oneDNN in PyTorch) may load its own configuration or release the tiles, after which
    // a tile instruction faults. A block's rows do not change any row's bits.
    void (*attn_bf16_amx_begin)(int64_t m) = nullptr;
    void (*attn_bf16_amx_end)() = nullptr;
    void (*attn_bf16_scores_amx)(const uint16_t* q, int64_t n_rows, int64_t hd32, const uint16_t* kp,
                                 float* s) = nullptr;
    void (*attn_bf16_accumulate_amx)(const uint16_t* p, int64_t n_rows, int64_t hd32, const uint16_t* vp,
                                     const float* alpha, float* o) = nullptr;
    // Packing a tile into kp / vp, each element rounded to bf16 (nearest even, NaN kept quiet):
    // keys from kt (head_dim, kAttnTile) float32 or F16 (the cache's tiled keys), values from
    // v (kAttnTile, head_dim) float32 or F16 rows; the padding (d >= head_dim) is zero.
    void (*attn_bf16_pack_keys)(const float* kt, int64_t head_dim, uint16_t* kp) = nullptr;
    void (*attn_bf16_pack_keys_f16)(const uint16_t* kt, int64_t head_dim, uint16_t* kp) = nullptr;
    void (*attn_bf16_pack_values)(const float* v, int64_t head_dim, uint16_t* vp) = nullptr;
    void (*attn_bf16_pack_values_f16)(const uint16_t* v, int64_t head_dim, uint16_t* vp) = nullptr;
};

void fill_ops_ref(OpsKernels& k);
void fill_ops_avx2(OpsKernels& k);
void fill_ops_avx512(OpsKernels& k);
void fill_ops_neon(OpsKernels& k);
// The bf16 attention product entries of each level (kernels/*/attn_bf16_tiles.cpp; AMX where usable).
void fill_attn_bf16_tiles_ref(OpsKernels& k);
void fill_attn_bf16_tiles_avx2(OpsKernels& k);
void fill_attn_bf16_tiles_avx512(OpsKernels& k);

}  // namespace llamix
