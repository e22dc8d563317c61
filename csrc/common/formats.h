// Block layouts, byte-compatible with GGUF / llama.cpp (all little-endian).
#pragma once
#include <cstddef>
#include <cstdint>

namespace llamix {

// Tensor element types. Values equal GGUF's ggml_type ids so files map directly.
enum class QType : int32_t {
    F32 = 0, F16 = 1, Q4_0 = 2, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14, BF16 = 30,
    Q4_1 = 3, Q2_K = 10, Q3_K = 11, IQ4_NL = 20, IQ4_XS = 23,
};

constexpr int QK4_0 = 32;
constexpr int QK8_0 = 32;
constexpr int QK_K = 256;

// Q4_0: value = d * (q - 8); qs[j] holds element j (low nibble) and j + 16 (high nibble).
struct block_q4_0 {
    uint16_t d;             // fp16 scale
    uint8_t qs[QK4_0 / 2];  // nibbles, offset 8
};
static_assert(sizeof(block_q4_0) == 18, "Q4_0 block must be 18 bytes");

// Q5_0 / Q5_1 (the fallbacks of Q4_K / Q5_K rows that are not a multiple of 256):
// element j's low 4 bits as in Q4_0, its fifth bit is bit j of qh (little-endian u32).
struct block_q5_0 {
    uint16_t d;             // value = d * (q - 16)
    uint8_t qh[4];
    uint8_t qs[QK4_0 / 2];
};
static_assert(sizeof(block_q5_0) == 22, "Q5_0 block must be 22 bytes");

struct block_q5_1 {
    uint16_t d, m;          // value = d * q + m
    uint8_t qh[4];
    uint8_t qs[QK4_0 / 2];
};
static_assert(sizeof(block_q5_1) == 24, "Q5_1 block must be 24 bytes");

// Q8_0: value = d * q.
struct block_q8_0 {
    uint16_t d;          // fp16 scale
    int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8_0) == 34, "Q8_0 block must be 34 bytes");

// Q4_K: 8 sub-blocks of 32, 6-bit scales and mins packed in 12 bytes.
struct block_q4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q4_K) == 144, "Q4_K block must be 144 bytes");

struct block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q5_K) == 176, "Q5_K block must be 176 bytes");

struct block_q6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
};
static_assert(sizeof(block_q6_K) == 210, "Q6_K block must be 210 bytes");

// Q4_1: value = d * q + m, nibbles as in Q4_0.
struct block_q4_1 {
    uint16_t d, m;          // fp16 scale and min
    uint8_t qs[QK4_0 / 2];
};
static_assert(sizeof(block_q4_1) == 20, "Q4_1 block must be 20 bytes");

// IQ4_NL: value = d * kvalues_iq4nl[q], nibbles as in Q4_0.
struct block_iq4_nl {
    uint16_t d;
    uint8_t qs[QK4_0 / 2];
};
static_assert(sizeof(block_iq4_nl) == 18, "IQ4_NL block must be 18 bytes");

// The 16 non-uniform levels of IQ4_NL / IQ4_XS (llama.cpp's kvalues_iq4nl).
constexpr int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Q2_K: 16 sub-blocks of 16; value = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4), q in 0..3.
// Element 128 h + 32 s + l is bits 2s, 2s + 1 of qs[32 h + l].
struct block_q2_K {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    uint16_t d, dmin;
};
static_assert(sizeof(block_q2_K) == 84, "Q2_K block must be 84 bytes");

// Q3_K: 16 sub-blocks of 16 with 6-bit scales (offset 32) packed in 12 bytes; value =
// d * (sc_j - 32) * (q - 4 * !h), q (2 bits) as in Q2_K, h = bit e / 32 of hmask[e % 32].
struct block_q3_K {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
};
static_assert(sizeof(block_q3_K) == 110, "Q3_K block must be 110 bytes");

// IQ4_XS: 8 sub-blocks of 32 with 6-bit scales (offset 32): low 4 bits in scales_l (two per
// byte), high 2 bits in scales_h; value = d * (ls_j - 32) * kvalues_iq4nl[q]; sub-block j's 16
// bytes qs[16 j ..] hold its elements l (low nibble) and l + 16 (high nibble).
struct block_iq4_xs {
    uint16_t d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_iq4_xs) == 136, "IQ4_XS block must be 136 bytes");

// Elements per block and bytes per block of a type; 0 for an unknown type.
inline int64_t qtype_block_size(QType t) {
    switch (t) {
        case QType::F32: case QType::F16: case QType::BF16: return 1;
        case QType::Q4_0: case QType::Q5_0: case QType::Q5_1: return QK4_0;
        case QType::Q8_0: return QK8_0;
        case QType::Q4_K: case QType::Q5_K: case QType::Q6_K: return QK_K;
        case QType::Q4_1: case QType::IQ4_NL: return QK4_0;
        case QType::Q2_K: case QType::Q3_K: case QType::IQ4_XS: return QK_K;
    }
    return 0;
}

inline int64_t qtype_block_bytes(QType t) {
    switch (t) {
        case QType::F32: return 4;
        case QType::F16: case QType::BF16: return 2;
        case QType::Q4_0: return sizeof(block_q4_0);
        case QType::Q5_0: return sizeof(block_q5_0);
        case QType::Q5_1: return sizeof(block_q5_1);
        case QType::Q8_0: return sizeof(block_q8_0);
        case QType::Q4_K: return sizeof(block_q4_K);
        case QType::Q5_K: return sizeof(block_q5_K);
        case QType::Q6_K: return sizeof(block_q6_K);
        case QType::Q4_1: return sizeof(block_q4_1);
        case QType::IQ4_NL: return sizeof(block_iq4_nl);
        case QType::Q2_K: return sizeof(block_q2_K);
        case QType::Q3_K: return sizeof(block_q3_K);
        case QType::IQ4_XS: return sizeof(block_iq4_xs);
    }
    return 0;
}

inline int64_t qtype_row_bytes(QType t, int64_t k) { return k / qtype_block_size(t) * qtype_block_bytes(t); }

}  // namespace llamix
