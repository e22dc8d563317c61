// Repacking of Q2_K / Q3_K / IQ4_XS super-blocks into the packed groups of kernels/kquant.h.
#pragma once
#include <cstdint>

#include "common/formats.h"
#include "kernels/kquant.h"

namespace llamix {

// One super-block (`blk`, of type t) of row r into its places in a packed group super-block
// (`dst`, kernels/kquant.h's layout for t; Q3_K's the one given).
void pack_lowbit_kquant(QType t, const uint8_t* blk, int r, uint8_t* dst, Q3KLayout q3_layout = Q3KLayout::masks);

}  // namespace llamix
