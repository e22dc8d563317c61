// K-quant extras not covered by the generic quantize/dequantize/matmul bindings: the Q8_K
// activation quantizer (for tests).
#include "bindings/checks.h"
#include "kernels/kernels.h"

namespace llamix {

void register_kquant(py::module_& m) {
    m.def("quantize_act_q8_K", [](py::array_t<float, py::array::c_style | py::array::forcecast> x) {
        require(x.ndim() == 1 && x.shape(0) % QK_K == 0, "x must be 1-D with a multiple of 256 elements");
        const int64_t k = x.shape(0);
        py::array_t<uint8_t> out(k / QK_K * static_cast<int64_t>(sizeof(block_q8_K)));
        kernels().kquant.quantize_act_q8_K(x.data(), out.mutable_data(), k);
        return out;
    }, py::arg("x"), "Q8_K activation blocks (float32 d, int8 qs[256], int16 bsums[16]) as bytes.");
}

}  // namespace llamix
