// The threaded K-quant matmul driver and the repacking of K-quant rows into the packed groups
// whose layout kernels/kquant.h describes.
#pragma once
#include <cstdint>

#include "common/formats.h"

namespace llamix {

// Bytes per packed super-block of 16 rows, or 0 if `t` has no packed form.
int64_t kquant_group_block_bytes(QType t);
// Repack `rows` (<= 16) source rows (row_bytes apart) of Q4_K / Q5_K / Q6_K into one group of
// nsb super-blocks; missing rows are zero (their results are never stored). `layout`: the
// variant's (kquant_pack_layout), which prepare_weight records with the packed bytes.
void pack_group_kquant(QType t, const uint8_t* src, int64_t row_bytes, int rows, int64_t nsb, uint8_t* dst,
                       int layout = 0);
// The packed layout the chosen variant's group kernel reads for t (0 unless it has several:
// Q3_K's Q3KLayout). A weight packed with another is multiplied from its source bytes.
int kquant_pack_layout(QType t);

// The threaded matmul for K-quant weights (drivers/kquant_matmul.cpp): quantize the activations
// to Q8_K once, then fixed-size row tasks. x: (n, k), w: (rows, k) of type wtype, y: (n, rows).
bool is_kquant(QType t);  // Q4_K, Q5_K, Q6_K, Q2_K, Q3_K, IQ4_XS: the types this family multiplies
// One row of any of those types -> float32 (e.g. an embedding lookup).
void dequantize_row_kquant(QType t, const void* x, float* y, int64_t k);
// `packed`, if not null, holds the weight's packed groups (used when the chosen variant has a
// group kernel for the type).
void matmul_kquant(const float* x, int64_t n, int64_t k, const void* w, QType wtype, int64_t rows, float* y,
                   const uint8_t* packed = nullptr);
// Whether the chosen variant multiplies packed groups of this type (then prepare_weight packs it).
bool kquant_packs(QType t);
// A packed K-quant weight (rows, k) and its output y: (n, rows).
struct KQuantGroupJob {
    const uint8_t* packed;
    QType type;
    int64_t rows;
    float* y;
};
// Packed K-quant weights with the same k against the same x (e.g. q, k and v): the activations
// are quantized once and all weights share one parallel region (a decode streams all their row
// groups as one). Each type must pass kquant_packs.
void matmul_kquant_groups(const float* x, int64_t n, int64_t k, const KQuantGroupJob* jobs, int count);

}  // namespace llamix
