// quantize_rows_lowbit: rows of a float matrix -> Q4_1 / Q2_K / Q3_K / IQ4_NL / IQ4_XS blocks, or
// K-quant blocks weighted by an importance matrix (kernels/quantize_lowbit.h). Rows are spread
// over the thread pool with the GIL released.
#include <algorithm>
#include <vector>

#include "bindings/checks.h"
#include "common/thread_pool.h"
#include "kernels/kernels.h"
#include "kernels/quantize_lowbit.h"

namespace llamix {

void register_quant_lowbit(py::module_& m) {
    m.def("quantize_rows_lowbit", [](py::array w, int src_id, int dst_id, py::object importance) {
        require(lowbit::supported(dst_id), "quantize_rows_lowbit: unsupported target type id " + std::to_string(dst_id));
        require(src_id == 0 || src_id == 1 || src_id == 30, "w must be float32, float16 or bfloat16");
        require(w.ndim() == 2, "w must be 2-D (rows, k)");
        require_c_contiguous(w, "w");
        require(w.itemsize() == (src_id == 0 ? 4 : 2), "w's dtype does not match its declared source type");
        const int64_t rows = w.shape(0), k = w.shape(1), n = lowbit::block_elems(dst_id);
        require(k % n == 0, "row length " + std::to_string(k) + " is not a multiple of the block size " + std::to_string(n));
        const float* imp = nullptr;
        py::array imp_arr;
        if (!importance.is_none()) {
            imp_arr = importance.cast<py::array>();
            imp = f32_vector(imp_arr, k, "importance");
        }
        const int64_t out_bytes = k / n * lowbit::block_bytes(dst_id), src_row_bytes = k * w.itemsize();
        py::array_t<uint8_t> out({rows, out_bytes});
        const auto* sp = static_cast<const uint8_t*>(w.data());
        uint8_t* dp = out.mutable_data();
        {
            py::gil_scoped_release release;
            const QuantKernels& Q = kernels().quant;
            constexpr int64_t kRows = 4;
            ThreadPool::instance().parallel_for(ceil_div(rows, kRows), [&](int64_t task, int) {
                std::vector<float> buf(src_id == 0 ? 0 : k);
                for (int64_t r = task * kRows; r < std::min(rows, task * kRows + kRows); ++r) {
                    const void* row = sp + r * src_row_bytes;
                    const float* x = static_cast<const float*>(row);
                    if (src_id == 1) { Q.f16_to_f32(static_cast<const uint16_t*>(row), buf.data(), k); x = buf.data(); }
                    if (src_id == 30) { Q.bf16_to_f32(static_cast<const uint16_t*>(row), buf.data(), k); x = buf.data(); }
                    lowbit::quantize_row(dst_id, x, dp + r * out_bytes, k, imp);
                }
            });
        }
        return out;
    }, py::arg("w"), py::arg("src_type"), py::arg("dst_type"), py::arg("importance") = py::none(),
       "Quantize rows of a (rows, k) float array to Q4_1/Q2_K/Q3_K/Q4_K/Q5_K/Q6_K/IQ4_NL/IQ4_XS (GGUF type id), "
       "minimising the squared error weighted by `importance` (float32 (k,), or None: unit weights); "
       "returns uint8 (rows, row_bytes).");
}

}  // namespace llamix
