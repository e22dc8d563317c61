// Argument checks shared by the bindings: every problem becomes a ValueError naming the argument.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "common/formats.h"
#include "drivers/attention.h"

namespace llamix {
namespace py = pybind11;

inline void require(bool ok, const std::string& message) {
    if (!ok) throw py::value_error(message);
}

inline void require_c_contiguous(const py::array& a, const char* name) {
    require(a.flags() & py::array::c_style, std::string(name) + " must be C-contiguous");
}

// The message is built only on failure: str(dtype) runs Python code (microseconds per call).
template <class T>
inline void require_dtype(const py::array& a, const char* name, const char* dtype_name) {
    if (!a.dtype().is(py::dtype::of<T>()))
        throw py::value_error(std::string(name) + " must have dtype " + dtype_name + ", got " + std::string(py::str(a.dtype())));
}

// A float32 vector of exactly n elements, C-contiguous.
inline const float* f32_vector(const py::array& a, int64_t n, const std::string& name) {
    require_dtype<float>(a, name.c_str(), "float32");
    require(a.ndim() == 1 && a.shape(0) == n, name + " must have shape (" + std::to_string(n) + ",)");
    require_c_contiguous(a, name.c_str());
    return static_cast<const float*>(a.data());
}

inline QType qtype_from_int(int id) {
    const QType t = static_cast<QType>(id);
    require(qtype_block_size(t) != 0, "unknown qtype id " + std::to_string(id));
    return t;
}

inline void require_row_length(QType t, int64_t k, const char* what) {
    const int64_t bs = qtype_block_size(t);
    require(k > 0 && k % bs == 0, std::string(what) + ": row length " + std::to_string(k) +
                                      " is not a positive multiple of the block size " + std::to_string(bs));
}

// KV cache element types by llama.cpp's -ctk / -ctv names.
inline QType kv_cache_type(const std::string& name, const char* what) {
    if (name == "f32") return QType::F32;
    if (name == "f16") return QType::F16;
    if (name == "q8_0") return QType::Q8_0;
    if (name == "q4_0") return QType::Q4_0;
    throw py::value_error(std::string(what) + ": KV cache type must be 'f32', 'f16', 'q8_0' or 'q4_0', got '" + name + "'");
}

// The attention's arithmetic by the Model's attn_precision names ("auto" is resolved in Python).
inline AttnPrecision attn_precision(const std::string& name, const char* what) {
    if (name == "f32") return AttnPrecision::f32;
    if (name == "bf16") return AttnPrecision::bf16;
    throw py::value_error(std::string(what) + ": attention precision must be 'f32' or 'bf16', got '" + name + "'");
}

inline const char* attn_precision_name(AttnPrecision p) { return p == AttnPrecision::bf16 ? "bf16" : "f32"; }

inline bool is_float_kv_type(QType t) { return t == QType::F32 || t == QType::F16; }

inline std::string kv_cache_type_name(QType t) {
    switch (t) {
        case QType::F16: return "f16";
        case QType::Q8_0: return "q8_0";
        case QType::Q4_0: return "q4_0";
        default: return "f32";
    }
}

}  // namespace llamix
