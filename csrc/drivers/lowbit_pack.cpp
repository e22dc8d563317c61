// Repacking of Q2_K / Q3_K / IQ4_XS super-blocks into packed 16-row groups (layouts in
// kernels/kquant.h): the same bits, moved so that 4 bytes of each of 16 rows meet one broadcast
// 4-byte piece of the activations.
#include <cstring>

#include "drivers/lowbit_pack.h"
#include "kernels/kquant.h"

namespace llamix {

namespace {

constexpr int R = kGroupRows;

// The 2-bit quant of element e: bits 2s of qs[32 h + l] for e = 128 h + 32 s + l.
inline int two_bits(const uint8_t* qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3; }

// Sub-block j's 16 two-bit quants as one 4-byte word: byte i, bits 2s = element 16 j + 4 s + i.
void pack_two_bits(const uint8_t* src_qs, int r, uint8_t* dst_qs) {
    for (int j = 0; j < 16; ++j)
        for (int i = 0; i < 4; ++i) {
            int byte = 0;
            for (int s = 0; s < 4; ++s) byte |= two_bits(src_qs, 16 * j + 4 * s + i) << (2 * s);
            dst_qs[(j * R + r) * 4 + i] = static_cast<uint8_t>(byte);
        }
}

void pack_q2_K(const block_q2_K& x, int r, uint8_t* dst) {
    std::memcpy(dst + 2 * r, &x.d, 2);
    std::memcpy(dst + 2 * R + 2 * r, &x.dmin, 2);
    for (int i = 0; i < 4; ++i) std::memcpy(dst + 4 * R + (i * R + r) * 4, x.scales + 4 * i, 4);
    pack_two_bits(x.qs, r, dst + 4 * R + 16 * R);
}

void pack_q3_K(const block_q3_K& x, int r, uint8_t* dst) {
    std::memcpy(dst + 2 * r, &x.d, 2);
    for (int i = 0; i < 3; ++i) std::memcpy(dst + 2 * R + (i * R + r) * 4, x.scales + 4 * i, 4);
    uint8_t* qs = dst + 2 * R + 12 * R;
    pack_two_bits(x.qs, r, qs);
    uint8_t* hm = qs + 64 * R;  // 64-bit mask per (sub-block j, field s): bit 4 r + i
    for (int j = 0; j < 16; ++j)
        for (int s = 0; s < 4; ++s)
            for (int i = 0; i < 4; ++i) {
                const int e = 16 * j + 4 * s + i, bit = 4 * r + i;
                if ((x.hmask[e % 32] >> (e / 32)) & 1) hm[8 * (4 * j + s) + bit / 8] |= static_cast<uint8_t>(1 << (bit % 8));
            }
}

// Q3KLayout::triples (kernels/kquant.h): the 3-bit quants u whole, 8 of a row's byte position
// in 3 bytes (u_6 and u_7 split between them); byte i of vector m of pair p is element
// 32 p + 16 (i / 2) + 2 m + i % 2 (sub-block 2p in bytes 0, 1, sub-block 2p + 1 in bytes 2, 3).
void pack_q3_K_triples(const block_q3_K& x, int r, uint8_t* dst) {
    std::memcpy(dst + 2 * r, &x.d, 2);
    for (int i = 0; i < 3; ++i) std::memcpy(dst + 2 * R + (i * R + r) * 4, x.scales + 4 * i, 4);
    uint8_t* q3 = dst + 2 * R + 12 * R;
    const int h = r / 8;
    for (int p = 0; p < 8; ++p)
        for (int i = 0; i < 4; ++i) {
            int u[8];
            for (int m = 0; m < 8; ++m) {
                const int e = 32 * p + 16 * (i / 2) + 2 * m + i % 2;
                u[m] = two_bits(x.qs, e) | ((x.hmask[e % 32] >> (e / 32)) & 1) << 2;
            }
            uint8_t* b = q3 + (p * 2 + h) * 96 + 4 * (r % 8) + i;
            b[0] = static_cast<uint8_t>(u[0] | u[1] << 3 | (u[6] & 3) << 6);
            b[32] = static_cast<uint8_t>(u[2] | u[3] << 3 | (u[7] & 3) << 6);
            b[64] = static_cast<uint8_t>(u[4] | u[5] << 3 | (u[6] >> 2) << 6 | (u[7] >> 2) << 7);
        }
}

void pack_iq4_xs(const block_iq4_xs& x, int r, uint8_t* dst) {
    std::memcpy(dst + 2 * r, &x.d, 2);
    std::memcpy(dst + 2 * R + 2 * r, &x.scales_h, 2);
    std::memcpy(dst + 4 * R + 4 * r, x.scales_l, 4);
    uint8_t* qs = dst + 8 * R;
    for (int j = 0; j < 8; ++j)
        for (int c = 0; c < 4; ++c) std::memcpy(qs + ((j * 4 + c) * R + r) * 4, x.qs + 16 * j + 4 * c, 4);
}

}  // namespace

void pack_lowbit_kquant(QType t, const uint8_t* blk, int r, uint8_t* dst, Q3KLayout q3_layout) {
    switch (t) {
        case QType::Q2_K: return pack_q2_K(*reinterpret_cast<const block_q2_K*>(blk), r, dst);
        case QType::Q3_K:
            if (q3_layout == Q3KLayout::triples) return pack_q3_K_triples(*reinterpret_cast<const block_q3_K*>(blk), r, dst);
            return pack_q3_K(*reinterpret_cast<const block_q3_K*>(blk), r, dst);
        case QType::IQ4_XS: return pack_iq4_xs(*reinterpret_cast<const block_iq4_xs*>(blk), r, dst);
        default: return;
    }
}

}  // namespace llamix
