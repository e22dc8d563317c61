// quantize / dequantize rows (also Q4_0 with searched scales) and the matmul entry point.
#include <algorithm>
#include <vector>

#include <pybind11/stl.h>

#include "bindings/checks.h"
#include "common/thread_pool.h"
#include "drivers/matmul.h"
#include "kernels/kernels.h"

namespace llamix {

namespace {

constexpr int64_t kRowsPerTask = 8;

// Rows of float32/float16/bfloat16 -> float32, one row at a time.
using ToF32 = void (*)(const void* src, float* dst, int64_t k);

ToF32 source_converter(QType src) {
    switch (src) {
        case QType::F32: return nullptr;
        case QType::F16: return [](const void* s, float* d, int64_t k) { kernels().quant.f16_to_f32(static_cast<const uint16_t*>(s), d, k); };
        case QType::BF16: return [](const void* s, float* d, int64_t k) { kernels().quant.bf16_to_f32(static_cast<const uint16_t*>(s), d, k); };
        default: throw py::value_error("unsupported source type");
    }
}

// float32 row -> row of dst type
void quantize_row(QType dst, const float* x, void* y, int64_t k) {
    const QuantKernels& Q = kernels().quant;
    switch (dst) {
        case QType::F32: std::copy(x, x + k, static_cast<float*>(y)); return;
        case QType::F16: Q.f32_to_f16(x, static_cast<uint16_t*>(y), k); return;
        case QType::BF16: Q.f32_to_bf16(x, static_cast<uint16_t*>(y), k); return;
        case QType::Q4_0: Q.quantize_row_q4_0(x, y, k); return;
        case QType::Q8_0: Q.quantize_row_q8_0(x, y, k); return;
        case QType::Q5_0: Q.quantize_row_q5_0(x, y, k); return;
        case QType::Q5_1: Q.quantize_row_q5_1(x, y, k); return;
        // K-quants (error-minimising quantizers in kernels/kquant.h)
        case QType::Q4_K: kernels().kquant.quantize_row_q4_K(x, y, k); return;
        case QType::Q5_K: kernels().kquant.quantize_row_q5_K(x, y, k); return;
        case QType::Q6_K: kernels().kquant.quantize_row_q6_K(x, y, k); return;
        default: throw std::invalid_argument("quantize: unsupported target type");
    }
}

// The result array: a new (n, rows) float32 array, or `out` after checking it can take the result.
py::array_t<float> output_array(const py::object& out, int64_t n, int64_t rows, const py::array& x) {
    if (out.is_none()) return py::array_t<float>({n, rows});
    require(py::isinstance<py::array>(out), "out must be a numpy array");
    py::array o = out.cast<py::array>();
    require_dtype<float>(o, "out", "float32");
    require(o.ndim() == 2 && o.shape(0) == n && o.shape(1) == rows,
            "out must have shape (" + std::to_string(n) + ", " + std::to_string(rows) + ")");
    require_c_contiguous(o, "out");
    require(o.writeable(), "out must be writeable");
    const auto* ob = static_cast<const uint8_t*>(o.data());
    const auto* xb = static_cast<const uint8_t*>(x.data());
    require(ob + o.nbytes() <= xb || xb + x.nbytes() <= ob, "out must not overlap x");
    return py::array_t<float>(o);
}

}  // namespace

// Row of type t -> float32 row. Shared with other bindings (declared in bindings/checks.h users).
void dequantize_row(QType t, const void* x, float* y, int64_t k) {
    const QuantKernels& Q = kernels().quant;
    switch (t) {
        case QType::F32: std::copy(static_cast<const float*>(x), static_cast<const float*>(x) + k, y); return;
        case QType::F16: Q.f16_to_f32(static_cast<const uint16_t*>(x), y, k); return;
        case QType::BF16: Q.bf16_to_f32(static_cast<const uint16_t*>(x), y, k); return;
        case QType::Q4_0: Q.dequantize_row_q4_0(x, y, k); return;
        case QType::Q8_0: Q.dequantize_row_q8_0(x, y, k); return;
        case QType::Q5_0: Q.dequantize_row_q5_0(x, y, k); return;
        case QType::Q5_1: Q.dequantize_row_q5_1(x, y, k); return;
        // K-quants
        case QType::Q4_K: kernels().kquant.dequantize_row_q4_K(x, y, k); return;
        case QType::Q5_K: kernels().kquant.dequantize_row_q5_K(x, y, k); return;
        case QType::Q6_K: kernels().kquant.dequantize_row_q6_K(x, y, k); return;
        case QType::Q4_1: Q.dequantize_row_q4_1(x, y, k); return;
        case QType::IQ4_NL: Q.dequantize_row_iq4_nl(x, y, k); return;
        case QType::Q2_K: kernels().kquant.dequantize_row_q2_K(x, y, k); return;
        case QType::Q3_K: kernels().kquant.dequantize_row_q3_K(x, y, k); return;
        case QType::IQ4_XS: kernels().kquant.dequantize_row_iq4_xs(x, y, k); return;
        default: throw std::invalid_argument("dequantize: unsupported type");
    }
}

// A prepared weight that keeps its source array alive.
struct PyPreparedWeight {
    py::array source;
    PreparedWeight weight;
};

void register_quant(py::module_& m) {
    py::class_<PyPreparedWeight>(m, "PreparedWeight")
        .def(py::init([](py::array w, int qtype_id, int64_t k) {
            const QType t = qtype_from_int(qtype_id);
            require_dtype<uint8_t>(w, "w", "uint8");
            require(w.ndim() == 2, "w must be 2-D (rows, row_bytes)");
            require_c_contiguous(w, "w");
            require_row_length(t, k, "prepare_weight");
            require(w.shape(1) == qtype_row_bytes(t, k), "weight has " + std::to_string(w.shape(1)) +
                    " bytes per row, expected " + std::to_string(qtype_row_bytes(t, k)));
            PyPreparedWeight p{w, {}};
            const void* data = w.data();
            const int64_t rows = w.shape(0);
            py::gil_scoped_release release;
            p.weight = prepare_weight(data, t, rows, k);
            return p;
        }), py::arg("w"), py::arg("qtype"), py::arg("k"))
        .def_property_readonly("rows", [](const PyPreparedWeight& p) { return p.weight.rows; })
        .def_property_readonly("k", [](const PyPreparedWeight& p) { return p.weight.k; })
        .def_property_readonly("nbytes", [](const PyPreparedWeight& p) { return p.weight.packed_bytes; },
                               "Bytes of the repacked copy (0 when the source bytes are used directly).")
        .def("matmul", [](const PyPreparedWeight& p, py::array x, py::object out) {
            require_dtype<float>(x, "x", "float32");
            require(x.ndim() == 2, "x must be 2-D (n_tokens, k)");
            require_c_contiguous(x, "x");
            require(x.shape(1) == p.weight.k, "x has " + std::to_string(x.shape(1)) + " columns but the weight rows have " +
                    std::to_string(p.weight.k) + " elements");
            const int64_t n = x.shape(0);
            py::array_t<float> y = output_array(out, n, p.weight.rows, x);
            const float* xp = static_cast<const float*>(x.data());
            float* yp = y.mutable_data();
            py::gil_scoped_release release;
            matmul_prepared(xp, n, p.weight, yp);
            return y;
        }, py::arg("x"), py::arg("out") = py::none(),
           "y = x @ W.T (float32 x of shape (n_tokens, k)); writes into `out` (float32 (n_tokens, rows)) if given.");

    m.def("matmul_many", [](py::array x, std::vector<const PyPreparedWeight*> ws, py::object outs) {
        require_dtype<float>(x, "x", "float32");
        require(x.ndim() == 2, "x must be 2-D (n_tokens, k)");
        require_c_contiguous(x, "x");
        require(!ws.empty(), "matmul_many needs at least one weight");
        const int64_t n = x.shape(0);
        std::vector<py::object> out_list(ws.size(), py::none());
        if (!outs.is_none()) {
            out_list = outs.cast<std::vector<py::object>>();
            require(out_list.size() == ws.size(), "outs must have one array per weight");
        }
        std::vector<py::array_t<float>> ys;
        std::vector<const PreparedWeight*> wp;
        std::vector<float*> yp;
        for (size_t i = 0; i < ws.size(); ++i) {
            require(ws[i] != nullptr, "weights must be PreparedWeight objects");
            if (ws[i]->weight.k != x.shape(1))
                throw py::value_error("weight " + std::to_string(i) + " has rows of " + std::to_string(ws[i]->weight.k) +
                                      " elements but x has " + std::to_string(x.shape(1)) + " columns");
            ys.push_back(output_array(out_list[i], n, ws[i]->weight.rows, x));
            wp.push_back(&ws[i]->weight);
            yp.push_back(ys.back().mutable_data());
        }
        const float* xp = static_cast<const float*>(x.data());
        {
            py::gil_scoped_release release;
            matmul_prepared_many(xp, n, wp.data(), yp.data(), int(wp.size()));
        }
        return ys;
    }, py::arg("x"), py::arg("weights"), py::arg("outs") = py::none(),
       "[x @ W.T for W in weights]: x quantized once, one parallel region for all block weights.");

    m.def("quantize_rows", [](py::array w, int src_id, int dst_id) {
        const QType src = qtype_from_int(src_id), dst = qtype_from_int(dst_id);
        require(w.ndim() == 2, "w must be 2-D (rows, k)");
        require_c_contiguous(w, "w");
        require(src == QType::F32 || src == QType::F16 || src == QType::BF16, "w must be float32, float16 or bfloat16");
        require(w.itemsize() == (src == QType::F32 ? 4 : 2), "w's dtype does not match its declared source type");
        const int64_t rows = w.shape(0), k = w.shape(1);
        require_row_length(dst, k, "quantize");
        const int64_t out_bytes = qtype_row_bytes(dst, k);
        py::array_t<uint8_t> out({rows, out_bytes});
        const auto* src_bytes = static_cast<const uint8_t*>(w.data());
        uint8_t* dst_bytes = out.mutable_data();
        const int64_t src_row_bytes = k * w.itemsize();
        const ToF32 to_f32 = source_converter(src);
        {
            py::gil_scoped_release release;
            ThreadPool::instance().parallel_for(ceil_div(rows, kRowsPerTask), [&](int64_t task, int) {
                std::vector<float> buf(to_f32 ? k : 0);
                const int64_t r1 = std::min(rows, (task + 1) * kRowsPerTask);
                for (int64_t r = task * kRowsPerTask; r < r1; ++r) {
                    const void* row = src_bytes + r * src_row_bytes;
                    const float* x = static_cast<const float*>(row);
                    if (to_f32) { to_f32(row, buf.data(), k); x = buf.data(); }
                    quantize_row(dst, x, dst_bytes + r * out_bytes, k);
                }
            });
        }
        return out;
    }, py::arg("w"), py::arg("src_type"), py::arg("dst_type"),
       "Quantize/convert rows of a (rows, k) float array to a GGUF type; returns uint8 (rows, row_bytes).");

    m.def("quantize_rows_q4_0_mse", [](py::array w, int src_id) {
        const QType src = qtype_from_int(src_id);
        require(w.ndim() == 2, "w must be 2-D (rows, k)");
        require_c_contiguous(w, "w");
        require(src == QType::F32 || src == QType::F16 || src == QType::BF16, "w must be float32, float16 or bfloat16");
        require(w.itemsize() == (src == QType::F32 ? 4 : 2), "w's dtype does not match its declared source type");
        const int64_t rows = w.shape(0), k = w.shape(1);
        require_row_length(QType::Q4_0, k, "quantize q4_0_mse");
        const int64_t out_bytes = qtype_row_bytes(QType::Q4_0, k), src_row_bytes = k * w.itemsize();
        py::array_t<uint8_t> out({rows, out_bytes});
        const auto* sp = static_cast<const uint8_t*>(w.data());
        uint8_t* dp = out.mutable_data();
        {
            py::gil_scoped_release release;
            const KernelTable& K = kernels();
            ThreadPool::instance().parallel_for(ceil_div(rows, 8), [&](int64_t task, int) {
                std::vector<float> buf(k);
                for (int64_t r = task * 8; r < std::min(rows, task * 8 + 8); ++r) {
                    const void* row = sp + r * src_row_bytes;
                    const float* x = static_cast<const float*>(row);
                    if (src == QType::F16) { K.quant.f16_to_f32(static_cast<const uint16_t*>(row), buf.data(), k); x = buf.data(); }
                    if (src == QType::BF16) { K.quant.bf16_to_f32(static_cast<const uint16_t*>(row), buf.data(), k); x = buf.data(); }
                    K.quant.quantize_row_q4_0_mse(x, dp + r * out_bytes, k);
                }
            });
        }
        return out;
    }, py::arg("w"), py::arg("src_type"),
       "Q4_0 bytes with each block's scale chosen by an error-minimising search; returns uint8 (rows, row_bytes).");

    m.def("dequantize_rows", [](py::array data, int qtype_id, int64_t k) {
        const QType t = qtype_from_int(qtype_id);
        require_dtype<uint8_t>(data, "data", "uint8");
        require(data.ndim() == 2, "data must be 2-D (rows, row_bytes)");
        require_c_contiguous(data, "data");
        require_row_length(t, k, "dequantize");
        require(data.shape(1) == qtype_row_bytes(t, k), "data has " + std::to_string(data.shape(1)) +
                " bytes per row, expected " + std::to_string(qtype_row_bytes(t, k)));
        const int64_t rows = data.shape(0), row_bytes = data.shape(1);
        py::array_t<float> out({rows, k});
        const auto* src = static_cast<const uint8_t*>(data.data());
        float* dst = out.mutable_data();
        {
            py::gil_scoped_release release;
            ThreadPool::instance().parallel_for(ceil_div(rows, kRowsPerTask), [&](int64_t task, int) {
                const int64_t r1 = std::min(rows, (task + 1) * kRowsPerTask);
                for (int64_t r = task * kRowsPerTask; r < r1; ++r) dequantize_row(t, src + r * row_bytes, dst + r * k, k);
            });
        }
        return out;
    }, py::arg("data"), py::arg("qtype"), py::arg("k"));

    m.def("matmul", [](py::array x, py::array w, int qtype_id, int64_t k, py::object out) {
        const QType t = qtype_from_int(qtype_id);
        require_dtype<float>(x, "x", "float32");
        require(x.ndim() == 2, "x must be 2-D (n_tokens, k)");
        require_c_contiguous(x, "x");
        require_dtype<uint8_t>(w, "w", "uint8");
        require(w.ndim() == 2, "w must be 2-D (rows, row_bytes)");
        require_c_contiguous(w, "w");
        require(x.shape(1) == k, "x has " + std::to_string(x.shape(1)) + " columns but the weight rows have " +
                std::to_string(k) + " elements");
        require_row_length(t, k, "matmul");
        require(w.shape(1) == qtype_row_bytes(t, k), "weight has " + std::to_string(w.shape(1)) +
                " bytes per row, expected " + std::to_string(qtype_row_bytes(t, k)));
        const int64_t n = x.shape(0), rows = w.shape(0);
        py::array_t<float> y = output_array(out, n, rows, x);
        const float* xp = static_cast<const float*>(x.data());
        const void* wp = w.data();
        float* yp = y.mutable_data();
        {
            py::gil_scoped_release release;
            matmul(xp, n, k, wp, t, rows, yp);
        }
        return y;
    }, py::arg("x"), py::arg("w"), py::arg("qtype"), py::arg("k"), py::arg("out") = py::none(),
       "y = x @ dequantize(w).T in float32 (into `out` if given).");
}

}  // namespace llamix
