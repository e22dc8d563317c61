// The decoder forward pass: structure only; every op goes through the kernel table.
#include "kernels/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "common/thread_pool.h"

namespace llamix {

void dequantize_row_any(QType type, const void* row, float* y, int64_t k) {
    const QuantKernels& Q = kernels().quant;
    switch (type) {
        case QType::F32: std::copy_n(static_cast<const float*>(row), k, y); return;
        case QType::F16: Q.f16_to_f32(static_cast<const uint16_t*>(row), y, k); return;
        case QType::BF16: Q.bf16_to_f32(static_cast<const uint16_t*>(row), y, k); return;
        case QType::Q4_0: Q.dequantize_row_q4_0(row, y, k); return;
        case QType::Q8_0: Q.dequantize_row_q8_0(row, y, k); return;
        default:
            if (is_kquant(type)) return dequantize_row_kquant(type, row, y, k);  // issue 5: K-quants
            throw std::invalid_argument("embedding lookup: unsupported tensor type " + std::to_string(int(type)));
    }
}

namespace {

void prepare_one(WeightRef& r) { r.prepared = prepare_weight(r.data, r.type, r.rows, r.k); }

bool is_block(QType t) { return t == QType::Q4_0 || t == QType::Q8_0; }

// Stack the rows of same-typed block weights into one prepared matrix. Block weights are repacked
// into the prepared weight's own buffer (matmul.h), so the stacked source is only temporary.
bool prepare_stacked(std::initializer_list<const WeightRef*> parts, PreparedWeight& out) {
    const WeightRef& first = **parts.begin();
    int64_t rows = 0;
    for (const WeightRef* p : parts) {
        if (p->type != first.type || p->k != first.k || !is_block(p->type)) return false;
        rows += p->rows;
    }
    const int64_t row_bytes = qtype_row_bytes(first.type, first.k);
    std::vector<uint8_t> stacked(static_cast<size_t>(rows * row_bytes));
    size_t at = 0;
    for (const WeightRef* p : parts) {
        std::memcpy(stacked.data() + at, p->data, static_cast<size_t>(p->rows * row_bytes));
        at += static_cast<size_t>(p->rows * row_bytes);
    }
    out = prepare_weight(stacked.data(), first.type, rows, first.k);
    out.data = nullptr;  // the stacked source is freed on return
    return true;
}

// y (n, rows) = x (n, k) @ W.T
inline void mm(const float* x, int64_t n, const WeightRef& w, float* y) { matmul_prepared(x, n, w.prepared, y); }

// Row-wise op over n rows: threaded for batches, inline for a single token (no pool wake-up).
template <class F>
void for_rows(int64_t n, F&& f) {
    if (n == 1) {
        f(0, 0);
        return;
    }
    ThreadPool::instance().parallel_for(n, [&](int64_t t, int th) { f(t, th); });
}

}  // namespace

void TransformerWeights::prepare() {
    prepare_one(output);
    for (auto& l : layers) {
        l.fused_qkv = prepare_stacked({&l.wq, &l.wk, &l.wv}, l.wqkv);
        if (!l.fused_qkv)
            for (WeightRef* r : {&l.wq, &l.wk, &l.wv}) prepare_one(*r);
        l.fused_gate_up = prepare_stacked({&l.w_gate, &l.w_up}, l.w_gate_up);
        if (!l.fused_gate_up)
            for (WeightRef* r : {&l.w_gate, &l.w_up}) prepare_one(*r);
        prepare_one(l.wo);
        prepare_one(l.w_down);
    }
    is_prepared = true;
}

void transformer_forward(TransformerWeights& w, KVCache& cache, const int32_t* tokens, int64_t n, int64_t pos,
                         float* logits, int64_t n_out) {
    if (!w.is_prepared) w.prepare();  // prepared layouts are shared by every kernel variant
    const TransformerConfig& c = w.cfg;
    const OpsKernels& K = kernels().ops;
    const int64_t dim = c.dim, hd = c.head_dim, q_dim = c.n_heads * hd, kv_dim = c.n_kv_heads * hd;
    const int64_t group = c.n_heads / c.n_kv_heads, half = hd / 2;
    ThreadPool& pool = ThreadPool::instance();

    std::vector<float> x(static_cast<size_t>(n * dim));           // residual stream (n, dim)
    std::vector<float> xn(size_t(n * dim));          // normed input (n, dim)
    std::vector<float> q(size_t(n * q_dim));         // (n, n_heads * hd)
    std::vector<float> knew(size_t(n * kv_dim)), vnew(size_t(n * kv_dim));  // (n, kv_dim)
    std::vector<float> att(size_t(n * q_dim));       // attention output (n, n_heads * hd)
    std::vector<float> proj(size_t(n * dim));        // (n, dim)
    std::vector<float> gate(size_t(n * c.hidden)), up(size_t(n * c.hidden));  // (n, hidden)
    std::vector<float> fused(size_t(n * std::max(q_dim + 2 * kv_dim, 2 * c.hidden)));  // stacked matmul outputs
    std::vector<float> rope_cos(size_t(n * half)), rope_sin(size_t(n * half));  // (n, hd / 2)
    std::vector<float> scores(size_t(pool.threads()) * size_t(pos + n));  // per-thread softmax scratch

    for_rows(n, [&](int64_t t, int) {
        dequantize_row_any(w.token_embd.type,
                           static_cast<const uint8_t*>(w.token_embd.data) + tokens[t] * qtype_row_bytes(w.token_embd.type, dim),
                           x.data() + t * dim, dim);
        // angles in float32 as transformers computes them; cos/sin evaluated in double
        for (int64_t i = 0; i < half; ++i) {
            const float angle = float(pos + t) * w.inv_freq[size_t(i)];
            rope_cos[size_t(t * half + i)] = float(std::cos(double(angle)));
            rope_sin[size_t(t * half + i)] = float(std::sin(double(angle)));
        }
    });

    const float scale = 1.0f / std::sqrt(float(hd));
    for (int64_t li = 0; li < c.n_layers; ++li) {
        const TransformerLayer& L = w.layers[size_t(li)];
        const int64_t layer_off = li * cache.n_ctx * kv_dim;  // this layer's (n_ctx, kv_dim) block

        // attention
        for_rows(n, [&](int64_t t, int) { K.rmsnorm(x.data() + t * dim, L.attn_norm, xn.data() + t * dim, dim, c.eps); });
        // new keys and values (n, kv_dim), rotated, then stored in the cache rows pos..pos+n-1
        if (L.fused_qkv) {
            const int64_t qkv_dim = q_dim + 2 * kv_dim;
            matmul_prepared(xn.data(), n, L.wqkv, fused.data());  // (n, q_dim + 2 kv_dim)
            for (int64_t t = 0; t < n; ++t) {
                const float* row = fused.data() + t * qkv_dim;
                std::memcpy(q.data() + t * q_dim, row, sizeof(float) * size_t(q_dim));
                std::memcpy(knew.data() + t * kv_dim, row + q_dim, sizeof(float) * size_t(kv_dim));
                std::memcpy(vnew.data() + t * kv_dim, row + q_dim + kv_dim, sizeof(float) * size_t(kv_dim));
            }
        } else {
            mm(xn.data(), n, L.wq, q.data());
            mm(xn.data(), n, L.wk, knew.data());
            mm(xn.data(), n, L.wv, vnew.data());
        }
        for_rows(n, [&](int64_t t, int) {
            K.rope(q.data() + t * q_dim, c.n_heads, hd, rope_cos.data() + t * half, rope_sin.data() + t * half);
            K.rope(knew.data() + t * kv_dim, c.n_kv_heads, hd, rope_cos.data() + t * half, rope_sin.data() + t * half);
        });
        const int64_t new_off = layer_off + pos * kv_dim;
        if (cache.f16) {
            kernels().quant.f32_to_f16(knew.data(), cache.k16.data() + new_off, n * kv_dim);
            kernels().quant.f32_to_f16(vnew.data(), cache.v16.data() + new_off, n * kv_dim);
        } else {
            std::copy(knew.begin(), knew.end(), cache.k.begin() + new_off);
            std::copy(vnew.begin(), vnew.end(), cache.v.begin() + new_off);
        }
        // one task per (token, head): causal, token t sees positions 0..pos+t
        const int64_t n_pos = pos + n;
        auto attend = [&](int64_t task, int th) {
            const int64_t t = task / c.n_heads, h = task % c.n_heads, off = layer_off + h / group * hd;
            const float* qh = q.data() + t * q_dim + h * hd;
            float* out = att.data() + t * q_dim + h * hd;
            float* scratch = scores.data() + size_t(th) * size_t(n_pos);
            if (cache.f16)
                K.attention_f16(qh, cache.k16.data() + off, cache.v16.data() + off, kv_dim, pos + t + 1, hd, scale, out,
                                scratch);
            else
                K.attention(qh, cache.k.data() + off, cache.v.data() + off, kv_dim, pos + t + 1, hd, scale, out, scratch);
        };
        if (n * c.n_heads * n_pos >= 4096) pool.parallel_for(n * c.n_heads, attend);
        else for (int64_t task = 0; task < n * c.n_heads; ++task) attend(task, 0);
        mm(att.data(), n, L.wo, proj.data());
        for_rows(n, [&](int64_t t, int) { K.add(x.data() + t * dim, proj.data() + t * dim, dim); });

        // feed-forward (SwiGLU)
        for_rows(n, [&](int64_t t, int) { K.rmsnorm(x.data() + t * dim, L.ffn_norm, xn.data() + t * dim, dim, c.eps); });
        if (L.fused_gate_up) {
            matmul_prepared(xn.data(), n, L.w_gate_up, fused.data());  // (n, 2 hidden): gate | up
            for_rows(n, [&](int64_t t, int) {
                const float* row = fused.data() + t * 2 * c.hidden;
                K.swiglu(row, row + c.hidden, gate.data() + t * c.hidden, c.hidden);
            });
        } else {
            mm(xn.data(), n, L.w_gate, gate.data());
            mm(xn.data(), n, L.w_up, up.data());
            for_rows(n, [&](int64_t t, int) {
                K.swiglu(gate.data() + t * c.hidden, up.data() + t * c.hidden, gate.data() + t * c.hidden, c.hidden);
            });
        }
        mm(gate.data(), n, L.w_down, proj.data());
        for_rows(n, [&](int64_t t, int) { K.add(x.data() + t * dim, proj.data() + t * dim, dim); });
    }

    // final norm and the output head, only for the rows asked for
    const int64_t first = n - n_out;
    for_rows(n_out, [&](int64_t t, int) {
        K.rmsnorm(x.data() + (first + t) * dim, w.output_norm, xn.data() + t * dim, dim, c.eps);
    });
    mm(xn.data(), n_out, w.output, logits);
}

}  // namespace llamix
