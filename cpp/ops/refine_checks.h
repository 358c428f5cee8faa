// Input checks shared by the CPU and CUDA kernels of fairesi::spectral_temporal_refine.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "refine_math.h"

namespace fairesi {
namespace refine {

inline void check_patches(const at::Tensor& patches, const char* op, const char* name) {
  TORCH_CHECK(patches.dim() >= 1 && patches.size(-1) == kPatchLen, op, ": ", name,
              " must have a last dimension of ", kPatchLen, " (the patch length), got shape ",
              patches.sizes());
  const auto dtype = patches.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              op, ": ", name, " must be float32, float64, float16 or bfloat16, got ", dtype);
}

inline void check_params(double tau, double alpha, const char* op) {
  TORCH_CHECK(std::isfinite(tau) && tau > 0.0, op, ": tau must be a finite number > 0, got ", tau);
  TORCH_CHECK(alpha >= 0.0 && alpha <= 1.0, op, ": alpha must be in [0, 1], got ", alpha);
}

inline void check_forward(const at::Tensor& patches, double tau, double alpha) {
  constexpr const char* op = "fairesi::spectral_temporal_refine";
  check_patches(patches, op, "patches");
  check_params(tau, alpha, op);
}

inline void check_backward(const at::Tensor& grad, const at::Tensor& patches, double tau,
                           double alpha) {
  constexpr const char* op = "fairesi::spectral_temporal_refine_backward";
  check_patches(patches, op, "patches");
  check_params(tau, alpha, op);
  TORCH_CHECK(grad.sizes() == patches.sizes(), op, ": grad must have the shape of patches ",
              patches.sizes(), ", got ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == patches.scalar_type(), op, ": grad must have the dtype of patches (",
              patches.scalar_type(), "), got ", grad.scalar_type());
  TORCH_CHECK(grad.device() == patches.device(), op, ": grad must be on the device of patches (",
              patches.device(), "), got ", grad.device());
}

}  // namespace refine
}  // namespace fairesi
