// Portable IEEE half and bfloat16 conversions (round to nearest even), bit-exact with numpy,
// usable in baseline code. SIMD variants use F16C / AVX512-BF16 instead.
#pragma once
#include <cstdint>
#include <cstring>

namespace llamix {

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));  // inf / nan
    if (exp == 0) {
        if (mant == 0) return bits_f32(sign);
        // subnormal: value = mant * 2^-24
        float v = float(mant) * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

inline uint16_t fp32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) {  // inf or nan (keep nan quiet)
        return uint16_t(sign | 0x7c00 | (x > 0x7f800000u ? 0x200 | ((x >> 13) & 0x3ff) : 0));
    }
    if (x >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // rounds to >= 65520: overflow to inf
    if (x < 0x38800000u) {  // below the smallest normal half: produce a subnormal (or zero)
        if (x < 0x33000000u) return sign;  // < 2^-25 rounds to zero
        const uint32_t e = x >> 23;
        const uint32_t m = (x & 0x7fffff) | 0x800000;
        const uint32_t shift = 126 - e;  // 14..24
        uint32_t half_m = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1);
        const uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half_m & 1))) half_m++;
        return uint16_t(sign | half_m);
    }
    // normal: rebias exponent and round mantissa to nearest even
    uint32_t r = x + 0xfff + ((x >> 13) & 1);
    r -= 0x38000000u;  // (127 - 15) << 23
    return uint16_t(sign | (r >> 13));
}

inline float bf16_to_fp32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

inline uint16_t fp32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);  // quiet nan
    x += 0x7fff + ((x >> 16) & 1);
    return uint16_t(x >> 16);
}

}  // namespace llamix
