// The kernel table: one entry per op, filled once from the best variant the CPU supports.
// Each ISA fills only what it accelerates; the rest comes from the level below it
// (ref < avx2 < avx512 on x86, ref < neon on arm64).
#pragma once
#include <string>
#include <vector>

#include "kernels/kquant.h"
#include "kernels/matmul.h"
#include "kernels/merge.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace llamix {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2, neon = 3 };

struct KernelTable {
    Isa isa = Isa::scalar;
    QuantKernels quant;
    MatmulKernels matmul;
    OpsKernels ops;
    MergeKernels merge;
    KQuantKernels kquant;
};

const char* isa_name(Isa isa);
// The variants this CPU can run, best first (always ends with scalar).
std::vector<Isa> available_isas();
// The active table. Chosen on first use: the best available, or LLAMIX_ISA if set (lower only).
const KernelTable& kernels();
// Switch the active variant (for tests and benchmarks); throws if the CPU cannot run it.
void set_isa(const std::string& name);

}  // namespace llamix
