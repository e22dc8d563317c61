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
#include <cstdint>
#include <vector>

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

// Keys and values of every layer and position: (n_layers, n_ctx, kv_dim) each, float32 or fp16.
struct KVCache {
    int64_t n_layers = 0, n_ctx = 0, kv_dim = 0;
    bool f16 = false;
    std::vector<float> k, v;          // float32 cache
    std::vector<uint16_t> k16, v16;   // fp16 cache
    KVCache(int64_t layers, int64_t ctx, int64_t kvd, bool half)
        : n_layers(layers), n_ctx(ctx), kv_dim(kvd), f16(half) {
        const size_t n = size_t(layers * ctx * kvd);
        if (half) {
            k16.resize(n);
            v16.resize(n);
        } else {
            k.resize(n);
            v.resize(n);
        }
    }
    size_t nbytes() const { return (k.size() + v.size()) * sizeof(float) + (k16.size() + v16.size()) * 2; }
};

// Runs tokens[0..n) at positions pos..pos+n-1 (the cache must already hold positions < pos) and
// writes the logits of the last n_out tokens to logits (n_out, vocab); or, when hidden is given,
// their final hidden states after the output norm to hidden (n_out, dim) and no logits
// (embeddings). The caller checks that pos + n <= cache.n_ctx and that every token is < vocab.
void transformer_forward(TransformerWeights& w, KVCache& cache, const int32_t* tokens, int64_t n, int64_t pos,
                         float* logits, int64_t n_out, float* hidden = nullptr);

// One row of a weight in any supported type to float32 (embedding lookup).
void dequantize_row_any(QType type, const void* row, float* y, int64_t k);

}  // namespace llamix
