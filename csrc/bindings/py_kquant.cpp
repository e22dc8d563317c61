// K-quant extras not covered by the generic quantize/dequantize/matmul bindings: the Q4_0-format
// quantizer with searched scales, and the Q8_K activation quantizer (for tests).
#include <algorithm>
#include <vector>

#include "bindings/checks.h"
#include "common/thread_pool.h"
#include "kernels/kernels.h"

namespace llamix {

void register_kquant(py::module_& m) {
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
                    K.kquant.quantize_row_q4_0_mse(x, dp + r * out_bytes, k);
                }
            });
        }
        return out;
    }, py::arg("w"), py::arg("src_type"),
       "Q4_0 bytes with each block's scale chosen by an error-minimising search; returns uint8 (rows, row_bytes).");

    m.def("quantize_act_q8_K", [](py::array_t<float, py::array::c_style | py::array::forcecast> x) {
        require(x.ndim() == 1 && x.shape(0) % QK_K == 0, "x must be 1-D with a multiple of 256 elements");
        const int64_t k = x.shape(0);
        py::array_t<uint8_t> out(k / QK_K * static_cast<int64_t>(sizeof(block_q8_K)));
        kernels().kquant.quantize_act_q8_K(x.data(), out.mutable_data(), k);
        return out;
    }, py::arg("x"), "Q8_K activation blocks (float32 d, int8 qs[256], int16 bsums[16]) as bytes.");
}

}  // namespace llamix
