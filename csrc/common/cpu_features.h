// What the CPU and the OS support, read once (CPUID + XGETBV on x86, HWCAP on arm64).
#pragma once
#include <string>
#include <vector>

namespace llamix {

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false, bmi2 = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
    bool avx512vnni = false, avx512bf16 = false, avxvnni = false;
    bool avx512vbmi = false;  // vpermb: used by some AVX-512 kernels when present
    bool gfni = false;        // GF(2) affine byte maps: with avx512vbmi, the low-bit decode kernels
    bool amx_bf16 = false;  // AMX-TILE + AMX-BF16 with the tile state enabled in XCR0
    bool neon = false, dotprod = false, fp16 = false;
    std::vector<std::string> names() const;
};

const CpuFeatures& cpu_features();

// Whether this process may run AMX tiles: the CPU has AMX-BF16 (cpu_features), LLAMIX_AMX is not 0,
// and Linux granted the tile data permission (arch_prctl ARCH_REQ_XCOMP_PERM, asked once per
// process on the first call). A bad LLAMIX_AMX (not 0 or 1) throws SettingError.
bool amx_usable();

// Physical cores (not SMT siblings), at least 1.
int physical_cores();

}  // namespace llamix
