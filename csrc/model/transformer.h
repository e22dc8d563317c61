// A LLaMA-family decoder forward pass over prepared weights, in one call per batch of tokens:
// the Python layer builds the weights once and calls this per prompt chunk / decoded token, so a
// token costs one GIL-released call instead of hundreds.
//
// Per layer (Touvron et al. 2023, "LLaMA"):  h = x + Wo attn(rope(Wq n(x)), rope(Wk n(x)), Wv n(x))
//                                            x' = h + Wdown (silu(Wgate n'(h)) * Wup n'(h))
// with n, n' RMSNorm, RoPE on adjacent pairs (GGUF layout), grouped-query attention over a KV cache.
#pragma once
#include <cstdint>
#include <vector>

#include "drivers/matmul.h"
#include "kernels/kernels.h"

namespace llamix {

struct TransformerConfig {
    int64_t dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, hidden = 0, vocab = 0;
    float eps = 1e-5f;
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
    std::vector<float> inv_freq;       // (head_dim / 2) RoPE inverse frequencies (scaling applied)
    bool is_prepared = false;
    Workspace workspace;

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
