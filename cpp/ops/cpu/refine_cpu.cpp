// CPU kernels of fairesi::spectral_temporal_refine (forward and backward).
//
// float32/float16/bfloat16: patches are processed kLanes at a time, transposed into
// `Lanes` bundles (lane j = patch j) so that the per-patch arithmetic of refine_math.h is
// vectorised across patches by the compiler, with a branch-free polynomial exp. float64
// (gradcheck, references) runs the same arithmetic one patch at a time with std::exp.
// Threads come from at::parallel_for, i.e. torch's own OpenMP pool: it honours
// torch.set_num_threads and avoids a second OpenMP runtime in the process.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../refine_checks.h"
#include "../refine_math.h"

namespace fairesi {
namespace refine {
namespace {

constexpr int kLanes = 8;

// kLanes float values processed together, one patch per lane. GCC/Clang vector extensions
// guarantee SIMD instructions (auto-vectorisation of the equivalent loops is not reliable
// once the per-patch arithmetic is inlined).
typedef float F32xL __attribute__((vector_size(kLanes * sizeof(float))));
typedef std::int32_t I32xL __attribute__((vector_size(kLanes * sizeof(std::int32_t))));

#define FAIRESI_CPU_INLINE inline __attribute__((always_inline))

// The float32 kernels are compiled for AVX-512, AVX2+FMA and baseline x86-64; the loader
// picks the best one for the machine (everything they call is inlined into each clone).
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

// A NaN lane may pick either operand: it turns the whole softmax into NaN anyway.
FAIRESI_CPU_INLINE Lanes refine_max(const Lanes& a, const Lanes& b) {
  return Lanes(select(a.v > b.v, a.v, b.v));
}

// exp(x) to about 1 ulp (Cephes expf: Cody-Waite reduction to |r| <= ln2/2, degree-7
// polynomial, scaling by 2^n through the exponent bits), without calls or branches.
// Arguments are clamped to [-87.3, 88.3], where 2^n stays a normal float: softmax
// arguments are <= 0, and exp(-87.3) ~ 1e-38 is 0 for a softmax. NaN propagates (the
// clamps compare so that NaN falls through).
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

// Transpose `count` <= kLanes consecutive patches into 16 bundles (unused lanes get 0).
template <typename scalar_t>
FAIRESI_CPU_INLINE void load_block(const scalar_t* src, int count, Lanes (&dst)[kPatchLen]) {
  for (int j = 0; j < kLanes; ++j) {
    for (int n = 0; n < kPatchLen; ++n) {
      dst[n].v[j] = j < count ? static_cast<float>(src[j * kPatchLen + n]) : 0.0f;
    }
  }
}

template <typename scalar_t>
FAIRESI_CPU_INLINE void store_block(const Lanes (&src)[kPatchLen], int count, scalar_t* dst) {
  for (int j = 0; j < count; ++j) {
    for (int n = 0; n < kPatchLen; ++n) dst[j * kPatchLen + n] = static_cast<scalar_t>(src[n].v[j]);
  }
}

// Forward of the patch blocks [block_begin, block_end) (kLanes patches per block; the last
// block may be partial), computed in float32.
template <typename scalar_t>
FAIRESI_CPU_INLINE void forward_blocks(const scalar_t* in, scalar_t* out, int64_t n_patches,
                                       int64_t block_begin, int64_t block_end, float inv_tau,
                                       float alpha) {
  for (int64_t b = block_begin; b < block_end; ++b) {
    const int64_t p = b * kLanes;
    const int count = static_cast<int>(std::min<int64_t>(kLanes, n_patches - p));
    Lanes x[kPatchLen];
    Lanes y[kPatchLen];
    load_block(in + p * kPatchLen, count, x);
    refine_forward_patch<Lanes, float>(x, y, inv_tau, alpha);
    store_block(y, count, out + p * kPatchLen);
  }
}

template <typename scalar_t>
FAIRESI_CPU_INLINE void backward_blocks(const scalar_t* grad, const scalar_t* in,
                                        scalar_t* grad_in, int64_t n_patches, int64_t block_begin,
                                        int64_t block_end, float inv_tau, float alpha) {
  for (int64_t b = block_begin; b < block_end; ++b) {
    const int64_t p = b * kLanes;
    const int count = static_cast<int>(std::min<int64_t>(kLanes, n_patches - p));
    Lanes g[kPatchLen];
    Lanes x[kPatchLen];
    Lanes gx[kPatchLen];
    load_block(grad + p * kPatchLen, count, g);
    load_block(in + p * kPatchLen, count, x);
    refine_backward_patch<Lanes, float>(g, x, gx, inv_tau, alpha);
    store_block(gx, count, grad_in + p * kPatchLen);
  }
}

FAIRESI_CPU_CLONES void forward_blocks_f32(const float* in, float* out, int64_t n_patches,
                                           int64_t block_begin, int64_t block_end, float inv_tau,
                                           float alpha) {
  forward_blocks<float>(in, out, n_patches, block_begin, block_end, inv_tau, alpha);
}

FAIRESI_CPU_CLONES void backward_blocks_f32(const float* grad, const float* in, float* grad_in,
                                            int64_t n_patches, int64_t block_begin,
                                            int64_t block_end, float inv_tau, float alpha) {
  backward_blocks<float>(grad, in, grad_in, n_patches, block_begin, block_end, inv_tau, alpha);
}

// Patches per parallel task: large enough to amortise scheduling, small enough to balance.
constexpr int64_t kGrain = 1024;

// Forward over n_patches contiguous patches: float64 one patch at a time, the other dtypes
// kLanes patches at a time in float32.
template <typename scalar_t>
void forward_kernel(const scalar_t* in, scalar_t* out, int64_t n_patches, double tau,
                    double alpha) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    at::parallel_for(0, n_patches, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const auto& x = *reinterpret_cast<const double(*)[kPatchLen]>(in + p * kPatchLen);
        auto& y = *reinterpret_cast<double(*)[kPatchLen]>(out + p * kPatchLen);
        refine_forward_patch<double, double>(x, y, 1.0 / tau, alpha);
      }
    });
  } else {
    const auto inv_tau = static_cast<float>(1.0 / tau);
    const auto alpha_f = static_cast<float>(alpha);
    const int64_t n_blocks = (n_patches + kLanes - 1) / kLanes;
    at::parallel_for(0, n_blocks, kGrain / kLanes, [&](int64_t begin, int64_t end) {
      if constexpr (std::is_same_v<scalar_t, float>) {
        forward_blocks_f32(in, out, n_patches, begin, end, inv_tau, alpha_f);
      } else {
        forward_blocks<scalar_t>(in, out, n_patches, begin, end, inv_tau, alpha_f);
      }
    });
  }
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad, const scalar_t* in, scalar_t* grad_in,
                     int64_t n_patches, double tau, double alpha) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    at::parallel_for(0, n_patches, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const auto& g = *reinterpret_cast<const double(*)[kPatchLen]>(grad + p * kPatchLen);
        const auto& x = *reinterpret_cast<const double(*)[kPatchLen]>(in + p * kPatchLen);
        auto& gx = *reinterpret_cast<double(*)[kPatchLen]>(grad_in + p * kPatchLen);
        refine_backward_patch<double, double>(g, x, gx, 1.0 / tau, alpha);
      }
    });
  } else {
    const auto inv_tau = static_cast<float>(1.0 / tau);
    const auto alpha_f = static_cast<float>(alpha);
    const int64_t n_blocks = (n_patches + kLanes - 1) / kLanes;
    at::parallel_for(0, n_blocks, kGrain / kLanes, [&](int64_t begin, int64_t end) {
      if constexpr (std::is_same_v<scalar_t, float>) {
        backward_blocks_f32(grad, in, grad_in, n_patches, begin, end, inv_tau, alpha_f);
      } else {
        backward_blocks<scalar_t>(grad, in, grad_in, n_patches, begin, end, inv_tau, alpha_f);
      }
    });
  }
}

// Non-contiguous inputs are copied to contiguous ones (patches made by Tensor.unfold are
// overlapping views); the result is always a new contiguous tensor.
at::Tensor refine_forward_cpu(const at::Tensor& patches, double tau, double alpha) {
  check_forward(patches, tau, alpha);
  const at::Tensor x = patches.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  const int64_t n_patches = x.numel() / kPatchLen;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "spectral_temporal_refine_cpu", [&] {
                                    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(),
                                                             out.mutable_data_ptr<scalar_t>(),
                                                             n_patches, tau, alpha);
                                  });
  return out;
}

at::Tensor refine_backward_cpu(const at::Tensor& grad, const at::Tensor& patches, double tau,
                               double alpha) {
  check_backward(grad, patches, tau, alpha);
  const at::Tensor g = grad.contiguous();
  const at::Tensor x = patches.contiguous();
  at::Tensor grad_in = at::empty(x.sizes(), x.options());
  const int64_t n_patches = x.numel() / kPatchLen;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "spectral_temporal_refine_backward_cpu", [&] {
                                    backward_kernel<scalar_t>(g.const_data_ptr<scalar_t>(),
                                                              x.const_data_ptr<scalar_t>(),
                                                              grad_in.mutable_data_ptr<scalar_t>(),
                                                              n_patches, tau, alpha);
                                  });
  return grad_in;
}

}  // namespace

TORCH_LIBRARY_IMPL(fairesi, CPU, m) {
  m.impl("spectral_temporal_refine", &refine_forward_cpu);
  m.impl("spectral_temporal_refine_backward", &refine_backward_cpu);
}

}  // namespace refine
}  // namespace fairesi
