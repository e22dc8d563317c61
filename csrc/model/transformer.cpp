// The decoder forward pass: structure only; every op goes through the kernel table.
#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "common/thread_pool.h"
#include "drivers/attention.h"
#include "drivers/kquant_matmul.h"
#include "model/activation_stats.h"
#include "model/op_times.h"

namespace llamix {

void dequantize_row_any(QType type, const void* row, float* y, int64_t k) {
    const QuantKernels& Q = kernels().quant;
    switch (type) {
        case QType::F32: std::copy_n(static_cast<const float*>(row), k, y); return;
        case QType::F16: Q.f16_to_f32(static_cast<const uint16_t*>(row), y, k); return;
        case QType::BF16: Q.bf16_to_f32(static_cast<const uint16_t*>(row), y, k); return;
        case QType::Q4_0: Q.dequantize_row_q4_0(row, y, k); return;
        case QType::Q8_0: Q.dequantize_row_q8_0(row, y, k); return;
        case QType::Q5_0: Q.dequantize_row_q5_0(row, y, k); return;
        case QType::Q5_1: Q.dequantize_row_q5_1(row, y, k); return;
        case QType::Q4_1: Q.dequantize_row_q4_1(row, y, k); return;
        case QType::IQ4_NL: Q.dequantize_row_iq4_nl(row, y, k); return;
        default:
            if (is_kquant(type)) return dequantize_row_kquant(type, row, y, k);
            throw std::invalid_argument("embedding lookup: unsupported tensor type " + std::to_string(int(type)));
    }
}

namespace {

void prepare_one(WeightRef& r) { r.prepared = prepare_weight(r.data, r.type, r.rows, r.k); }

// Several weights multiplying the same activations (q/k/v, gate/up) in one parallel region.
void mm_many(const float* x, int64_t n, std::initializer_list<const WeightRef*> ws, std::initializer_list<float*> ys) {
    const PreparedWeight* pw[4];
    float* py[4];
    int count = 0;
    for (const WeightRef* w : ws) pw[count++] = &w->prepared;
    count = 0;
    for (float* y : ys) py[count++] = y;
    matmul_prepared_many(x, n, pw, py, count);
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

// f() timed as op (LLAMIX_OP_TIMES, model/op_times.h).
template <class F>
inline void timed(OpTimes::Op op, F&& f) {
    OpTimer timer(op);
    f();
}

}  // namespace

void TransformerWeights::prepare() {
    prepare_one(output);
    for (auto& l : layers)
        for (WeightRef* r : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) prepare_one(*r);
    is_prepared = true;
}

void transformer_forward(TransformerWeights& w, KVCache& cache, const int32_t* tokens, int64_t n, int64_t pos,
                         float* logits, int64_t n_out, float* hidden) {
    const BatchSeq seq{&cache, pos, n, n_out};
    transformer_forward_batch(w, &seq, 1, tokens, logits, hidden);
}

void transformer_forward_batch(TransformerWeights& w, const BatchSeq* seqs, int64_t n_seqs, const int32_t* tokens,
                               float* logits, float* hidden) {
    if (!w.is_prepared) w.prepare();  // prepared layouts are shared by every kernel variant
    const TransformerConfig& c = w.cfg;
    const OpsKernels& K = kernels().ops;
    const int64_t dim = c.dim, hd = c.head_dim, q_dim = c.n_heads * hd, kv_dim = c.n_kv_heads * hd;
    const int64_t half = hd / 2;

    // the batch's rows are the sequences' tokens one after another; row t belongs to sequence
    // seq_of[t], at position row_pos[t] of its cache
    std::vector<int64_t> first_row(size_t(n_seqs) + 1, 0);
    int64_t n_out = 0;
    for (int64_t s = 0; s < n_seqs; ++s) {
        first_row[size_t(s) + 1] = first_row[size_t(s)] + seqs[s].n;
        n_out += seqs[s].n_out;
    }
    const int64_t n = first_row[size_t(n_seqs)];
    std::vector<int64_t> seq_of(static_cast<size_t>(n));
    for (int64_t s = 0; s < n_seqs; ++s)
        std::fill(seq_of.begin() + first_row[size_t(s)], seq_of.begin() + first_row[size_t(s) + 1], s);
    auto row_pos = [&](int64_t t) { return seqs[seq_of[size_t(t)]].pos + t - first_row[size_t(seq_of[size_t(t)])]; };

    Workspace& ws = w.workspace;  // buffers reused across calls (no page faults per token)
    float* x = ws.get(0, n * dim);              // residual stream (n, dim)
    float* xn = ws.get(1, n * dim);             // normed input (n, dim)
    float* q = ws.get(2, n * q_dim);            // (n, n_heads * hd)
    float* knew = ws.get(3, n * kv_dim);        // new keys (n, kv_dim)
    float* vnew = ws.get(4, n * kv_dim);        // new values (n, kv_dim)
    float* att = ws.get(5, n * q_dim);          // attention output (n, n_heads * hd)
    float* proj = ws.get(6, n * dim);           // (n, dim)
    float* gate = ws.get(7, n * c.hidden);      // (n, hidden)
    float* up = ws.get(8, n * c.hidden);        // (n, hidden)
    const int64_t n_tables = int64_t(w.inv_freq.size());
    float* rope_cos = ws.get(9, n_tables * n * half);   // (n_tables, n, hd / 2)
    float* rope_sin = ws.get(10, n_tables * n * half);
    OpTimes::instance().start_call(n);

    timed(OpTimes::embed, [&] { for_rows(n, [&](int64_t t, int) {
        float* xt = x + t * dim;
        dequantize_row_any(w.token_embd.type,
                           static_cast<const uint8_t*>(w.token_embd.data) + tokens[t] * qtype_row_bytes(w.token_embd.type, dim),
                           xt, dim);
        if (c.embed_scale != 1.0f)
            for (int64_t i = 0; i < dim; ++i) xt[i] *= c.embed_scale;
        // angles in float32 as transformers computes them; cos/sin evaluated in double
        const float p = float(row_pos(t));
        for (int64_t r = 0; r < n_tables; ++r) {
            const float* inv_freq = w.inv_freq[size_t(r)].data();
            float* cos_t = rope_cos + (r * n + t) * half;
            float* sin_t = rope_sin + (r * n + t) * half;
            for (int64_t i = 0; i < half; ++i) {
                const float angle = p * inv_freq[i];
                cos_t[i] = float(std::cos(double(angle)));
                sin_t[i] = float(std::sin(double(angle)));
            }
        }
    }); });

    const float scale = c.attn_scale > 0.0f ? c.attn_scale : 1.0f / std::sqrt(float(hd));
    for (int64_t li = 0; li < c.n_layers; ++li) {
        const TransformerLayer& L = w.layers[size_t(li)];

        // attention
        timed(OpTimes::norm, [&] { for_rows(n, [&](int64_t t, int) { K.rmsnorm(x + t * dim, L.attn_norm, xn + t * dim, dim, c.eps); }); });
        if (w.stats) w.stats->add(li, ActivationStats::kAttnIn, xn, n, dim);
        // new keys and values (n, kv_dim), rotated, then stored in each sequence's cache rows pos..pos+n-1
        timed(OpTimes::qkv, [&] { mm_many(xn, n, {&L.wq, &L.wk, &L.wv}, {q, knew, vnew}); });  // one pass, x quantized once
        const float* layer_cos = rope_cos + int64_t(L.rope_table) * n * half;
        const float* layer_sin = rope_sin + int64_t(L.rope_table) * n * half;
        timed(OpTimes::rope, [&] { for_rows(n, [&](int64_t t, int) {
            float* qt = q + t * q_dim;
            float* kt = knew + t * kv_dim;
            if (L.bq) K.add(qt, L.bq, q_dim);
            if (L.bk) K.add(kt, L.bk, kv_dim);
            if (L.bv) K.add(vnew + t * kv_dim, L.bv, kv_dim);
            if (L.q_norm)
                for (int64_t h = 0; h < c.n_heads; ++h) K.rmsnorm(qt + h * hd, L.q_norm, qt + h * hd, hd, c.eps);
            if (L.k_norm)
                for (int64_t h = 0; h < c.n_kv_heads; ++h) K.rmsnorm(kt + h * hd, L.k_norm, kt + h * hd, hd, c.eps);
            K.rope(qt, c.n_heads, hd, layer_cos + t * half, layer_sin + t * half);
            K.rope(kt, c.n_kv_heads, hd, layer_cos + t * half, layer_sin + t * half);
        }); });
        // each sequence's new rows go into its cache (quantized there), then attention over its
        // positions < pos + n
        for (int64_t s = 0; s < n_seqs; ++s) {
            KVCache& cache = *seqs[s].cache;
            const int64_t pos = seqs[s].pos, rows = seqs[s].n, r0 = first_row[size_t(s)];
            const KVLayer kv = cache.layer(li, c.n_kv_heads, hd);  // a read-only view of bytes the cache owns
            timed(OpTimes::store_kv, [&] { store_kv(kv, knew + r0 * kv_dim, vnew + r0 * kv_dim, rows, pos, c.n_kv_heads, hd); });
            timed(OpTimes::attention, [&] {
                attention_causal(q + r0 * q_dim, q_dim, rows, pos, kv, c.n_heads, c.n_kv_heads, hd, L.window, scale,
                                 att + r0 * q_dim, q_dim);
            });
        }
        if (w.stats) w.stats->add(li, ActivationStats::kAttnOut, att, n, q_dim);
        timed(OpTimes::wo, [&] { mm(att, n, L.wo, proj); });
        timed(OpTimes::residual, [&] { for_rows(n, [&](int64_t t, int) {
            if (L.post_attn_norm) K.rmsnorm(proj + t * dim, L.post_attn_norm, proj + t * dim, dim, c.eps);
            K.add(x + t * dim, proj + t * dim, dim);
        }); });

        // feed-forward (SwiGLU or GeGLU)
        timed(OpTimes::norm, [&] { for_rows(n, [&](int64_t t, int) { K.rmsnorm(x + t * dim, L.ffn_norm, xn + t * dim, dim, c.eps); }); });
        if (w.stats) w.stats->add(li, ActivationStats::kFfnIn, xn, n, dim);
        timed(OpTimes::gate_up, [&] { mm_many(xn, n, {&L.w_gate, &L.w_up}, {gate, up}); });
        const auto glu = c.activation == Activation::gelu_tanh ? K.geglu : K.swiglu;
        timed(OpTimes::glu, [&] { for_rows(n, [&](int64_t t, int) { glu(gate + t * c.hidden, up + t * c.hidden, gate + t * c.hidden, c.hidden); }); });
        if (w.stats) w.stats->add(li, ActivationStats::kFfnDownIn, gate, n, c.hidden);
        timed(OpTimes::down, [&] { mm(gate, n, L.w_down, proj); });
        timed(OpTimes::residual, [&] { for_rows(n, [&](int64_t t, int) {
            if (L.post_ffn_norm) K.rmsnorm(proj + t * dim, L.post_ffn_norm, proj + t * dim, dim, c.eps);
            K.add(x + t * dim, proj + t * dim, dim);
        }); });
    }

    // final norm and the output head, only for the rows asked for: each sequence's last n_out
    // (hidden states: the norm only)
    std::vector<int64_t> out_rows;
    out_rows.reserve(size_t(n_out));
    for (int64_t s = 0; s < n_seqs; ++s)
        for (int64_t t = first_row[size_t(s) + 1] - seqs[s].n_out; t < first_row[size_t(s) + 1]; ++t) out_rows.push_back(t);
    if (n_out == 0) return;
    OpTimer output_timer(OpTimes::output);
    float* normed = hidden ? hidden : xn;
    for_rows(n_out, [&](int64_t r, int) {
        K.rmsnorm(x + out_rows[size_t(r)] * dim, w.output_norm, normed + r * dim, dim, c.eps);
    });
    if (!hidden) mm(xn, n_out, w.output, logits);
}

}  // namespace llamix
