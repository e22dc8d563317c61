// MXCSR set to vdpbf16ps's fixed modes while alive: denormals read as zero (bit 6), tiny results
// flushed to zero (bit 15), round to nearest (bits 13-14 clear); the caller's MXCSR restored after.
// The arithmetic it covers must run in noinline functions called inside its lifetime, so the
// compiler cannot move it across the MXCSR writes.
#pragma once
#include <immintrin.h>

namespace llamix {

class DenormalsAsZero {
public:
    DenormalsAsZero() : saved_(_mm_getcsr()) { _mm_setcsr((saved_ & ~0x6000u) | 0x8040u); }
    ~DenormalsAsZero() { _mm_setcsr(saved_); }
    DenormalsAsZero(const DenormalsAsZero&) = delete;
    DenormalsAsZero& operator=(const DenormalsAsZero&) = delete;

private:
    unsigned saved_;
};

}  // namespace llamix
