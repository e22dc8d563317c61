// The transformer ops, one call each (for tests); the fused forward pass is in py_model.cpp.
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bindings/checks.h"
#include "drivers/attention.h"
#include "kernels/kernels.h"

namespace llamix {

namespace {

py::array_t<float> f32_2d(const py::array& a, const char* name) {
    require_dtype<float>(a, name, "float32");
    require(a.ndim() == 2, std::string(name) + " must be 2-D");
    require_c_contiguous(a, name);
    return py::array_t<float>(a);
}

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
    m.def("geglu", [](py::array g, py::array u) {
        require_dtype<float>(g, "g", "float32");
        require(g.ndim() == 1, "g must be 1-D");
        const int64_t n = g.shape(0);
        const float* gp = f32_vector(g, n, "g");
        const float* up = f32_vector(u, n, "u");
        py::array_t<float> y(n);
        float* yp = y.mutable_data();
        py::gil_scoped_release release;
        kernels().ops.geglu(gp, up, yp, n);
        return y;
    }, py::arg("g"), py::arg("u"), "gelu_tanh(g) * u (GELU's tanh approximation).");
    m.def("attention_causal", [](py::array q, py::array k, py::array v, int64_t pos, int64_t n_kv_heads, int64_t window,
                                 float scale, const std::string& type_k, const std::string& type_v, bool head_major,
                                 const std::string& precision) {
        require_dtype<float>(q, "q", "float32");
        require(q.ndim() == 3, "q must be (n_tokens, n_heads, head_dim)");
        require_c_contiguous(q, "q");
        auto ka = f32_2d(k, "k"), va = f32_2d(v, "v");
        const int64_t n = q.shape(0), n_heads = q.shape(1), hd = q.shape(2), kv_dim = ka.shape(1), nk = pos + n;
        require(n > 0 && pos >= 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0 && kv_dim == n_kv_heads * hd &&
                    ka.shape(0) == nk && va.shape(0) == nk && va.shape(1) == kv_dim,
                "k and v must be (pos + n_tokens, n_kv_heads * head_dim), n_heads a multiple of n_kv_heads");
        const QType kt = kv_cache_type(type_k, "type_k"), vt = kv_cache_type(type_v, "type_v");
        require(hd % 32 == 0 || (is_float_kv_type(kt) && is_float_kv_type(vt)), "q8_0 / q4_0 need head_dim % 32 == 0");
        const int64_t ks = qtype_row_bytes(kt, hd), vs = qtype_row_bytes(vt, hd);
        // head-major: each head's rows contiguous (the model's cache: F32/F16 keys in transposed
        // tiles, under bf16 products F16 streams as packed bf16 tiles; whole tiles); else
        // position-major rows
        const AttnPrecision ap = attn_precision(precision, "precision");
        const bool tiled = head_major && kv_keys_tiled(kt);
        const bool k_packed = head_major && kv_bf16_packed(kt, ap, hd), v_packed = head_major && kv_bf16_packed(vt, ap, hd);
        const int64_t whole = (nk + kAttnTile - 1) / kAttnTile * kAttnTile;
        const int64_t nk_k = tiled || k_packed ? whole : nk, nk_v = v_packed ? whole : nk;
        const KVLayer shape{nullptr, nullptr, kt, vt, head_major ? ks : ks * n_kv_heads, head_major ? vs : vs * n_kv_heads,
                            head_major ? nk_k * ks : ks, head_major ? nk_v * vs : vs, tiled, ap, k_packed, v_packed};
        std::vector<uint8_t> kc(size_t(nk_k * n_kv_heads * ks)), vc(size_t(nk_v * n_kv_heads * vs));
        py::array_t<float> out({n, n_heads, hd});
        const float *qp = static_cast<const float*>(q.data()), *kp = ka.data(), *vp = va.data();
        float* op = out.mutable_data();
        py::gil_scoped_release release;
        KVLayer layer = shape;
        layer.k = kc.data();
        layer.v = vc.data();
        store_kv(layer, kp, vp, nk, 0, n_kv_heads, hd);
        attention_causal(qp, n_heads * hd, n, pos, layer, n_heads, n_kv_heads, hd, window, scale, op, n_heads * hd);
        return out;
    }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("pos"), py::arg("n_kv_heads"), py::arg("window") = 0,
       py::arg("scale") = 1.0f, py::arg("type_k") = "f32", py::arg("type_v") = "f32", py::arg("head_major") = true,
       py::arg("precision") = "f32",
       "Causal grouped-query attention of n_tokens queries at positions pos.. over a cache holding k and v "
       "(stored as type_k / type_v first, head-major or in position-major rows), as the forward pass runs it; "
       "precision: the products' arithmetic, 'f32' or 'bf16' (drivers/attention.h).");
    // The bf16 attention products' tile kernels on raw bit patterns (kernels/ops.h, attn_bf16_*), for
    // tests against the spec: the active table's emulation, or its AMX entry (amx=True).
    m.def("attn_bf16_scores", [](py::array q, py::array kp, bool amx) {
        require_dtype<uint16_t>(q, "q", "uint16 (bf16 bit patterns)");
        require_dtype<uint16_t>(kp, "kp", "uint16 (bf16 bit patterns)");
        require_c_contiguous(q, "q");
        require_c_contiguous(kp, "kp");
        require(q.ndim() == 2 && q.shape(1) % 32 == 0 && q.shape(1) > 0, "q must be (n_rows, hd32), hd32 a multiple of 32");
        const int64_t rows = q.shape(0), hd32 = q.shape(1);
        require(kp.size() == hd32 * kAttnTile, "kp must hold hd32 * 64 elements");
        const OpsKernels& K = kernels().ops;
        if (amx) require(attention_uses_amx() && rows % 16 == 0, "AMX tiles are not usable here (or n_rows % 16 != 0)");
        py::array_t<float> s({rows, kAttnTile});
        const uint16_t *qp = static_cast<const uint16_t*>(q.data()), *kpp = static_cast<const uint16_t*>(kp.data());
        float* sp = s.mutable_data();
        py::gil_scoped_release release;
        if (!amx) {
            K.attn_bf16_scores(qp, rows, hd32, kpp, sp);
            return s;
        }
        K.attn_bf16_amx_begin(16);
        K.attn_bf16_scores_amx(qp, rows, hd32, kpp, sp);
        K.attn_bf16_amx_end();
        return s;
    }, py::arg("q"), py::arg("kp"), py::arg("amx") = false, "s (n_rows, 64) = q . keys in TDPBF16PS's arithmetic.");
    m.def("attn_bf16_accumulate", [](py::array p, py::array vp, py::array alpha, py::array o, bool amx) {
        for (auto* a : {&p, &vp}) {
            require_dtype<uint16_t>(*a, "p/vp", "uint16 (bf16 bit patterns)");
            require_c_contiguous(*a, "p/vp");
        }
        auto oa = f32_2d(o, "o");
        const int64_t rows = oa.shape(0), hd32 = oa.shape(1);
        require(hd32 % 32 == 0 && hd32 > 0, "o must be (n_rows, hd32), hd32 a multiple of 32");
        require(p.ndim() == 2 && p.shape(0) == rows && p.shape(1) == kAttnTile, "p must be (n_rows, 64)");
        require(vp.size() == hd32 * kAttnTile, "vp must hold 64 * hd32 elements");
        const float* ap = f32_vector(alpha, rows, "alpha");
        if (amx) require(attention_uses_amx() && rows % 16 == 0, "AMX tiles are not usable here (or n_rows % 16 != 0)");
        py::array_t<float> out({rows, hd32});
        std::copy_n(oa.data(), rows * hd32, out.mutable_data());
        const uint16_t *pp = static_cast<const uint16_t*>(p.data()), *vpp = static_cast<const uint16_t*>(vp.data());
        float* op = out.mutable_data();
        const OpsKernels& K = kernels().ops;
        py::gil_scoped_release release;
        if (!amx) {
            K.attn_bf16_accumulate(pp, rows, hd32, vpp, ap, op);
            return out;
        }
        K.attn_bf16_amx_begin(16);
        K.attn_bf16_accumulate_amx(pp, rows, hd32, vpp, ap, op);
        K.attn_bf16_amx_end();
        return out;
    }, py::arg("p"), py::arg("vp"), py::arg("alpha"), py::arg("o"), py::arg("amx") = false,
       "alpha o + p . values in TDPBF16PS's arithmetic (o: (n_rows, hd32) float32, returned anew).");
    m.def("attn_bf16_pack", [](py::array x, bool keys) {
        const bool half = x.dtype().is(py::dtype::of<uint16_t>());
        if (!half) require_dtype<float>(x, "x", "float32 or uint16 (fp16 bit patterns)");
        require_c_contiguous(x, "x");
        require(x.ndim() == 2, "x must be 2-D");
        const int64_t hd = keys ? x.shape(0) : x.shape(1);
        require((keys ? x.shape(1) : x.shape(0)) == kAttnTile && hd > 0 && hd % 2 == 0,
                "x must be kt (head_dim, 64) for keys or v (64, head_dim) for values, head_dim even");
        const int64_t hd32 = (hd + 31) / 32 * 32;
        py::array_t<uint16_t> out(hd32 * kAttnTile);
        const void* xp = x.data();
        uint16_t* op = out.mutable_data();
        const OpsKernels& K = kernels().ops;
        py::gil_scoped_release release;
        if (keys && half) K.attn_bf16_pack_keys_f16(static_cast<const uint16_t*>(xp), hd, op);
        else if (keys) K.attn_bf16_pack_keys(static_cast<const float*>(xp), hd, op);
        else if (half) K.attn_bf16_pack_values_f16(static_cast<const uint16_t*>(xp), hd, op);
        else K.attn_bf16_pack_values(static_cast<const float*>(xp), hd, op);
        return out;
    }, py::arg("x"), py::arg("keys"), "A tile packed for the bf16 products (kernels/ops.h: kp or vp).");
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
}

}  // namespace llamix
