// Per-tensor drivers of the methods added after the task-arithmetic family: nearswap, RAM and
// RAM+ (tensor-local), SCE, Multi-SLERP, the Karcher mean and Arcee Fusion. Semantics follow
// mergekit 0.1.5 (docs/MERGING.md): element-wise steps are the same float32 operations in the same
// order; sums behind scalars (norms, dots, mean squares, KL divergences) are accurate (double, fixed
// chunks and lanes), so every ISA and thread count gives the same bits. Methods that need a scalar
// of the whole tensor make several passes over their inputs instead of holding task vectors in
// memory: Multi-SLERP and Arcee Fusion over the inputs as stored, mapped once per tensor when they
// fit the cache budget (merge_memory.h), the others read again from the files chunk by chunk; the
// Karcher mean makes one pass per iteration (its dots and tangent norms come from the Gram matrix).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/thread_pool.h"
#include "common/weight_memory.h"
#include "drivers/merge.h"
#include "drivers/merge_io.h"
#include "drivers/merge_memory.h"
#include "drivers/merge_rank_select.h"
#include "drivers/merge_tiling.h"
#include "drivers/merge_torch_order.h"
#include "kernels/kernels.h"

namespace llamix {

using namespace merge_detail;

namespace {

// The values load_deltas produces for each chunk (in working precision), kept after the first
// pass that loads a chunk so that later passes copy them instead of reading and converting the
// inputs again. Each chunk is filled by the one task that loads it first; other passes read it
// only after that pass's parallel region has ended.
class DeltaCache {
   public:
    DeltaCache(int arrays, int64_t n, int64_t tasks)
        : arrays_(arrays), n_(n), on_(arrays > 0 && n > 0 && tasks > 0 && int64_t(arrays) * n * 4 <= cache_budget()) {
        if (on_) {
            mem_.take(size_t(arrays) * size_t(n) * 4);  // uninitialised: filled chunk by chunk
            filled_.assign(size_t(tasks), 0);
        }
    }
    bool on() const { return on_; }
    bool has(int64_t task) const { return on_ && filled_[size_t(task)]; }
    float* at(int j, int64_t off) { return mem_.data() + int64_t(j) * n_ + off; }
    void store(int64_t task, int j, int64_t off, const float* v, int64_t len) {
        if (!on_) return;
        std::memcpy(at(j, off), v, size_t(len) * 4);
        if (j == arrays_ - 1) filled_[size_t(task)] = 1;
    }

   private:
    int arrays_;
    int64_t n_;
    bool on_;
    BufferPool::Lease mem_;
    std::vector<uint8_t> filled_;
};

// Task vectors d[m] = x[m] - base (or x[m] itself without a base) of one chunk, and the base in b.
// With a cache (arrays: the N deltas, then the base if any), from it once a pass has filled it.
void load_deltas(const MergeCommon& c, const MergeInput* base, const std::vector<MergeInput>& x, int64_t off,
                 int64_t len, float* b, const std::vector<float*>& d, DeltaCache* cache = nullptr, int64_t task = -1) {
    const MergeKernels& K = kernels().merge;
    const int N = int(x.size());
    if (cache && cache->has(task)) {
        for (int m = 0; m < N; ++m) std::memcpy(d[size_t(m)], cache->at(m, off), size_t(len) * 4);
        if (base) std::memcpy(b, cache->at(N, off), size_t(len) * 4);
        return;
    }
    if (base) load_work(c, *base, off, len, b);
    for (int m = 0; m < N; ++m) {
        load_work(c, x[size_t(m)], off, len, d[size_t(m)]);
        if (base) K.sub(d[size_t(m)], d[size_t(m)], b, len);
    }
    if (cache) {
        for (int m = 0; m < N; ++m) cache->store(task, m, off, d[size_t(m)], len);
        if (base) cache->store(task, N, off, b, len);
    }
}

std::vector<float*> buffers(Scratch& s, int th, int first, int count) {
    std::vector<float*> out(static_cast<size_t>(count));
    for (int j = 0; j < count; ++j) out[size_t(j)] = s.get(th, first + j);
    return out;
}

void copy_input(const MergeCommon& c, MergeInput x, MergeOutput out) { merge_scale(c, x, 1.0f, out); }

}  // namespace

void merge_nearswap(const MergeCommon& c, MergeInput base_in, MergeInput x_in, float t, MergeOutput out) {
    const MergeKernels& K = kernels().merge;
    const ResidentInputs res({base_in, x_in}, c.n, ResidentInputs::Unmapped::pread);  // read the pages in place
    const MergeInput base = res[0], x = res[1];
    const Tiling tl(c.n, 1, kStreamChunk);
    Scratch scratch(2, kL1Block);
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        float* a = scratch.get(th, 0);
        float* b = scratch.get(th, 1);
        for_l1_blocks(c, base, x, tl.begin(task), tl.begin(task) + tl.size(task), a, b, [&](int64_t off, int64_t len) {
            K.nearswap(a, b, t, a, len);
            store_out(c, a, out, off, len);
        });
    });
}

void merge_ram(const MergeCommon& c, MergeInput base_in, const std::vector<MergeInput>& x_in, const RamParams& p,
               MergeOutput out) {
    const int N = int(x_in.size());
    if (N == 0) return copy_input(c, base_in, out);
    const MergeKernels& K = kernels().merge;
    const ResidentInputs res(base_first(base_in, x_in), c.n, ResidentInputs::Unmapped::pread);  // the pages in place
    const MergeInput base = res[0];
    const std::vector<MergeInput> x = models_of(res);
    const Tiling tl(c.n, 1);
    Scratch scratch(N + 2, kChunk);
    DeltaCache* const reuse = nullptr;  // reading the inputs again is as fast as keeping them
    std::vector<float> lambda(size_t(N), 1.0f);
    if (p.plus) {
        std::vector<int64_t> counts(size_t(tl.tasks()) * size_t(2 * N), 0);
        ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
            const int64_t off = tl.begin(task), len = tl.size(task);
            const std::vector<float*> d = buffers(scratch, th, 0, N);
            load_deltas(c, &base, x, off, len, scratch.get(th, N), d, reuse, task);
            int64_t* cnt = &counts[size_t(task) * size_t(2 * N)];
            K.ram_counts(d.data(), N, p.eps, cnt, cnt + N, len);
        });
        for (int m = 0; m < N; ++m) {
            int64_t shared = 0, unique = 0;
            for (int64_t t = 0; t < tl.tasks(); ++t) {
                shared += counts[size_t(t) * size_t(2 * N) + size_t(m)];
                unique += counts[size_t(t) * size_t(2 * N) + size_t(N + m)];
            }
            // mergekit, in float32: rho = shared / max(unique, eps); lambda = 1 + r * clamp(rho, 0, alpha)
            const float u = float(unique);
            float rho = float(shared) / (u < p.eps ? p.eps : u);
            rho = rho < 0.0f ? 0.0f : (rho > p.alpha ? p.alpha : rho);
            lambda[size_t(m)] = 1.0f + p.r * rho;
        }
    }
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        const int64_t off = tl.begin(task), len = tl.size(task);
        const std::vector<float*> d = buffers(scratch, th, 0, N);
        float* b = scratch.get(th, N);
        float* acc = scratch.get(th, N + 1);
        load_deltas(c, &base, x, off, len, b, d, reuse, task);
        K.ram(d.data(), lambda.data(), N, p.eps, acc, len);
        K.add(acc, b, len);
        store_out(c, acc, out, off, len);
    });
}

void merge_sce(const MergeCommon& c, MergeInput base_in, const std::vector<MergeInput>& x_in, double select_topk,
               MergeOutput out) {
    const int N = int(x_in.size());
    if (N == 0) return copy_input(c, base_in, out);
    const MergeKernels& K = kernels().merge;
    const ResidentInputs res(base_first(base_in, x_in), c.n, ResidentInputs::Unmapped::pread);  // the pages in place
    const MergeInput base = res[0];
    const std::vector<MergeInput> x = models_of(res);
    const int64_t n = c.n;
    const Tiling tl(n, 1);
    Scratch scratch(N + 3, kChunk);  // deltas, base, mask bits, variance (then the result)
    const RankValues variance = [&](int64_t task, int th, float* const* v) {
        const std::vector<float*> d = buffers(scratch, th, 0, N);
        load_deltas(c, &base, x, tl.begin(task), tl.size(task), scratch.get(th, N), d);
        K.variance(d.data(), N, v[0], tl.size(task));
    };
    // Selection: keep the k = int(nonzero(var) * select_topk) largest variances across models
    // (equal variances rank by index: the later ones are kept).
    RankRule rule;
    if (select_topk < 1.0) {
        rule.keep_all = false;
        if (select_topk <= 0.0) {
            rule.keep_none = true;
        } else {
            const RankHistogram h = rank_histogram(n, 1, variance);
            const int64_t nonzero = n - h.zeros[0];
            const int64_t k = int64_t(float(float(nonzero) * float(select_topk)));  // torch: int(int64 tensor * float)
            if (k <= 0) {
                rule.keep_none = true;
            } else if (k >= n) {
                rule.keep_all = true;
            } else {
                rule.r0 = n - k;
                rule.r1 = n;
                rule.lo.active = true;
                rule.lo.rank = rule.r0;
                rank_finish(n, {&rule}, h, variance);
            }
        }
    }
    // The masked task vectors of one chunk (the variance buffer holds the chunk's mask bits).
    auto masked = [&](int64_t task, int th, const std::vector<float*>& d, float* b) {
        const int64_t off = tl.begin(task), len = tl.size(task);
        load_deltas(c, &base, x, off, len, b, d);
        if (rule.keep_all) return;
        float* v = scratch.get(th, N + 2);
        uint8_t* bits = reinterpret_cast<uint8_t*>(scratch.get(th, N + 1));
        if (rule.keep_none) {
            std::memset(bits, 0, size_t(ceil_div(len, 8)));
        } else {
            K.variance(d.data(), N, v, len);
            rule.mask(task, v, len, bits);
        }
        for (int m = 0; m < N; ++m) K.mask_scale(d[size_t(m)], bits, 1.0f, len);
    };
    // Weights: the mean square of each masked task vector (torch's float32 sum, then / n),
    // normalized to sum 1.
    std::vector<TorchSum> sq(static_cast<size_t>(N), TorchSum(n));
    {
        OrderedFeed io(tl.tasks(), N, [&](int64_t, const float* const* v, int64_t len) {
            for (int m = 0; m < N; ++m) sq[size_t(m)].feed(v[m], len);
        });
        ThreadPool::instance().parallel_for(tl.tasks(), io.guard([&](int64_t task, int th) {
            const std::vector<float*> d = buffers(scratch, th, 0, N);
            masked(task, th, d, scratch.get(th, N));
            for (int m = 0; m < N; ++m) K.mul(d[size_t(m)], d[size_t(m)], d[size_t(m)], tl.size(task));
            io.put(task, d, tl.size(task));
        }));
        io.finish();
    }
    std::vector<float> w(static_cast<size_t>(N));
    for (int m = 0; m < N; ++m) w[size_t(m)] = sq[size_t(m)].result() / float(n);
    const float total = torch_sum(w);
    for (int m = 0; m < N; ++m)
        w[size_t(m)] = std::fabs(double(total)) < 1e-6 ? 1.0f / float(N) : w[size_t(m)] / total;
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        const std::vector<float*> d = buffers(scratch, th, 0, N);
        float* b = scratch.get(th, N);
        float* acc = scratch.get(th, N + 2);
        masked(task, th, d, b);
        K.sce(d.data(), w.data(), N, acc, tl.size(task));
        K.add(acc, b, tl.size(task));
        store_out(c, acc, out, tl.begin(task), tl.size(task));
    });
}

namespace {

// Multi-SLERP's step back onto the sphere, shared by the resident and streaming paths: from the
// tangent sum's norm, cos(|t|) and sin(|t|)/|t|, and the weighted mean of the inputs' norms.
struct SphereStep {
    float cos_tn, sinc, avg_norm;
};
SphereStep multislerp_sphere(float tangent_norm, float eps, const std::vector<float>& norms,
                             const std::vector<float>& w) {
    const float tn = tangent_norm + eps;
    std::vector<float> nw(norms.size());
    for (size_t m = 0; m < norms.size(); ++m) nw[m] = norms[m] * w[m];
    return {std::cos(tn), std::sin(tn) / tn, torch_sum(nw)};
}

}  // namespace

void merge_multislerp(const MergeCommon& c, const MergeInput* base, const std::vector<MergeInput>& x,
                      std::vector<float> w, bool normalize, float eps, MergeOutput out) {
    const int N = int(x.size());
    if (N == 0 || w.size() != x.size()) throw std::invalid_argument("multislerp: need one weight per model");
    if (N == 1) return copy_input(c, x[0], out);  // mergekit returns the one model as it is
    if (normalize) {
        const float total = torch_sum(w);
        for (float& v : w) v = v / total;
    }
    const MergeKernels& K = kernels().merge;
    const int64_t n = c.n;
    const Tiling tl(n, 1);
    ThreadPool& pool = ThreadPool::instance();
    // The inputs as stored, read from their files by pass 1 only when they fit the cache budget;
    // every pass computes its values from them again (in cache, chunk by chunk), which costs less
    // than writing float32 task vectors, units or means to memory and reading them back.
    std::vector<MergeInput> all(x);
    if (base) all.push_back(*base);
    const ResidentInputs res(all, n);
    const std::vector<MergeInput> xs(res.inputs().begin(), res.inputs().begin() + N);
    const MergeInput* bs = base ? &res[size_t(N)] : nullptr;
    // Every pass works through each chunk in blocks of kBlock elements, each block in one kernel
    // call (kernels().merge.multislerp: loads, differences, units, mean and tangent in registers)
    // that writes the values the pass reduces straight into the feed's ring.
    constexpr int64_t kBlock = 1024;
    Scratch scratch(N + 2, kBlock);  // the N inputs and the base (rounded to the working type, or deltas), result
    const int B = N, RES = N + 1;
    std::vector<MultislerpArgs> args(size_t(pool.threads()));  // per thread: the block's inputs
    std::vector<std::vector<const void*>> arg_x(size_t(pool.threads()), std::vector<const void*>(size_t(N)));
    std::vector<std::vector<QType>> arg_type(size_t(pool.threads()), std::vector<QType>(size_t(N)));
    // The kernel's arguments for the block [off, off + len) on thread th: each input where it is
    // stored, or rounded to the working type into the thread's scratch when that changes it.
    auto block_args = [&](int64_t off, int64_t len, int th) -> MultislerpArgs& {
        auto place = [&](const MergeInput& in, int j, const void*& p, QType& t) {
            if (c.work != QType::F32 && in.type != c.work) {
                load_work(c, in, off, len, scratch.get(th, j));
                p = scratch.get(th, j), t = QType::F32;
            } else {
                p = fetch(in, off, len, 1 + j), t = in.type;  // slot 0 is load_work's
            }
        };
        MultislerpArgs& a = args[size_t(th)];
        for (int m = 0; m < N; ++m) place(xs[size_t(m)], m, arg_x[size_t(th)][size_t(m)], arg_type[size_t(th)][size_t(m)]);
        if (bs) place(*bs, B, a.base, a.base_type);
        a.x = arg_x[size_t(th)].data();
        a.type = arg_type[size_t(th)].data();
        return a;
    };
    for (MultislerpArgs& a : args) {
        a.n_models = N;
        a.w = w.data();
    }
    auto set_args = [&](auto&& f) {
        for (MultislerpArgs& a : args) f(a);
    };
    // A pass over the tensor: block(off, len, th, values) for each block, values[a] the place of the
    // block's elements of reduced array a (`arrays` of them, fed in order to `step`).
    auto pass = [&](int arrays, OrderedFeed::Step step, auto&& block) {
        OrderedFeed io(tl.tasks(), arrays, std::move(step));
        pool.parallel_for(tl.tasks(), io.guard([&](int64_t task, int th) {
            const int64_t begin = tl.begin(task), end = begin + tl.size(task);
            float* const* slot = io.slot(task);
            std::vector<float*> values(size_t(arrays) + 1);
            for (int64_t off = begin; off < end; off += kBlock) {
                for (int a = 0; a < arrays; ++a) values[size_t(a)] = slot[a] + (off - begin);
                block(off, std::min(kBlock, end - off), th, values.data());
            }
            io.publish(task, end - begin);
        }));
        io.finish();
    };
    // The stage's values of each block fed to `step` (arrays: how many the stage writes).
    auto stage_pass = [&](SlerpStage stage, int arrays, OrderedFeed::Step step, bool first = false) {
        pass(arrays, std::move(step), [&](int64_t off, int64_t len, int th, float* const* v) {
            if (first) res.fill(off, len);
            K.multislerp(block_args(off, len, th), stage, v, len);
        });
    };
    // Without a feed: block(off, len, th) for each block.
    auto blocks = [&](auto&& block) {
        pool.parallel_for(tl.tasks(), [&](int64_t task, int th) {
            const int64_t begin = tl.begin(task), end = begin + tl.size(task);
            for (int64_t off = begin; off < end; off += kBlock) block(off, std::min(kBlock, end - off), th);
        });
    };

    // Pass 1: the norm of each delta. Each norm is one sequential chain of 8-lane adds over the
    // tensor, so with every input readable where it is (mapped, or in memory, in the working
    // type) the threads run the chains themselves, their deltas formed and squared in registers:
    // no chunk values written to a feed's ring and read back. A task takes the next piece of a
    // chain no other thread holds (tickets start on different chains, so a thread alone
    // alternates between them and a worker that joins late finds them equally far along).
    // Otherwise (inputs read from their files into memory on the way, or rounded to the working
    // type first) the chunks' deltas go through the ordered feed.
    std::vector<TorchNorm> nrm(static_cast<size_t>(N), TorchNorm(n));
    if (!res.copies() && in_memory(res.inputs()) && stored_as_work(c, res.inputs())) {
        constexpr int64_t kPiece = int64_t(1) << 16;  // elements of one chain per task (a multiple of 8)
        const int64_t pieces = ceil_div(n, kPiece);
        std::unique_ptr<std::atomic<int64_t>[]> next(new std::atomic<int64_t>[size_t(N)]);  // per chain
        std::unique_ptr<std::atomic<bool>[]> held(new std::atomic<bool>[size_t(N)]);
        for (int m = 0; m < N; ++m) next[m].store(0), held[m].store(false);
        // each task runs exactly one piece: as many tasks as pieces, so one is always left for it
        pool.parallel_for(int64_t(N) * pieces, [&](int64_t ticket, int) {
            for (int64_t spins = 0;; ++spins) {
                for (int k = 0; k < N; ++k) {
                    const int m = int((ticket + k) % N);
                    bool free = false;
                    if (next[m].load(std::memory_order_acquire) >= pieces ||
                        !held[m].compare_exchange_strong(free, true, std::memory_order_acquire))
                        continue;
                    const int64_t p = next[m].load(std::memory_order_relaxed);
                    if (p < pieces) {
                        const int64_t off = p * kPiece, len = std::min(kPiece, n - off);
                        const MergeInput& x = xs[size_t(m)];
                        nrm[size_t(m)].feed_deltas(static_cast<const uint8_t*>(x.data) + off * type_size(x.type), x.type,
                                                   bs ? static_cast<const uint8_t*>(bs->data) + off * type_size(bs->type)
                                                      : nullptr,
                                                   bs ? bs->type : QType::F32, len);
                        next[m].store(p + 1, std::memory_order_release);
                    }
                    held[m].store(false, std::memory_order_release);
                    if (p < pieces) return;
                }
                if (spins > 64) std::this_thread::yield();  // the last pieces' chain is another thread's
            }
        });
    } else {
        stage_pass(SlerpStage::deltas, N, [&](int64_t, const float* const* v, int64_t len) {
            for (int m = 0; m < N; ++m) nrm[size_t(m)].feed(v[m], len);
        }, true);
    }
    std::vector<float> norms(static_cast<size_t>(N)), den(static_cast<size_t>(N));
    for (int m = 0; m < N; ++m) {
        norms[size_t(m)] = nrm[size_t(m)].result();
        den[size_t(m)] = norms[size_t(m)] + eps;
    }
    set_args([&](MultislerpArgs& a) { a.den = den.data(); });
    // Pass 2: the norm of the weighted sum of units u = d / (|d| + eps).
    TorchNorm mn(n);
    stage_pass(SlerpStage::mean, 1, [&](int64_t, const float* const* v, int64_t len) { mn.feed(v[0], len); });
    const float mean_norm = mn.result();
    if (mean_norm < eps) {
        if (N != 2)
            throw std::invalid_argument(
                "multislerp: the weighted sum of the input tensors is zero (antipodal inputs whose weights cancel); "
                "try different weights");
        // two models: plain weighted sum, as mergekit falls back to
        blocks([&](int64_t off, int64_t len, int th) {
            const std::vector<float*> d = buffers(scratch, th, 0, N);
            float* b = scratch.get(th, B);
            load_deltas(c, bs, xs, off, len, b, d);
            K.lincomb2(d[0], d[0], w[0], d[1], w[1], 1.0f, len);
            if (base) K.add(d[0], b, len);
            store_out(c, d[0], out, off, len);
        });
        return;
    }
    set_args([&](MultislerpArgs& a) { a.mean_norm = mean_norm; });
    // Pass 3: the dot of each unit with the normalized mean (torch: sum of the rounded products).
    std::vector<TorchSum> dsum(static_cast<size_t>(N), TorchSum(n));
    stage_pass(SlerpStage::dots, N, [&](int64_t, const float* const* v, int64_t len) {
        for (int m = 0; m < N; ++m) dsum[size_t(m)].feed(v[m], len);
    });
    std::vector<float> dots(static_cast<size_t>(N));
    for (int m = 0; m < N; ++m) dots[size_t(m)] = dsum[size_t(m)].result();
    set_args([&](MultislerpArgs& a) { a.dots = dots.data(); });
    // Pass 4: the norm of the weighted sum of the tangent vectors u - dot * mean. That sum is the
    // float32 rounding of the torch-order norms and dots (mathematically zero), so its norm t is
    // small, and where cos(t) and sin(t) / t both round to 1 (t below ~2.4e-4) pass 5's result
    // needs nothing from pass 4: the pass then also writes the result with cos_tn = sinc = 1
    // (tangent_result), and pass 5 runs only if the norm turns out larger (after what was staged
    // is written, so that its bytes come last). t grows with the tensor's size: in the bench's
    // 348M-parameter models it is ~1.6e-4 at 2.9M elements and 2-3e-3 at 32.8M, so larger tensors
    // are not tried (a miss writes the output twice).
    constexpr int64_t kSpeculateMax = int64_t(1) << 22;
    const bool speculate = n <= kSpeculateMax;
    if (speculate) {
        const float avg_norm = multislerp_sphere(0.0f, eps, norms, w).avg_norm;  // does not depend on t
        set_args([&](MultislerpArgs& a) { a.cos_tn = 1.0f, a.sinc = 1.0f, a.avg_norm = avg_norm; });
    }
    TorchNorm tnorm(n);
    if (speculate) {
        pass(1, [&](int64_t, const float* const* v, int64_t len) { tnorm.feed(v[0], len); },
             [&](int64_t off, int64_t len, int th, float* const* v) {
                 float* both[2] = {v[0], scratch.get(th, RES)};
                 K.multislerp(block_args(off, len, th), SlerpStage::tangent_result, both, len);
                 store_out(c, both[1], out, off, len);
             });
    } else {
        stage_pass(SlerpStage::tangent, 1, [&](int64_t, const float* const* v, int64_t len) { tnorm.feed(v[0], len); });
    }
    const auto [cos_tn, sinc, avg_norm] = multislerp_sphere(tnorm.result(), eps, norms, w);
    if (speculate && cos_tn == 1.0f && sinc == 1.0f) return;
    if (speculate && out.fd >= 0) finish_output(true);
    set_args([&, cos_tn = cos_tn, sinc = sinc, avg_norm = avg_norm](MultislerpArgs& a) {
        a.cos_tn = cos_tn, a.sinc = sinc, a.avg_norm = avg_norm;
    });
    // Pass 5: back onto the sphere, scaled by the weighted mean norm, plus the base.
    blocks([&](int64_t off, int64_t len, int th) {
        float* r = scratch.get(th, RES);
        K.multislerp(block_args(off, len, th), SlerpStage::result, &r, len);
        store_out(c, r, out, off, len);
    });
}

KarcherReport merge_karcher(const MergeCommon& c, const std::vector<MergeInput>& x_in, int max_iter, double tol,
                            MergeOutput out) {
    const ResidentInputs res(x_in, c.n, ResidentInputs::Unmapped::pread);  // read the pages in place
    const std::vector<MergeInput>& x = res.inputs();
    const int N = int(x.size());
    KarcherReport report;
    if (N == 0) throw std::invalid_argument("karcher: needs at least one model");
    if (N == 1) {
        copy_input(c, x[0], out);
        return report;
    }
    const MergeKernels& K = kernels().merge;
    const int64_t n = c.n;
    const Tiling tl(n, 1);
    ThreadPool& pool = ThreadPool::instance();
    // Pass 1: torch's float32 vector_norm of each input, and the Gram matrix G[i][j] = <x_i, x_j>
    // of the inputs (double lane sums per chunk, chunks added in order).
    const size_t NN = size_t(N) * size_t(N);
    std::vector<TorchNorm> nrm(static_cast<size_t>(N), TorchNorm(n));
    std::vector<double> part(size_t(tl.tasks()) * NN, 0.0);
    // Inputs in memory in the working precision are read where they are (the dots and the norms'
    // squares formed in registers: the bits of loading them first); else loaded into scratch and
    // their chunks copied into the feed's ring.
    const bool stored = in_memory(x) && stored_as_work(c, x);
    auto at = [&](int m, int64_t off) { return static_cast<const uint8_t*>(x[size_t(m)].data) + off * type_size(x[size_t(m)].type); };
    if (stored) {
        OrderedFeed io(tl.tasks(), 1, [&](int64_t task, const float* const*, int64_t len) {
            for (int m = 0; m < N; ++m) nrm[size_t(m)].feed_deltas(at(m, tl.begin(task)), x[size_t(m)].type, nullptr, QType::F32, len);
        });
        pool.parallel_for(tl.tasks(), io.guard([&](int64_t task, int) {
            const int64_t off = tl.begin(task), len = tl.size(task);
            double* g = part.data() + size_t(task) * NN;
            for (int i = 0; i < N; ++i)
                for (int j = i + 1; j < N; ++j) {
                    double s[3];
                    delta_dot3(x[size_t(i)], x[size_t(j)], nullptr, off, len, s);
                    g[size_t(i) * N + size_t(j)] = s[2];
                    if (j == i + 1) g[size_t(i) * N + size_t(i)] = s[0];
                    if (i == N - 2) g[size_t(j) * N + size_t(j)] = s[1];
                }
            io.put_stable(task, static_cast<const float*>(nullptr), len);  // the feed reads the inputs
        }));
        io.finish();
    } else {
        Scratch scratch(N, kChunk);
        OrderedFeed io(tl.tasks(), N, [&](int64_t, const float* const* v, int64_t len) {
            for (int m = 0; m < N; ++m) nrm[size_t(m)].feed(v[m], len);
        });
        pool.parallel_for(tl.tasks(), io.guard([&](int64_t task, int th) {
            const std::vector<float*> v = buffers(scratch, th, 0, N);
            const int64_t off = tl.begin(task), len = tl.size(task);
            for (int m = 0; m < N; ++m) load_work(c, x[size_t(m)], off, len, v[size_t(m)]);
            double* g = part.data() + size_t(task) * NN;
            for (int i = 0; i < N; ++i)
                for (int j = i + 1; j < N; ++j) {
                    double s[3];
                    K.dot3(v[size_t(i)], v[size_t(j)], len, s);
                    g[size_t(i) * N + size_t(j)] = s[2];
                    if (j == i + 1) g[size_t(i) * N + size_t(i)] = s[0];
                    if (i == N - 2) g[size_t(j) * N + size_t(j)] = s[1];
                }
            io.put(task, v, len);
        }));
        io.finish();
    }
    std::vector<double> G(NN, 0.0);
    for (int64_t t = 0; t < tl.tasks(); ++t)
        for (size_t k = 0; k < NN; ++k) G[k] += part[size_t(t) * NN + k];
    std::vector<float> norms(static_cast<size_t>(N));
    std::vector<int> valid;
    for (int m = 0; m < N; ++m) {
        norms[size_t(m)] = nrm[size_t(m)].result();
        if (double(norms[size_t(m)]) > tol) valid.push_back(m);
    }
    const double alpha = 1.0 / double(N);
    if (valid.empty()) {  // mergekit: sum(tensor * 0)
        Scratch scratch(2, kL1Block);
        pool.parallel_for(tl.tasks(), [&](int64_t task, int th) {
            float* acc = scratch.get(th, 0);
            float* v = scratch.get(th, 1);
            for (int64_t off = tl.begin(task), end = off + tl.size(task); off < end; off += kL1Block) {
                const int64_t len = std::min(kL1Block, end - off);
                std::fill(acc, acc + len, 0.0f);
                for (int m = 0; m < N; ++m) {
                    load_work(c, x[size_t(m)], off, len, v);
                    K.scale(v, 0.0f, len);
                    K.add(acc, v, len);
                }
                store_out(c, acc, out, off, len);
            }
        });
        return report;
    }
    double alpha_sum = 0.0;
    for (size_t j = 0; j < valid.size(); ++j) alpha_sum += alpha;
    const float a_norm = float(alpha / alpha_sum);  // every valid model has the same normalized weight

    // The running mean is kept as float32 elements (mergekit's roundings) and, beside them, as
    // coefficients a over the units u_i = x_i / |x_i|: every vector mergekit forms is a combination
    // of the units, so the dots <m, u_i> = (Gu a)_i and the tangent's norm |sum_i b_i u_i| =
    // sqrt(b^T Gu b) come from the unit Gram matrix Gu = G / (|x_i| |x_j|) (double) without a pass.
    // The norms of the mean, which scale every element, are torch's float32 norms of the float32
    // mean (one pass per iteration, fused with the step); a tracks them, so it carries the same
    // departures from |m| = 1 that keep mergekit's tangent above tol on large tensors.
    const size_t V = valid.size();
    std::vector<double> Gu(V * V);
    for (size_t p = 0; p < V; ++p)
        for (size_t q = 0; q < V; ++q) {
            const int i = std::min(valid[p], valid[q]), j = std::max(valid[p], valid[q]);
            Gu[p * V + q] = G[size_t(i) * N + size_t(j)] / (double(norms[size_t(i)]) * double(norms[size_t(j)]));
        }
    auto qnorm = [&](const std::vector<double>& a) {  // |sum_p a_p u_p|, rounded to float32
        double s = 0.0;
        for (size_t p = 0; p < V; ++p) {
            double r = 0.0;
            for (size_t q = 0; q < V; ++q) r += Gu[p * V + q] * a[q];
            s += a[p] * r;
        }
        return float(std::sqrt(std::max(s, 0.0)));
    };
    Scratch scratch(int(V) + 1, kL1Block);  // units, temporary
    const int TMP = int(V);
    constexpr int kMaxFused = 16;
    auto units = [&](const std::vector<float*>& u, int64_t off, int64_t len) {
        for (size_t p = 0; p < V; ++p) {
            const int v = valid[p];
            load_work(c, x[size_t(v)], off, len, u[p]);
            if (norms[size_t(v)] == 0.0f) std::fill(u[p], u[p] + len, 0.0f);
            else K.div(u[p], norms[size_t(v)], len);
        }
    };
    // pass(f): f(off, len, units, mean block, th) on each L1 block, then the task's mean chunk fed to
    // the torch-order norm nm (when given)
    BufferPool::Lease mean_mem;
    mean_mem.take(size_t(n) * 4);
    float* const mean = mean_mem.data();
    auto pass = [&](TorchNorm* nm, bool with_units, auto&& f) {
        OrderedFeed io(tl.tasks(), 1, [&](int64_t, const float* const* v, int64_t len) {
            if (nm) nm->feed(v[0], len);
        });
        pool.parallel_for(tl.tasks(), io.guard([&](int64_t task, int th) {
            const std::vector<float*> u = buffers(scratch, th, 0, int(V));
            const int64_t begin = tl.begin(task), end = begin + tl.size(task);
            if (!with_units) {
                f(begin, end - begin, u, mean + begin, th);
            } else {
                for (int64_t off = begin; off < end; off += kL1Block) {
                    const int64_t len = std::min(kL1Block, end - off);
                    units(u, off, len);
                    f(off, len, u, mean + off, th);
                }
            }
            io.put_stable(task, mean + begin, end - begin);
        }));
        io.finish();
    };
    // The iterations' step reads the inputs where they are stored and forms the units in registers
    // (the same divisions, or karcher_recip's checked exact alternative), unless loading rounds
    // them (a narrower working dtype) or they are read from their files: then units() fills the
    // scratch blocks and the step divides them by 1.
    bool direct = stored;
    for (size_t p = 0; p < V; ++p) direct = direct && norms[size_t(valid[p])] != 0.0f;
    std::vector<float> recip(V, 0.0f);
    if (direct && n >= 65536)  // the check looks at 65536 values: not worth it for smaller tensors
        for (size_t p = 0; p < V; ++p) recip[p] = K.karcher_recip(norms[size_t(valid[p])], x[size_t(valid[p])].type);
    // per task: its last karcher_step, with every valid input used, formed all units by reciprocal
    std::vector<char> in_range(size_t(tl.tasks()), 0);
    // The starting mean: the weighted sum of the valid units, and its norm.
    TorchNorm mn(n);
    if (direct) {
        // karcher_step on a zero mean with dots 0, coefficients a_norm, tn = cos = sin = 1 is
        // 0 + a u_0 + a u_1 + ... (the lincomb2 chain below: (-0) 0 = -0 and u + -0 = u; tan / 1,
        // 1 0 + 1 tan = tan, never -0 after +0 + ...), its units formed in registers.
        std::vector<const void*> vx(V);
        std::vector<QType> vt(V);
        std::vector<float> vn(V), zero(V, 0.0f), coefs(V, a_norm);
        for (size_t p = 0; p < V; ++p)
            vx[p] = x[size_t(valid[p])].data, vt[p] = x[size_t(valid[p])].type, vn[p] = norms[size_t(valid[p])];
        KarcherArgs sa;
        sa.k = int(V), sa.x = vx.data(), sa.type = vt.data(), sa.norm = vn.data(), sa.recip = recip.data();
        sa.dot = zero.data(), sa.coef = coefs.data();
        sa.div = 0.0f, sa.tn = 1.0f, sa.cos_tn = 1.0f, sa.sin_tn = 1.0f;
        pass(&mn, false, [&](int64_t off, int64_t len, const std::vector<float*>&, float* m, int) {
            std::fill(m, m + len, 0.0f);
            in_range[size_t(off / tl.chunk)] = char(K.karcher_step(sa, m, off, len));
        });
    } else {
        pass(&mn, true, [&](int64_t, int64_t len, const std::vector<float*>& u, float* m, int) {
            std::fill(m, m + len, 0.0f);
            for (size_t p = 0; p < V; ++p) K.lincomb2(m, m, 1.0f, u[p], a_norm, 1.0f, len);  // m + a u, two roundings
        });
    }
    std::vector<double> a(V, double(a_norm)), b(V);
    float pending = mn.result();  // divide the mean by this before its next use (0: nothing to do)
    if (double(pending) < tol) {  // the units cancel: start from the first valid one
        pass(nullptr, true, [&](int64_t, int64_t len, const std::vector<float*>& u, float* m, int) {
            std::memcpy(m, u[0], size_t(len) * 4);
        });
        std::fill(a.begin(), a.end(), 0.0);
        a[0] = 1.0;
        pending = 0.0f;
    } else {
        for (double& v : a) v /= double(pending);
    }
    std::vector<float> dot(V), coef(V);
    std::vector<char> use(V);
    for (int it = 0; it < max_iter; ++it) {
        bool any = false;
        std::fill(b.begin(), b.end(), 0.0);
        for (size_t p = 0; p < V; ++p) {
            double sd = 0.0;
            for (size_t q = 0; q < V; ++q) sd += Gu[p * V + q] * a[q];
            const float d = std::min(1.0f, std::max(-1.0f, float(sd)));
            const float theta = std::acos(d);
            dot[p] = d;
            use[p] = !(double(theta) < tol);
            coef[p] = float(alpha / alpha_sum) * (theta / std::sin(theta));
            if (!use[p]) continue;
            any = true;
            b[p] += double(coef[p]);
            for (size_t q = 0; q < V; ++q) b[q] -= double(coef[p]) * double(d) * a[q];
        }
        report.iterations = it + 1;
        if (!any) break;  // tangent = 0: its norm is below tol
        const float tn = qnorm(b);
        if (double(tn) < tol) break;
        const float cos_tn = std::cos(tn), sin_tn = std::sin(tn);
        // one pass: the pending division, the tangent, the step along the geodesic (one kernel), the new norm
        TorchNorm un(n);
        const float div = pending;
        std::vector<int> used;
        std::vector<float> used_dot, used_coef, used_norm, used_recip;
        std::vector<const void*> used_x;
        std::vector<QType> used_type;
        for (size_t p = 0; p < V; ++p) {
            if (!use[p]) continue;
            const MergeInput& in = x[size_t(valid[p])];
            used.push_back(int(p)), used_dot.push_back(dot[p]), used_coef.push_back(coef[p]);
            used_x.push_back(in.data), used_type.push_back(direct ? in.type : QType::F32);
            used_norm.push_back(direct ? norms[size_t(valid[p])] : 1.0f), used_recip.push_back(direct ? recip[p] : 0.0f);
        }
        KarcherArgs ka;
        ka.k = int(used.size()), ka.type = used_type.data(), ka.norm = used_norm.data(), ka.recip = used_recip.data();
        ka.dot = used_dot.data(), ka.coef = used_coef.data();
        ka.div = div, ka.tn = tn, ka.cos_tn = cos_tn, ka.sin_tn = sin_tn;
        pass(&un, !direct, [&](int64_t off, int64_t len, const std::vector<float*>& u, float* m, int) {
            KarcherArgs a = ka;
            if (direct) {  // one call per task: its units' range test is remembered for the next passes
                a.x = used_x.data();
                char& known = in_range[size_t(off / tl.chunk)];
                a.in_range = known != 0;  // also for a subset of the inputs
                const bool all_in = K.karcher_step(a, m, off, len);
                if (used.size() == V) known = char(all_in);
                return;
            }
            const void* uu[kMaxFused];
            std::vector<const void*> many;
            const void** up = used.size() <= size_t(kMaxFused) ? uu : (many.resize(used.size()), many.data());
            for (size_t j = 0; j < used.size(); ++j) up[j] = u[size_t(used[j])];
            a.x = up;
            K.karcher_step(a, m, 0, len);
        });
        const float unit_norm = un.result();
        pending = double(unit_norm) > tol ? unit_norm : 0.0f;
        for (size_t p = 0; p < V; ++p) a[p] = double(cos_tn) * a[p] + double(sin_tn) / double(tn) * b[p];
        if (pending != 0.0f)
            for (double& v : a) v /= double(pending);
    }
    // scale = sum_m alpha * |x_m| over every model, in float32 and in order (a Python sum)
    float scale = 0.0f;
    for (int m = 0; m < N; ++m) scale = scale + float(alpha) * norms[size_t(m)];
    const float div = pending;
    pool.parallel_for(tl.tasks(), [&](int64_t task, int th) {
        const int64_t len = tl.size(task);
        float* m = mean + tl.begin(task);
        float* res = scratch.get(th, TMP);
        for (int64_t o = 0; o < len; o += kL1Block) {
            const int64_t l = std::min(kL1Block, len - o);
            std::memcpy(res, m + o, size_t(l) * 4);
            if (div != 0.0f) K.div(res, div, l);
            K.scale(res, scale, l);
            store_out(c, res, out, tl.begin(task) + o, l);
        }
    });
    return report;
}

float merge_torch_reduce(const MergeCommon& c, MergeInput x, bool norm) {
    const Tiling tl(c.n, 1);
    Scratch scratch(1, kChunk);
    TorchSum sum(c.n);
    TorchNorm nrm(c.n);
    OrderedFeed io(tl.tasks(), 1, [&](int64_t, const float* const* v, int64_t len) {
        if (norm) nrm.feed(v[0], len);
        else sum.feed(v[0], len);
    });
    ThreadPool::instance().parallel_for(tl.tasks(), io.guard([&](int64_t task, int th) {
        float* v = scratch.get(th, 0);
        load_work(c, x, tl.begin(task), tl.size(task), v);
        io.put(task, v, tl.size(task));
    }));
    io.finish();
    return norm ? nrm.result() : sum.result();
}

namespace {

// Order-preserving keys of float32 values (NaN above everything, as torch.sort puts them last).
// Branch-free integer steps, so that loops over many values vectorize.
inline uint32_t order_key(float v) {
    const uint32_t b = f32_bits(v);
    const uint32_t k = b ^ (uint32_t(int32_t(b) >> 31) | 0x80000000u);  // negative: ~b; else: b | sign bit
    return int32_t(b & 0x7fffffffu) > int32_t(0x7f800000u) ? 0xffffffffu : k;
}

inline float key_value(uint32_t k) { return bits_f32((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }

// The values at given ascending ranks of a tensor's values, by radix selection on their 32-bit
// order keys: count() every value by the top 16 bits of its key (pass 1), choose() the bins that
// hold the ranks, gather() the keys that fall in those bins (pass 2; a few in a thousand of the
// values), then values() selects among them. count and gather take per-thread state (th).
class RankSelect {
   public:
    RankSelect(int threads, std::vector<int64_t> ranks)
        : ranks_(std::move(ranks)), hist_(size_t(threads) * kHists * 65536, 0), picked_(size_t(threads)) {}
    void count(int th, const float* v, int64_t n) {
        // two histograms taking turns, so that runs of equal bins do not wait on each other's increments
        uint32_t* h0 = hist_.data() + size_t(th) * kHists * 65536;
        uint32_t* h1 = h0 + 65536;
        uint32_t bins[kBlock];
        for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
            const int64_t m = std::min<int64_t>(kBlock, n - i0);
            for (int64_t j = 0; j < m; ++j) bins[j] = order_key(v[i0 + j]) >> 16;
            int64_t j = 0;
            for (; j + 2 <= m; j += 2) h0[bins[j]]++, h1[bins[j + 1]]++;
            if (j < m) h0[bins[j]]++;
        }
    }
    void choose() {
        const size_t T = picked_.size() * kHists;
        std::vector<int64_t> cum(65537, 0);
        for (size_t b = 0; b < 65536; ++b) {
            int64_t s = 0;
            for (size_t h = 0; h < T; ++h) s += hist_[h * 65536 + b];
            cum[b + 1] = cum[b] + s;
        }
        for (int64_t r : ranks_) {
            const int bin = int(std::upper_bound(cum.begin(), cum.end(), r) - cum.begin()) - 1;
            bins_.push_back(uint32_t(bin));
            below_.push_back(cum[size_t(bin)]);
        }
        for (int j = 0; j < 3; ++j) wanted_[j] = bins_[std::min(size_t(j), bins_.size() - 1)];
    }
    void gather(int th, const float* v, int64_t n) {
        // a few in a thousand values fall in the wanted bins: test a block at once, collect rarely
        std::vector<uint32_t>& out = picked_[size_t(th)];
        const uint32_t w0 = wanted_[0], w1 = wanted_[1], w2 = wanted_[2];
        // (short blocks: the bins around the quartiles are the fullest, a percent or so of the values)
        uint32_t keys[kGatherBlock];
        for (int64_t i0 = 0; i0 < n; i0 += kGatherBlock) {
            const int64_t m = std::min<int64_t>(kGatherBlock, n - i0);
            uint32_t hit = 0;
            for (int64_t j = 0; j < m; ++j) {
                const uint32_t k = order_key(v[i0 + j]), top = k >> 16;
                keys[j] = k;
                hit |= uint32_t(top == w0) | uint32_t(top == w1) | uint32_t(top == w2);
            }
            if (!hit) continue;
            for (int64_t j = 0; j < m; ++j) {
                const uint32_t top = keys[j] >> 16;
                if (top == w0 || top == w1 || top == w2) out.push_back(keys[j]);
            }
        }
    }
    std::vector<float> values() {
        std::vector<float> out;
        for (size_t r = 0; r < ranks_.size(); ++r) {
            std::vector<uint32_t> keys;
            for (const auto& p : picked_)
                for (uint32_t k : p)
                    if (k >> 16 == bins_[r]) keys.push_back(k);
            const auto nth = keys.begin() + std::ptrdiff_t(ranks_[r] - below_[r]);
            std::nth_element(keys.begin(), nth, keys.end());
            out.push_back(key_value(*nth));
        }
        return out;
    }

   private:
    static constexpr int kHists = 2;       // per thread
    static constexpr int64_t kBlock = 64;        // values keyed at once
    static constexpr int64_t kGatherBlock = 16;  // values tested at once
    std::vector<int64_t> ranks_;  // up to 3
    std::vector<uint32_t> hist_;
    std::vector<std::vector<uint32_t>> picked_;
    std::vector<uint32_t> bins_;
    std::vector<int64_t> below_;  // per rank: how many values lie in the bins below its bin
    uint32_t wanted_[3] = {};
};

}  // namespace

float merge_arcee_fusion(const MergeCommon& c, MergeInput base, MergeInput x, int64_t rows, MergeOutput out) {
    const MergeKernels& K = kernels().merge;
    const int64_t n = c.n;
    const Tiling tl(n, rows);
    const int64_t L = tl.len;
    ThreadPool& pool = ThreadPool::instance();
    if (n == 0) return 0.0f;
    // the inputs as stored, read from their files once when they fit the cache budget
    const ResidentInputs res({x, base}, n);
    const MergeInput xr = res[0], br = res[1];
    // threshold = median + 1.5 (q3 - q1) of the importance: its order statistics at floor(q (n - 1))
    std::vector<int64_t> ranks;
    for (double q : {0.25, 0.5, 0.75}) ranks.push_back(int64_t(std::floor(q * double(n - 1))));
    RankSelect select(pool.threads(), ranks);
    // Pass 1, rows in groups of about one chunk: the KL divergence of softmax(x) from softmax(base)
    // along each row (p = softmax + 1e-8, as mergekit), then the importance |x - base| * KL(row) of
    // the row's elements, counted for the selection.
    std::vector<float> kl(static_cast<size_t>(tl.rows));
    {
        const int64_t group = std::max<int64_t>(1, kChunk / std::max<int64_t>(L, 1));
        Scratch rows_scratch(4, group * L);
        pool.parallel_for(ceil_div(tl.rows, group), [&](int64_t g, int th) {
            const int64_t r0 = g * group, r1 = std::min(tl.rows, r0 + group), off = r0 * L, len = (r1 - r0) * L;
            float* xb = rows_scratch.get(th, 0);
            float* bb = rows_scratch.get(th, 1);
            float* ex = rows_scratch.get(th, 2);
            float* eb = rows_scratch.get(th, 3);
            res.fill(off, len);
            load_work(c, xr, off, len, xb);
            load_work(c, br, off, len, bb);
            for (int64_t r = r0; r < r1; ++r) {
                const int64_t o = (r - r0) * L;
                const float sx = float(K.exp_sum(xb + o, K.max(xb + o, L), ex, L));
                const float sb = float(K.exp_sum(bb + o, K.max(bb + o, L), eb, L));
                kl[size_t(r)] = float(K.kl_sum(ex, 1.0f / sx, eb, 1.0f / sb, 1e-8f, L));
            }
            K.sub(xb, xb, bb, len);  // the delta x - base, as load_deltas makes it
            for (int64_t r = r0; r < r1; ++r) K.abs_scale(xb + (r - r0) * L, kl[size_t(r)], L);
            select.count(th, xb, len);
        });
    }
    select.choose();
    // Passes 2 and 3 are element-wise: in L1-sized blocks when the inputs are in memory (read from
    // files: a task's chunk at once).
    const int64_t block = in_memory(res.inputs()) ? kL1Block : kChunk;
    Scratch scratch(3, block);
    const std::vector<MergeInput> xs{xr};
    // f(off, len, importance, delta, base) for each block of chunk `task`: importance = |x - base| *
    // KL of the row, the delta x - base, and the base
    auto importance = [&](int64_t task, int th, auto&& f) {
        float* imp = scratch.get(th, 0);
        float* d = scratch.get(th, 1);
        float* b = scratch.get(th, 2);
        const float s = kl[size_t(tl.row(task))];
        const std::vector<float*> dv{d};
        const int64_t begin = tl.begin(task), end = begin + tl.size(task);
        for (int64_t off = begin; off < end; off += block) {
            const int64_t len = std::min(block, end - off);
            load_deltas(c, &br, xs, off, len, b, dv);
            std::memcpy(imp, d, size_t(len) * 4);
            K.abs_scale(imp, s, len);
            f(off, len, imp, d, b);
        }
    };
    // Pass 2: the importances in the bins that hold the quantiles (gathered in any order: the values
    // at the ranks do not depend on it), back to front: the chunks pass 1 read last are in cache.
    pool.parallel_for(tl.tasks(), [&](int64_t back, int th) {
        importance(tl.tasks() - 1 - back, th,
                   [&](int64_t, int64_t len, const float* imp, const float*, const float*) { select.gather(th, imp, len); });
    });
    const std::vector<float> qs = select.values();
    const float threshold = qs[1] + 1.5f * (qs[2] - qs[0]);
    // Pass 3: x's changes where their importance reaches the threshold.
    pool.parallel_for(tl.tasks(), [&](int64_t task, int th) {
        importance(task, th, [&](int64_t off, int64_t len, const float* imp, float* d, const float* b) {
            K.keep_ge(d, imp, threshold, len);
            K.add(d, b, len);
            store_out(c, d, out, off, len);
        });
    });
    return threshold;
}

}  // namespace llamix
