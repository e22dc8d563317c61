// Compares one kernel variant against the scalar reference on random and awkward inputs, for
// targets where the Python tests cannot run (e.g. the NEON build under qemu-user).
// Usage: isa_check <isa>; prints "ok" and exits 0, or prints the first mismatch and exits 1.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "common/formats.h"
#include "drivers/matmul.h"
#include "kernels/kernels.h"

using namespace llamix;

static int fail(const char* what, int64_t i, double a, double b) {
    std::printf("MISMATCH %s at %lld: %.9g vs %.9g\n", what, (long long)i, a, b);
    return 1;
}

int main(int argc, char** argv) {
    const std::string isa = argc > 1 ? argv[1] : "neon";
    std::mt19937 rng(42);
    std::normal_distribution<float> gauss;
    for (QType t : {QType::Q4_0, QType::Q8_0}) {
        for (int64_t rows : {1, 15, 16, 17, 37}) {
            for (int64_t n : {1, 2, 5, 9}) {
                const int64_t k = 96;
                std::vector<float> w(rows * k), x(n * k);
                for (auto& v : w) v = gauss(rng);
                for (auto& v : x) v = gauss(rng) * 3;
                std::vector<uint8_t> q(rows * qtype_row_bytes(t, k));
                set_isa("scalar");
                for (int64_t r = 0; r < rows; ++r) {
                    void* dst = q.data() + r * qtype_row_bytes(t, k);
                    if (t == QType::Q4_0) kernels().quant.quantize_row_q4_0(w.data() + r * k, dst, k);
                    else kernels().quant.quantize_row_q8_0(w.data() + r * k, dst, k);
                }
                std::vector<float> y_ref(n * rows), y(n * rows, NAN);
                matmul(x.data(), n, k, q.data(), t, rows, y_ref.data());
                set_isa(isa);
                const PreparedWeight p = prepare_weight(q.data(), t, rows, k);
                matmul_prepared(x.data(), n, p, y.data());
                for (int64_t i = 0; i < n * rows; ++i)  // block kernels are bit-exact by design
                    if (std::memcmp(&y[i], &y_ref[i], 4) != 0) return fail(t == QType::Q4_0 ? "q4_0" : "q8_0", i, y[i], y_ref[i]);
            }
        }
    }
    for (QType t : {QType::F32, QType::F16, QType::BF16}) {
        const int64_t rows = 7, k = 43, n = 3;
        std::vector<float> w(rows * k), x(n * k), y_ref(n * rows), y(n * rows, NAN);
        for (auto& v : w) v = gauss(rng);
        for (auto& v : x) v = gauss(rng);
        std::vector<uint16_t> h(rows * k);
        set_isa("scalar");
        if (t == QType::F16) kernels().quant.f32_to_f16(w.data(), h.data(), rows * k);
        if (t == QType::BF16) kernels().quant.f32_to_bf16(w.data(), h.data(), rows * k);
        const void* wp = t == QType::F32 ? static_cast<const void*>(w.data()) : h.data();
        matmul(x.data(), n, k, wp, t, rows, y_ref.data());
        std::vector<uint16_t> h2(rows * k);
        set_isa(isa);
        if (t == QType::F16) kernels().quant.f32_to_f16(w.data(), h2.data(), rows * k);
        if (t == QType::BF16) kernels().quant.f32_to_bf16(w.data(), h2.data(), rows * k);
        if (h2 != h) return fail("f32 -> half conversion", 0, 0, 0);
        matmul(x.data(), n, k, wp, t, rows, y.data());
        for (int64_t i = 0; i < n * rows; ++i)  // float32 accumulation in another order
            if (!(std::fabs(y[i] - y_ref[i]) <= 1e-5f * k)) return fail("float matmul", i, y[i], y_ref[i]);
    }
    std::printf("ok\n");
    return 0;
}
