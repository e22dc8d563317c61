// Table-level fallbacks for the optional grouped-attention entries of the ops table, and the tiled
// causal attention over a KV cache of any supported type.
#include "drivers/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cpu_features.h"
#include "common/thread_pool.h"
#include "kernels/kernels.h"

namespace llamix {

namespace {
std::atomic<bool> g_attention_amx{true};
}  // namespace

bool attention_uses_amx() {
    return g_attention_amx.load(std::memory_order_relaxed) && kernels().ops.attn_bf16_scores_amx && amx_usable();
}

void set_attention_amx(bool enabled) { g_attention_amx.store(enabled, std::memory_order_relaxed); }

void attention_group(const OpsKernels& K, const float* q, int64_t q_stride, int64_t n_q, const float* k,
                     const float* v, int64_t stride, int64_t n_keys, int64_t head_dim, float scale, float* out,
                     int64_t out_stride, float* scratch) {
    if (K.attention_group) {
        K.attention_group(q, q_stride, n_q, k, v, stride, n_keys, head_dim, scale, out, out_stride, scratch);
        return;
    }
    for (int64_t h = 0; h < n_q; ++h)
        K.attention(q + h * q_stride, k, v, stride, n_keys, head_dim, scale, out + h * out_stride, scratch);
}

void attention_group_f16(const OpsKernels& K, const float* q, int64_t q_stride, int64_t n_q, const uint16_t* k,
                         const uint16_t* v, int64_t stride, int64_t n_keys, int64_t head_dim, float scale, float* out,
                         int64_t out_stride, float* scratch) {
    if (K.attention_group_f16) {
        K.attention_group_f16(q, q_stride, n_q, k, v, stride, n_keys, head_dim, scale, out, out_stride, scratch);
        return;
    }
    for (int64_t h = 0; h < n_q; ++h)
        K.attention_f16(q + h * q_stride, k, v, stride, n_keys, head_dim, scale, out + h * out_stride, scratch);
}

void store_kv_rows(const float* x, int64_t n, int64_t n_heads, int64_t head_dim, QType type, uint8_t* base,
                   int64_t pos, int64_t row_bytes, int64_t head_bytes, bool tiled) {
    const QuantKernels& Q = kernels().quant;
    if (tiled && !kv_keys_tiled(type))
        throw std::invalid_argument("KV cache: tiled keys must be f32 or f16, got type " + std::to_string(int(type)));
    std::vector<uint16_t> half(tiled && type == QType::F16 ? size_t(head_dim) : 0);
    for (int64_t t = 0; t < n; ++t)
        for (int64_t g = 0; g < n_heads; ++g) {
            const float* xs = x + (t * n_heads + g) * head_dim;
            const int64_t p = pos + t;
            if (tiled) {  // element d goes to row d, column p % kAttnTile of the position's tile
                uint8_t* tile = base + g * head_bytes + p / kAttnTile * kAttnTile * row_bytes;
                const int64_t col = p % kAttnTile;
                if (type == QType::F16) {
                    Q.f32_to_f16(xs, half.data(), head_dim);
                    uint16_t* dst = reinterpret_cast<uint16_t*>(tile) + col;
                    for (int64_t d = 0; d < head_dim; ++d) dst[d * kAttnTile] = half[size_t(d)];
                } else {
                    float* dst = reinterpret_cast<float*>(tile) + col;
                    for (int64_t d = 0; d < head_dim; ++d) dst[d * kAttnTile] = xs[d];
                }
                continue;
            }
            uint8_t* slice = base + g * head_bytes + p * row_bytes;
            switch (type) {
                case QType::F32: std::memcpy(slice, xs, size_t(head_dim) * sizeof(float)); break;
                case QType::F16: Q.f32_to_f16(xs, reinterpret_cast<uint16_t*>(slice), head_dim); break;
                case QType::Q8_0: Q.quantize_row_q8_0(xs, slice, head_dim); break;
                case QType::Q4_0: Q.quantize_row_q4_0(xs, slice, head_dim); break;
                default: throw std::invalid_argument("KV cache: unsupported type " + std::to_string(int(type)));
            }
        }
}

namespace {

// n rows of n_heads * head_dim float32 values into packed bf16 tiles (KVLayer::k_packed /
// v_packed): each rounded to F16, then to bf16, then scattered to its place in its tile.
void store_packed_rows(const float* x, int64_t n, int64_t n_heads, int64_t hd, uint8_t* base, int64_t pos,
                       int64_t row_bytes, int64_t head_bytes, bool keys) {
    const QuantKernels& Q = kernels().quant;
    thread_local std::vector<uint16_t> half, b16;  // kept: no allocation per layer and token
    thread_local std::vector<float> wide;
    if (half.size() < size_t(hd)) {
        half.resize(size_t(hd));
        b16.resize(size_t(hd));
        wide.resize(size_t(hd));
    }
    const int64_t col_blocks = hd / 16;
    for (int64_t t = 0; t < n; ++t)
        for (int64_t g = 0; g < n_heads; ++g) {
            const int64_t p = pos + t, j = p % kAttnTile;
            Q.f32_to_f16(x + (t * n_heads + g) * hd, half.data(), hd);
            Q.f16_to_f32(half.data(), wide.data(), hd);
            Q.f32_to_bf16(wide.data(), b16.data(), hd);
            uint16_t* tile = reinterpret_cast<uint16_t*>(base + g * head_bytes + (p - j) * row_bytes);
            if (keys)  // kp: element d of key j at block (d / 32, j / 16), row d % 32 / 2, pair (j % 16, d % 2)
                for (int64_t d = 0; d < hd; ++d)
                    tile[(d / 32 * 4 + j / 16) * 512 + d % 32 / 2 * 32 + 2 * (j % 16) + d % 2] = b16[size_t(d)];
            else  // vp: column c of key j at block (j / 32, c / 16), row j % 32 / 2, pair (c % 16, j % 2)
                for (int64_t c = 0; c < hd; ++c)
                    tile[(j / 32 * col_blocks + c / 16) * 512 + j % 32 / 2 * 32 + 2 * (c % 16) + j % 2] = b16[size_t(c)];
        }
}

}  // namespace

void store_kv(const KVLayer& kv, const float* k, const float* v, int64_t n, int64_t pos, int64_t n_kv_heads,
              int64_t head_dim) {
    uint8_t* kb = const_cast<uint8_t*>(kv.k);  // KVLayer is the attention's read-only view of the cache
    uint8_t* vb = const_cast<uint8_t*>(kv.v);
    if (kv.k_packed) store_packed_rows(k, n, n_kv_heads, head_dim, kb, pos, kv.k_row_bytes, kv.k_head_bytes, true);
    else store_kv_rows(k, n, n_kv_heads, head_dim, kv.k_type, kb, pos, kv.k_row_bytes, kv.k_head_bytes, kv.k_tiled);
    if (kv.v_packed) store_packed_rows(v, n, n_kv_heads, head_dim, vb, pos, kv.v_row_bytes, kv.v_head_bytes, false);
    else store_kv_rows(v, n, n_kv_heads, head_dim, kv.v_type, vb, pos, kv.v_row_bytes, kv.v_head_bytes);
}

namespace {

constexpr int64_t kMaxRows = 128;  // query rows (tokens x heads of a group) per task
// bf16 products: more rows per task, so each key and value tile is packed once for more of them
constexpr int64_t kMaxRowsBf16 = 512;
// Up to this many rows read F16 tiles in place (the *_f16 kernels widen a tile once per 8 rows);
// more widen each tile once to float32.
constexpr int64_t kInPlaceRows = 8;

// Rows [j0, j0 + count) of kv head g (head_dim elements each) widened to float32 into dst
// (count, hd): one conversion call when the head's rows are contiguous (head-major layout).
void load_rows(QType type, const uint8_t* base, int64_t row_bytes, int64_t head_bytes, int64_t g, int64_t j0,
               int64_t count, int64_t hd, float* dst) {
    const QuantKernels& Q = kernels().quant;
    const int64_t slice = qtype_row_bytes(type, hd);
    const uint8_t* src = base + g * head_bytes + j0 * row_bytes;
    const bool whole = row_bytes == slice;
    const int64_t runs = whole ? 1 : count, len = whole ? count * hd : hd;
    for (int64_t i = 0; i < runs; ++i, src += row_bytes, dst += hd) {
        switch (type) {
            case QType::F32: std::memcpy(dst, src, size_t(len) * sizeof(float)); break;
            case QType::F16: Q.f16_to_f32(reinterpret_cast<const uint16_t*>(src), dst, len); break;
            case QType::Q8_0: Q.dequantize_row_q8_0(src, dst, len); break;
            case QType::Q4_0: Q.dequantize_row_q4_0(src, dst, len); break;
            default: throw std::invalid_argument("KV cache: unsupported type " + std::to_string(int(type)));
        }
    }
}

// Asks for the next tile's keys and values (head-major streams: two runs of a few KiB) while this
// one computes: the hardware prefetcher stops at 4 KiB pages and a tile's work is short, so
// without it every tile starts with a wait on memory.
void prefetch_tile(const KVLayer& kv, int64_t g, int64_t j0, int64_t count, bool keys, bool values) {
    if (kv.k_head_bytes < kv.k_row_bytes * count) return;  // position-major rows: not one run
    const uint8_t* k = kv.k + g * kv.k_head_bytes + j0 * kv.k_row_bytes;
    const uint8_t* v = kv.v + g * kv.v_head_bytes + j0 * kv.v_row_bytes;
    for (int64_t o = 0; keys && o < count * kv.k_row_bytes; o += 64) __builtin_prefetch(k + o, 0, 3);
    for (int64_t o = 0; values && o < count * kv.v_row_bytes; o += 64) __builtin_prefetch(v + o, 0, 3);
}

// Part `part` of 4 of the tile of positions j0..j0+63 of a head-major layer (its key bytes, then
// its value bytes) asked for: the bf16 products spread a tile's requests over the previous tile's
// work, a quarter at a time, so that the memory stays busy while they compute and no burst of
// requests waits on the line fill buffers. One line in four: the cache sits on 2 MiB pages
// (KVBuffer), where the hardware prefetcher follows the streams once started; requesting every
// line took fill buffers from it (decode at depth 4096 measured 2-6% slower than one in four or
// none).
void prefetch_quarter(const KVLayer& kv, int64_t g, int64_t j0, int part) {
    const int64_t kb = kAttnTile * kv.k_row_bytes, total = kb + kAttnTile * kv.v_row_bytes;
    const uint8_t* k = kv.k + g * kv.k_head_bytes + j0 * kv.k_row_bytes;
    const uint8_t* v = kv.v + g * kv.v_head_bytes + j0 * kv.v_row_bytes;
    for (int64_t o = total * part / 4 / 256 * 256; o < total * (part + 1) / 4; o += 256)
        __builtin_prefetch(o < kb ? k + o : v + (o - kb), 0, 3);
}

// Per-thread buffers, grown on demand and kept (the pool's threads live as long as the process).
struct TileScratch {
    std::vector<float> q, o, s, k, kt, v, m, l, alpha;
    std::vector<uint16_t> v16;  // an F16 tail tile, zero-padded
    std::vector<uint16_t> kp, vp, pb;  // bf16 products: packed keys and values, probabilities
    // bf16 products: rows rounded up to 16 (AMX's tiles), head_dim to 32 (hd32)
    void reserve_bf16(int64_t rows16, int64_t hd, int64_t hd32) {
        reserve(rows16, std::max(hd, hd32));
        auto grow = [](std::vector<uint16_t>& b, int64_t n) {
            if (b.size() < size_t(n)) b.resize(size_t(n));
        };
        grow(kp, hd32 * kAttnTile);
        grow(vp, hd32 * kAttnTile);
        grow(pb, rows16 * kAttnTile);
    }
    void reserve(int64_t rows, int64_t hd) {
        auto grow = [](std::vector<float>& b, int64_t n) {
            if (b.size() < size_t(n)) b.resize(size_t(n));
        };
        grow(q, rows * hd);
        grow(o, rows * hd);
        grow(s, rows * kAttnTile);
        grow(k, kAttnTile * hd);
        grow(kt, kAttnTile * hd);
        grow(v, kAttnTile * hd);
        grow(m, rows);
        grow(l, rows);
        grow(alpha, rows);
        if (v16.size() < size_t(kAttnTile * hd)) v16.resize(size_t(kAttnTile * hd));
    }
};
thread_local TileScratch tile_scratch;

// The geometry of one call.
struct Problem {
    const float* q;
    int64_t q_stride, n, pos;
    const KVLayer* kv;
    int64_t n_kv_heads, group, hd, window;
    float scale;
    int64_t first(int64_t t) const { return window > 0 ? std::max<int64_t>(0, pos + t + 1 - window) : 0; }
};

// A chunk's partial result for a block of rows: running max m, sum l, unnormalised output o.
struct Partial {
    float* m;
    float* l;
    float* o;
};

// Rows of query tokens [t0, t1) x the group of kv head g, keys [a, b] (inside one chunk):
// fills p (reset first) with that chunk's online-softmax state, tile by tile.
void run_chunk(const Problem& P, int64_t g, int64_t t0, int64_t t1, int64_t a, int64_t b, const float* qbuf,
               Partial p, TileScratch& S) {
    const OpsKernels& K = kernels().ops;
    const int64_t hd = P.hd, rows = (t1 - t0) * P.group, n_keys = P.pos + P.n;
    std::fill(p.m, p.m + rows, -INFINITY);
    std::fill(p.l, p.l + rows, 0.0f);
    std::fill(p.o, p.o + rows * hd, 0.0f);
    const KVLayer& kv = *P.kv;
    const bool in_place = rows <= kInPlaceRows;
    const bool k_in_place = in_place && kv.k_tiled && kv.k_type == QType::F16 && K.attn_tile_scores_f16;
    const bool v_in_place = in_place && kv.v_type == QType::F16 && kv.v_row_bytes == hd * 2 && K.attn_tile_accumulate_f16;
    for (int64_t j0 = a / kAttnTile * kAttnTile; j0 <= b; j0 += kAttnTile) {
        const int64_t count = std::min(kAttnTile, n_keys - j0);
        // the next tile of this chunk: fetched by the in-place kernels a line per step, else here
        // (past the chunk too: the next chunk of this head is usually this thread's next work)
        const bool has_next = j0 + kAttnTile < n_keys;
        if (has_next && !(k_in_place && v_in_place))
            prefetch_tile(kv, g, j0 + kAttnTile, std::min(kAttnTile, n_keys - j0 - kAttnTile), !k_in_place, !v_in_place);
        float* s = S.s.data();
        // keys: F16 tiles read in place where the table has the kernel and the rows are few (a
        // decoding step: each key is widened once, in registers; columns past the cache's end hold
        // stale keys, masked below); else widened to kt first (once for all the rows)
        if (k_in_place) {
            const uint16_t* tile = reinterpret_cast<const uint16_t*>(kv.k + g * kv.k_head_bytes + j0 * kv.k_row_bytes);
            K.attn_tile_scores_f16(qbuf, rows, hd, tile, s, has_next ? tile + kAttnTile * hd : nullptr);
        } else {
            if (kv.k_tiled) {
                // the tile as stored is kt (one run); columns past the cache's end zeroed
                load_rows(kv.k_type, kv.k, kv.k_row_bytes * kAttnTile, kv.k_head_bytes, g, j0 / kAttnTile, 1,
                          hd * kAttnTile, S.kt.data());
                if (count < kAttnTile)
                    for (int64_t d = 0; d < hd; ++d)
                        std::fill_n(S.kt.data() + d * kAttnTile + count, kAttnTile - count, 0.0f);
            } else {
                load_rows(kv.k_type, kv.k, kv.k_row_bytes, kv.k_head_bytes, g, j0, count, hd, S.k.data());
                if (count < kAttnTile) std::fill(S.k.data() + count * hd, S.k.data() + kAttnTile * hd, 0.0f);
                K.attn_tile_transpose(S.k.data(), hd, S.kt.data());
            }
            K.attn_tile_scores(qbuf, rows, hd, S.kt.data(), s);
        }
        // causal and window masks: row (t, h) sees keys first(t) .. pos + t
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t lo = P.first(t) - j0, hi = P.pos + t - j0;  // tile-relative, inclusive
            if (lo <= 0 && hi >= kAttnTile - 1) continue;
            for (int64_t h = 0; h < P.group; ++h) {
                float* sr = s + ((t - t0) * P.group + h) * kAttnTile;
                for (int64_t j = 0; j < kAttnTile; ++j)
                    if (j < lo || j > hi) sr[j] = -INFINITY;
            }
        }
        K.attn_tile_softmax(s, rows, p.m, p.l, S.alpha.data());
        // values: an F16 head-major stream read in place (a tail tile copied, zero-padded: a
        // stale value could be inf, and 0 * inf is not 0); else widened rows
        if (v_in_place) {
            const uint16_t* vt = reinterpret_cast<const uint16_t*>(kv.v + g * kv.v_head_bytes + j0 * kv.v_row_bytes);
            const uint16_t* v_next = has_next ? vt + kAttnTile * hd : nullptr;
            if (count < kAttnTile) {
                std::copy_n(vt, count * hd, S.v16.data());
                std::fill(S.v16.data() + count * hd, S.v16.data() + kAttnTile * hd, uint16_t(0));
                vt = S.v16.data();
            }
            K.attn_tile_accumulate_f16(s, rows, vt, hd, S.alpha.data(), p.o, v_next);
        } else {
            load_rows(kv.v_type, kv.v, kv.v_row_bytes, kv.v_head_bytes, g, j0, count, hd, S.v.data());
            if (count < kAttnTile)  // past the cache's end: zeros, masked
                std::fill(S.v.data() + count * hd, S.v.data() + kAttnTile * hd, 0.0f);
            K.attn_tile_accumulate(s, rows, S.v.data(), hd, S.alpha.data(), p.o);
        }
    }
}

// total <- total (+) chunk by the log-sum-exp rule (a chunk with no key for a row leaves it);
// o rows ld floats apart.
void merge(Partial total, Partial chunk, int64_t rows, int64_t hd, int64_t ld) {
    for (int64_t r = 0; r < rows; ++r) {
        const float mc = chunk.m[r];
        if (mc == -INFINITY) continue;
        float* o = total.o + r * ld;
        const float* oc = chunk.o + r * ld;
        if (total.m[r] == -INFINITY) {
            total.m[r] = mc;
            total.l[r] = chunk.l[r];
            std::copy(oc, oc + hd, o);
            continue;
        }
        const float mx = std::max(total.m[r], mc);
        const float a = std::exp(total.m[r] - mx), b = std::exp(mc - mx);
        total.m[r] = mx;
        total.l[r] = total.l[r] * a + chunk.l[r] * b;
        for (int64_t d = 0; d < hd; ++d) o[d] = o[d] * a + oc[d] * b;
    }
}

// Gathers the block's query rows, scaled, into qbuf (rows, hd).
void gather_q(const Problem& P, int64_t g, int64_t t0, int64_t t1, float* qbuf) {
    for (int64_t t = t0; t < t1; ++t)
        for (int64_t h = 0; h < P.group; ++h) {
            const float* src = P.q + t * P.q_stride + (g * P.group + h) * P.hd;
            float* dst = qbuf + ((t - t0) * P.group + h) * P.hd;
            for (int64_t d = 0; d < P.hd; ++d) dst[d] = src[d] * P.scale;
        }
}

// out rows of the block = o / l (o rows ld floats apart).
void scatter_out(const Problem& P, int64_t g, int64_t t0, int64_t t1, Partial total, float* out, int64_t out_stride,
                 int64_t ld) {
    for (int64_t t = t0; t < t1; ++t)
        for (int64_t h = 0; h < P.group; ++h) {
            const int64_t r = (t - t0) * P.group + h;
            const float inv = 1.0f / total.l[r];
            float* dst = out + t * out_stride + (g * P.group + h) * P.hd;
            for (int64_t d = 0; d < P.hd; ++d) dst[d] = total.o[r * ld + d] * inv;
        }
}

// ---- bf16 products (AttnPrecision::bf16) ----

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The block's query rows, scaled in float32, rounded to bf16 into qb (rows16, hd32); padding zero.
void gather_q_bf16(const Problem& P, int64_t g, int64_t t0, int64_t t1, int64_t hd32, uint16_t* qb) {
    const QuantKernels& Q = kernels().quant;
    const int64_t rows = (t1 - t0) * P.group, rows16 = round_up(rows, 16);
    std::fill(qb, qb + rows16 * hd32, uint16_t(0));
    std::vector<float> row(size_t(P.hd));
    for (int64_t t = t0; t < t1; ++t)
        for (int64_t h = 0; h < P.group; ++h) {
            const float* src = P.q + t * P.q_stride + (g * P.group + h) * P.hd;
            for (int64_t d = 0; d < P.hd; ++d) row[size_t(d)] = src[d] * P.scale;
            Q.f32_to_bf16(row.data(), qb + ((t - t0) * P.group + h) * hd32, P.hd);
        }
}

// A packed value tile whose keys from `count` on are past the cache's end, copied to dst with those
// keys zeroed (a stale value could be inf, and 0 * inf is not 0).
const uint16_t* zero_packed_tail(const uint16_t* vp, int64_t count, int64_t hd32, uint16_t* dst) {
    const int64_t col_blocks = hd32 / 16;
    std::copy_n(vp, kAttnTile * hd32, dst);
    for (int64_t j = count; j < kAttnTile; ++j)  // key j: element j % 2 of every pair in row j % 32 / 2
        for (int64_t c = 0; c < col_blocks; ++c) {
            uint16_t* row = dst + (j / 32 * col_blocks + c) * 512 + j % 32 / 2 * 32 + j % 2;
            for (int64_t i = 0; i < 16; ++i) row[2 * i] = 0;
        }
    return dst;
}

// run_chunk with bf16 products: each tile's keys and values packed once (kernels/ops.h layouts;
// packed streams read in place), scores and the update on AMX tiles (amx: blocks of 16 rows,
// padded, or one block of fewer) or by the emulation. p holds rows16 rows (o: hd32 floats each).
void run_chunk_bf16(const Problem& P, int64_t g, int64_t t0, int64_t t1, int64_t a, int64_t b, const uint16_t* qb,
                    Partial p, TileScratch& S, bool amx) {
    const OpsKernels& K = kernels().ops;
    const QuantKernels& Q = kernels().quant;
    const int64_t hd = P.hd, hd32 = round_up(hd, 32), rows = (t1 - t0) * P.group, rows16 = round_up(rows, 16);
    const int64_t n_keys = P.pos + P.n;
    std::fill(p.m, p.m + rows16, -INFINITY);
    std::fill(p.l, p.l + rows16, 0.0f);
    std::fill(p.o, p.o + rows16 * hd32, 0.0f);
    std::fill(S.alpha.begin() + rows, S.alpha.begin() + rows16, 1.0f);
    const KVLayer& kv = *P.kv;
    const bool v_f16_stream = kv.v_type == QType::F16 && kv.v_row_bytes == hd * 2;
    float* s = S.s.data();
    uint16_t* pb = S.pb.data();  // one block's probabilities (16 x 64), reused by every block: stays in L1
    // AMX blocks: fewer than 16 rows (decoding) as one block of their own height, else 16 (padded)
    const int64_t block_rows = rows < 16 ? rows : 16;
    if (amx) K.attn_bf16_amx_begin(block_rows);  // this thread's tiles, for this chunk (kernels/ops.h)
    // the next tile, a quarter at a time (head-major streams: whole tiles in the cache; position-
    // major rows are left to the hardware)
    const bool head_major = kv.k_head_bytes >= kv.k_row_bytes * kAttnTile && kv.v_head_bytes >= kv.v_row_bytes * kAttnTile;
    auto prefetch_next = [&](int64_t j0, int part) {
        if (head_major && j0 + kAttnTile < n_keys) prefetch_quarter(kv, g, j0 + kAttnTile, part);
    };
    for (int64_t j0 = a / kAttnTile * kAttnTile; j0 <= b; j0 += kAttnTile) {
        const int64_t count = std::min(kAttnTile, n_keys - j0);
        prefetch_next(j0, 0);
        // keys: tiled F16 / F32 packed straight from the cache (columns past its end are stale,
        // masked below); others widened and transposed first
        const uint8_t* ktile = kv.k + g * kv.k_head_bytes + j0 * kv.k_row_bytes;
        const uint16_t *kp = S.kp.data(), *vp = S.vp.data();  // the packed tiles: scratch, or the cache's own
        if (kv.k_packed) {
            kp = reinterpret_cast<const uint16_t*>(ktile);
        } else if (kv.k_tiled && kv.k_type == QType::F16) {
            K.attn_bf16_pack_keys_f16(reinterpret_cast<const uint16_t*>(ktile), hd, S.kp.data());
        } else if (kv.k_tiled) {
            K.attn_bf16_pack_keys(reinterpret_cast<const float*>(ktile), hd, S.kp.data());
        } else {
            load_rows(kv.k_type, kv.k, kv.k_row_bytes, kv.k_head_bytes, g, j0, count, hd, S.k.data());
            if (count < kAttnTile) std::fill(S.k.data() + count * hd, S.k.data() + kAttnTile * hd, 0.0f);
            K.attn_tile_transpose(S.k.data(), hd, S.kt.data());
            K.attn_bf16_pack_keys(S.kt.data(), hd, S.kp.data());
        }
        // values: zero past the cache's end (a stale value could be inf, and 0 * inf is not 0)
        if (kv.v_packed) {
            vp = reinterpret_cast<const uint16_t*>(kv.v + g * kv.v_head_bytes + j0 * kv.v_row_bytes);
            if (count < kAttnTile) vp = zero_packed_tail(vp, count, hd32, S.vp.data());
        } else if (v_f16_stream) {
            const uint16_t* vt = reinterpret_cast<const uint16_t*>(kv.v + g * kv.v_head_bytes + j0 * kv.v_row_bytes);
            if (count < kAttnTile) {
                std::copy_n(vt, count * hd, S.v16.data());
                std::fill(S.v16.data() + count * hd, S.v16.data() + kAttnTile * hd, uint16_t(0));
                vt = S.v16.data();
            }
            K.attn_bf16_pack_values_f16(vt, hd, S.vp.data());
        } else {
            load_rows(kv.v_type, kv.v, kv.v_row_bytes, kv.v_head_bytes, g, j0, count, hd, S.v.data());
            if (count < kAttnTile) std::fill(S.v.data() + count * hd, S.v.data() + kAttnTile * hd, 0.0f);
            K.attn_bf16_pack_values(S.v.data(), hd, S.vp.data());
        }
        // 16 rows at a time (AMX's tile height): their scores, probabilities and outputs stay in
        // L1 while the packed tile serves every block
        for (int64_t r0 = 0; r0 < rows; r0 += 16) {
            const int64_t r1 = std::min(rows, r0 + 16), nr = amx ? block_rows : r1 - r0;
            float* sb = s;  // this block's scores (16 x 64)
            (amx ? K.attn_bf16_scores_amx : K.attn_bf16_scores)(qb + r0 * hd32, nr, hd32, kp, sb);
            if (r0 == 0) prefetch_next(j0, 1);
            // causal and window masks: row r (token t0 + r / group) sees keys first(t) .. pos + t
            for (int64_t r = r0; r < r1; ++r) {
                const int64_t t = t0 + r / P.group, lo = P.first(t) - j0, hi = P.pos + t - j0;
                if (lo <= 0 && hi >= kAttnTile - 1) continue;
                float* sr = sb + (r - r0) * kAttnTile;
                for (int64_t j = 0; j < kAttnTile; ++j)
                    if (j < lo || j > hi) sr[j] = -INFINITY;
            }
            if (K.attn_tile_softmax_bf16) {
                K.attn_tile_softmax_bf16(sb, r1 - r0, p.m + r0, p.l + r0, S.alpha.data() + r0, pb);
            } else {
                K.attn_tile_softmax(sb, r1 - r0, p.m + r0, p.l + r0, S.alpha.data() + r0);
                Q.f32_to_bf16(sb, pb, (r1 - r0) * kAttnTile);
            }
            if (r0 == 0) prefetch_next(j0, 2);
            if (r1 - r0 < nr)  // padding rows of a last block: zero probabilities
                std::fill(pb + (r1 - r0) * kAttnTile, pb + nr * kAttnTile, uint16_t(0));
            (amx ? K.attn_bf16_accumulate_amx : K.attn_bf16_accumulate)(pb, nr, hd32, vp,
                                                                        S.alpha.data() + r0, p.o + r0 * hd32);
        }
        prefetch_next(j0, 3);
    }
    if (amx) K.attn_bf16_amx_end();
}

}  // namespace

void attention_causal(const float* q, int64_t q_stride, int64_t n, int64_t pos, const KVLayer& kv, int64_t n_heads,
                      int64_t n_kv_heads, int64_t head_dim, int64_t window, float scale, float* out,
                      int64_t out_stride) {
    if (n <= 0) return;
    const int64_t group = n_heads / n_kv_heads, hd = head_dim;
    const Problem P{q, q_stride, n, pos, &kv, n_kv_heads, group, hd, window, scale};
    ThreadPool& pool = ThreadPool::instance();
    // bf16 products: rows padded to 16, o rows hd32 floats apart, q rounded to bf16 once per block
    const bool bf16 = kv.precision == AttnPrecision::bf16;
    const bool amx = bf16 && attention_uses_amx();
    const int64_t hd32 = round_up(hd, 32), ld = bf16 ? hd32 : hd;
    const int64_t block = std::max<int64_t>(1, (bf16 ? kMaxRowsBf16 : kMaxRows) / group);  // query tokens per task
    const int64_t last_key = pos + n - 1;

    if (n <= block) {
        // Short batch (decoding): one row block per head; its chunks run as separate tasks and are
        // merged in chunk order afterwards (the same arithmetic as the long path's running merge).
        const int64_t rows = n * group, c_first = P.first(0) / kAttnChunk, c_last = last_key / kAttnChunk;
        const int64_t rows_alloc = bf16 ? round_up(rows, 16) : rows;
        const int64_t n_chunks = c_last - c_first + 1, n_tasks = n_kv_heads * n_chunks;
        const int64_t part = rows_alloc * (ld + 2);
        // the caller's buffers, kept between calls (no allocation per layer and token); the tasks
        // reach them through these pointers (a thread_local named inside a task would be the
        // worker's own)
        thread_local std::vector<float> partial_buf, q_buf;
        thread_local std::vector<uint16_t> qb_buf;
        if (partial_buf.size() < size_t(n_tasks * part)) partial_buf.resize(size_t(n_tasks * part));
        float* const partials = partial_buf.data();
        float* qall = nullptr;
        uint16_t* qball = nullptr;
        if (bf16) {
            if (qb_buf.size() < size_t(n_kv_heads * rows_alloc * hd32)) qb_buf.resize(size_t(n_kv_heads * rows_alloc * hd32));
            qball = qb_buf.data();
            for (int64_t g = 0; g < n_kv_heads; ++g) gather_q_bf16(P, g, 0, n, hd32, qball + g * rows_alloc * hd32);
        } else {
            if (q_buf.size() < size_t(n_kv_heads * rows * hd)) q_buf.resize(size_t(n_kv_heads * rows * hd));
            qall = q_buf.data();
            for (int64_t g = 0; g < n_kv_heads; ++g) gather_q(P, g, 0, n, qall + g * rows * hd);
        }
        auto partial = [&](int64_t task) {
            float* base = partials + task * part;
            return Partial{base, base + rows_alloc, base + 2 * rows_alloc};
        };
        auto task_fn = [&](int64_t task, int) {
            const int64_t g = task / n_chunks, c = c_first + task % n_chunks;
            TileScratch& S = tile_scratch;
            const int64_t a = std::max(P.first(0), c * kAttnChunk), b = std::min(last_key, c * kAttnChunk + kAttnChunk - 1);
            if (bf16) {
                S.reserve_bf16(rows_alloc, hd, hd32);
                run_chunk_bf16(P, g, 0, n, a, b, qball + g * rows_alloc * hd32, partial(task), S, amx);
            } else {
                S.reserve(rows, hd);
                run_chunk(P, g, 0, n, a, b, qall + g * rows * hd, partial(task), S);
            }
        };
        // a few thousand multiply-adds are not worth waking the pool
        // each thread takes a contiguous run of chunks (one stream through the cache, the next
        // tile prefetched across chunk ends)
        if (n_tasks > 1 && rows * (last_key + 1) * hd >= (int64_t(1) << 16))
            pool.parallel_ranges(n_tasks, 1, [&](int64_t begin, int64_t end, int th) {
                for (int64_t task = begin; task < end; ++task) task_fn(task, th);
            });
        else for (int64_t task = 0; task < n_tasks; ++task) task_fn(task, 0);
        for (int64_t g = 0; g < n_kv_heads; ++g) {
            const Partial total = partial(g * n_chunks);
            for (int64_t c = 1; c < n_chunks; ++c) merge(total, partial(g * n_chunks + c), rows, hd, ld);
            scatter_out(P, g, 0, n, total, out, out_stride, ld);
        }
        return;
    }

    // Long batch (prefill): one task per (row block, head), chunks in order inside it. A head's
    // tasks are consecutive (its keys and values stay in the core's L2 from one block to the
    // next), the last blocks (the most keys) first so the pool's threads finish together.
    const int64_t n_blocks = (n + block - 1) / block;
    pool.parallel_for(n_blocks * n_kv_heads, [&](int64_t task, int) {
        const int64_t bi = n_blocks - 1 - task % n_blocks, g = task / n_blocks;
        const int64_t t0 = bi * block, t1 = std::min(n, t0 + block), rows = (t1 - t0) * group;
        const int64_t rows_alloc = bf16 ? round_up(rows, 16) : rows;
        TileScratch& S = tile_scratch;
        if (bf16) S.reserve_bf16(rows_alloc, hd, hd32);
        else S.reserve(rows, hd);
        std::vector<float> qbuf(bf16 ? 0 : size_t(rows * hd)), chunk_o(size_t(rows_alloc * ld)),
            chunk_ml(size_t(2 * rows_alloc));
        std::vector<uint16_t> qb(bf16 ? size_t(rows_alloc * hd32) : 0);
        if (bf16) gather_q_bf16(P, g, t0, t1, hd32, qb.data());
        else gather_q(P, g, t0, t1, qbuf.data());
        const Partial total{S.m.data(), S.l.data(), S.o.data()};
        const Partial chunk{chunk_ml.data(), chunk_ml.data() + rows_alloc, chunk_o.data()};
        std::fill(total.m, total.m + rows, -INFINITY);
        std::fill(total.l, total.l + rows, 0.0f);
        const int64_t lo = P.first(t0), hi = pos + t1 - 1;
        for (int64_t c = lo / kAttnChunk; c <= hi / kAttnChunk; ++c) {
            const int64_t a = std::max(lo, c * kAttnChunk), b = std::min(hi, c * kAttnChunk + kAttnChunk - 1);
            if (bf16) run_chunk_bf16(P, g, t0, t1, a, b, qb.data(), chunk, S, amx);
            else run_chunk(P, g, t0, t1, a, b, qbuf.data(), chunk, S);
            merge(total, chunk, rows, hd, ld);
        }
        scatter_out(P, g, t0, t1, total, out, out_stride, ld);
    });
}

}  // namespace llamix
