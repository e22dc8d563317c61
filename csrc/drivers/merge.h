// The per-tensor merge drivers: one output tensor, chunked over the thread pool, on the merge
// primitives of the kernel table (kernels/merge.h). The methods are in merge_methods.cpp; they
// read inputs through merge_io.h, cut tensors with merge_tiling.h and sparsify task vectors with
// merge_sparsify.h (rank masks by radix selection, merge_rank_select.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/formats.h"
#include "kernels/merge.h"

namespace llamix {

// A read-only input tensor of n elements stored as float32, float16 or bfloat16: in memory at
// `data`, or, with fd >= 0, in a file at byte `file_offset`, read with pread a chunk at a time
// into per-thread buffers (no page mapping, faulting and unmapping per tensor; the file's pages
// are copied from the page cache into cache-resident scratch).
struct MergeInput {
    const void* data = nullptr;
    QType type = QType::F32;
    int fd = -1;
    int64_t file_offset = 0;
};

// The output: n elements of type F32, F16 or BF16, in memory at `data`, or, with fd >= 0, written
// to a file at byte `file_offset` (pwrite from the threads that compute it, through a small
// per-thread staging buffer: the result never makes a round trip through a tensor-sized buffer,
// and the threads write in parallel with each other's compute). A driver writing to a file must
// be followed by finish_output() (drivers/merge_io.h), which writes what is still staged.
struct MergeOutput {
    void* data = nullptr;
    QType type = QType::F32;
    int fd = -1;
    int64_t file_offset = 0;
};

// Inputs may be rounded to a narrower working dtype first (mergekit casts inputs to `dtype` on
// load); F32 means no rounding.
struct MergeCommon {
    int64_t n = 0;
    QType work = QType::F32;
};

// out = (sum_i w_i x_i) [/ sum_i w_i]: float32 accumulator from zero, one fused multiply-add per
// input in input order, then one division (mergekit's linear). Throws if normalizing by zero.
void merge_linear(const MergeCommon& c, const std::vector<MergeInput>& x, const std::vector<float>& w, bool normalize,
                  MergeOutput out);

// SLERP from v0 (t = 0) to v1 (t = 1) over the whole tensor, mergekit's rules (merge_methods.cpp).
void merge_slerp(const MergeCommon& c, MergeInput v0, MergeInput v1, float t, MergeOutput out);

// NuSLERP between x0 and x1 (of their task vectors over base, when given): vectors are `rows`
// contiguous runs of n / rows elements (rows = 1 flattens the tensor). t is mergekit's double.
void merge_nuslerp(const MergeCommon& c, MergeInput x0, MergeInput x1, const MergeInput* base, double t, int64_t rows,
                   MergeOutput out);

// How one model's task vector is sparsified.
struct Sparsify {
    enum Kind { none = 0, rank = 1, random = 2, della = 3 } kind = none;
    // rank: keep ranks [r0, r1) of |delta| ascending; equal magnitudes rank by ascending index.
    int64_t r0 = 0, r1 = 0;
    // random: keep with probability density; della: per row, density -/+ epsilon by rank.
    double density = 1.0, epsilon = 0.0;
    float weight = 1.0f;
};

struct TaskVectorParams {
    Consensus consensus = Consensus::none;
    bool rescale = false;    // L1-rescale kept entries (mergekit's RescaleNorm.l1)
    bool normalize = false;  // divide by the (agreeing) weight sum
    float lambda = 1.0f;
    uint64_t seed = 0;
    std::string name;     // tensor name: keys the random masks
    int64_t rows = 1;     // della ranks within rows of n / rows elements
};

// out = base + lambda * combine_i(w_i * sparsify(x_i - base)) — the task-arithmetic family.
void merge_task_vectors(const MergeCommon& c, MergeInput base, const std::vector<MergeInput>& x,
                        const std::vector<Sparsify>& sp, const TaskVectorParams& p, MergeOutput out);

// Model Stock: out = t * mean(x_i) + (1 - t) * base with t from the mean pairwise cosine of the
// offsets; per row (rows > 1) or per tensor.
void merge_model_stock(const MergeCommon& c, MergeInput base, const std::vector<MergeInput>& x, int64_t rows,
                       MergeOutput out);

// out = x * s (passthrough with scale) or a plain dtype conversion when s == 1.
void merge_scale(const MergeCommon& c, MergeInput x, float s, MergeOutput out);

// NearSwap: base pulled to x where the two are within t of each other (merge_more.cpp).
void merge_nearswap(const MergeCommon& c, MergeInput base, MergeInput x, float t, MergeOutput out);

// RAM (plus = false) and RAM+ tensor-local: task vectors averaged where several models change an
// entry by more than eps, kept whole where one does (RAM+: scaled up by lambda per model).
struct RamParams {
    float eps = 1e-5f;
    bool plus = false;
    float r = 0.1f, alpha = 0.2f;
};
void merge_ram(const MergeCommon& c, MergeInput base, const std::vector<MergeInput>& x, const RamParams& p,
               MergeOutput out);

// SCE: select the entries whose task vectors vary most across models (select_topk < 1), elect signs,
// weight each model by its mean square.
void merge_sce(const MergeCommon& c, MergeInput base, const std::vector<MergeInput>& x, double select_topk,
               MergeOutput out);

// Multi-SLERP: barycentric interpolation on the sphere of the inputs (their task vectors over base,
// when given), weights w (float32), divided by their sum when normalize.
void merge_multislerp(const MergeCommon& c, const MergeInput* base, const std::vector<MergeInput>& x,
                      std::vector<float> w, bool normalize, float eps, MergeOutput out);

// The weighted Karcher mean of the inputs' directions (equal weights), times their mean norm.
struct KarcherReport {
    int iterations = 0;
};
KarcherReport merge_karcher(const MergeCommon& c, const std::vector<MergeInput>& x, int max_iter, double tol,
                            MergeOutput out);

// Arcee Fusion: x's changes kept where their importance |x - base| * KL(row) reaches
// median + 1.5 IQR of the tensor's importance; returns that threshold. rows: the rows of the last axis.
float merge_arcee_fusion(const MergeCommon& c, MergeInput base, MergeInput x, int64_t rows, MergeOutput out);

// The memory multi-pass methods may use to keep a tensor's inputs between passes (default 512 MiB,
// LLAMIX_MERGE_CACHE_MB); bytes >= 0 sets it and returns the previous value, < 0 just returns it.
int64_t merge_cache_budget(int64_t bytes);

// torch's float32 sum (norm = false) or 2-norm (norm = true) of the whole tensor, computed as the
// drivers do: chunks loaded in parallel, fed in order (merge_torch_order.h). For tests.
float merge_torch_reduce(const MergeCommon& c, MergeInput x, bool norm);

// The keep-mask bits of one model's sparsifier (for tests and statistics): n bits, LSB first.
std::vector<uint8_t> merge_sparsify_mask(const MergeCommon& c, MergeInput base, MergeInput x, const Sparsify& sp,
                                         uint64_t seed, const std::string& name, int model_index, int64_t rows);

}  // namespace llamix
