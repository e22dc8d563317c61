// CPU feature detection: CPUID + XGETBV on x86, HWCAP on arm64, and the physical core count.
#include "common/cpu_features.h"

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define LLAMIX_X86 1
#endif
#if defined(LLAMIX_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "common/setting_error.h"
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace llamix {

namespace {

#ifdef LLAMIX_X86
void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) { __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]); }

// XCR0: which register states the OS saves on context switch. Without this check a CPU that
// has AVX-512 under an OS that does not enable it would fault on the first zmm instruction.
unsigned long long xgetbv0() {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (static_cast<unsigned long long>(hi) << 32) | lo;
}
#endif

CpuFeatures detect() {
    CpuFeatures f;
#ifdef LLAMIX_X86
    unsigned r[4];
    cpuid(0, 0, r);
    const unsigned max_leaf = r[0];
    cpuid(1, 0, r);
    const bool osxsave = (r[2] >> 27) & 1;
    const bool avx = (r[2] >> 28) & 1;
    f.fma = (r[2] >> 12) & 1;
    f.f16c = (r[2] >> 29) & 1;
    bool ymm_os = false, zmm_os = false, tile_os = false;
    if (osxsave) {
        const auto xcr0 = xgetbv0();
        ymm_os = (xcr0 & 0x6) == 0x6;      // SSE + AVX state
        zmm_os = (xcr0 & 0xe6) == 0xe6;    // + opmask, ZMM_Hi256, Hi16_ZMM
        tile_os = (xcr0 & 0x60000) == 0x60000;  // XTILECFG + XTILEDATA
    }
    if (max_leaf >= 7 && avx && ymm_os) {
        cpuid(7, 0, r);
        f.avx2 = (r[1] >> 5) & 1;
        f.bmi2 = (r[1] >> 8) & 1;
        if (zmm_os) {
            f.avx512f = (r[1] >> 16) & 1;
            f.avx512dq = (r[1] >> 17) & 1;
            f.avx512bw = (r[1] >> 30) & 1;
            f.avx512vl = (r[1] >> 31) & 1;
            f.avx512vnni = (r[2] >> 11) & 1;
            f.avx512vbmi = (r[2] >> 1) & 1;
            f.gfni = (r[2] >> 8) & 1;
            f.amx_bf16 = tile_os && ((r[3] >> 22) & 1) && ((r[3] >> 24) & 1);  // AMX-BF16, AMX-TILE
        }
        unsigned s[4];
        cpuid(7, 1, s);
        f.avxvnni = (s[0] >> 4) & 1;
        if (zmm_os) f.avx512bf16 = (s[0] >> 5) & 1;
    }
    if (!f.avx2) f.fma = f.f16c = false;
#endif
#if defined(__aarch64__)
    f.neon = true;
#if defined(__linux__)
    const unsigned long hw = getauxval(AT_HWCAP);
#ifdef HWCAP_ASIMDDP
    f.dotprod = hw & HWCAP_ASIMDDP;
#endif
#ifdef HWCAP_ASIMDHP
    f.fp16 = hw & HWCAP_ASIMDHP;
#endif
#endif
#endif
    return f;
}

}  // namespace

std::vector<std::string> CpuFeatures::names() const {
    std::vector<std::string> out;
    const std::pair<bool, const char*> all[] = {
        {avx2, "avx2"}, {fma, "fma"}, {f16c, "f16c"}, {bmi2, "bmi2"}, {avx512f, "avx512f"},
        {avx512bw, "avx512bw"}, {avx512vl, "avx512vl"}, {avx512dq, "avx512dq"},
        {avx512vnni, "avx512vnni"}, {avx512vbmi, "avx512vbmi"}, {gfni, "gfni"}, {avx512bf16, "avx512bf16"}, {avxvnni, "avxvnni"}, {amx_bf16, "amx_bf16"},
        {neon, "neon"}, {dotprod, "dotprod"}, {fp16, "fp16"}};
    for (const auto& [has, name] : all)
        if (has) out.emplace_back(name);
    return out;
}

const CpuFeatures& cpu_features() {
    static const CpuFeatures f = detect();
    return f;
}

namespace {

// Linux keeps the 8 KiB tile data out of a process's state until it asks (arch_prctl); the grant
// holds for every thread of the process.
bool request_amx_permission() {
#if defined(LLAMIX_X86) && defined(__linux__)
    constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
}

}  // namespace

bool amx_usable() {
    static std::once_flag once;
    static bool usable = false;
    static const char* bad = nullptr;
    std::call_once(once, [] {
        const char* env = std::getenv("LLAMIX_AMX");
        const std::string e = env ? env : "";
        if (!e.empty() && e != "0" && e != "1") {
            bad = env;
            return;
        }
        usable = e != "0" && cpu_features().amx_bf16 && request_amx_permission();
    });
    if (bad) throw SettingError(std::string("LLAMIX_AMX=") + bad + ": expected 0 (never use AMX tiles) or 1");
    return usable;
}

int physical_cores() {
    // Linux: count distinct (physical id, core id) pairs; fall back to hardware_concurrency.
    std::ifstream in("/proc/cpuinfo");
    std::set<std::pair<int, int>> cores;
    std::string line;
    int phys = 0;
    while (std::getline(in, line)) {
        if (line.rfind("physical id", 0) == 0) phys = std::stoi(line.substr(line.find(':') + 1));
        if (line.rfind("core id", 0) == 0) cores.insert({phys, std::stoi(line.substr(line.find(':') + 1))});
    }
    if (!cores.empty()) return static_cast<int>(cores.size());
    const unsigned hc = std::thread::hardware_concurrency();
    return hc ? static_cast<int>(hc) : 1;
}

}  // namespace llamix
