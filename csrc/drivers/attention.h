// Grouped-query attention through the kernel table, whether or not the active ISA has a grouped kernel.
#pragma once
#include <cstdint>

#include "kernels/ops.h"

namespace llamix {

// Grouped-query attention through the table: the ISA's grouped kernel where it has one, else
// attention() head by head (the same result by definition). Arguments as for the OpsKernels entries.
void attention_group(const OpsKernels& K, const float* q, int64_t q_stride, int64_t n_q, const float* k,
                     const float* v, int64_t stride, int64_t n_keys, int64_t head_dim, float scale, float* out,
                     int64_t out_stride, float* scratch);
void attention_group_f16(const OpsKernels& K, const float* q, int64_t q_stride, int64_t n_q, const uint16_t* k,
                         const uint16_t* v, int64_t stride, int64_t n_keys, int64_t head_dim, float scale, float* out,
                         int64_t out_stride, float* scratch);

}  // namespace llamix
