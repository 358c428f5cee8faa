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
#include "lanes.h"

namespace fairesi {
namespace refine {
namespace {

using simd::kLanes;
using simd::Lanes;

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
