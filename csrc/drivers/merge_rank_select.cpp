// Radix selection for the rank sparsifiers: histograms of the magnitude bits find the boundary
// keys and tie ordinals, from which any chunk's keep-mask follows.
#include "drivers/merge_rank_select.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/thread_pool.h"
#include "drivers/merge_io.h"
#include "drivers/merge_tiling.h"
#include "kernels/kernels.h"

namespace llamix {
namespace merge_detail {

void RankRule::mask(int64_t task, const float* d, int64_t len, uint8_t* bits) const {
    if (keep_none) {
        std::memset(bits, 0, size_t(ceil_div(len, 8)));
        return;
    }
    uint32_t a = lo.active ? lo.key + 1 : 0, b = hi.active ? hi.key - 1 : 0x7fffffffu;
    if (hi.active && hi.key == 0) a = 1, b = 0;  // nothing lies below key 0
    kernels().merge.range_mask(d, a, b, bits, len);
    const bool lo_eq = lo.active && lo.count[task] > 0, hi_eq = hi.active && hi.count[task] > 0;
    if (!lo_eq && !hi_eq) return;
    int64_t ord_lo = lo.active ? lo.prefix[task] : 0, ord_hi = hi.active ? hi.prefix[task] : 0;
    for (int64_t i = 0; i < len; ++i) {
        const uint32_t k = mag_key(d[i]);
        bool keep;
        if (lo_eq && k == lo.key) {
            keep = (lo.below + ord_lo++) >= r0;
            if (hi.active && k == hi.key) keep = (hi.below + ord_hi++) < r1 && keep;
        } else if (hi_eq && k == hi.key) {
            keep = (hi.below + ord_hi++) < r1;
        } else {
            continue;
        }
        bits[i >> 3] = uint8_t((bits[i >> 3] & ~(1u << (i & 7))) | (unsigned(keep) << (i & 7)));
    }
}

namespace {

// first bin whose cumulative count passes rank
int find_bin(const std::vector<int64_t>& cm, int64_t rank) {
    return int(std::upper_bound(cm.begin(), cm.end(), rank) - cm.begin()) - 1;
}

}  // namespace

RankHistogram rank_histogram(int64_t n, int A, const RankValues& values) {
    ThreadPool& pool = ThreadPool::instance();
    const int T = pool.threads();
    const Tiling tl(n, 1);
    Scratch vals(A, kChunk);
    std::vector<uint32_t> hist(size_t(T) * A * 65536, 0);
    std::vector<int64_t> zeros(size_t(T) * A, 0);
    pool.parallel_for(tl.tasks(), [&](int64_t task, int th) {
        std::vector<float*> out(static_cast<size_t>(A));
        for (int a = 0; a < A; ++a) out[a] = vals.get(th, a);
        values(task, th, out.data());
        const int64_t len = tl.size(task);
        for (int a = 0; a < A; ++a) {
            uint32_t* h = hist.data() + (size_t(th) * A + a) * 65536;
            int64_t z = 0;
            for (int64_t i = 0; i < len; ++i) {
                const uint32_t k = mag_key(out[a][i]);
                h[k >> 16]++;
                z += k == 0;
            }
            zeros[size_t(th) * A + a] += z;
        }
    });
    RankHistogram r;
    r.cum.assign(size_t(A), std::vector<int64_t>(65537, 0));
    r.zeros.assign(size_t(A), 0);
    for (int a = 0; a < A; ++a) {
        std::vector<int64_t>& cum = r.cum[a];
        for (int b = 0; b < 65536; ++b) {
            int64_t s = 0;
            for (int th = 0; th < T; ++th) s += hist[(size_t(th) * A + a) * 65536 + b];
            cum[b + 1] = cum[b] + s;
        }
        for (int th = 0; th < T; ++th) r.zeros[a] += zeros[size_t(th) * A + a];
    }
    return r;
}

void rank_finish(int64_t n, const std::vector<RankRule*>& rules, const RankHistogram& h, const RankValues& values) {
    const int A = int(rules.size());
    for (int a = 0; a < A; ++a) {
        if (!rules[a]) continue;
        for (RankRule::Boundary* bd : {&rules[a]->lo, &rules[a]->hi}) {
            if (!bd->active) continue;
            bd->bin = find_bin(h.cum[a], bd->rank);
            bd->below = h.cum[a][bd->bin];
        }
    }
    // Pass 2: the low 16 bits of the elements inside the boundary bins, per task (in index order).
    ThreadPool& pool = ThreadPool::instance();
    const Tiling tl(n, 1);
    const int64_t tasks = tl.tasks();
    Scratch vals(A, kChunk);
    std::vector<std::vector<uint16_t>> coll(size_t(tasks) * A * 2);
    pool.parallel_for(tasks, [&](int64_t task, int th) {
        std::vector<float*> out(static_cast<size_t>(A));
        for (int a = 0; a < A; ++a) out[a] = vals.get(th, a);
        values(task, th, out.data());
        const int64_t len = tl.size(task);
        for (int a = 0; a < A; ++a) {
            if (!rules[a]) continue;
            const RankRule& r = *rules[a];
            const int b0 = r.lo.active ? r.lo.bin : -1, b1 = r.hi.active ? r.hi.bin : -1;
            if (b0 < 0 && b1 < 0) continue;
            std::vector<uint16_t>& c0 = coll[(size_t(task) * A + a) * 2];
            std::vector<uint16_t>& c1 = coll[(size_t(task) * A + a) * 2 + 1];
            for (int64_t i = 0; i < len; ++i) {
                const uint32_t k = mag_key(out[a][i]);
                const int bin = int(k >> 16);
                if (bin == b0) c0.push_back(uint16_t(k));
                if (bin == b1) c1.push_back(uint16_t(k));
            }
        }
    });
    for (int a = 0; a < A; ++a) {
        if (!rules[a]) continue;
        RankRule& r = *rules[a];
        RankRule::Boundary* bds[2] = {&r.lo, &r.hi};
        for (int j = 0; j < 2; ++j) {
            RankRule::Boundary& bd = *bds[j];
            if (!bd.active) continue;
            std::vector<int64_t> cum(65537, 0);
            for (int64_t t = 0; t < tasks; ++t)
                for (uint16_t v : coll[(size_t(t) * A + a) * 2 + j]) cum[size_t(v) + 1]++;
            for (int v = 0; v < 65536; ++v) cum[v + 1] += cum[v];
            const int lb = find_bin(cum, bd.rank - bd.below);
            bd.key = (uint32_t(bd.bin) << 16) | uint32_t(lb);
            bd.below += cum[lb];
            bd.prefix.assign(size_t(tasks), 0);
            bd.count.assign(size_t(tasks), 0);
            int64_t s = 0;
            for (int64_t t = 0; t < tasks; ++t) {
                bd.prefix[t] = s;
                for (uint16_t v : coll[(size_t(t) * A + a) * 2 + j]) bd.count[t] += v == uint16_t(lb);
                s += bd.count[t];
            }
        }
    }
}

std::vector<RankRule> rank_rules(const MergeCommon& c, MergeInput base, const std::vector<MergeInput>& x,
                                 const std::vector<Sparsify>& sp) {
    const int M = int(x.size());
    const int64_t n = c.n;
    std::vector<RankRule> rules(size_t(M), RankRule{});
    std::vector<int> active;
    for (int m = 0; m < M; ++m) {
        if (sp[m].kind != Sparsify::rank) continue;
        RankRule& r = rules[m];
        r.r0 = std::max<int64_t>(sp[m].r0, 0);
        r.r1 = std::min(sp[m].r1, n);
        if (r.r0 <= 0 && r.r1 >= n) continue;
        r.keep_all = false;
        if (r.r0 >= r.r1) {
            r.keep_none = true;
            continue;
        }
        r.lo.active = r.r0 > 0;
        r.lo.rank = r.r0;
        r.hi.active = r.r1 < n;
        r.hi.rank = r.r1 - 1;
        active.push_back(m);
    }
    if (active.empty()) return rules;
    const int A = int(active.size());
    const Tiling tl(n, 1);
    Scratch scratch(1, kChunk);
    // the task vectors of the rank-sparsified models, the base read once per chunk
    const RankValues deltas = [&](int64_t task, int th, float* const* out) {
        float* b = scratch.get(th, 0);
        const int64_t off = tl.begin(task), len = tl.size(task);
        load_work(c, base, off, len, b);
        for (int a = 0; a < A; ++a) {
            load_work(c, x[active[a]], off, len, out[a]);
            kernels().merge.sub(out[a], out[a], b, len);
        }
    };
    const RankHistogram h = rank_histogram(n, A, deltas);
    std::vector<RankRule*> ptrs;
    for (int a = 0; a < A; ++a) ptrs.push_back(&rules[active[a]]);
    rank_finish(n, ptrs, h, deltas);
    return rules;
}

}  // namespace merge_detail
}  // namespace llamix
