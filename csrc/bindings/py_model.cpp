// The fused forward pass: the KV cache and the Transformer (weights by reference to the Python
// arrays that own their bytes, one GIL-released call per batch of tokens).
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "bindings/checks.h"
#include "drivers/kquant_matmul.h"
#include "model/activation_stats.h"
#include "model/transformer.h"

namespace llamix {

namespace {

// The model's weights plus the Python arrays that own their bytes.
struct PyTransformer {
    TransformerWeights w;
    std::vector<py::object> keep;
    std::unique_ptr<ActivationStats> stats;  // imatrix collection, when on

    WeightRef weight(const py::tuple& spec, int64_t rows, int64_t k, const std::string& name) {
        require(spec.size() == 2, name + ": expected (data, qtype)");
        py::array data = spec[0].cast<py::array>();
        const QType t = qtype_from_int(spec[1].cast<int>());
        require(t == QType::F32 || t == QType::F16 || t == QType::BF16 || t == QType::Q4_0 || t == QType::Q8_0 ||
                    t == QType::Q5_0 || t == QType::Q5_1 || is_kquant(t) ||  // K-quant mixes
                    t == QType::Q4_1 || t == QType::IQ4_NL,
                name + ": tensor type " + std::to_string(int(t)) + " is not supported by the forward pass");
        require_dtype<uint8_t>(data, name.c_str(), "uint8");
        require_c_contiguous(data, name.c_str());
        require_row_length(t, k, name.c_str());
        require(data.ndim() == 2 && data.shape(0) == rows && data.shape(1) == qtype_row_bytes(t, k),
                name + ": expected bytes of shape (" + std::to_string(rows) + ", " +
                    std::to_string(qtype_row_bytes(t, k)) + ")");
        keep.push_back(data);
        WeightRef r;
        r.data = data.data();
        r.type = t;
        r.rows = rows;
        r.k = k;
        return r;
    }
    const float* norm(const py::array& a, const std::string& name) { return vector(a, w.cfg.dim, name); }
    const float* vector(const py::array& a, int64_t n, const std::string& name) {
        keep.push_back(a);
        return f32_vector(a, n, name);
    }
    // An optional float32 vector of n: None -> nullptr.
    const float* optional(const py::object& a, int64_t n, const std::string& name) {
        return a.is_none() ? nullptr : vector(a.cast<py::array>(), n, name);
    }
};

}  // namespace

void register_model(py::module_& m) {
    py::class_<KVCache>(m, "KVCache")
        .def(py::init([](int64_t n_layers, int64_t n_ctx, int64_t kv_dim, const std::string& type_k,
                         const py::object& type_v, int64_t n_kv_heads, const std::string& precision) {
            require(n_layers > 0 && n_ctx > 0 && kv_dim > 0, "KVCache dimensions must be positive");
            require(n_kv_heads > 0 && kv_dim % n_kv_heads == 0, "n_kv_heads must divide kv_dim");
            const QType kt = kv_cache_type(type_k, "type_k");
            const QType vt = type_v.is_none() ? kt : kv_cache_type(type_v.cast<std::string>(), "type_v");
            require((kv_dim / n_kv_heads) % 32 == 0 || (kt != QType::Q8_0 && kt != QType::Q4_0 && vt != QType::Q8_0 && vt != QType::Q4_0),
                    "a q8_0 / q4_0 KV cache needs kv_dim to be a multiple of 32");
            const AttnPrecision ap = attn_precision(precision, "attn_precision");
            py::gil_scoped_release release;
            return new KVCache(n_layers, n_ctx, kv_dim, kt, vt, n_kv_heads, ap);
        }), py::arg("n_layers"), py::arg("n_ctx"), py::arg("kv_dim"), py::arg("type_k") = "f32",
           py::arg("type_v") = py::none(), py::arg("n_kv_heads") = 1, py::arg("attn_precision") = "f32",
           "Keys and values of every layer and position; type_k / type_v: 'f32', 'f16', 'q8_0' or 'q4_0' "
           "(type_v defaults to type_k); n_kv_heads: the model's KV heads, each stored as one contiguous "
           "stream (1: position-major rows, which any model reads); attn_precision: the attention's "
           "products over this cache, 'f32' or 'bf16' (drivers/attention.h).")
        .def_property_readonly("attn_precision", [](const KVCache& c) { return attn_precision_name(c.precision); })
        .def_readonly("n_kv_heads", &KVCache::n_kv_heads)
        .def_readonly("n_ctx", &KVCache::n_ctx)
        .def_readonly("n_layers", &KVCache::n_layers)
        .def_readonly("kv_dim", &KVCache::kv_dim)
        .def_property_readonly("type_k", [](const KVCache& c) { return kv_cache_type_name(c.k_type); })
        .def_property_readonly("type_v", [](const KVCache& c) { return kv_cache_type_name(c.v_type); })
        .def_property_readonly("type", [](const KVCache& c) { return kv_cache_type_name(c.k_type); })
        .def_property_readonly("nbytes", &KVCache::nbytes)
        .def("copy_prefix", [](KVCache& dst, const KVCache& src, int64_t n) {
            require(&dst != &src, "copy_prefix: source and destination are the same cache");
            require(dst.same_layout(src), "copy_prefix: the caches differ in shape, types or layout");
            require(n >= 0 && n <= src.n_ctx, "copy_prefix: n must be in [0, n_ctx]");
            py::gil_scoped_release release;
            dst.copy_prefix(src, n);
        }, py::arg("src"), py::arg("n"),
           "Copy src's keys and values of positions [0, n) into this cache (same shape, types and "
           "layout: ValueError otherwise). A sequence then continues from src's first n tokens.");

    py::class_<PyTransformer>(m, "Transformer")
        .def(py::init([](int64_t dim, int64_t n_layers, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                         int64_t hidden, int64_t vocab, float eps, py::array inv_freq, float embed_scale,
                         float attn_scale, const std::string& activation) {
            require(dim > 0 && n_layers > 0 && n_heads > 0 && n_kv_heads > 0 && head_dim > 0 && hidden > 0 && vocab > 0,
                    "transformer dimensions must be positive");
            require(n_heads % n_kv_heads == 0, "n_heads must be a multiple of n_kv_heads");
            require(head_dim % 2 == 0, "head_dim must be even");
            require(std::isfinite(embed_scale) && embed_scale > 0, "embed_scale must be positive");
            require(std::isfinite(attn_scale) && attn_scale >= 0, "attn_scale must be >= 0 (0: 1/sqrt(head_dim))");
            require(activation == "silu" || activation == "gelu_tanh",
                    "activation must be 'silu' or 'gelu_tanh', got '" + activation + "'");
            auto* p = new PyTransformer();
            p->w.cfg = TransformerConfig{dim, n_layers, n_heads, n_kv_heads, head_dim, hidden, vocab, eps, embed_scale,
                                         attn_scale, activation == "silu" ? Activation::silu : Activation::gelu_tanh};
            // inv_freq: (head_dim / 2) for one RoPE table, or (n_tables, head_dim / 2)
            require_dtype<float>(inv_freq, "inv_freq", "float32");
            require_c_contiguous(inv_freq, "inv_freq");
            const int64_t half = head_dim / 2;
            require((inv_freq.ndim() == 1 && inv_freq.shape(0) == half) ||
                        (inv_freq.ndim() == 2 && inv_freq.shape(0) >= 1 && inv_freq.shape(1) == half),
                    "inv_freq must have shape (" + std::to_string(half) + ",) or (n_tables, " + std::to_string(half) + ")");
            const int64_t n_tables = inv_freq.ndim() == 1 ? 1 : inv_freq.shape(0);
            const float* f = static_cast<const float*>(inv_freq.data());
            for (int64_t r = 0; r < n_tables; ++r) p->w.inv_freq.emplace_back(f + r * half, f + (r + 1) * half);
            return p;
        }), py::arg("dim"), py::arg("n_layers"), py::arg("n_heads"), py::arg("n_kv_heads"), py::arg("head_dim"),
            py::arg("hidden"), py::arg("vocab"), py::arg("eps"), py::arg("inv_freq"), py::arg("embed_scale") = 1.0f,
            py::arg("attn_scale") = 0.0f, py::arg("activation") = "silu")
        .def("set_embedding", [](PyTransformer& p, py::tuple spec) {
            p.w.token_embd = p.weight(spec, p.w.cfg.vocab, p.w.cfg.dim, "token_embd");
        })
        .def("set_output", [](PyTransformer& p, py::array norm, py::tuple spec) {
            p.w.output_norm = p.norm(norm, "output_norm");
            p.w.output = p.weight(spec, p.w.cfg.vocab, p.w.cfg.dim, "output");
        })
        .def("add_layer", [](PyTransformer& p, py::array attn_norm, py::array ffn_norm, py::tuple wq, py::tuple wk,
                             py::tuple wv, py::tuple wo, py::tuple gate, py::tuple up, py::tuple down, py::object bq,
                             py::object bk, py::object bv, py::object q_norm, py::object k_norm,
                             py::object post_attn_norm, py::object post_ffn_norm, int64_t window, int rope_table) {
            const TransformerConfig& c = p.w.cfg;
            require(int64_t(p.w.layers.size()) < c.n_layers, "too many layers");
            require(window >= 0, "window must be >= 0 (0: no sliding window)");
            require(rope_table >= 0 && size_t(rope_table) < p.w.inv_freq.size(),
                    "rope_table must index one of the " + std::to_string(p.w.inv_freq.size()) + " inv_freq tables");
            const std::string b = "blk." + std::to_string(p.w.layers.size()) + ".";
            const int64_t qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
            TransformerLayer L;
            L.attn_norm = p.norm(attn_norm, b + "attn_norm");
            L.ffn_norm = p.norm(ffn_norm, b + "ffn_norm");
            L.wq = p.weight(wq, qd, c.dim, b + "attn_q");
            L.wk = p.weight(wk, kvd, c.dim, b + "attn_k");
            L.wv = p.weight(wv, kvd, c.dim, b + "attn_v");
            L.wo = p.weight(wo, c.dim, qd, b + "attn_output");
            L.w_gate = p.weight(gate, c.hidden, c.dim, b + "ffn_gate");
            L.w_up = p.weight(up, c.hidden, c.dim, b + "ffn_up");
            L.w_down = p.weight(down, c.dim, c.hidden, b + "ffn_down");
            L.bq = p.optional(bq, qd, b + "attn_q.bias");
            L.bk = p.optional(bk, kvd, b + "attn_k.bias");
            L.bv = p.optional(bv, kvd, b + "attn_v.bias");
            L.q_norm = p.optional(q_norm, c.head_dim, b + "attn_q_norm");
            L.k_norm = p.optional(k_norm, c.head_dim, b + "attn_k_norm");
            L.post_attn_norm = p.optional(post_attn_norm, c.dim, b + "post_attention_norm");
            L.post_ffn_norm = p.optional(post_ffn_norm, c.dim, b + "post_ffw_norm");
            L.window = window;
            L.rope_table = rope_table;
            p.w.layers.push_back(L);
        }, py::arg("attn_norm"), py::arg("ffn_norm"), py::arg("wq"), py::arg("wk"), py::arg("wv"), py::arg("wo"),
           py::arg("gate"), py::arg("up"), py::arg("down"), py::kw_only(), py::arg("bq") = py::none(),
           py::arg("bk") = py::none(), py::arg("bv") = py::none(), py::arg("q_norm") = py::none(),
           py::arg("k_norm") = py::none(), py::arg("post_attn_norm") = py::none(),
           py::arg("post_ffn_norm") = py::none(), py::arg("window") = 0, py::arg("rope_table") = 0,
           "Append a layer; the keyword arguments are the optional pieces (None / 0: absent).")
        .def("prepare", [](PyTransformer& p) {
            py::gil_scoped_release release;
            p.w.prepare();
        }, "Prepare (repack) every weight for the active kernel variant now rather than on first use.")
        .def("collect_activation_stats", [](PyTransformer& p, bool on) {
            p.stats = on ? std::make_unique<ActivationStats>(p.w.cfg.n_layers) : nullptr;
            p.w.stats = p.stats.get();
        }, py::arg("on"), "Start (afresh) or stop summing the squares of every matmul input per column.")
        .def("activation_stats", [](PyTransformer& p) {
            require(p.stats != nullptr, "activation statistics are not being collected");
            py::list out;
            for (size_t i = 0; i < p.stats->sums.size(); ++i) {
                const std::vector<double>& s = p.stats->sums[i];
                py::array_t<double> a(py::ssize_t(s.size()));
                std::copy(s.begin(), s.end(), a.mutable_data());
                out.append(py::make_tuple(a, p.stats->tokens[i]));
            }
            return out;
        }, "[(sums float64 (k,), tokens)] for layer * 4 + point, points: attention input (q/k/v), attention "
           "output (wo), FFN input (gate/up), gated hidden state (down).")
        .def("forward", [](PyTransformer& p, KVCache& cache, py::array tokens, int64_t pos, int64_t n_out,
                           bool hidden) {
            const TransformerConfig& c = p.w.cfg;
            require(int64_t(p.w.layers.size()) == c.n_layers && p.w.token_embd.data && p.w.output.data,
                    "the transformer's weights are incomplete");
            require(cache.n_layers == c.n_layers && cache.kv_dim == c.n_kv_heads * c.head_dim,
                    "the KV cache does not match this model");
            require(cache.n_kv_heads == 1 || cache.n_kv_heads == c.n_kv_heads,
                    "the KV cache was made for " + std::to_string(cache.n_kv_heads) + " KV heads, the model has " +
                        std::to_string(c.n_kv_heads));
            require(c.head_dim % 32 == 0 || (is_float_kv_type(cache.k_type) && is_float_kv_type(cache.v_type)),
                    "a q8_0 / q4_0 KV cache needs head_dim to be a multiple of 32, got " +
                        std::to_string(c.head_dim));
            require_dtype<int32_t>(tokens, "tokens", "int32");
            require(tokens.ndim() == 1 && tokens.shape(0) > 0, "tokens must be a non-empty 1-D array");
            require_c_contiguous(tokens, "tokens");
            const int64_t n = tokens.shape(0);
            require(n_out >= 1 && n_out <= n, "n_out must be in 1..n_tokens");
            require(pos >= 0, "pos must be >= 0");
            if (pos + n > cache.n_ctx)
                throw py::value_error("context overflow: positions " + std::to_string(pos) + ".." +
                                      std::to_string(pos + n - 1) + " do not fit n_ctx = " + std::to_string(cache.n_ctx));
            const int32_t* tp = static_cast<const int32_t*>(tokens.data());
            for (int64_t i = 0; i < n; ++i)
                if (tp[i] < 0 || tp[i] >= c.vocab)
                    throw py::value_error("token id " + std::to_string(tp[i]) + " is outside the vocabulary (0.." +
                                          std::to_string(c.vocab - 1) + ")");
            py::array_t<float> out({n_out, hidden ? c.dim : c.vocab});
            float* op = out.mutable_data();
            {
                py::gil_scoped_release release;
                transformer_forward(p.w, cache, tp, n, pos, hidden ? nullptr : op, n_out, hidden ? op : nullptr);
            }
            return out;
        }, py::arg("cache"), py::arg("tokens"), py::arg("pos"), py::arg("n_out") = 1, py::arg("hidden") = false,
           "Run tokens at positions pos.. and return the logits of the last n_out tokens (n_out, vocab), or with "
           "hidden=True their final hidden states after the output norm (n_out, dim).")
        .def("forward_batch", [](PyTransformer& p, std::vector<KVCache*> caches, py::array tokens,
                                 std::vector<int64_t> positions, std::vector<int64_t> counts,
                                 std::vector<int64_t> n_outs) {
            const TransformerConfig& c = p.w.cfg;
            require(int64_t(p.w.layers.size()) == c.n_layers && p.w.token_embd.data && p.w.output.data,
                    "the transformer's weights are incomplete");
            const size_t n_seqs = caches.size();
            require(n_seqs > 0, "forward_batch: no sequences");
            require(positions.size() == n_seqs && counts.size() == n_seqs && n_outs.size() == n_seqs,
                    "forward_batch: caches, positions, counts and n_outs must have one entry per sequence");
            require_dtype<int32_t>(tokens, "tokens", "int32");
            require(tokens.ndim() == 1, "tokens must be a 1-D array");
            require_c_contiguous(tokens, "tokens");
            std::vector<BatchSeq> seqs(n_seqs);
            int64_t total = 0, total_out = 0;
            for (size_t s = 0; s < n_seqs; ++s) {
                KVCache* cache = caches[s];
                const std::string name = "sequence " + std::to_string(s);
                require(cache != nullptr, name + ": cache is None");
                require(cache->n_layers == c.n_layers && cache->kv_dim == c.n_kv_heads * c.head_dim,
                        name + ": the KV cache does not match this model");
                for (size_t o = 0; o < s; ++o)
                    require(caches[o] != cache, name + ": the same KV cache appears twice in one batch");
                require(counts[s] >= 1, name + ": counts must be >= 1");
                require(n_outs[s] >= 0 && n_outs[s] <= counts[s], name + ": n_out must be in 0..count");
                require(positions[s] >= 0, name + ": pos must be >= 0");
                if (positions[s] + counts[s] > cache->n_ctx)
                    throw py::value_error(name + ": context overflow: positions " + std::to_string(positions[s]) + ".." +
                                          std::to_string(positions[s] + counts[s] - 1) + " do not fit n_ctx = " +
                                          std::to_string(cache->n_ctx));
                seqs[s] = BatchSeq{cache, positions[s], counts[s], n_outs[s]};
                total += counts[s];
                total_out += n_outs[s];
            }
            require(tokens.shape(0) == total, "tokens: expected " + std::to_string(total) + " ids (the sum of counts)");
            const int32_t* tp = static_cast<const int32_t*>(tokens.data());
            for (int64_t i = 0; i < total; ++i)
                if (tp[i] < 0 || tp[i] >= c.vocab)
                    throw py::value_error("token id " + std::to_string(tp[i]) + " is outside the vocabulary (0.." +
                                          std::to_string(c.vocab - 1) + ")");
            py::array_t<float> out({total_out, c.vocab});
            float* op = out.mutable_data();
            {
                py::gil_scoped_release release;
                transformer_forward_batch(p.w, seqs.data(), int64_t(n_seqs), tp, op);
            }
            return out;
        }, py::arg("caches"), py::arg("tokens"), py::arg("positions"), py::arg("counts"), py::arg("n_outs"),
           "Continuous batching: run several sequences in one pass, sequence s's counts[s] tokens (one after "
           "another in tokens) at positions[s].. of its own cache caches[s]; return the logits (sum n_outs, vocab) "
           "of each sequence's last n_outs[s] tokens, in sequence order. Each sequence's logits are those it gets "
           "run alone.");
}

}  // namespace llamix
