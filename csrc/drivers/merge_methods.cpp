// Per-tensor merge drivers: split one output tensor into fixed chunks (independent of the thread
// count), run the active ISA's primitives on each chunk in float32, and write the output dtype.
// Semantics follow mergekit 0.1.5 as written down in docs/MERGING.md; scalar coefficient
// math (acos, sin, cosines) is done in float32 in the same order as mergekit so results match.
// The sums behind them (norms, dots) do not: ours are accurate (double, fixed order), mergekit's
// are torch's float32 reductions, whose rounding depends on torch's summation order and thread
// count; that, not the formula, is what separates slerp / nuslerp / model_stock from mergekit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "drivers/merge.h"
#include "drivers/merge_io.h"
#include "drivers/merge_memory.h"
#include "drivers/merge_rank_select.h"
#include "drivers/merge_sparsify.h"
#include "drivers/merge_tiling.h"
#include "kernels/kernels.h"

namespace llamix {

using namespace merge_detail;

void merge_linear(const MergeCommon& c, const std::vector<MergeInput>& xin, const std::vector<float>& w, bool normalize,
                  MergeOutput out) {
    if (xin.empty() || xin.size() != w.size()) throw std::invalid_argument("merge_linear: need one weight per input");
    float total = w[0];
    for (size_t i = 1; i < w.size(); ++i) total = total + w[i];
    if (normalize && total == 0.0f)
        throw std::invalid_argument("linear: the weights sum to zero, cannot normalize (set normalize: false)");
    const MergeKernels& K = kernels().merge;
    const Tiling tl(c.n, 1, kStreamChunk);
    Scratch scratch(2, kL1Block);
    const size_t k = xin.size();
    // Inputs already in the working precision are summed in place in one pass (weighted_sum);
    // others are rounded to it first, one at a time.
    const ResidentInputs res(xin, c.n, ResidentInputs::Unmapped::pread);  // one pass: read the files' pages in place
    const std::vector<MergeInput>& x = res.inputs();
    const bool in_place = stored_as_work(c, x);
    std::vector<QType> types(k);
    for (size_t i = 0; i < k; ++i) types[i] = x[i].type;
    const float d = normalize ? total : 1.0f;  // x / 1 == x exactly: no division then
    std::vector<const uint8_t*> chunks(size_t(ThreadPool::instance().threads()) * k);  // each input's task chunk
    std::vector<const void*> src(chunks.size());  // each input's place in the block
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        float* acc = scratch.get(th, 0);
        float* tmp = scratch.get(th, 1);
        const void** at = &src[size_t(th) * k];
        const int64_t begin = tl.begin(task), end = begin + tl.size(task);
        const uint8_t** chunk = &chunks[size_t(th) * k];
        for (size_t i = 0; i < k; ++i) chunk[i] = fetch(x[i], begin, end - begin, int(i));
        // Sub-blocks small enough that the accumulator stays in L1 across the inputs.
        for (int64_t off = begin; off < end; off += kL1Block) {
            const int64_t len = std::min(kL1Block, end - off);
            for (size_t i = 0; i < k; ++i) at[i] = chunk[i] + (off - begin) * type_size(x[i].type);
            if (in_place) {
                K.weighted_sum(acc, at, types.data(), w.data(), int(k), d, len);
            } else {
                std::fill(acc, acc + len, 0.0f);
                for (size_t i = 0; i < k; ++i) {
                    load_work(c, MergeInput{at[i], x[i].type}, 0, len, tmp);
                    K.fma_acc(acc, tmp, w[i], len);
                }
                if (d != 1.0f) K.div(acc, d, len);
            }
            store_out(c, acc, out, off, len);
        }
    });
}

void merge_slerp(const MergeCommon& c, MergeInput v0_in, MergeInput v1_in, float t, MergeOutput out) {
    const MergeKernels& K = kernels().merge;
    const ResidentInputs res({v0_in, v1_in}, c.n, ResidentInputs::Unmapped::pread);  // read the pages in place
    const MergeInput v0 = res[0], v1 = res[1];
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

void merge_nuslerp(const MergeCommon& c, MergeInput x0_in, MergeInput x1_in, const MergeInput* base_in, double t,
                   int64_t rows, MergeOutput out) {
    const MergeKernels& K = kernels().merge;
    std::vector<MergeInput> all{x0_in, x1_in};
    if (base_in) all.push_back(*base_in);
    const ResidentInputs res(all, c.n, ResidentInputs::Unmapped::pread);  // read the pages in place
    const MergeInput x0 = res[0], x1 = res[1];
    const MergeInput* base = base_in ? &res[2] : nullptr;
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
    // Inputs already in the working precision: their deltas' sums straight from where they are stored
    const bool in_place = stored_as_work(c, res.inputs());
    std::vector<double> part(size_t(tl.tasks()) * 3);
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        const int64_t off = tl.begin(task), len = tl.size(task);
        if (in_place) {
            delta_dot3(x0, x1, base, off, len, &part[size_t(task) * 3]);
            return;
        }
        float* a = scratch.get(th, 0);
        float* b = scratch.get(th, 1);
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
    // element-wise, back to front (the chunks pass 1 read last are still in cache), in L1-sized
    // blocks when the inputs are in memory (from files: a task's chunk at once)
    const int64_t block = in_memory(res.inputs()) ? kL1Block : kChunk;
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t back, int th) {
        const int64_t task = tl.tasks() - 1 - back;
        float* a = scratch.get(th, 0);
        float* b = scratch.get(th, 1);
        float* bs = scratch.get(th, 2);
        const int64_t begin = tl.begin(task), end = begin + tl.size(task), r = tl.row(task);
        for (int64_t off = begin; off < end; off += block) {
            const int64_t len = std::min(block, end - off);
            load_pair(off, len, a, b, bs);
            K.lincomb2(a, a, coef[r * 3], b, coef[r * 3 + 1], coef[r * 3 + 2], len);
            if (base) {
                K.add(a, bs, len);  // base + result (addition commutes exactly)
            }
            store_out(c, a, out, off, len);
        }
    });
}

void merge_task_vectors(const MergeCommon& c, MergeInput base_in, const std::vector<MergeInput>& x_in,
                        const std::vector<Sparsify>& sp, const TaskVectorParams& p, MergeOutput out) {
    const int N = int(x_in.size());
    if (N == 0 || sp.size() != x_in.size()) throw std::invalid_argument("merge_task_vectors: need one sparsifier per input");
    const MergeKernels& K = kernels().merge;
    // The inputs are read where the files' pages are mapped. A sparsifier makes passes over them
    // before the final one (rank selection, DELLA, the rescale's norms): where mapping fails they
    // are then copied into memory on the way.
    const bool sparsify = std::any_of(sp.begin(), sp.end(), [](const Sparsify& s) { return s.kind != Sparsify::none; });
    const ResidentInputs res(base_first(base_in, x_in), c.n,
                             sparsify ? ResidentInputs::Unmapped::copy : ResidentInputs::Unmapped::pread);
    if (sparsify) {
        const Tiling chunks(c.n, 1);
        ThreadPool::instance().parallel_for(chunks.tasks(), [&](int64_t task, int) {
            res.fill(chunks.begin(task), chunks.size(task));  // copies only where mapping failed
        });
    }
    const std::vector<MergeInput>& in = res.inputs();
    const MergeInput base = in[0];
    const std::vector<MergeInput> x = models_of(res);
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
    std::vector<const float*> deltas(size_t(ThreadPool::instance().threads()) * N);
    // No masks, no vote, inputs in memory in the working precision: one kernel pass (task_sum)
    // reads them where they are, instead of a load, sub and scale per model and three more sweeps.
    const bool one_pass = p.consensus == Consensus::none && in_memory(in) && stored_as_work(c, in) &&
                          std::all_of(masks.begin(), masks.end(), [](const ModelMask& mm) {
                              return mm.rule == nullptr && mm.bits.empty() && mm.rescale == 1.0f;
                          });
    std::vector<const void*> at(one_pass ? deltas.size() : 0);
    std::vector<QType> types(static_cast<size_t>(N));
    for (int m = 0; m < N; ++m) types[size_t(m)] = x[size_t(m)].type;
    // base + lambda * mix of the weighted, masked deltas over [off, off + len) of chunk `task`
    auto mix = [&](int64_t task, int64_t off, int64_t len, int th) {
        float* acc = scratch.get(th, N + 1);
        if (one_pass) {
            const void** xs = &at[size_t(th) * N];
            for (int m = 0; m < N; ++m) xs[m] = static_cast<const uint8_t*>(x[size_t(m)].data) + off * type_size(x[size_t(m)].type);
            K.task_sum(acc, static_cast<const uint8_t*>(base.data) + off * type_size(base.type), base.type, xs,
                       types.data(), w.data(), N, p.normalize ? total : 1.0f, p.lambda, len);
            store_out(c, acc, out, off, len);
            return;
        }
        uint8_t* chunk_bits = reinterpret_cast<uint8_t*>(scratch.get(th, N + 3));
        float* b = scratch.get(th, N);
        float* div = scratch.get(th, N + 2);
        const float** d = &deltas[size_t(th) * N];
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
            K.consensus(d, w.data(), N, p.consensus, acc, div, len);
            if (p.normalize) K.div_elementwise(acc, div, len);
        } else {
            std::memcpy(acc, d[0], size_t(len) * 4);
            for (int m = 1; m < N; ++m) K.add(acc, d[m], len);
            if (p.normalize) K.div(acc, total, len);
        }
        if (p.lambda != 1.0f) K.scale(acc, p.lambda, len);
        K.add(acc, b, len);  // base + mixed delta
        store_out(c, acc, out, off, len);
    };
    // A rank rule masks whole chunks (its tie ordinals count per chunk), and files are read a chunk
    // at a time; otherwise every step is element-wise and runs in L1-sized blocks (the N + 3 arrays
    // stay in L1).
    const bool whole_chunks = !in_memory(in) || std::any_of(masks.begin(), masks.end(), [](const ModelMask& mm) {
        return mm.rule != nullptr;
    });
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        const int64_t begin = tl.begin(task), end = begin + tl.size(task), block = whole_chunks ? end - begin : kL1Block;
        for (int64_t off = begin; off < end; off += block) mix(task, off, std::min(block, end - off), th);
    });
}

void merge_model_stock(const MergeCommon& c, MergeInput base, const std::vector<MergeInput>& x, int64_t rows,
                       MergeOutput out) {
    const int N = int(x.size());
    if (N < 2) throw std::invalid_argument("model_stock: needs at least two models besides the base");
    const MergeKernels& K = kernels().merge;
    const Tiling tl(c.n, rows);
    const int P = N * (N - 1) / 2;
    // the inputs as stored (base first), read from their files once when they fit the cache budget
    const ResidentInputs res(base_first(base, x), c.n);
    Scratch scratch(N + 1, kChunk);
    // Per pair (i < j): |o_i|^2, |o_j|^2, <o_i, o_j> of the offsets o = x - base.
    std::vector<double> part(size_t(tl.tasks()) * P * 3);
    const bool in_place = stored_as_work(c, res.inputs());  // the pairs' sums straight from the stored inputs
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int th) {
        const int64_t off = tl.begin(task), len = tl.size(task);
        res.fill(off, len);
        if (in_place) {
            int pair = 0;
            for (int i = 0; i < N; ++i)
                for (int j = i + 1; j < N; ++j, ++pair)
                    delta_dot3(res[size_t(i) + 1], res[size_t(j) + 1], &res[0], off, len,
                               &part[(size_t(task) * P + pair) * 3]);
            return;
        }
        float* b = scratch.get(th, N);
        load_work(c, res[0], off, len, b);
        for (int m = 0; m < N; ++m) {
            float* o = scratch.get(th, m);
            load_work(c, res[size_t(m) + 1], off, len, o);
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
    // element-wise: in blocks whose three arrays stay in L1 when the inputs are in memory (read
    // from files, a task's chunk at once); in the working precision there, one kernel pass
    // (stock_mix) reads them where they are
    const int64_t block = in_memory(res.inputs()) ? kL1Block : kChunk;
    const bool one_pass = in_memory(res.inputs()) && in_place;
    std::vector<const void*> at(one_pass ? size_t(ThreadPool::instance().threads()) * N : 0);
    std::vector<QType> types(static_cast<size_t>(N));
    for (int m = 0; m < N; ++m) types[size_t(m)] = res[size_t(m) + 1].type;
    // back to front: the chunks pass 1 read last are still in cache
    ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t back, int th) {
        const int64_t task = tl.tasks() - 1 - back;
        const float tr = t_row[tl.row(task)];
        const int64_t begin = tl.begin(task), end = begin + tl.size(task);
        for (int64_t off = begin; off < end; off += block) {
            const int64_t len = std::min(block, end - off);
            float* avg = scratch.get(th, 0);
            if (one_pass) {
                const void** xs = &at[size_t(th) * N];
                for (int m = 0; m < N; ++m) {
                    const MergeInput& in = res[size_t(m) + 1];
                    xs[m] = static_cast<const uint8_t*>(in.data) + off * type_size(in.type);
                }
                K.stock_mix(avg, static_cast<const uint8_t*>(res[0].data) + off * type_size(res[0].type), res[0].type,
                            xs, types.data(), N, tr, 1.0f - tr, len);
                store_out(c, avg, out, off, len);
                continue;
            }
            float* b = scratch.get(th, N);
            float* tmp = scratch.get(th, 1);
            load_work(c, res[0], off, len, b);
            load_work(c, res[1], off, len, avg);
            for (int m = 1; m < N; ++m) {
                load_work(c, res[size_t(m) + 1], off, len, tmp);
                K.add(avg, tmp, len);
            }
            K.div(avg, float(N), len);
            K.lincomb2(avg, avg, tr, b, 1.0f - tr, 1.0f, len);
            store_out(c, avg, out, off, len);
        }
    });
}

void merge_scale(const MergeCommon& c, MergeInput x_in, float s, MergeOutput out) {
    const MergeKernels& K = kernels().merge;
    const ResidentInputs res({x_in}, c.n, ResidentInputs::Unmapped::pread);  // read the pages in place
    const MergeInput x = res[0];
    const Tiling tl(c.n, 1, kStreamChunk);
    if (s == 1.0f && out.type == x.type && (c.work == QType::F32 || c.work == x.type)) {
        // Nothing to round or scale: the stored bits are the result (what converting to float32 and
        // back gives, NaN payloads kept as mergekit keeps them), read straight into the output.
        ThreadPool::instance().parallel_for(tl.tasks(), [&](int64_t task, int) {
            const int64_t off = tl.begin(task), len = tl.size(task);
            if (out.fd >= 0) store_raw(out, fetch(x, off, len, 0), off, len);  // staged for the file
            else copy_raw(x, off, len, static_cast<uint8_t*>(out.data) + off * type_size(out.type));
        });
        return;
    }
    Scratch scratch(1, kStreamChunk);
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
