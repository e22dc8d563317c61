// The llamix._C extension: each binding area registers itself; no logic lives here.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace llamix {
void register_runtime(py::module_& m);
void register_quant(py::module_& m);
void register_ops(py::module_& m);
void register_model(py::module_& m);
void register_merge(py::module_& m);
void register_kquant(py::module_& m);
void register_quant_lowbit(py::module_& m);
}  // namespace llamix

PYBIND11_MODULE(_C, m) {
    m.doc() = "llamix C++ kernels";
    llamix::register_runtime(m);
    llamix::register_quant(m);
    llamix::register_ops(m);
    llamix::register_model(m);
    llamix::register_merge(m);
    llamix::register_kquant(m);
    llamix::register_quant_lowbit(m);
}
