// The bf16 attention products on AMX tiles (kernels/ops.h, attn_bf16_*_amx): TDPBF16PS on blocks of
// 16 rows, the same bits as the reference (kernels/ref/tdpbf16.h is the instruction's arithmetic).
// Every tile is 16 rows x 64 bytes: an A tile is 16 rows of 32 bf16 (q or p), a B tile one packed
// 512-element block, a C tile 16 x 16 float32 (scores, or output columns). Only called where
// amx_usable() (the process holds the tile permission), between attn_bf16_amx_begin and _end.
#pragma GCC target("amx-tile,amx-bf16")
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/ops.h"

namespace llamix {
namespace avx512 {

void attn_bf16_scale_rows(int64_t n_rows, int64_t hd32, const float* alpha, float* o);  // attn_bf16_tiles.cpp

namespace {

struct TileConfig {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "the tile configuration is 64 bytes");

// Configuration m (1..16): tiles 0-4 (the C tiles and the A tile) m rows, tiles 5-7 (B tiles) 16,
// all 64 bytes wide. Constants in memory: GCC 12's _tile_loadconfig tells the compiler it reads
// only the first 8 bytes, so a configuration built on the stack loses its row and column fields
// to dead-store elimination.
struct TileConfigs {
    TileConfig by_rows[17];
};
constexpr TileConfigs make_tile_configs() {
    TileConfigs all{};
    for (int m = 1; m <= 16; ++m) {
        TileConfig& cfg = all.by_rows[m];
        for (int i = 0; i < 8; ++i) {
            cfg.rows[i] = uint8_t(i < 5 ? m : 16);
            cfg.colsb[i] = 64;
        }
    }
    return all;
}
alignas(64) constexpr TileConfigs kTileConfigs = make_tile_configs();
thread_local int64_t t_block_rows = 16;  // the rows of this thread's configuration

}  // namespace

void attn_bf16_amx_begin(int64_t m) {
    t_block_rows = m;
    _tile_loadconfig(&kTileConfigs.by_rows[m]);
}

void attn_bf16_amx_end() { _tile_release(); }

// Rows r0..r0+m-1 (C tiles 0-3: keys 0-15 .. 48-63): per d block, one A tile of q and four B tiles.
void attn_bf16_scores_amx(const uint16_t* q, int64_t n_rows, int64_t hd32, const uint16_t* kp, float* s) {
    const int64_t q_stride = hd32 * 2, m = t_block_rows;
    for (int64_t r0 = 0; r0 < n_rows; r0 += m) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t b = 0; b < hd32 / 32; ++b) {
            const uint16_t* blk = kp + b * 4 * 512;
            _tile_loadd(4, q + r0 * hd32 + 32 * b, q_stride);
            _tile_loadd(5, blk, 64);
            _tile_loadd(6, blk + 512, 64);
            _tile_dpbf16ps(0, 4, 5);
            _tile_loadd(7, blk + 1024, 64);
            _tile_dpbf16ps(1, 4, 6);
            _tile_loadd(5, blk + 1536, 64);
            _tile_dpbf16ps(2, 4, 7);
            _tile_dpbf16ps(3, 4, 5);
        }
        float* sr = s + r0 * kAttnTile;
        _tile_stored(0, sr, kAttnTile * 4);
        _tile_stored(1, sr + 16, kAttnTile * 4);
        _tile_stored(2, sr + 32, kAttnTile * 4);
        _tile_stored(3, sr + 48, kAttnTile * 4);
    }
}

// Output columns in groups of up to four C tiles (64 columns), each loaded from o (already scaled
// by alpha), both 32-key blocks of p added in order, stored back.
void attn_bf16_accumulate_amx(const uint16_t* p, int64_t n_rows, int64_t hd32, const uint16_t* vp, const float* alpha,
                              float* o) {
    attn_bf16_scale_rows(n_rows, hd32, alpha, o);
    const int64_t col_blocks = hd32 / 16, o_stride = hd32 * 4, m = t_block_rows;
    for (int64_t r0 = 0; r0 < n_rows; r0 += m) {
        const uint16_t* pr = p + r0 * kAttnTile;
        for (int64_t c0 = 0; c0 < col_blocks; c0 += 4) {
            const int64_t nc = col_blocks - c0 < 4 ? col_blocks - c0 : 4;  // 2 (hd32 = 32 + 64 k) or 4
            float* orow = o + r0 * hd32 + 16 * c0;
            _tile_loadd(0, orow, o_stride);
            _tile_loadd(1, orow + 16, o_stride);
            if (nc == 4) {
                _tile_loadd(2, orow + 32, o_stride);
                _tile_loadd(3, orow + 48, o_stride);
            }
            for (int64_t b = 0; b < 2; ++b) {
                const uint16_t* blk = vp + (b * col_blocks + c0) * 512;
                _tile_loadd(4, pr + 32 * b, kAttnTile * 2);
                _tile_loadd(5, blk, 64);
                _tile_loadd(6, blk + 512, 64);
                _tile_dpbf16ps(0, 4, 5);
                _tile_dpbf16ps(1, 4, 6);
                if (nc == 4) {
                    _tile_loadd(7, blk + 1024, 64);
                    _tile_loadd(5, blk + 1536, 64);
                    _tile_dpbf16ps(2, 4, 7);
                    _tile_dpbf16ps(3, 4, 5);
                }
            }
            _tile_stored(0, orow, o_stride);
            _tile_stored(1, orow + 16, o_stride);
            if (nc == 4) {
                _tile_stored(2, orow + 32, o_stride);
                _tile_stored(3, orow + 48, o_stride);
            }
        }
    }
}

void fill_attn_amx(OpsKernels& k) {
    k.attn_bf16_amx_begin = attn_bf16_amx_begin;
    k.attn_bf16_amx_end = attn_bf16_amx_end;
    k.attn_bf16_scores_amx = attn_bf16_scores_amx;
    k.attn_bf16_accumulate_amx = attn_bf16_accumulate_amx;
}

}  // namespace avx512
}  // namespace llamix
