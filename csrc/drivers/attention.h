// Grouped-query attention through the kernel table, whether or not the active ISA has a grouped kernel.
#pragma once
#include <cstdint>

#include "common/formats.h"
#include "kernels/ops.h"

namespace llamix {

// Grouped-query attention through the table: the ISA's grouped kernel where it has one, else
// attention() head by head (the same result by definition). Arguments as for the OpsKernels entries.
void attention_group(const OpsKernels& K, const float* q, int64_t q_stride, int64_t n_q, const float* k,
                     const float* v, int64_t stride, int64_t n_keys, int64_t head_dim, float scale, float* out,
                     int64_t out_stride, float* scratch);
void attention_group_f16(const OpsKernels& K, const float* q, int64_t q_stride, int64_t n_q, const uint16_t* k,
                         const uint16_t* v, int64_t stride, int64_t n_keys, int64_t head_dim, float scale, float* out,
                         int64_t out_stride, float* scratch);

// The arithmetic of the attention's products (the Model's attn_precision): f32, float32 FMA
// throughout; bf16, q, keys, probabilities and values rounded to bf16 (nearest even) with float32
// sums in the order of AMX's TDPBF16PS (kernels/ops.h, attn_bf16_*), on AMX tiles where the
// process may use them, else the same bits by the table's exact emulation. The softmax, its
// running max and sum, the rescaling and the chunk merges stay float32 in both.
enum class AttnPrecision { f32 = 0, bf16 = 1 };

// Whether bf16 attention runs on AMX tiles now: the CPU and the OS allow it (amx_usable()), the
// active kernel table has the AMX entries and set_attention_amx has not turned them off.
bool attention_uses_amx();
// Turns the AMX tiles off (false) or back on; the emulation gives the same bits (for tests).
void set_attention_amx(bool enabled);

// One layer of a KV cache: the keys of kv head g at position p (head_dim elements of k_type: F32,
// F16, Q8_0 or Q4_0) start at k + g * k_head_bytes + p * k_row_bytes; the same for values. Either
// position-major rows (head_bytes = a head's slice, row_bytes = all heads) or head-major blocks
// (row_bytes = a head's slice: a head's keys are one contiguous stream). Quantized types need
// head_dim % 32 == 0 (a head's slice is whole blocks).
struct KVLayer {
    const uint8_t* k = nullptr;
    const uint8_t* v = nullptr;
    QType k_type = QType::F32, v_type = QType::F32;
    int64_t k_row_bytes = 0, v_row_bytes = 0;
    int64_t k_head_bytes = 0, v_head_bytes = 0;
    // Keys only, head-major F32/F16 only: a head's keys are stored as tiles of kAttnTile positions,
    // each transposed to (head_dim, kAttnTile), the layout the score kernel reads (no transpose
    // per tile): element d of position p is at k + g * k_head_bytes
    // + (p / kAttnTile) * kAttnTile * k_row_bytes + (d * kAttnTile + p % kAttnTile) * element size.
    // A head's stream then holds whole tiles.
    bool k_tiled = false;
    // The arithmetic of the attention's products (attn_precision below).
    AttnPrecision precision = AttnPrecision::f32;
    // Head-major F16 streams under bf16 products (kv_bf16_packed): every element stored already
    // rounded to bf16 (the F16 value rounded to nearest even, what the products read of it), in
    // the products' packed layout (kernels/ops.h: kp for keys, vp for values, hd32 = head_dim),
    // one packed tile per kAttnTile positions: the tile of positions p0..p0+63 (p0 a multiple of
    // 64) starts at k + g * k_head_bytes + p0 * k_row_bytes (the same bytes as F16 rows). The
    // attention reads these tiles in place (no packing per read), with the same bits.
    bool k_packed = false, v_packed = false;
};

// Whether a head-major cache stores keys of this type as transposed tiles (KVLayer::k_tiled).
inline bool kv_keys_tiled(QType k_type) { return k_type == QType::F32 || k_type == QType::F16; }
// Whether a head-major stream of this type holds packed bf16 tiles (KVLayer::k_packed / v_packed).
inline bool kv_bf16_packed(QType type, AttnPrecision precision, int64_t head_dim) {
    return type == QType::F16 && precision == AttnPrecision::bf16 && head_dim % 32 == 0;
}

// Causal grouped-query attention of n query tokens at positions pos..pos+n-1 against positions
// [0, pos + n) of one layer's cache, as a flash attention: tiles of kAttnTile keys are converted to
// float32 once for every query head that shares their KV head (up to 128 query rows), with an
// online softmax, so no (n, n_keys) score matrix exists. Keys are grouped in chunks of
// kAttnChunk absolute positions whose partial results are merged in order by the log-sum-exp rule;
// short batches (decoding) run the chunks of a head on different threads. The work split depends
// only on n, pos and the shapes, so the result is bit-identical for any thread count and a token's
// output does not depend on the batch it came in.
// q: (n, n_heads * head_dim) float32 rows q_stride floats apart; out likewise (out_stride);
// window > 0: position p attends only to keys j with p - j < window. Threads on the global pool.
constexpr int64_t kAttnChunk = 512;
void attention_causal(const float* q, int64_t q_stride, int64_t n, int64_t pos, const KVLayer& kv, int64_t n_heads,
                      int64_t n_kv_heads, int64_t head_dim, int64_t window, float scale, float* out,
                      int64_t out_stride);

// Stores the keys and the values of n positions (n rows of n_kv_heads * head_dim float32 each) at
// positions pos..pos+n-1 of the layer kv, in its types and layouts (the cache's bytes: kv.k, kv.v).
void store_kv(const KVLayer& kv, const float* k, const float* v, int64_t n, int64_t pos, int64_t n_kv_heads,
              int64_t head_dim);

// Stores n rows of n_heads * head_dim float32 values as `type` (F32, F16, Q8_0, Q4_0) at positions
// pos..pos+n-1 of a layer whose position 0 is at base: head g of position p goes to
// base + g * head_bytes + p * row_bytes, or into its transposed tile when tiled (the KVLayer layout).
void store_kv_rows(const float* x, int64_t n, int64_t n_heads, int64_t head_dim, QType type, uint8_t* base,
                   int64_t pos, int64_t row_bytes, int64_t head_bytes, bool tiled = false);

}  // namespace llamix
