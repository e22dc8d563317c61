// The transformer ops (for tests) and the fused forward pass (Transformer, KVCache).
#include <pybind11/stl.h>

#include <cmath>
#include <string>
#include <vector>

#include "bindings/checks.h"
#include "common/thread_pool.h"
#include "drivers/attention.h"
#include "drivers/kquant_matmul.h"
#include "kernels/kernels.h"
#include "model/transformer.h"

namespace llamix {

namespace {

const float* f32_vector(const py::array& a, int64_t n, const std::string& name) {
    require_dtype<float>(a, name.c_str(), "float32");
    require(a.ndim() == 1 && a.shape(0) == n, name + " must have shape (" + std::to_string(n) + ",)");
    require_c_contiguous(a, name.c_str());
    return static_cast<const float*>(a.data());
}

py::array_t<float> f32_2d(const py::array& a, const char* name) {
    require_dtype<float>(a, name, "float32");
    require(a.ndim() == 2, std::string(name) + " must be 2-D");
    require_c_contiguous(a, name);
    return py::array_t<float>(a);
}

// The model's weights plus the Python arrays that own their bytes.
struct PyTransformer {
    TransformerWeights w;
    std::vector<py::object> keep;

    WeightRef weight(const py::tuple& spec, int64_t rows, int64_t k, const std::string& name) {
        require(spec.size() == 2, name + ": expected (data, qtype)");
        py::array data = spec[0].cast<py::array>();
        const QType t = qtype_from_int(spec[1].cast<int>());
        require(t == QType::F32 || t == QType::F16 || t == QType::BF16 || t == QType::Q4_0 || t == QType::Q8_0 ||
                    t == QType::Q5_0 || t == QType::Q5_1 || is_kquant(t),  // issue 5: K-quant mixes
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
    const float* norm(const py::array& a, const std::string& name) {
        keep.push_back(a);
        return f32_vector(a, w.cfg.dim, name);
    }
};

}  // namespace

void register_ops(py::module_& m) {
    m.def("rmsnorm", [](py::array x, py::array w, float eps) {
        auto xa = f32_2d(x, "x");
        const int64_t n = xa.shape(0), d = xa.shape(1);
        const float* wp = f32_vector(w, d, "w");
        py::array_t<float> y({n, d});
        const float* xp = xa.data();
        float* yp = y.mutable_data();
        py::gil_scoped_release release;
        for (int64_t t = 0; t < n; ++t) kernels().ops.rmsnorm(xp + t * d, wp, yp + t * d, d, eps);
        return y;
    }, py::arg("x"), py::arg("w"), py::arg("eps"), "RMSNorm of each row of x (n, d).");
    m.def("rope", [](py::array x, py::array cos, py::array sin) {
        require_dtype<float>(x, "x", "float32");
        require(x.ndim() == 2, "x must be 2-D (n_heads, head_dim)");
        const int64_t nh = x.shape(0), hd = x.shape(1);
        require(hd % 2 == 0, "head_dim must be even");
        py::array_t<float> y = py::array_t<float>(x).attr("copy")().cast<py::array_t<float>>();
        const float* c = f32_vector(cos, hd / 2, "cos");
        const float* s = f32_vector(sin, hd / 2, "sin");
        float* yp = y.mutable_data();
        py::gil_scoped_release release;
        kernels().ops.rope(yp, nh, hd, c, s);
        return y;
    }, py::arg("x"), py::arg("cos"), py::arg("sin"), "RoPE on adjacent pairs of each head (returns a copy).");
    m.def("swiglu", [](py::array g, py::array u) {
        require_dtype<float>(g, "g", "float32");
        require(g.ndim() == 1, "g must be 1-D");
        const int64_t n = g.shape(0);
        const float* gp = f32_vector(g, n, "g");
        const float* up = f32_vector(u, n, "u");
        py::array_t<float> y(n);
        float* yp = y.mutable_data();
        py::gil_scoped_release release;
        kernels().ops.swiglu(gp, up, yp, n);
        return y;
    }, py::arg("g"), py::arg("u"), "silu(g) * u.");
    m.def("attention_group", [](py::array q, py::array k, py::array v, float scale) {
        auto qa = f32_2d(q, "q"), ka = f32_2d(k, "k"), va = f32_2d(v, "v");
        const int64_t nq = qa.shape(0), hd = qa.shape(1), nk = ka.shape(0);
        require(ka.shape(1) == hd && va.shape(1) == hd && va.shape(0) == nk && nk > 0 && nq > 0,
                "q must be (n_heads, head_dim), k and v (n_keys >= 1, head_dim)");
        py::array_t<float> out({nq, hd});
        std::vector<float> scratch(static_cast<size_t>(nq * nk));
        const float *qp = qa.data(), *kp = ka.data(), *vp = va.data();
        float* op = out.mutable_data();
        py::gil_scoped_release release;
        attention_group(kernels().ops, qp, hd, nq, kp, vp, hd, nk, hd, scale, op, hd, scratch.data());
        return out;
    }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("scale"), "attention of n_heads queries sharing k and v.");
    m.def("attention_f16", [](py::array q, py::array k, py::array v, float scale) {
        require_dtype<float>(q, "q", "float32");
        require(q.ndim() == 1, "q must be 1-D (head_dim)");
        const int64_t hd = q.shape(0);
        for (auto* a : {&k, &v}) {
            require_dtype<uint16_t>(*a, "k/v", "uint16 (fp16 bit patterns)");
            require(a->ndim() == 2 && a->shape(1) == hd && a->shape(0) > 0, "k and v must be (n_keys >= 1, head_dim)");
            require_c_contiguous(*a, "k/v");
        }
        require(k.shape(0) == v.shape(0), "k and v must have the same number of rows");
        const int64_t nk = k.shape(0);
        const float* qp = f32_vector(q, hd, "q");
        py::array_t<float> out(hd);
        std::vector<float> scratch(static_cast<size_t>(nk));
        const auto* kp = static_cast<const uint16_t*>(k.data());
        const auto* vp = static_cast<const uint16_t*>(v.data());
        float* op = out.mutable_data();
        py::gil_scoped_release release;
        kernels().ops.attention_f16(qp, kp, vp, hd, nk, hd, scale, op, scratch.data());
        return out;
    }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("scale"), "attention with fp16 keys/values (uint16 bits).");
    m.def("attention", [](py::array q, py::array k, py::array v, float scale) {
        require_dtype<float>(q, "q", "float32");
        require(q.ndim() == 1, "q must be 1-D (head_dim)");
        const int64_t hd = q.shape(0);
        auto ka = f32_2d(k, "k"), va = f32_2d(v, "v");
        require(ka.shape(1) == hd && va.shape(1) == hd && ka.shape(0) == va.shape(0) && ka.shape(0) > 0,
                "k and v must be (n_keys >= 1, head_dim)");
        const int64_t nk = ka.shape(0);
        const float* qp = f32_vector(q, hd, "q");
        py::array_t<float> out(hd);
        std::vector<float> scratch(static_cast<size_t>(nk));
        const float *kp = ka.data(), *vp = va.data();
        float* op = out.mutable_data();
        py::gil_scoped_release release;
        kernels().ops.attention(qp, kp, vp, hd, nk, hd, scale, op, scratch.data());
        return out;
    }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("scale"), "softmax(scale * k @ q) @ v for one query.");

    py::class_<KVCache>(m, "KVCache")
        .def(py::init([](int64_t n_layers, int64_t n_ctx, int64_t kv_dim, const std::string& type) {
            require(n_layers > 0 && n_ctx > 0 && kv_dim > 0, "KVCache dimensions must be positive");
            require(type == "f32" || type == "f16", "KV cache type must be 'f32' or 'f16', got '" + type + "'");
            py::gil_scoped_release release;
            return new KVCache(n_layers, n_ctx, kv_dim, type == "f16");
        }), py::arg("n_layers"), py::arg("n_ctx"), py::arg("kv_dim"), py::arg("type") = "f32")
        .def_readonly("n_ctx", &KVCache::n_ctx)
        .def_readonly("n_layers", &KVCache::n_layers)
        .def_readonly("kv_dim", &KVCache::kv_dim)
        .def_property_readonly("type", [](const KVCache& c) { return std::string(c.f16 ? "f16" : "f32"); })
        .def_property_readonly("nbytes", &KVCache::nbytes);

    py::class_<PyTransformer>(m, "Transformer")
        .def(py::init([](int64_t dim, int64_t n_layers, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                         int64_t hidden, int64_t vocab, float eps, py::array inv_freq) {
            require(dim > 0 && n_layers > 0 && n_heads > 0 && n_kv_heads > 0 && head_dim > 0 && hidden > 0 && vocab > 0,
                    "transformer dimensions must be positive");
            require(n_heads % n_kv_heads == 0, "n_heads must be a multiple of n_kv_heads");
            require(head_dim % 2 == 0, "head_dim must be even");
            auto* p = new PyTransformer();
            p->w.cfg = TransformerConfig{dim, n_layers, n_heads, n_kv_heads, head_dim, hidden, vocab, eps};
            const float* f = f32_vector(inv_freq, head_dim / 2, "inv_freq");
            p->w.inv_freq.assign(f, f + head_dim / 2);
            return p;
        }), py::arg("dim"), py::arg("n_layers"), py::arg("n_heads"), py::arg("n_kv_heads"), py::arg("head_dim"),
            py::arg("hidden"), py::arg("vocab"), py::arg("eps"), py::arg("inv_freq"))
        .def("set_embedding", [](PyTransformer& p, py::tuple spec) {
            p.w.token_embd = p.weight(spec, p.w.cfg.vocab, p.w.cfg.dim, "token_embd");
        })
        .def("set_output", [](PyTransformer& p, py::array norm, py::tuple spec) {
            p.w.output_norm = p.norm(norm, "output_norm");
            p.w.output = p.weight(spec, p.w.cfg.vocab, p.w.cfg.dim, "output");
        })
        .def("add_layer", [](PyTransformer& p, py::array attn_norm, py::array ffn_norm, py::tuple wq, py::tuple wk,
                             py::tuple wv, py::tuple wo, py::tuple gate, py::tuple up, py::tuple down) {
            const TransformerConfig& c = p.w.cfg;
            require(int64_t(p.w.layers.size()) < c.n_layers, "too many layers");
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
            p.w.layers.push_back(L);
        })
        .def("prepare", [](PyTransformer& p) {
            py::gil_scoped_release release;
            p.w.prepare();
        }, "Prepare (repack) every weight for the active kernel variant now rather than on first use.")
        .def("forward", [](PyTransformer& p, KVCache& cache, py::array tokens, int64_t pos, int64_t n_out) {
            const TransformerConfig& c = p.w.cfg;
            require(int64_t(p.w.layers.size()) == c.n_layers && p.w.token_embd.data && p.w.output.data,
                    "the transformer's weights are incomplete");
            require(cache.n_layers == c.n_layers && cache.kv_dim == c.n_kv_heads * c.head_dim,
                    "the KV cache does not match this model");
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
            py::array_t<float> logits({n_out, c.vocab});
            float* lp = logits.mutable_data();
            {
                py::gil_scoped_release release;
                transformer_forward(p.w, cache, tp, n, pos, lp, n_out);
            }
            return logits;
        }, py::arg("cache"), py::arg("tokens"), py::arg("pos"), py::arg("n_out") = 1,
           "Run tokens at positions pos.. and return the logits of the last n_out tokens.");
}

}  // namespace llamix
