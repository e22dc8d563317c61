// A LLaMA-family decoder forward pass over prepared weights, in one call per batch of tokens:
// the Python layer builds the weights once and calls this per prompt chunk / decoded token, so a
// token costs one GIL-released call instead of hundreds.
//
// Per layer (Touvron et al. 2023, "LLaMA"):  h = x + Wo attn(rope(Wq n(x)), rope(Wk n(x)), Wv n(x))
//                                            x' = h + Wdown (silu(Wgate n'(h)) * Wup n'(h))
// with n, n' RMSNorm, RoPE on adjacent pairs (GGUF layout), grouped-query attention over a KV cache.
// Optional pieces, each off by default (the llama path is unchanged): q/k/v biases (Qwen2), per-head
// RMSNorm of q and k before RoPE (Qwen3, Gemma 3), RMSNorm of the attention and FFN outputs before
// their residual adds (Gemma 3), GELU(tanh) instead of SiLU in the gated FFN, an embedding scale,
// an attention scale other than 1/sqrt(head_dim), a sliding window per layer, and one RoPE table
// per layer chosen from several (Gemma 3's local and global layers use different bases).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "common/weight_memory.h"

#include "drivers/attention.h"
#include "drivers/matmul.h"
#include "kernels/kernels.h"

namespace llamix {

struct ActivationStats;  // model/activation_stats.h

enum class Activation { silu, gelu_tanh };  // the gated FFN's activation

struct TransformerConfig {
    int64_t dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, hidden = 0, vocab = 0;
    float eps = 1e-5f;
    float embed_scale = 1.0f;  // token embeddings are multiplied by this (Gemma: sqrt(dim))
    float attn_scale = 0.0f;   // attention scores' scale; 0: 1 / sqrt(head_dim)
    Activation activation = Activation::silu;
};

// A 2-D weight in any supported type: the source bytes (rows, row_bytes) and its prepared form.
struct WeightRef {
    const void* data = nullptr;
    QType type = QType::F32;
    int64_t rows = 0, k = 0;
    PreparedWeight prepared;
};

struct TransformerLayer {
    const float* attn_norm = nullptr;  // (dim)
    const float* ffn_norm = nullptr;   // (dim)
    WeightRef wq, wk, wv;              // (n_heads * head_dim, dim), (kv_dim, dim), (kv_dim, dim)
    WeightRef wo;                      // (dim, n_heads * head_dim)
    WeightRef w_gate, w_up;            // (hidden, dim)
    WeightRef w_down;                  // (dim, hidden)
    // optional (nullptr: absent)
    const float *bq = nullptr, *bk = nullptr, *bv = nullptr;  // biases of q (q_dim), k and v (kv_dim)
    const float *q_norm = nullptr, *k_norm = nullptr;         // per-head RMSNorm weights (head_dim)
    const float* post_attn_norm = nullptr;  // (dim) RMSNorm of the attention output before the residual add
    const float* post_ffn_norm = nullptr;   // (dim) the same for the FFN output
    int64_t window = 0;  // sliding window: position p attends to keys j with p - j < window; 0: all
    int rope_table = 0;  // which of TransformerWeights::inv_freq this layer rotates with
};

// Scratch buffers of the forward pass, kept between calls and grown on demand.
struct Workspace {
    std::vector<float> bufs[12];
    float* get(int i, int64_t n) {
        if (bufs[i].size() < size_t(n)) bufs[i].resize(size_t(n));
        return bufs[i].data();
    }
};

struct TransformerWeights {
    TransformerConfig cfg;
    WeightRef token_embd;              // (vocab, dim), rows dequantized on lookup
    std::vector<TransformerLayer> layers;
    const float* output_norm = nullptr;  // (dim)
    WeightRef output;                  // (vocab, dim)
    // RoPE inverse frequencies (head_dim / 2 each, scaling applied): one table, or one per kind of
    // layer (TransformerLayer::rope_table picks)
    std::vector<std::vector<float>> inv_freq;
    bool is_prepared = false;
    Workspace workspace;
    ActivationStats* stats = nullptr;  // when set, the forward pass adds its matmul inputs' squares (imatrix)

    // Prepare (repack) every weight once; the prepared layout serves every kernel variant.
    void prepare();
};

// A zeroed byte buffer in streaming memory (common/weight_memory.h: 2 MiB pages where the OS has
// them): decoding reads a layer's keys and values once per token, and on 4 KiB pages every 4 KiB
// of those streams costs a TLB miss and restarts the hardware prefetcher. Not copyable.
class KVBuffer {
   public:
    explicit KVBuffer(size_t n) : n_(n), mem_(allocate_weight_memory(n)) { std::memset(mem_.get(), 0, n); }
    KVBuffer(const KVBuffer&) = delete;
    KVBuffer& operator=(const KVBuffer&) = delete;
    uint8_t* data() { return mem_.get(); }
    const uint8_t* data() const { return mem_.get(); }
    size_t size() const { return n_; }

   private:
    size_t n_;
    std::shared_ptr<uint8_t> mem_;
};

// Keys and values of every layer and position, keys and values each stored as F32, F16, Q8_0 or
// Q4_0 (quantized as tokens are appended; quantized types need head_dim % 32 == 0, checked by
// the caller). Layout (n_layers, n_kv_heads, n_ctx, head_dim): each head's keys and values are
// contiguous streams for the attention; n_kv_heads = 1 gives plain (n_layers, n_ctx, kv_dim) rows.
// With several heads, F32/F16 keys are stored as transposed tiles (KVLayer::k_tiled), each
// head's key stream rounded up to whole tiles (k_ctx positions); under bf16 products F16 keys and
// values are packed bf16 tiles instead (KVLayer::k_packed, v_packed; streams of whole tiles).
struct KVCache {
    int64_t n_layers = 0, n_ctx = 0, kv_dim = 0, n_kv_heads = 1;
    QType k_type = QType::F32, v_type = QType::F32;
    int64_t k_row_bytes = 0, v_row_bytes = 0;  // bytes of one position of one head
    AttnPrecision precision = AttnPrecision::f32;  // the attention's products over this cache
    bool k_tiled = false;
    bool k_packed = false, v_packed = false;   // F16 under bf16 products: packed bf16 tiles (KVLayer)
    int64_t k_ctx = 0, v_ctx = 0;              // positions in a head's key / value stream (whole tiles)
    KVBuffer k, v;                             // (n_layers, n_kv_heads, k_ctx, k_row_bytes), (.., v_ctx, v_row_bytes)
    KVCache(int64_t layers, int64_t ctx, int64_t kvd, QType kt, QType vt, int64_t kv_heads = 1,
            AttnPrecision prec = AttnPrecision::f32)
        : n_layers(layers), n_ctx(ctx), kv_dim(kvd), n_kv_heads(kv_heads), k_type(kt), v_type(vt),
          k_row_bytes(qtype_row_bytes(kt, kvd / kv_heads)), v_row_bytes(qtype_row_bytes(vt, kvd / kv_heads)),
          precision(prec), k_tiled(kv_heads > 1 && kv_keys_tiled(kt)),
          k_packed(kv_heads > 1 && kv_bf16_packed(kt, prec, kvd / kv_heads)),
          v_packed(kv_heads > 1 && kv_bf16_packed(vt, prec, kvd / kv_heads)),
          k_ctx(k_tiled || k_packed ? (ctx + kAttnTile - 1) / kAttnTile * kAttnTile : ctx),
          v_ctx(v_packed ? (ctx + kAttnTile - 1) / kAttnTile * kAttnTile : ctx),
          k(size_t(layers * k_ctx * kv_heads * k_row_bytes)), v(size_t(layers * v_ctx * kv_heads * v_row_bytes)) {}
    KVCache(int64_t layers, int64_t ctx, int64_t kvd, bool half)
        : KVCache(layers, ctx, kvd, half ? QType::F16 : QType::F32, half ? QType::F16 : QType::F32) {}
    size_t nbytes() const { return k.size() + v.size(); }
    // Whether src's positions can be copied into this cache byte for byte (same shape, types, layout).
    bool same_layout(const KVCache& src) const {
        return n_layers == src.n_layers && n_ctx == src.n_ctx && kv_dim == src.kv_dim && n_kv_heads == src.n_kv_heads &&
               k_type == src.k_type && v_type == src.v_type && precision == src.precision && k_tiled == src.k_tiled &&
               k_packed == src.k_packed && v_packed == src.v_packed;
    }
    // Copies src's keys and values of positions [0, n) into this cache (same_layout() required; the
    // caller checks). A tiled or packed stream copies whole tiles: the positions >= n it brings along
    // are overwritten before they are read, as a cache's stale positions always are.
    void copy_prefix(const KVCache& src, int64_t n) {
        const auto whole_tiles = [&](bool tiles, int64_t ctx) {
            return tiles ? std::min(ctx, (n + kAttnTile - 1) / kAttnTile * kAttnTile) : n;
        };
        const int64_t kn = whole_tiles(k_tiled || k_packed, k_ctx), vn = whole_tiles(v_packed, v_ctx);
        for (int64_t s = 0; s < n_layers * n_kv_heads; ++s) {  // one contiguous stream per layer and head
            std::memcpy(k.data() + s * k_ctx * k_row_bytes, src.k.data() + s * k_ctx * k_row_bytes,
                        size_t(kn * k_row_bytes));
            std::memcpy(v.data() + s * v_ctx * v_row_bytes, src.v.data() + s * v_ctx * v_row_bytes,
                        size_t(vn * v_row_bytes));
        }
    }
    // Layer li as the attention driver reads it, for a model with kv_heads heads of head_dim.
    KVLayer layer(int64_t li, int64_t kv_heads, int64_t head_dim) {
        const int64_t per_head = n_kv_heads == kv_heads;  // head-major; else position-major rows
        const int64_t ks = qtype_row_bytes(k_type, head_dim), vs = qtype_row_bytes(v_type, head_dim);
        uint8_t* kl = k.data() + li * k_ctx * n_kv_heads * k_row_bytes;
        uint8_t* vl = v.data() + li * v_ctx * n_kv_heads * v_row_bytes;
        return KVLayer{kl, vl, k_type, v_type, k_row_bytes, v_row_bytes,
                       per_head ? k_ctx * ks : ks, per_head ? v_ctx * vs : vs, k_tiled && per_head, precision,
                       k_packed && per_head, v_packed && per_head};
    }
};

// Runs tokens[0..n) at positions pos..pos+n-1 (the cache must already hold positions < pos) and
// writes the logits of the last n_out tokens to logits (n_out, vocab); or, when hidden is given,
// their final hidden states after the output norm to hidden (n_out, dim) and no logits
// (embeddings). The caller checks that pos + n <= cache.n_ctx and that every token is < vocab.
void transformer_forward(TransformerWeights& w, KVCache& cache, const int32_t* tokens, int64_t n, int64_t pos,
                         float* logits, int64_t n_out, float* hidden = nullptr);

// One sequence's part of a batched forward pass: its next n tokens at positions pos..pos+n-1 of its
// own cache (which must hold positions < pos), and how many of its last tokens want logits
// (0..n).
struct BatchSeq {
    KVCache* cache = nullptr;
    int64_t pos = 0, n = 0, n_out = 0;
};

// Several sequences in one pass (continuous batching): the rows are the sequences' tokens one
// after another (tokens[0..sum n)); every matmul runs once over all rows, attention per row on
// its own sequence's cache. Writes the logits (sum n_out, vocab) of each sequence's last n_out
// tokens in sequence order (or their hidden states (sum n_out, dim)). Each row's result is the
// one transformer_forward gives the sequence alone. The caches must be distinct; the caller
// checks positions and token ids as for transformer_forward.
void transformer_forward_batch(TransformerWeights& w, const BatchSeq* seqs, int64_t n_seqs, const int32_t* tokens,
                               float* logits, float* hidden = nullptr);

// One row of a weight in any supported type to float32 (embedding lookup).
void dequantize_row_any(QType type, const void* row, float* y, int64_t k);

}  // namespace llamix
