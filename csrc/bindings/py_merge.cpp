// Merge drivers: check and convert the arrays, then run one output tensor with the GIL released.
// Arrays are float32, float16 or bfloat16 bit patterns in uint16, with their QType id given
// explicitly (numpy has no bfloat16); outputs are allocated here in the requested type.
#include <pybind11/stl.h>

#include "bindings/checks.h"
#include "drivers/merge.h"
#include "drivers/merge_io.h"
#include "kernels/kernels.h"
#include "kernels/merge_math.h"

namespace llamix {

namespace {

QType float_type(int id, const char* what) {
    const QType t = static_cast<QType>(id);
    require(t == QType::F32 || t == QType::F16 || t == QType::BF16,
            std::string(what) + ": type id " + std::to_string(id) + " is not float32 (0), float16 (1) or bfloat16 (30)");
    return t;
}

// One input argument: a contiguous array, or a tensor in a file given as (fd, byte offset, shape),
// which the drivers read with pread (drivers/merge.h).
struct Input {
    MergeInput in;
    std::vector<py::ssize_t> shape;
    int64_t n = 0;
};

Input as_input(const py::object& x, int type_id, const std::string& what) {
    Input r;
    r.in.type = float_type(type_id, what.c_str());
    const int64_t width = r.in.type == QType::F32 ? 4 : 2;
    if (py::isinstance<py::tuple>(x)) {
        const auto ref = x.cast<std::tuple<int, int64_t, std::vector<py::ssize_t>>>();
        r.in.fd = std::get<0>(ref);
        r.in.file_offset = std::get<1>(ref);
        r.shape = std::get<2>(ref);
        require(r.in.fd >= 0 && r.in.file_offset >= 0, what + ": invalid file reference (fd, offset, shape)");
        r.n = 1;
        for (const py::ssize_t d : r.shape) {
            require(d >= 0, what + ": negative dimension in the file reference's shape");
            r.n *= d;
        }
        return r;
    }
    // The caller's array itself (no conversion, which would make a temporary the pointer outlives).
    require(py::isinstance<py::array>(x), what + ": expected a numpy array or a file reference (fd, offset, shape)");
    const auto a = py::reinterpret_borrow<py::array>(x);
    require(a.itemsize() == width, what + ": dtype " + std::string(py::str(a.dtype())) + " does not match its declared type");
    require(a.dtype().kind() == 'f' || a.dtype().kind() == 'u', what + ": expected a float or uint16 array");
    require_c_contiguous(a, what.c_str());
    r.in.data = a.data();
    r.shape.assign(a.shape(), a.shape() + a.ndim());
    r.n = static_cast<int64_t>(a.size());
    return r;
}

MergeInput checked(const Input& x, int64_t n, const std::string& what) {
    require(x.n == n, what + " has " + std::to_string(x.n) + " elements, expected " + std::to_string(n));
    return x.in;
}

// A new output array shaped like `like`, or `buffer` (a caller's reusable array) when given.
py::array new_output(const Input& like, int type_id, const std::optional<py::array>& buffer = std::nullopt) {
    const QType t = float_type(type_id, "out_type");
    if (buffer) {
        const py::array& o = *buffer;
        require(o.size() == like.n && o.itemsize() == (t == QType::F32 ? 4 : 2),
                "out buffer must have the output's size and element width");
        require_c_contiguous(o, "out buffer");
        require(o.writeable(), "out buffer must be writeable");
        return o;
    }
    if (t == QType::F32) return py::array_t<float>(like.shape);
    if (t == QType::F16) return py::array(py::dtype("float16"), like.shape);
    return py::array_t<uint16_t>(like.shape);
}

MergeOutput as_output(py::array& out, int type_id) { return MergeOutput{out.mutable_data(), static_cast<QType>(type_id)}; }

MergeCommon common(const Input& first, int work_id) { return MergeCommon{first.n, float_type(work_id, "work_type")}; }

std::vector<MergeInput> as_inputs(const std::vector<py::object>& xs, const std::vector<int>& types, int64_t n) {
    require(!xs.empty(), "at least one input tensor is needed");
    require(xs.size() == types.size(), "one type id per input tensor is needed");
    std::vector<MergeInput> out;
    for (size_t i = 0; i < xs.size(); ++i) {
        const std::string what = "input " + std::to_string(i);
        out.push_back(checked(as_input(xs[i], types[i], what), n, what));
    }
    return out;
}

// (kind, r0, r1, density, epsilon, weight)
using SparsifyTuple = std::tuple<int, int64_t, int64_t, double, double, float>;

Sparsify as_sparsify(const SparsifyTuple& s) {
    Sparsify sp;
    const int kind = std::get<0>(s);
    require(kind >= 0 && kind <= 3, "sparsify kind must be 0 (none), 1 (rank), 2 (random) or 3 (della)");
    sp.kind = static_cast<Sparsify::Kind>(kind);
    sp.r0 = std::get<1>(s);
    sp.r1 = std::get<2>(s);
    sp.density = std::get<3>(s);
    sp.epsilon = std::get<4>(s);
    sp.weight = std::get<5>(s);
    return sp;
}

// One driver call, the part every binding shares: the output allocated in out_type shaped like
// `first` (or the caller's buffer, checked), then f(common, output) with the GIL released.
template <class F>
py::array run_merge(const Input& first, int work_type, int out_type, const std::optional<py::array>& buffer, F&& f) {
    const MergeCommon c = common(first, work_type);
    py::array out = new_output(first, out_type, buffer);
    const MergeOutput o = as_output(out, out_type);
    {
        py::gil_scoped_release release;
        f(c, o);
    }
    return out;
}

// run_merge for the drivers that can also write their output to a file: `buffer` may be a file
// target (fd, byte offset), open for writing, where the output's bytes go (pwrite from the
// threads that compute them, see MergeOutput); then nothing is returned.
template <class F>
py::object run_merge_to(const Input& first, int work_type, int out_type, const py::object& buffer, F&& f) {
    if (!py::isinstance<py::tuple>(buffer)) {
        require(buffer.is_none() || py::isinstance<py::array>(buffer),
                "buffer: expected a numpy array, a file target (fd, offset) or None");
        return run_merge(first, work_type, out_type,
                         buffer.is_none() ? std::nullopt
                                          : std::optional<py::array>(py::reinterpret_borrow<py::array>(buffer)),
                         std::forward<F>(f));
    }
    const auto target = buffer.cast<std::tuple<int, int64_t>>();
    MergeOutput o{nullptr, float_type(out_type, "out_type"), std::get<0>(target), std::get<1>(target)};
    require(o.fd >= 0 && o.file_offset >= 0, "buffer: invalid file target (fd, offset)");
    const MergeCommon c = common(first, work_type);
    {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> one_at_a_time(merge_detail::file_merge_mutex());
        try {
            f(c, o);
        } catch (...) {
            merge_detail::finish_output(false);
            throw;
        }
        merge_detail::finish_output(true);
    }
    return py::none();
}

}  // namespace

void register_merge(py::module_& m) {
    m.def("merge_linear", [](std::vector<py::object> xs, std::vector<int> types, std::vector<float> weights, bool normalize,
                             int out_type, int work_type, py::object buffer) {
        require(weights.size() == xs.size(), "one weight per input tensor is needed");
        require(!xs.empty() && xs.size() == types.size(), "one type id per input tensor is needed");
        const Input first = as_input(xs[0], types[0], "input 0");
        const auto in = as_inputs(xs, types, first.n);
        return run_merge_to(first, work_type, out_type, buffer,
                         [&](const MergeCommon& c, MergeOutput o) { merge_linear(c, in, weights, normalize, o); });
    }, py::arg("xs"), py::arg("types"), py::arg("weights"), py::arg("normalize"), py::arg("out_type"), py::arg("work_type"),
       py::arg("buffer") = py::none());

    m.def("merge_slerp", [](py::object v0, int t0, py::object v1, int t1, float t, int out_type, int work_type,
                            py::object buffer) {
        const Input x0 = as_input(v0, t0, "v0");
        const MergeInput b = checked(as_input(v1, t1, "v1"), x0.n, "v1");
        return run_merge_to(x0, work_type, out_type, buffer,
                         [&](const MergeCommon& c, MergeOutput o) { merge_slerp(c, x0.in, b, t, o); });
    }, py::arg("v0"), py::arg("type0"), py::arg("v1"), py::arg("type1"), py::arg("t"), py::arg("out_type"), py::arg("work_type"),
       py::arg("buffer") = py::none());

    m.def("merge_nuslerp", [](py::object x0, int t0, py::object x1, int t1, std::optional<py::object> base, int base_type,
                              double t, int64_t rows, int out_type, int work_type, py::object buffer) {
        const Input first = as_input(x0, t0, "x0");
        const MergeInput b = checked(as_input(x1, t1, "x1"), first.n, "x1");
        MergeInput bs;
        if (base) bs = checked(as_input(*base, base_type, "base"), first.n, "base");
        require(rows >= 1 && first.n % rows == 0, "rows must divide the tensor size");
        const MergeInput* has_base = base ? &bs : nullptr;
        return run_merge_to(first, work_type, out_type, buffer,
                            [&](const MergeCommon& c, MergeOutput o) { merge_nuslerp(c, first.in, b, has_base, t, rows, o); });
    }, py::arg("x0"), py::arg("type0"), py::arg("x1"), py::arg("type1"), py::arg("base"), py::arg("base_type"), py::arg("t"),
       py::arg("rows"), py::arg("out_type"), py::arg("work_type"),
       py::arg("buffer") = py::none());

    m.def("merge_task_vectors", [](py::object base, int base_type, std::vector<py::object> xs, std::vector<int> types,
                                   std::vector<SparsifyTuple> sparsify, int consensus, bool rescale, bool normalize,
                                   float lambda, uint64_t seed, std::string name, int64_t rows, int out_type, int work_type,
                                   py::object buffer) {
        const Input bi = as_input(base, base_type, "base");
        const auto in = as_inputs(xs, types, bi.n);
        require(sparsify.size() == xs.size(), "one sparsifier per input tensor is needed");
        require(consensus >= 0 && consensus <= 2, "consensus must be 0 (none), 1 (sum) or 2 (count)");
        require(rows >= 1 && bi.n % rows == 0, "rows must divide the tensor size");
        std::vector<Sparsify> sp;
        for (const auto& s : sparsify) sp.push_back(as_sparsify(s));
        TaskVectorParams p;
        p.consensus = static_cast<Consensus>(consensus);
        p.rescale = rescale;
        p.normalize = normalize;
        p.lambda = lambda;
        p.seed = seed;
        p.name = std::move(name);
        p.rows = rows;
        return run_merge_to(bi, work_type, out_type, buffer,
                         [&](const MergeCommon& c, MergeOutput o) { merge_task_vectors(c, bi.in, in, sp, p, o); });
    }, py::arg("base"), py::arg("base_type"), py::arg("xs"), py::arg("types"), py::arg("sparsify"), py::arg("consensus"),
       py::arg("rescale"), py::arg("normalize"), py::arg("lambda_"), py::arg("seed"), py::arg("name"), py::arg("rows"),
       py::arg("out_type"), py::arg("work_type"),
       py::arg("buffer") = py::none());

    m.def("merge_model_stock", [](py::object base, int base_type, std::vector<py::object> xs, std::vector<int> types,
                                  int64_t rows, int out_type, int work_type, py::object buffer) {
        const Input bi = as_input(base, base_type, "base");
        const auto in = as_inputs(xs, types, bi.n);
        require(rows >= 1 && bi.n % rows == 0, "rows must divide the tensor size");
        return run_merge_to(bi, work_type, out_type, buffer,
                         [&](const MergeCommon& c, MergeOutput o) { merge_model_stock(c, bi.in, in, rows, o); });
    }, py::arg("base"), py::arg("base_type"), py::arg("xs"), py::arg("types"), py::arg("rows"), py::arg("out_type"),
       py::arg("work_type"), py::arg("buffer") = py::none());

    m.def("merge_scale", [](py::object x, int type, float s, int out_type, int work_type, std::optional<py::array> buffer) {
        const Input xi = as_input(x, type, "x");
        return run_merge(xi, work_type, out_type, buffer,
                         [&](const MergeCommon& c, MergeOutput o) { merge_scale(c, xi.in, s, o); });
    }, py::arg("x"), py::arg("type"), py::arg("scale"), py::arg("out_type"), py::arg("work_type"),
       py::arg("buffer") = py::none());

    m.def("merge_nearswap", [](py::object base, int base_type, py::object x, int type, float t, int out_type,
                               int work_type, std::optional<py::array> buffer) {
        const Input bi = as_input(base, base_type, "base");
        const MergeInput a = checked(as_input(x, type, "x"), bi.n, "x");
        return run_merge(bi, work_type, out_type, buffer,
                         [&](const MergeCommon& c, MergeOutput o) { merge_nearswap(c, bi.in, a, t, o); });
    }, py::arg("base"), py::arg("base_type"), py::arg("x"), py::arg("type"), py::arg("t"), py::arg("out_type"),
       py::arg("work_type"), py::arg("buffer") = py::none());

    m.def("merge_ram", [](py::object base, int base_type, std::vector<py::object> xs, std::vector<int> types, float eps,
                          bool plus, float r, float alpha, int out_type, int work_type, std::optional<py::array> buffer) {
        const Input bi = as_input(base, base_type, "base");
        const auto in = xs.empty() ? std::vector<MergeInput>{} : as_inputs(xs, types, bi.n);
        RamParams p;
        p.eps = eps, p.plus = plus, p.r = r, p.alpha = alpha;
        return run_merge(bi, work_type, out_type, buffer,
                         [&](const MergeCommon& c, MergeOutput o) { merge_ram(c, bi.in, in, p, o); });
    }, py::arg("base"), py::arg("base_type"), py::arg("xs"), py::arg("types"), py::arg("eps"), py::arg("plus"), py::arg("r"),
       py::arg("alpha"), py::arg("out_type"), py::arg("work_type"), py::arg("buffer") = py::none());

    m.def("merge_sce", [](py::object base, int base_type, std::vector<py::object> xs, std::vector<int> types,
                          double select_topk, int out_type, int work_type, std::optional<py::array> buffer) {
        const Input bi = as_input(base, base_type, "base");
        const auto in = xs.empty() ? std::vector<MergeInput>{} : as_inputs(xs, types, bi.n);
        return run_merge(bi, work_type, out_type, buffer,
                         [&](const MergeCommon& c, MergeOutput o) { merge_sce(c, bi.in, in, select_topk, o); });
    }, py::arg("base"), py::arg("base_type"), py::arg("xs"), py::arg("types"), py::arg("select_topk"), py::arg("out_type"),
       py::arg("work_type"), py::arg("buffer") = py::none());

    m.def("merge_multislerp", [](std::vector<py::object> xs, std::vector<int> types, std::optional<py::object> base,
                                 int base_type, std::vector<float> weights, bool normalize, float eps, int out_type,
                                 int work_type,
                                 py::object buffer) {
        require(!xs.empty() && xs.size() == types.size(), "one type id per input tensor is needed");
        require(weights.size() == xs.size(), "one weight per input tensor is needed");
        const Input first = as_input(xs[0], types[0], "input 0");
        const auto in = as_inputs(xs, types, first.n);
        MergeInput bs;
        if (base) bs = checked(as_input(*base, base_type, "base"), first.n, "base");
        const MergeInput* has_base = base ? &bs : nullptr;
        return run_merge_to(first, work_type, out_type, buffer, [&](const MergeCommon& c, MergeOutput o) {
            merge_multislerp(c, has_base, in, weights, normalize, eps, o);
        });
    }, py::arg("xs"), py::arg("types"), py::arg("base"), py::arg("base_type"), py::arg("weights"), py::arg("normalize"),
       py::arg("eps"),
       py::arg("out_type"), py::arg("work_type"), py::arg("buffer") = py::none());

    m.def("merge_karcher", [](std::vector<py::object> xs, std::vector<int> types, int max_iter, double tol, int out_type,
                              int work_type, std::optional<py::array> buffer) {
        require(!xs.empty() && xs.size() == types.size(), "one type id per input tensor is needed");
        const Input first = as_input(xs[0], types[0], "input 0");
        const auto in = as_inputs(xs, types, first.n);
        KarcherReport rep;
        py::array out = run_merge(first, work_type, out_type, buffer,
                                  [&](const MergeCommon& c, MergeOutput o) { rep = merge_karcher(c, in, max_iter, tol, o); });
        return py::make_tuple(out, rep.iterations);
    }, py::arg("xs"), py::arg("types"), py::arg("max_iter"), py::arg("tol"), py::arg("out_type"), py::arg("work_type"),
       py::arg("buffer") = py::none(), "(merged tensor, iterations run)");

    m.def("merge_arcee_fusion", [](py::object base, int base_type, py::object x, int type, int64_t rows, int out_type,
                                   int work_type, std::optional<py::array> buffer) {
        const Input bi = as_input(base, base_type, "base");
        const MergeInput a = checked(as_input(x, type, "x"), bi.n, "x");
        require(rows >= 1 && bi.n % rows == 0, "rows must divide the tensor size");
        float threshold = 0.0f;
        py::array out = run_merge(bi, work_type, out_type, buffer, [&](const MergeCommon& c, MergeOutput o) {
            threshold = merge_arcee_fusion(c, bi.in, a, rows, o);
        });
        return py::make_tuple(out, threshold);
    }, py::arg("base"), py::arg("base_type"), py::arg("x"), py::arg("type"), py::arg("rows"), py::arg("out_type"),
       py::arg("work_type"), py::arg("buffer") = py::none(), "(merged tensor, importance threshold)");

    m.def("merge_cache_budget", &merge_cache_budget, py::arg("bytes") = -1,
          "Memory (bytes) multi-pass merges may keep a tensor's inputs in between passes; sets it when >= 0 and "
          "returns the previous value.");

    m.def("merge_torch_reduce", [](py::object x, int type, bool norm) {
        const Input xi = as_input(x, type, "x");
        const MergeCommon c = common(xi, 0);
        py::gil_scoped_release release;
        return merge_torch_reduce(c, xi.in, norm);
    }, py::arg("x"), py::arg("type"), py::arg("norm"),
       "torch's float32 sum (norm=False) or 2-norm of the tensor, in torch's order (the merge drivers' reductions).");

    m.def("merge_exp_log_f32", [](py::array_t<float, py::array::c_style | py::array::forcecast> x, bool log) {
        py::array_t<float> out(x.size());
        const float* in = x.data();
        float* o = out.mutable_data();
        for (py::ssize_t i = 0; i < x.size(); ++i) o[i] = log ? merge_math::log_f32(in[i]) : merge_math::exp_f32(in[i]);
        return out;
    }, py::arg("x"), py::arg("log"), "The merge kernels' float32 exp or log (scalar reference), element by element.");

    m.def("merge_sparsify_mask", [](py::object base, int base_type, py::object x, int type, SparsifyTuple sparsify,
                                    uint64_t seed, std::string name, int model_index, int64_t rows, int work_type) {
        const Input bi = as_input(base, base_type, "base");
        const MergeCommon c = common(bi, work_type);
        const MergeInput b = bi.in, a = checked(as_input(x, type, "x"), c.n, "x");
        require(rows >= 1 && c.n % rows == 0, "rows must divide the tensor size");
        const Sparsify sp = as_sparsify(sparsify);
        std::vector<uint8_t> bits;
        {
            py::gil_scoped_release release;
            bits = merge_sparsify_mask(c, b, a, sp, seed, name, model_index, rows);
        }
        py::array_t<uint8_t> out(static_cast<py::ssize_t>(bits.size()));
        std::copy(bits.begin(), bits.end(), out.mutable_data());
        return out;
    }, py::arg("base"), py::arg("base_type"), py::arg("x"), py::arg("type"), py::arg("sparsify"), py::arg("seed"),
       py::arg("name"), py::arg("model_index"), py::arg("rows"), py::arg("work_type"),
       "The keep mask (n bits, LSB first, packed in bytes) of one model's sparsifier.");
}

}  // namespace llamix
