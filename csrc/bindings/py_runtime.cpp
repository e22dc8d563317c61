// CPU features, kernel variant and thread pool control.
#include <pybind11/stl.h>

#include "bindings/checks.h"
#include "common/bandwidth.h"
#include "common/cpu_features.h"
#include "common/setting_error.h"
#include "common/thread_pool.h"
#include "drivers/attention.h"
#include "kernels/kernels.h"

namespace llamix {

namespace {
// The Python class a SettingError becomes (llamix.ArgumentError, handed over by llamix._runtime at
// import; ValueError until then). A borrowed reference kept for the process's life.
PyObject* g_setting_error = PyExc_ValueError;
}  // namespace

void register_runtime(py::module_& m) {
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const SettingError& e) {
            PyErr_SetString(g_setting_error, e.what());
        }
    });
    m.def("set_setting_error", [](py::object cls) {
        require(PyExceptionClass_Check(cls.ptr()), "set_setting_error takes an exception class");
        g_setting_error = cls.inc_ref().ptr();  // kept alive for the process (never decremented)
    }, "The exception class raised for a bad LLAMIX_ISA / LLAMIX_THREADS (llamix.ArgumentError).");
    m.def("cpu_features", [] { return cpu_features().names(); }, "CPU features usable (CPUID and OS support).");
    m.def("physical_cores", &physical_cores);
    m.def("available_isas", [] {
        std::vector<std::string> out;
        for (Isa isa : available_isas()) out.emplace_back(isa_name(isa));
        return out;
    }, "Kernel variants this CPU can run, best first.");
    m.def("isa", [] { return std::string(isa_name(kernels().isa)); }, "The active kernel variant.");
    m.def("set_isa", [](const std::string& name) {
        try {
            set_isa(name);
        } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
        }
    });
    m.def("amx_usable", [] { return amx_usable(); },
          "Whether this process may run AMX tiles (CPU AMX-BF16, LLAMIX_AMX not 0, the OS granted the tile "
          "permission, asked on the first call): attn_precision='auto' means bf16 then.");
    m.def("attention_uses_amx", [] { return attention_uses_amx(); },
          "Whether bf16 attention runs on AMX tiles now (amx_usable, the active kernel variant, set_attention_amx).");
    m.def("set_attention_amx", [](bool enabled) { set_attention_amx(enabled); }, py::arg("enabled"),
          "Off: bf16 attention runs the exact emulation instead of AMX tiles (the same bits; for tests).");
    m.def("threads", [] { return ThreadPool::instance().threads(); });
    m.def("stream_read", [](py::array data, int streams) {
        require_c_contiguous(data, "data");  // stream_read refuses other stream counts (ValueError)
        const void* p = data.data();
        const int64_t n = data.nbytes();
        py::gil_scoped_release release;
        return stream_read(p, n, streams);
    }, py::arg("data"), py::arg("streams") = 4,
          "Read a buffer once with the thread pool (a memory-bandwidth probe): each thread a contiguous lane, "
          "`streams` interleaved streams per thread; returns the XOR of its 64-bit words.");
    m.def("max_threads", &max_threads, "The most threads set_threads accepts: 8 per CPU this process may use.");
    m.def("set_threads", [](int n) {
        require(n >= 0, "threads must be >= 0 (0 = physical cores)");
        py::gil_scoped_release release;  // the pool refuses more than max_threads() (a ValueError)
        ThreadPool::instance().set_threads(n);
    });
}

}  // namespace llamix
