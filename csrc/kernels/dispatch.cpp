// Builds the kernel table of each ISA (reference entries, then each SIMD level) and picks the active one.
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

#include "common/cpu_features.h"
#include "common/setting_error.h"
#include "kernels/kernels.h"
#include "kernels/lowbit.h"

namespace llamix {

namespace {

bool can_run(Isa isa) {
    const CpuFeatures& f = cpu_features();
    switch (isa) {
        case Isa::scalar: return true;
#ifdef LLAMIX_HAVE_X86
        case Isa::avx2: return f.avx2 && f.fma && f.f16c && f.bmi2;
        case Isa::avx512:
            return f.avx2 && f.fma && f.f16c && f.bmi2 && f.avx512f && f.avx512bw && f.avx512vl &&
                   f.avx512dq && f.avx512vnni;
#endif
#ifdef LLAMIX_HAVE_NEON
        case Isa::neon: return f.neon && f.dotprod && f.fp16;
#endif
        default: return false;
    }
}

KernelTable build(Isa isa) {
    KernelTable t;
    t.isa = isa;
    fill_quant_ref(t.quant);
    fill_matmul_ref(t.matmul);
    fill_ops_ref(t.ops);
    fill_merge_ref(t.merge);
    fill_kquant_ref(t.kquant);
    fill_lowbit_ref(t.quant, t.matmul, t.kquant);
#ifdef LLAMIX_HAVE_X86
    if (isa == Isa::avx2 || isa == Isa::avx512) {
        fill_quant_avx2(t.quant);
        fill_matmul_avx2(t.matmul);
        fill_ops_avx2(t.ops);
        fill_merge_avx2(t.merge);
        fill_kquant_avx2(t.kquant);
        fill_lowbit_avx2(t.quant, t.matmul, t.kquant);
    }
    if (isa == Isa::avx512) {
        fill_quant_avx512(t.quant);
        fill_matmul_avx512(t.matmul);
        fill_ops_avx512(t.ops);
        fill_merge_avx512(t.merge);
        fill_kquant_avx512(t.kquant);
        fill_lowbit_avx512(t.quant, t.matmul, t.kquant);
    }
#endif
#ifdef LLAMIX_HAVE_NEON
    if (isa == Isa::neon) {
        fill_quant_neon(t.quant);
        fill_matmul_neon(t.matmul);
        fill_ops_neon(t.ops);
        fill_merge_neon(t.merge);
        fill_kquant_neon(t.kquant);
    }
#endif
    return t;
}

Isa parse_isa(const std::string& name) {
    for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon})
        if (name == isa_name(isa)) return isa;
    throw std::invalid_argument("unknown ISA '" + name + "' (expected scalar, avx2, avx512 or neon)");
}

// One table per variant, built on demand; the active pointer is swapped atomically.
KernelTable g_tables[4];
std::atomic<bool> g_built[4];
std::atomic<const KernelTable*> g_active{nullptr};

const KernelTable* table_for(Isa isa) {
    static std::mutex build_mutex;
    std::lock_guard<std::mutex> lock(build_mutex);
    const int i = static_cast<int>(isa);
    if (!g_built[i].load(std::memory_order_acquire)) {
        g_tables[i] = build(isa);
        g_built[i].store(true, std::memory_order_release);
    }
    return &g_tables[i];
}

const KernelTable* choose_initial() {
    const auto isas = available_isas();
    Isa best = isas.front();
    const char* env = std::getenv("LLAMIX_ISA");
    if (env && *env) {  // an unknown name, or one this CPU cannot run, is an error, not a silent fallback
        const std::string name(env);
        Isa wanted;
        try {
            wanted = parse_isa(name);
        } catch (const std::invalid_argument&) {
            throw SettingError("LLAMIX_ISA=" + name + ": unknown kernel variant (expected scalar, avx2, avx512 or neon)");
        }
        if (!can_run(wanted)) {
            std::string runs;
            for (Isa isa : isas) runs += std::string(runs.empty() ? "" : ", ") + isa_name(isa);
            throw SettingError("LLAMIX_ISA=" + name + ": this CPU cannot run the '" + name + "' kernels (it runs " +
                               runs + ")");
        }
        best = wanted;
    }
    return table_for(best);
}

}  // namespace

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::scalar: return "scalar";
        case Isa::avx2: return "avx2";
        case Isa::avx512: return "avx512";
        case Isa::neon: return "neon";
    }
    return "?";
}

std::vector<Isa> available_isas() {
    std::vector<Isa> out;
    for (Isa isa : {Isa::avx512, Isa::avx2, Isa::neon, Isa::scalar})
        if (can_run(isa)) out.push_back(isa);
    return out;
}

const KernelTable& kernels() {
    const KernelTable* t = g_active.load(std::memory_order_acquire);
    if (!t) {
        static const KernelTable* initial = choose_initial();  // thread-safe one-time init
        g_active.store(initial, std::memory_order_release);
        t = initial;
    }
    return *t;
}

void set_isa(const std::string& name) {
    const Isa isa = parse_isa(name);
    if (!can_run(isa)) throw std::invalid_argument(std::string("this CPU cannot run the '") + name + "' kernels");
    try {
        kernels();  // make sure the initial choice has happened (and cannot later overwrite this one)
    } catch (const SettingError&) {
        // a bad LLAMIX_ISA: this explicit choice replaces it (kernels() reads the active table first)
    }
    g_active.store(table_for(isa), std::memory_order_release);
}

}  // namespace llamix
