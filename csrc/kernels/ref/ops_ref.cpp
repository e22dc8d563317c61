// Reference transformer ops: plain loops, float32.
#include <cmath>

#include "kernels/ops.h"

namespace llamix {
namespace ref {

void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) {
    float ss = 0.0f;
    for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
    const float scale = 1.0f / std::sqrt(ss / float(n) + eps);
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

}  // namespace ref

void fill_ops_ref(OpsKernels& k) { k.rmsnorm = ref::rmsnorm; }

}  // namespace llamix
