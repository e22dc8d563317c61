// The threaded matmul drivers: y = x @ W.T for every weight type, with weights prepared (repacked)
// once or read as raw GGUF bytes. They split the work over the thread pool and call the active
// kernel table (kernels/matmul.h, kernels/kquant.h); every ISA shares them.
#pragma once
#include <cstdint>
#include <memory>

#include "common/formats.h"

namespace llamix {

// Repack `rows` (<= kGroupRows) GGUF rows of Q4_0 / Q8_0 (row_bytes apart) into one group
// (missing rows are zero padded). Used by prepare_weight and, per task, by the raw-bytes matmul.
void pack_group_q4_0(const uint8_t* src, int64_t row_bytes, int rows, int64_t nb, uint8_t* dst);
void pack_group_q8_0(const uint8_t* src, int64_t row_bytes, int rows, int64_t nb, uint8_t* dst);
// Q4_1 rows into a Q4_1 group (kernels/matmul.h); IQ4_NL rows pack with pack_group_q4_0.
void pack_group_q4_1(const uint8_t* src, int64_t row_bytes, int rows, int64_t nb, uint8_t* dst);
// Q5_0 rows into a Q5_0 group, Q5_1 rows into a Q5_1 group (kernels/matmul.h).
void pack_group_q5_0(const uint8_t* src, int64_t row_bytes, int rows, int64_t nb, uint8_t* dst);
void pack_group_q5_1(const uint8_t* src, int64_t row_bytes, int rows, int64_t nb, uint8_t* dst);

// A weight matrix prepared once for fast multiplication. Block types are repacked into a buffer
// of about the same size as the source (so while the source stays resident, e.g. an mmap'd file
// that is still referenced, the weights take twice the RAM; the source pages go cold and can be
// dropped). F16/BF16/F32 borrow the source bytes, which must then outlive it.
struct PreparedWeight {
    const void* data = nullptr;  // the original GGUF bytes, (rows, row_bytes)
    QType type = QType::F32;
    int64_t rows = 0, k = 0;
    std::shared_ptr<uint8_t> packed;  // interleaved groups (block types only), 64-byte aligned
    int64_t packed_bytes = 0;
    int layout = 0;  // K-quants: the packed layout (kquant_pack_layout when packed)
};

PreparedWeight prepare_weight(const void* w, QType wtype, int64_t rows, int64_t k);
// y: (n, rows) = x: (n, k) @ W.T
void matmul_prepared(const float* x, int64_t n, const PreparedWeight& w, float* y);

// Several weights with the same k against the same x (e.g. q, k, v or gate, up): the activations
// are quantized once and all block weights share one parallel region. ys[i]: (n, ws[i]->rows).
void matmul_prepared_many(const float* x, int64_t n, const PreparedWeight* const* ws, float* const* ys, int count);

// The same on raw GGUF bytes (groups are packed per task into a small per-thread buffer).
// x: (n, k) float32, w: (rows, k) of type wtype, y: (n, rows) float32.
void matmul(const float* x, int64_t n, int64_t k, const void* w, QType wtype, int64_t rows, float* y);

}  // namespace llamix
