// What the CPU and the OS support, read once (CPUID + XGETBV on x86, HWCAP on arm64).
#pragma once
#include <string>
#include <vector>

namespace llamix {

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false, bmi2 = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
    bool avx512vnni = false, avx512bf16 = false, avxvnni = false;
    bool neon = false, dotprod = false, fp16 = false;
    std::vector<std::string> names() const;
};

const CpuFeatures& cpu_features();

// Physical cores (not SMT siblings), at least 1.
int physical_cores();

}  // namespace llamix
