// kLanes float32 values as one SIMD bundle (GCC/Clang vector extensions), its arithmetic and
// a branch-free exp: shared by the CPU kernels of the refinement (refine_cpu.cpp, one patch
// per lane) and of the BiGRU (gru_cpu.cpp, one hidden unit per lane).
//
// FAIRESI_CPU_CLONES compiles a function for AVX-512, AVX2+FMA and baseline x86-64; the
// loader picks the best one for the machine. Everything such a function calls must be
// inlined into it (FAIRESI_CPU_INLINE) for the clones to use the wider instructions.
#pragma once

#include <cstdint>
#include <cstring>

namespace fairesi {
namespace simd {

constexpr int kLanes = 8;

// kLanes float values processed together. GCC/Clang vector extensions guarantee SIMD
// instructions (auto-vectorisation of the equivalent loops is not reliable once the
// arithmetic is inlined).
typedef float F32xL __attribute__((vector_size(kLanes * sizeof(float))));
typedef std::int32_t I32xL __attribute__((vector_size(kLanes * sizeof(std::int32_t))));

#define FAIRESI_CPU_INLINE inline __attribute__((always_inline))

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FAIRESI_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FAIRESI_CPU_CLONES
#endif

struct Lanes {
  F32xL v;
  Lanes() = default;
  FAIRESI_CPU_INLINE explicit Lanes(float s) : v(F32xL{} + s) {}
  FAIRESI_CPU_INLINE explicit Lanes(F32xL w) : v(w) {}
};

#define FAIRESI_LANES_OP(op)                                                            \
  FAIRESI_CPU_INLINE Lanes operator op(const Lanes& a, const Lanes& b) {               \
    return Lanes(a.v op b.v);                                                           \
  }                                                                                     \
  FAIRESI_CPU_INLINE Lanes operator op(const Lanes& a, float b) { return Lanes(a.v op b); }
FAIRESI_LANES_OP(+)
FAIRESI_LANES_OP(-)
FAIRESI_LANES_OP(*)
FAIRESI_LANES_OP(/)
#undef FAIRESI_LANES_OP

// mask ? a : b lane-wise, as bit operations (the vector ?: operator is split into scalar
// code on baseline x86-64).
FAIRESI_CPU_INLINE F32xL select(I32xL mask, F32xL a, F32xL b) {
  return (F32xL)(((I32xL)a & mask) | ((I32xL)b & ~mask));
}

// Lane-wise maximum. A NaN lane may pick either operand (in the refinement it turns the
// whole softmax into NaN anyway).
FAIRESI_CPU_INLINE Lanes refine_max(const Lanes& a, const Lanes& b) {
  return Lanes(select(a.v > b.v, a.v, b.v));
}

// exp(x) to about 1 ulp (Cephes expf: Cody-Waite reduction to |r| <= ln2/2, degree-7
// polynomial, scaling by 2^n through the exponent bits), without calls or branches.
// Arguments are clamped to [-87.3, 88.3], where 2^n stays a normal float: softmax
// arguments are <= 0, and exp(-87.3) ~ 1e-38 is 0 for a softmax. NaN propagates (the
// clamps compare so that NaN falls through). The name is the one refine_math.h's templates
// call (found by argument-dependent lookup).
FAIRESI_CPU_INLINE Lanes refine_exp(const Lanes& x) {
  const F32xL lo = F32xL{} - 87.3f;
  const F32xL hi = F32xL{} + 88.3f;
  F32xL a = select(x.v < lo, lo, x.v);
  a = select(a > hi, hi, a);
  // Round a / ln2 to the nearest integer with the 1.5 * 2^23 trick (no floor call).
  const F32xL n = (a * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const F32xL f = (a - n * 0.693359375f) + n * 2.12194440e-4f;
  F32xL p = F32xL{} + 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * f * f + f + 1.0f;
  const I32xL bits = (__builtin_convertvector(n, I32xL) + 127) << 23;
  F32xL scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return Lanes(p * scale);
}

// Load `count` <= kLanes consecutive values as float32 (lanes past count get 0). Full
// bundles take a branch of fixed trip count, which the compiler turns into vector loads.
template <typename scalar_t>
FAIRESI_CPU_INLINE Lanes load_lanes(const scalar_t* src, int count) {
  Lanes out(0.0f);
  if (count == kLanes) {
    for (int j = 0; j < kLanes; ++j) out.v[j] = static_cast<float>(src[j]);
  } else {
    for (int j = 0; j < count; ++j) out.v[j] = static_cast<float>(src[j]);
  }
  return out;
}

// Store the first `count` <= kLanes lanes, converted to scalar_t.
template <typename scalar_t>
FAIRESI_CPU_INLINE void store_lanes(const Lanes& x, int count, scalar_t* dst) {
  if (count == kLanes) {
    for (int j = 0; j < kLanes; ++j) dst[j] = static_cast<scalar_t>(x.v[j]);
  } else {
    for (int j = 0; j < count; ++j) dst[j] = static_cast<scalar_t>(x.v[j]);
  }
}

}  // namespace simd
}  // namespace fairesi
