// CUDA kernels of fairesi::spectral_temporal_refine (forward and backward).
//
// One patch per thread, kThreads patches per block. A block stages its patches through
// shared memory so that global loads and stores are coalesced (consecutive threads touch
// consecutive elements) while each thread then runs the per-patch arithmetic of
// refine_math.h on its own 16 samples in registers; nothing intermediate goes to global
// memory. Half types are staged and computed in float32 (at::opmath_type).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "../refine_checks.h"
#include "../refine_math.h"

namespace fairesi {
namespace refine {
namespace {

constexpr int kThreads = 128;
// Row stride of the shared-memory tile: 17 words puts the rows of consecutive threads in
// different banks.
constexpr int kTileStride = kPatchLen + 1;

// Copies the patches [first, first + count) of `src` into the tile (coalesced), as acc_t.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void stage_in(const scalar_t* __restrict__ src, int64_t first,
                                         int count, acc_t* tile) {
  const scalar_t* block_src = src + first * kPatchLen;
  for (int i = threadIdx.x; i < count * kPatchLen; i += kThreads) {
    tile[(i / kPatchLen) * kTileStride + i % kPatchLen] = static_cast<acc_t>(block_src[i]);
  }
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void stage_out(const acc_t* tile, int64_t first, int count,
                                          scalar_t* __restrict__ dst) {
  scalar_t* block_dst = dst + first * kPatchLen;
  for (int i = threadIdx.x; i < count * kPatchLen; i += kThreads) {
    block_dst[i] = static_cast<scalar_t>(tile[(i / kPatchLen) * kTileStride + i % kPatchLen]);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, int64_t n_patches,
                   acc_t inv_tau, acc_t alpha) {
  __shared__ acc_t tile[kThreads * kTileStride];
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads;
  const int count = static_cast<int>(min(static_cast<int64_t>(kThreads), n_patches - first));
  stage_in(in, first, count, tile);
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < count) {
    acc_t* row = tile + threadIdx.x * kTileStride;
    acc_t x[kPatchLen];
    acc_t y[kPatchLen];
#pragma unroll
    for (int n = 0; n < kPatchLen; ++n) x[n] = row[n];
    refine_forward_patch<acc_t, acc_t>(x, y, inv_tau, alpha);
#pragma unroll
    for (int n = 0; n < kPatchLen; ++n) row[n] = y[n];
  }
  __syncthreads();
  stage_out(tile, first, count, out);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ in,
                    scalar_t* __restrict__ grad_in, int64_t n_patches, acc_t inv_tau,
                    acc_t alpha) {
  __shared__ acc_t grad_tile[kThreads * kTileStride];
  __shared__ acc_t x_tile[kThreads * kTileStride];
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads;
  const int count = static_cast<int>(min(static_cast<int64_t>(kThreads), n_patches - first));
  stage_in(grad, first, count, grad_tile);
  stage_in(in, first, count, x_tile);
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < count) {
    acc_t* grad_row = grad_tile + threadIdx.x * kTileStride;
    const acc_t* x_row = x_tile + threadIdx.x * kTileStride;
    acc_t g[kPatchLen];
    acc_t x[kPatchLen];
    acc_t gx[kPatchLen];
#pragma unroll
    for (int n = 0; n < kPatchLen; ++n) {
      g[n] = grad_row[n];
      x[n] = x_row[n];
    }
    refine_backward_patch<acc_t, acc_t>(g, x, gx, inv_tau, alpha);
#pragma unroll
    for (int n = 0; n < kPatchLen; ++n) grad_row[n] = gx[n];
  }
  __syncthreads();
  stage_out(grad_tile, first, count, grad_in);
}

int64_t n_blocks_for(int64_t n_patches) { return (n_patches + kThreads - 1) / kThreads; }

// Non-contiguous inputs are copied to contiguous ones; the result is always contiguous.
at::Tensor refine_forward_cuda(const at::Tensor& patches, double tau, double alpha) {
  check_forward(patches, tau, alpha);
  const c10::cuda::CUDAGuard device_guard(patches.device());
  const at::Tensor x = patches.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  const int64_t n_patches = x.numel() / kPatchLen;
  if (n_patches == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "spectral_temporal_refine_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        forward_kernel<scalar_t, acc_t><<<n_blocks_for(n_patches), kThreads, 0, stream>>>(
            x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n_patches,
            static_cast<acc_t>(1.0 / tau), static_cast<acc_t>(alpha));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

at::Tensor refine_backward_cuda(const at::Tensor& grad, const at::Tensor& patches, double tau,
                                double alpha) {
  check_backward(grad, patches, tau, alpha);
  const c10::cuda::CUDAGuard device_guard(patches.device());
  const at::Tensor g = grad.contiguous();
  const at::Tensor x = patches.contiguous();
  at::Tensor grad_in = at::empty(x.sizes(), x.options());
  const int64_t n_patches = x.numel() / kPatchLen;
  if (n_patches == 0) return grad_in;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "spectral_temporal_refine_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        backward_kernel<scalar_t, acc_t><<<n_blocks_for(n_patches), kThreads, 0, stream>>>(
            g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
            grad_in.mutable_data_ptr<scalar_t>(), n_patches, static_cast<acc_t>(1.0 / tau),
            static_cast<acc_t>(alpha));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return grad_in;
}

}  // namespace

TORCH_LIBRARY_IMPL(fairesi, CUDA, m) {
  m.impl("spectral_temporal_refine", &refine_forward_cuda);
  m.impl("spectral_temporal_refine_backward", &refine_backward_cuda);
}

}  // namespace refine
}  // namespace fairesi
