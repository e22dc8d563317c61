// Reference transformer ops: plain loops, float32 (THE SPEC for every SIMD variant).
#include <algorithm>
#include <cmath>

#include "common/fp16.h"
#include "kernels/ops.h"

namespace llamix {
namespace ref {

void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) {
    float ss = 0.0f;
    for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
    const float scale = 1.0f / std::sqrt(ss / float(n) + eps);
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

void rope(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) {
    for (int64_t h = 0; h < n_heads; ++h) {
        float* xh = x + h * head_dim;  // (head_dim / 2) pairs
        for (int64_t i = 0; i < head_dim / 2; ++i) {
            const float a = xh[2 * i], b = xh[2 * i + 1];
            xh[2 * i] = a * cos[i] - b * sin[i];
            xh[2 * i + 1] = a * sin[i] + b * cos[i];
        }
    }
}

void swiglu(const float* g, const float* u, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void geglu(const float* g, const float* u, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float x = g[i];
        const float z = kGeluTwoSqrt2OverPi * (x + kGeluCubic * (x * x * x));  // 2 sqrt(2/pi) (x + c x^3)
        y[i] = x / (1.0f + std::exp(-z)) * u[i];
    }
}

void add(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

// One body for float32 and fp16 caches: `load` widens an element to float32.
template <class T, class Load>
void attention_impl(const float* q, const T* k, const T* v, int64_t stride, int64_t n_keys, int64_t head_dim,
                    float scale, float* out, float* scratch, Load load) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < n_keys; ++j) {  // scores (n_keys)
        const T* kj = k + j * stride;
        float s = 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) s += q[d] * load(kj[d]);
        scratch[j] = s * scale;
        mx = std::max(mx, scratch[j]);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < n_keys; ++j) {
        scratch[j] = std::exp(scratch[j] - mx);
        sum += scratch[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t d = 0; d < head_dim; ++d) out[d] = 0.0f;
    for (int64_t j = 0; j < n_keys; ++j) {  // out (head_dim) = sum_j p_j v_j
        const float p = scratch[j] * inv;
        const T* vj = v + j * stride;
        for (int64_t d = 0; d < head_dim; ++d) out[d] += p * load(vj[d]);
    }
}

void attention(const float* q, const float* k, const float* v, int64_t stride, int64_t n_keys, int64_t head_dim,
               float scale, float* out, float* scratch) {
    attention_impl(q, k, v, stride, n_keys, head_dim, scale, out, scratch, [](float x) { return x; });
}

void attention_f16(const float* q, const uint16_t* k, const uint16_t* v, int64_t stride, int64_t n_keys,
                   int64_t head_dim, float scale, float* out, float* scratch) {
    attention_impl(q, k, v, stride, n_keys, head_dim, scale, out, scratch, fp16_to_fp32);
}

// Flash-attention tiles (kernels/ops.h).
void attn_tile_transpose(const float* k, int64_t head_dim, float* kt) {
    for (int64_t j = 0; j < kAttnTile; ++j)
        for (int64_t d = 0; d < head_dim; ++d) kt[d * kAttnTile + j] = k[j * head_dim + d];
}

void attn_tile_scores(const float* q, int64_t n_rows, int64_t head_dim, const float* kt, float* s) {
    for (int64_t r = 0; r < n_rows; ++r) {
        float* sr = s + r * kAttnTile;
        for (int64_t j = 0; j < kAttnTile; ++j) sr[j] = 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) {
            const float qd = q[r * head_dim + d];
            for (int64_t j = 0; j < kAttnTile; ++j) sr[j] += qd * kt[d * kAttnTile + j];
        }
    }
}

void attn_tile_softmax(float* s, int64_t n_rows, float* m, float* l, float* alpha) {
    for (int64_t r = 0; r < n_rows; ++r) {
        float* sr = s + r * kAttnTile;
        float mx = m[r];
        for (int64_t j = 0; j < kAttnTile; ++j) mx = std::max(mx, sr[j]);
        if (mx == -INFINITY) {  // no key for this row yet
            for (int64_t j = 0; j < kAttnTile; ++j) sr[j] = 0.0f;
            alpha[r] = 1.0f;
            continue;
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < kAttnTile; ++j) {
            sr[j] = sr[j] == -INFINITY ? 0.0f : std::exp(sr[j] - mx);
            sum += sr[j];
        }
        alpha[r] = std::exp(m[r] - mx);  // exp(-inf) = 0 for the first keys
        l[r] = alpha[r] * l[r] + sum;
        m[r] = mx;
    }
}

void attn_tile_accumulate(const float* p, int64_t n_rows, const float* v, int64_t head_dim, const float* alpha,
                          float* o) {
    for (int64_t r = 0; r < n_rows; ++r) {
        float* orow = o + r * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) orow[d] *= alpha[r];
        for (int64_t j = 0; j < kAttnTile; ++j) {
            const float pj = p[r * kAttnTile + j];
            for (int64_t d = 0; d < head_dim; ++d) orow[d] += pj * v[j * head_dim + d];
        }
    }
}

}  // namespace ref

void fill_ops_ref(OpsKernels& k) {
    k.rmsnorm = ref::rmsnorm;
    k.rope = ref::rope;
    k.swiglu = ref::swiglu;
    k.geglu = ref::geglu;
    k.add = ref::add;
    k.attention = ref::attention;
    k.attention_f16 = ref::attention_f16;
    k.attn_tile_transpose = ref::attn_tile_transpose;
    k.attn_tile_scores = ref::attn_tile_scores;
    k.attn_tile_softmax = ref::attn_tile_softmax;
    k.attn_tile_accumulate = ref::attn_tile_accumulate;
    fill_attn_bf16_tiles_ref(k);
}

}  // namespace llamix
