// Per-tensor merge drivers: split one output tensor into fixed chunks (independent of the thread
// count), run the active ISA's primitives on each chunk in float32, and write the output dtype.
// Semantics follow mergekit 0.1.5 as written down in shared/MERGE_METHODS.md; scalar coefficient
// math (acos, sin, cosines) is done in float32 in the same order as mergekit so results match.
// The sums behind them (norms, dots) do not: ours are accurate (double, fixed order), mergekit's
// are torch's float32 reductions, whose rounding depends on torch's summation order and thread
// count; that, not the formula, is what separates slerp / nuslerp / model_stock from mergekit.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/fp16.h"
#include "common/thread_pool.h"
#include "drivers/merge.h"
#include "kernels/kernels.h"

namespace llamix {

namespace {

constexpr int64_t kChunk = 16384;  // elements per task; a power of two dividing 2^32 (mask counters)
constexpr int64_t kL1Block = 2048;  // elements a streaming pass keeps in L1 (8 KB of float32)

int64_t type_size(QType t) { return t == QType::F32 ? 4 : 2; }

const void* at(MergeInput in, int64_t offset) {
    return static_cast<const uint8_t*>(in.data) + offset * type_size(in.type);
}

void read_exact(int fd, void* dst, int64_t bytes, int64_t offset) {
    auto* p = static_cast<uint8_t*>(dst);
    while (bytes > 0) {
        const ssize_t got = ::pread(fd, p, size_t(bytes), off_t(offset));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            throw std::runtime_error("merge: reading an input tensor failed at byte " + std::to_string(offset) + ": " +
                                     (got == 0 ? std::string("unexpected end of file") : std::strerror(errno)));
        p += got, bytes -= got, offset += got;
    }
}

// A per-thread byte buffer; `slot` tells apart the buffers one task holds at the same time.
uint8_t* thread_buffer(int slot, int64_t bytes) {
    static thread_local std::vector<std::vector<uint8_t>> buffers;
    if (buffers.size() <= size_t(slot)) buffers.resize(size_t(slot) + 1);
    std::vector<uint8_t>& b = buffers[size_t(slot)];
    if (b.size() < size_t(bytes)) b.resize(size_t(bytes));
    return b.data();
}

// Elements [off, off + len) of an input in its stored type: in place, or read into `slot`.
const uint8_t* fetch(MergeInput in, int64_t off, int64_t len, int slot) {
    if (in.fd < 0) return static_cast<const uint8_t*>(at(in, off));
    const int64_t size = type_size(in.type);
    uint8_t* buf = thread_buffer(slot, len * size);
    read_exact(in.fd, buf, len * size, in.file_offset + off * size);
    return buf;
}

// Per-thread float32 scratch: `count` buffers of `len` floats for each pool thread. Left
// uninitialised (every user writes before reading): zeroing it would cost a pass per tensor.
class Scratch {
   public:
    Scratch(int count, int64_t len)
        : count_(count), len_(len), data_(new float[size_t(ThreadPool::instance().threads()) * count * len + 16]) {}
    float* get(int thread, int j) { return data_.get() + (int64_t(thread) * count_ + j) * len_; }

   private:
    int count_;
    int64_t len_;
    std::unique_ptr<float[]> data_;
};

// Round float32 values to the working dtype and back (mergekit casts inputs to `dtype` on load).
void round_to(QType work, float* x, int64_t n) {
    if (work == QType::F32) return;
    const MergeKernels& K = kernels().merge;
    uint16_t tmp[1024];
    for (int64_t i = 0; i < n; i += 1024) {
        const int64_t m = std::min<int64_t>(1024, n - i);
        K.store(x + i, tmp, work, m);
        K.load(tmp, work, x + i, m);
    }
}

// Load elements [off, off + len) of an input as float32 in the working dtype's precision.
void load_work(const MergeCommon& c, MergeInput in, int64_t off, int64_t len, float* dst) {
    if (in.fd >= 0 && in.type == QType::F32) {
        read_exact(in.fd, dst, len * 4, in.file_offset + off * 4);  // already float32: straight in
    } else {
        kernels().merge.load(fetch(in, off, len, 0), in.type, dst, len);
    }
    if (c.work != QType::F32 && in.type != c.work) round_to(c.work, dst, len);
}

// Store a float32 result: rounded to the working dtype first when that is narrower than the
// output (mergekit's result lives in the working dtype before `out_dtype` converts it).
void store_out(const MergeCommon& c, float* x, MergeOutput out, int64_t off, int64_t len) {
    if (c.work != QType::F32 && c.work != out.type) round_to(c.work, x, len);
    kernels().merge.store(x, static_cast<uint8_t*>(out.data) + off * type_size(out.type), out.type, len);
}

// f(off, len) for each L1-sized block of [begin, end), with both inputs' elements there loaded
// into a and b (float32, working precision); each input's range is read once, in place or from
// its file. Streaming passes stay in L1 instead of round-tripping whole chunks through L2.
template <class F>
void for_l1_blocks(const MergeCommon& c, MergeInput x, MergeInput y, int64_t begin, int64_t end, float* a, float* b,
                   F&& f) {
    const uint8_t* px = fetch(x, begin, end - begin, 0);
    const uint8_t* py = fetch(y, begin, end - begin, 1);
    for (int64_t off = begin; off < end; off += kL1Block) {
        const int64_t len = std::min(kL1Block, end - off);
        load_work(c, MergeInput{px + (off - begin) * type_size(x.type), x.type}, 0, len, a);
        load_work(c, MergeInput{py + (off - begin) * type_size(y.type), y.type}, 0, len, b);
        f(off, len);
    }
}

// Vectors of length L laid out as `rows` contiguous runs, each split into chunks of kChunk.
struct Tiling {
    int64_t rows, len, per_row;
    Tiling(int64_t n, int64_t r) : rows(std::max<int64_t>(r, 1)), len(n / std::max<int64_t>(r, 1)) {
        if (rows * len != n) throw std::invalid_argument("merge: tensor size is not a multiple of the row count");
        per_row = std::max<int64_t>(1, ceil_div(len, kChunk));
    }
    int64_t tasks() const { return rows * per_row; }
    int64_t row(int64_t task) const { return task / per_row; }
    int64_t begin(int64_t task) const { return row(task) * len + (task % per_row) * kChunk; }
    int64_t size(int64_t task) const { return std::min(kChunk, len - (task % per_row) * kChunk); }
};

// Sum per-task partials row by row, in task order: deterministic for any thread count.
std::vector<double> sum_rows(const Tiling& tl, const std::vector<double>& part, int width) {
    std::vector<double> out(size_t(tl.rows) * width, 0.0);
    for (int64_t t = 0; t < tl.tasks(); ++t)
        for (int j = 0; j < width; ++j) out[tl.row(t) * width + j] += part[t * width + j];
    return out;
}

// 64-bit FNV-1a of the tensor name, then splitmix64: the key of a model's random mask.
uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

struct MaskKey {
    uint32_t k0, k1;
    MaskKey(uint64_t seed, const std::string& name, int model) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
        const uint64_t k = splitmix64(splitmix64(seed) ^ splitmix64(h + uint64_t(model)));
        k0 = uint32_t(k);
        k1 = uint32_t(k >> 32);
    }
    // Chunks never straddle a multiple of 2^32, so the index's high half just changes the key.
    uint32_t k0_for(int64_t index) const { return k0 ^ fmix32(uint32_t(uint64_t(index) >> 32) * 0x9e3779b9u); }
};

uint32_t threshold24(double p) {
    if (!(p > 0.0)) return 0;
    if (p >= 1.0) return 1u << 24;
    return uint32_t(std::floor(p * 16777216.0));
}

// |x| as an order-preserving integer (NaN above +inf).
inline uint32_t mag_key(float v) { return f32_bits(v) & 0x7fffffffu; }

// The keep-mask of one task vector, plus the L1 rescale factor mergekit applies to kept entries.
struct RankRule;
struct ModelMask {
    std::vector<uint8_t> bits;      // empty: keep everything (unless rule is set)
    const RankRule* rule = nullptr;  // computed per chunk in the final pass instead of stored
    float rescale = 1.0f;
};

class TaskVectorSource {
   public:
    TaskVectorSource(const MergeCommon& c, MergeInput base, MergeInput x) : c_(c), base_(base), x_(x) {}
    // delta = x - base over [off, off + len) into d; b is scratch.
    void delta(int64_t off, int64_t len, float* d, float* b) const {
        load_work(c_, base_, off, len, b);
        load_work(c_, x_, off, len, d);
        kernels().merge.sub(d, d, b, len);
    }

   private:
    const MergeCommon& c_;
    MergeInput base_, x_;
};

// Ranks [r0, r1) of |delta| ascending, equal magnitudes ordered by index, for several models at
// once: radix selection on the magnitude bits, never a sort. Pass 1 histograms the high 16 bits
// of every model's |delta|; pass 2 collects the low 16 bits of the elements inside the bins that
// hold the boundary ranks, which gives the exact boundary keys and, per chunk, how many equal
// keys precede it (tie ordinals). The mask of any chunk then follows from the rule alone, so the
// final pass can compute it inline instead of storing it.
struct RankRule {
    struct Boundary {
        bool active = false;
        int64_t rank = 0;
        int bin = -1;
        uint32_t key = 0;
        int64_t below = 0;            // elements with a smaller key
        std::vector<int64_t> prefix;  // per task: elements equal to key in earlier tasks
        std::vector<int64_t> count;   // per task: elements equal to key in it
    };
    bool keep_all = true, keep_none = false;
    int64_t r0 = 0, r1 = 0;
    Boundary lo, hi;  // the first kept rank r0 (if > 0) and the last kept rank r1 - 1 (if < n - 1)

    // Keep bits of chunk `task` (delta d, len elements) into bits (len / 8 rounded up bytes):
    // keys strictly between the boundary keys by one vector compare, then the few elements equal
    // to a boundary key by their tie ordinal.
    void mask(int64_t task, const float* d, int64_t len, uint8_t* bits) const {
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
};

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
    ThreadPool& pool = ThreadPool::instance();
    const int T = pool.threads();
    const int A = int(active.size());
    const Tiling tl(n, 1);
    Scratch scratch(2, kChunk);
    auto delta = [&](int m, int64_t off, int64_t len, float* d, const float* b) {
        load_work(c, x[m], off, len, d);
        kernels().merge.sub(d, d, b, len);
    };

    // Pass 1: histograms of the high 16 bits, per model and thread.
    std::vector<uint32_t> hist(size_t(T) * A * 65536, 0);
    pool.parallel_for(tl.tasks(), [&](int64_t task, int th) {
        float* b = scratch.get(th, 0);
        float* d = scratch.get(th, 1);
        const int64_t off = tl.begin(task), len = tl.size(task);
        load_work(c, base, off, len, b);
        for (int a = 0; a < A; ++a) {
            delta(active[a], off, len, d, b);
            uint32_t* h = hist.data() + (size_t(th) * A + a) * 65536;
            for (int64_t i = 0; i < len; ++i) h[mag_key(d[i]) >> 16]++;
        }
    });
    auto find_bin = [](const std::vector<int64_t>& cm, int64_t rank) {  // first bin whose cumulative count passes rank
        return int(std::upper_bound(cm.begin(), cm.end(), rank) - cm.begin()) - 1;
    };
    for (int a = 0; a < A; ++a) {
        std::vector<int64_t> cum(65537, 0);
        for (int b = 0; b < 65536; ++b) {
            int64_t s = 0;
            for (int th = 0; th < T; ++th) s += hist[(size_t(th) * A + a) * 65536 + b];
            cum[b + 1] = cum[b] + s;
        }
        for (RankRule::Boundary* bd : {&rules[active[a]].lo, &rules[active[a]].hi}) {
            if (!bd->active) continue;
            bd->bin = find_bin(cum, bd->rank);
            bd->below = cum[bd->bin];
        }
    }
    hist = std::vector<uint32_t>();

    // Pass 2: the low 16 bits of the elements inside the boundary bins, per task (in index order).
    const int64_t tasks = tl.tasks();
    std::vector<std::vector<uint16_t>> coll(size_t(tasks) * A * 2);
    pool.parallel_for(tasks, [&](int64_t task, int th) {
        float* b = scratch.get(th, 0);
        float* d = scratch.get(th, 1);
        const int64_t off = tl.begin(task), len = tl.size(task);
        load_work(c, base, off, len, b);
        for (int a = 0; a < A; ++a) {
            const RankRule& r = rules[active[a]];
            delta(active[a], off, len, d, b);
            const int b0 = r.lo.active ? r.lo.bin : -1, b1 = r.hi.active ? r.hi.bin : -1;
            std::vector<uint16_t>& c0 = coll[(size_t(task) * A + a) * 2];
            std::vector<uint16_t>& c1 = coll[(size_t(task) * A + a) * 2 + 1];
            for (int64_t i = 0; i < len; ++i) {
                const uint32_t k = mag_key(d[i]);
                const int bin = int(k >> 16);
                if (bin == b0) c0.push_back(uint16_t(k));
                if (bin == b1) c1.push_back(uint16_t(k));
            }
        }
    });
    for (int a = 0; a < A; ++a) {
        RankRule& r = rules[active[a]];
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
    return rules;
}

std::vector<uint8_t> random_mask_bits(int64_t n, double density, const MaskKey& key) {
    std::vector<uint8_t> bits(size_t(ceil_div(n, 8)), 0);
    const Tiling tl(n, 1);
    const uint32_t th24 = threshold24(density);
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int) {
        const int64_t off = tl.begin(task);
        kernels().merge.random_mask(key.k0_for(off), key.k1, uint32_t(off), th24, bits.data() + off / 8, tl.size(task));
    });
    return bits;
}

// DELLA (Deep et al. 2024): within each row, rank |delta| ascending (ties by index) and keep rank
// r (0-based) with probability density - eps + 2 eps r / (L - 1). Rows are ranked with a sort of
// the row (rows are short); tasks take 8 rows so each writes whole mask bytes.
std::vector<uint8_t> della_mask_bits(const TaskVectorSource& src, int64_t n, int64_t rows, double density,
                                     double eps, const MaskKey& key) {
    rows = std::max<int64_t>(rows, 1);
    const int64_t L = n / rows;
    std::vector<uint8_t> bits(size_t(ceil_div(n, 8)) + 1, 0);
    const int64_t group = (L % 8 == 0) ? 1 : 8;  // rows per task so tasks start on a mask byte
    Scratch scratch(2, L);
    std::vector<std::vector<uint64_t>> order(size_t(ThreadPool::instance().threads()), std::vector<uint64_t>(size_t(L)));
    ThreadPool::instance().parallel_for(ceil_div(rows, group), [&](int64_t task, int th) {
        float* d = scratch.get(th, 0);
        uint64_t* ord = order[th].data();
        for (int64_t r = task * group; r < std::min(rows, (task + 1) * group); ++r) {
            const int64_t off = r * L;
            src.delta(off, L, d, scratch.get(th, 1));
            for (int64_t i = 0; i < L; ++i) ord[i] = (uint64_t(mag_key(d[i])) << 32) | uint64_t(i);
            std::sort(ord, ord + L);
            for (int64_t rank = 0; rank < L; ++rank) {
                const int64_t i = int64_t(ord[rank] & 0xffffffffu);
                const double frac = L > 1 ? double(rank) / double(L - 1) : 0.0;
                const double p = (density - eps) + frac * 2.0 * eps;
                const int64_t idx = off + i;
                const uint32_t u = mask_hash(key.k0_for(idx), key.k1, uint32_t(idx)) >> 8;
                if (u < threshold24(p)) bits[size_t(idx >> 3)] |= uint8_t(1u << (idx & 7));
            }
        }
    });
    bits.resize(size_t(ceil_div(n, 8)));
    return bits;
}

ModelMask sparsify_mask(const MergeCommon& c, const TaskVectorSource& src, const Sparsify& sp, const MaskKey& key,
                        int64_t rows, bool rescale, const RankRule& rule, bool materialize) {
    const int64_t n = c.n;
    const Tiling tl(n, 1);
    ModelMask mm;
    switch (sp.kind) {
        case Sparsify::none: return mm;
        case Sparsify::rank:
            if (rule.keep_all) return mm;
            if (!rescale && !materialize) {
                mm.rule = &rule;  // the final pass computes it chunk by chunk
                return mm;
            }
            mm.bits.assign(size_t(ceil_div(n, 8)), 0);
            break;
        case Sparsify::random:
            if (sp.density >= 1.0) return mm;
            mm.bits = random_mask_bits(n, sp.density, key);
            break;
        case Sparsify::della:
            if (sp.density >= 1.0) return mm;
            if (sp.density <= 0.0) {
                mm.bits.assign(size_t(ceil_div(n, 8)), 0);
                return mm;  // mergekit returns zeros without rescaling
            }
            mm.bits = della_mask_bits(src, n, rows, sp.density, sp.epsilon, key);
            break;
    }
    if (!rescale && sp.kind != Sparsify::rank) return mm;
    // One pass: the rank mask (if stored) and the L1 norms before and after masking.
    Scratch scratch(2, kChunk);
    std::vector<double> part(size_t(tl.tasks()) * 2);
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        float* d = scratch.get(th, 0);
        const int64_t off = tl.begin(task), len = tl.size(task);
        src.delta(off, len, d, scratch.get(th, 1));
        if (sp.kind == Sparsify::rank) rule.mask(task, d, len, mm.bits.data() + off / 8);
        if (rescale) kernels().merge.abs_sums(d, mm.bits.data() + off / 8, len, &part[size_t(task) * 2]);
    });
    if (rescale) {
        double before = 0, after = 0;
        for (int64_t t = 0; t < tl.tasks(); ++t) {
            before += part[t * 2];
            after += part[t * 2 + 1];
        }
        // rescale unless either norm is tiny (eps 1e-7), in float32 as mergekit
        const float b = float(before), a = float(after);
        if (!(b < 1e-7f || a < 1e-7f)) mm.rescale = b / a;
    }
    return mm;
}

}  // namespace

void merge_linear(const MergeCommon& c, const std::vector<MergeInput>& x, const std::vector<float>& w, bool normalize,
                  MergeOutput out) {
    if (x.empty() || x.size() != w.size()) throw std::invalid_argument("merge_linear: need one weight per input");
    float total = w[0];
    for (size_t i = 1; i < w.size(); ++i) total = total + w[i];
    if (normalize && total == 0.0f)
        throw std::invalid_argument("linear: the weights sum to zero, cannot normalize (set normalize: false)");
    const MergeKernels& K = kernels().merge;
    const Tiling tl(c.n, 1);
    Scratch scratch(2, kChunk);
    std::vector<const uint8_t*> src(size_t(ThreadPool::instance().threads()) * x.size());  // each input's task chunk
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        float* acc = scratch.get(th, 0);
        float* tmp = scratch.get(th, 1);
        const int64_t begin = tl.begin(task), end = begin + tl.size(task);
        for (size_t i = 0; i < x.size(); ++i) src[size_t(th) * x.size() + i] = fetch(x[i], begin, end - begin, int(i));
        // Sub-blocks small enough that the accumulator stays in L1 across the inputs.
        for (int64_t off = begin; off < end; off += kL1Block) {
            const int64_t len = std::min(kL1Block, end - off);
            std::fill(acc, acc + len, 0.0f);
            for (size_t i = 0; i < x.size(); ++i) {
                const MergeInput part{src[size_t(th) * x.size() + i] + (off - begin) * type_size(x[i].type), x[i].type};
                if (c.work == QType::F32 || x[i].type == c.work) {
                    K.fma_acc_typed(acc, part.data, part.type, w[i], len);  // no rounding: read in place
                } else {
                    load_work(c, part, 0, len, tmp);
                    K.fma_acc(acc, tmp, w[i], len);
                }
            }
            if (normalize && total != 1.0f) K.div(acc, total, len);  // x / 1 == x exactly
            store_out(c, acc, out, off, len);
        }
    });
}

void merge_slerp(const MergeCommon& c, MergeInput v0, MergeInput v1, float t, MergeOutput out) {
    const MergeKernels& K = kernels().merge;
    const Tiling tl(c.n, 1);
    Scratch scratch(2, kL1Block);
    std::vector<double> part(size_t(tl.tasks()) * 3);
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        float* a = scratch.get(th, 0);
        float* b = scratch.get(th, 1);
        double* sums = &part[size_t(task) * 3];
        for_l1_blocks(c, v0, v1, tl.begin(task), tl.begin(task) + tl.size(task), a, b, [&](int64_t, int64_t len) {
            double d[3];
            K.dot3(a, b, len, d);
            for (int j = 0; j < 3; ++j) sums[j] += d[j];
        });
    });
    const std::vector<double> s = sum_rows(tl, part, 3);
    // Norms <= 1e-8 are not normalised; the dot of the normalised vectors, clamped.
    double na = std::sqrt(s[0]), nb = std::sqrt(s[1]);
    if (!(float(na) > 1e-8f)) na = 1.0;
    if (!(float(nb) > 1e-8f)) nb = 1.0;
    const float dot = std::min(1.0f, std::max(-1.0f, float(s[2] / (na * nb))));
    const bool linear = std::fabs(dot) > 0.9995f;  // (anti)parallel: plain interpolation
    const float theta = std::acos(linear ? 0.0f : dot);
    const float sin_theta = std::sin(theta);
    const float one_minus_t = 1.0f - t;
    const float ca = linear ? one_minus_t : std::sin(one_minus_t * theta) / sin_theta;
    const float cb = linear ? t : std::sin(t * theta) / sin_theta;
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        float* a = scratch.get(th, 0);
        float* b = scratch.get(th, 1);
        for_l1_blocks(c, v0, v1, tl.begin(task), tl.begin(task) + tl.size(task), a, b, [&](int64_t off, int64_t len) {
            K.lincomb2(a, a, ca, b, cb, 1.0f, len);
            store_out(c, a, out, off, len);
        });
    });
}

void merge_nuslerp(const MergeCommon& c, MergeInput x0, MergeInput x1, const MergeInput* base, double t, int64_t rows,
                   MergeOutput out) {
    const MergeKernels& K = kernels().merge;
    const Tiling tl(c.n, rows);
    Scratch scratch(3, kChunk);
    // v0, v1: the inputs, or their task vectors over the base.
    auto load_pair = [&](int64_t off, int64_t len, float* a, float* b, float* bs) {
        load_work(c, x0, off, len, a);
        load_work(c, x1, off, len, b);
        if (base) {
            load_work(c, *base, off, len, bs);
            K.sub(a, a, bs, len);
            K.sub(b, b, bs, len);
        }
    };
    std::vector<double> part(size_t(tl.tasks()) * 3);
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        float* a = scratch.get(th, 0);
        float* b = scratch.get(th, 1);
        const int64_t off = tl.begin(task), len = tl.size(task);
        load_pair(off, len, a, b, scratch.get(th, 2));
        K.dot3(a, b, len, &part[size_t(task) * 3]);
    });
    const std::vector<double> s = sum_rows(tl, part, 3);
    // Per vector: norms clamped at 1e-7; lerp only when 1 - cos^2 <= 1e-16.
    std::vector<float> coef(size_t(tl.rows) * 3);
    const float tf = float(t), omt = float(1.0 - t);
    for (int64_t r = 0; r < tl.rows; ++r) {
        const double na = std::max(std::sqrt(s[r * 3]), double(1e-7f)), nb = std::max(std::sqrt(s[r * 3 + 1]), double(1e-7f));
        const float cos = std::min(1.0f, std::max(-1.0f, float(s[r * 3 + 2] / (na * nb))));
        const bool colinear = (1.0f - cos * cos) <= 1e-16f;
        const float theta = std::acos(colinear ? 0.0f : cos);
        if (colinear) {
            coef[r * 3] = omt, coef[r * 3 + 1] = tf, coef[r * 3 + 2] = 1.0f;
        } else {
            coef[r * 3] = std::sin(omt * theta), coef[r * 3 + 1] = std::sin(tf * theta), coef[r * 3 + 2] = std::sin(theta);
        }
    }
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        float* a = scratch.get(th, 0);
        float* b = scratch.get(th, 1);
        float* bs = scratch.get(th, 2);
        const int64_t off = tl.begin(task), len = tl.size(task), r = tl.row(task);
        load_pair(off, len, a, b, bs);
        K.lincomb2(a, a, coef[r * 3], b, coef[r * 3 + 1], coef[r * 3 + 2], len);
        if (base) {
            K.add(a, bs, len);  // base + result (addition commutes exactly)
        }
        store_out(c, a, out, off, len);
    });
}

void merge_task_vectors(const MergeCommon& c, MergeInput base, const std::vector<MergeInput>& x,
                        const std::vector<Sparsify>& sp, const TaskVectorParams& p, MergeOutput out) {
    const int N = int(x.size());
    if (N == 0 || sp.size() != x.size()) throw std::invalid_argument("merge_task_vectors: need one sparsifier per input");
    const MergeKernels& K = kernels().merge;
    const std::vector<RankRule> rules = rank_rules(c, base, x, sp);
    std::vector<ModelMask> masks;
    std::vector<float> w(static_cast<size_t>(N));
    for (int m = 0; m < N; ++m) {
        TaskVectorSource src(c, base, x[m]);
        masks.push_back(sparsify_mask(c, src, sp[m], MaskKey(p.seed, p.name, m), p.rows, p.rescale, rules[m], false));
        w[m] = sp[m].weight;
    }
    float total = w[0];
    for (int m = 1; m < N; ++m) total = total + w[m];
    if (std::fabs(total) < 1e-8f) total = 1.0f;

    const Tiling tl(c.n, 1);
    Scratch scratch(N + 4, kChunk);  // the last buffer holds a chunk's inline mask bits
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        const int64_t off = tl.begin(task), len = tl.size(task);
        uint8_t* chunk_bits = reinterpret_cast<uint8_t*>(scratch.get(th, N + 3));
        float* b = scratch.get(th, N);
        float* acc = scratch.get(th, N + 1);
        float* div = scratch.get(th, N + 2);
        std::vector<const float*> d(static_cast<size_t>(N));
        load_work(c, base, off, len, b);
        for (int m = 0; m < N; ++m) {
            float* dm = scratch.get(th, m);
            load_work(c, x[m], off, len, dm);
            K.sub(dm, dm, b, len);
            const ModelMask& mm = masks[m];
            if (mm.rule) {
                mm.rule->mask(task, dm, len, chunk_bits);
                K.mask_scale(dm, chunk_bits, mm.rescale, len);
            } else if (!mm.bits.empty() || mm.rescale != 1.0f) {
                K.mask_scale(dm, mm.bits.empty() ? nullptr : mm.bits.data() + off / 8, mm.rescale, len);
            }
            K.scale(dm, w[m], len);
            d[m] = dm;
        }
        if (p.consensus != Consensus::none) {
            K.consensus(d.data(), w.data(), N, p.consensus, acc, div, len);
            if (p.normalize) K.div_elementwise(acc, div, len);
        } else {
            std::memcpy(acc, d[0], size_t(len) * 4);
            for (int m = 1; m < N; ++m) K.add(acc, d[m], len);
            if (p.normalize) K.div(acc, total, len);
        }
        if (p.lambda != 1.0f) K.scale(acc, p.lambda, len);
        K.add(acc, b, len);  // base + mixed delta
        store_out(c, acc, out, off, len);
    });
}

void merge_model_stock(const MergeCommon& c, MergeInput base, const std::vector<MergeInput>& x, int64_t rows,
                       MergeOutput out) {
    const int N = int(x.size());
    if (N < 2) throw std::invalid_argument("model_stock: needs at least two models besides the base");
    const MergeKernels& K = kernels().merge;
    const Tiling tl(c.n, rows);
    const int P = N * (N - 1) / 2;
    Scratch scratch(N + 1, kChunk);
    // Per pair (i < j): |o_i|^2, |o_j|^2, <o_i, o_j> of the offsets o = x - base.
    std::vector<double> part(size_t(tl.tasks()) * P * 3);
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        const int64_t off = tl.begin(task), len = tl.size(task);
        float* b = scratch.get(th, N);
        load_work(c, base, off, len, b);
        for (int m = 0; m < N; ++m) {
            float* o = scratch.get(th, m);
            load_work(c, x[m], off, len, o);
            K.sub(o, o, b, len);
        }
        int pair = 0;
        for (int i = 0; i < N; ++i)
            for (int j = i + 1; j < N; ++j, ++pair)
                K.dot3(scratch.get(th, i), scratch.get(th, j), len, &part[(size_t(task) * P + pair) * 3]);
    });
    const std::vector<double> s = sum_rows(tl, part, P * 3);
    std::vector<float> t_row(size_t(tl.rows));
    for (int64_t r = 0; r < tl.rows; ++r) {
        // mergekit, in float32: cos per pair with the norm product clamped at 1e-6, mean, then t.
        float sum_cos = 0.0f;
        for (int q = 0; q < P; ++q) {
            const double* v = &s[(size_t(r) * P + q) * 3];
            const float norm_product = std::max(float(std::sqrt(v[0])) * float(std::sqrt(v[1])), 1e-6f);
            const float cos = std::min(1.0f, std::max(-1.0f, float(v[2]) / norm_product));
            sum_cos = q == 0 ? cos : sum_cos + cos;
        }
        const float cos = sum_cos / float(P);
        const float den = 1.0f + float(N - 1) * cos;
        t_row[r] = std::fabs(den) < 1e-6f ? 0.0f : (float(N) * cos) / den;
    }
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        const int64_t off = tl.begin(task), len = tl.size(task);
        float* b = scratch.get(th, N);
        float* avg = scratch.get(th, 0);
        float* tmp = scratch.get(th, 1);
        load_work(c, base, off, len, b);
        load_work(c, x[0], off, len, avg);
        for (int m = 1; m < N; ++m) {
            load_work(c, x[m], off, len, tmp);
            K.add(avg, tmp, len);
        }
        K.div(avg, float(N), len);
        const float tr = t_row[tl.row(task)];
        K.lincomb2(avg, avg, tr, b, 1.0f - tr, 1.0f, len);
        store_out(c, avg, out, off, len);
    });
}

void merge_scale(const MergeCommon& c, MergeInput x, float s, MergeOutput out) {
    const MergeKernels& K = kernels().merge;
    const Tiling tl(c.n, 1);
    Scratch scratch(1, kChunk);
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        float* a = scratch.get(th, 0);
        const int64_t off = tl.begin(task), len = tl.size(task);
        load_work(c, x, off, len, a);
        if (s != 1.0f) K.scale(a, s, len);
        store_out(c, a, out, off, len);
    });
}

std::vector<uint8_t> merge_sparsify_mask(const MergeCommon& c, MergeInput base, MergeInput x, const Sparsify& sp,
                                         uint64_t seed, const std::string& name, int model_index, int64_t rows) {
    TaskVectorSource src(c, base, x);
    const std::vector<RankRule> rules = rank_rules(c, base, {x}, {sp});
    ModelMask mm = sparsify_mask(c, src, sp, MaskKey(seed, name, model_index), rows, false, rules[0], true);
    if (mm.bits.empty()) mm.bits.assign(size_t(ceil_div(c.n, 8)), 0xff);
    return mm.bits;
}

}  // namespace llamix
