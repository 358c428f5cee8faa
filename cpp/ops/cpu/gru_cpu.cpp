// CPU kernels of fairesi::bigru_forward and fairesi::bigru_backward (schema: ../gru_op.cpp).
//
// Why fused: PyTorch's CPU nn.GRU runs one matrix product per time step and direction, a
// dozen element-wise kernels per step, and in the backward one weight-gradient product per
// step with an inner dimension of B (the batch). Here
// * both directions advance together: one batched product (2, B, H) x (2, H, 3H) per step;
// * the gates of a step are one pass over (2, B, H) in float32 (float64 for float64);
// * the weight gradients are one product each over all T * B rows after the recurrence.
// The products are ATen's (oneDNN/MKL, in the inputs' dtype: bfloat16 under autocast), so
// they use torch's threads; the element-wise passes run on the calling thread.
//
// Layouts: gi (2, B*T, 3H) = x W_ih^T + b_ih in x's time order; for direction d the step s
// is at time t = s (d = 0) or T - 1 - s (d = 1). hs (2, T + 1, B, H) and gates
// (2, T, B, 4H) are indexed by step, not time.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include "lanes.h"

namespace fairesi {
namespace gru {
namespace {

using simd::kLanes;
using simd::Lanes;
using simd::load_lanes;
using simd::store_lanes;

constexpr const char* kForward = "fairesi::bigru_forward";
constexpr const char* kBackward = "fairesi::bigru_backward";

// float32 arithmetic for the half types and float32, float64 for float64.
template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

at::ScalarType acc_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

void check_tensor(const at::Tensor& t, const char* op, const char* name, int64_t dim,
                  const at::Tensor& like) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must have ", dim, " dimensions, got shape ",
              t.sizes());
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be on the CPU, got ", t.device(),
              " (on CUDA, nn.GRU runs cuDNN's fused GRU)");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have x's dtype (",
              like.scalar_type(), "), got ", t.scalar_type());
}

// Checks x and the weights; returns (B, T, I, H).
std::tuple<int64_t, int64_t, int64_t, int64_t> check_inputs(const at::Tensor& x,
                                                            const at::Tensor& w_ih,
                                                            const at::Tensor& w_hh,
                                                            const char* op) {
  check_tensor(x, op, "x", 3, x);
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              op, ": x must be float32, float64, float16 or bfloat16, got ", dtype);
  check_tensor(w_ih, op, "w_ih", 3, x);
  check_tensor(w_hh, op, "w_hh", 3, x);
  const int64_t B = x.size(0), T = x.size(1), I = x.size(2), H = w_hh.size(2);
  TORCH_CHECK(B > 0 && T > 0, op, ": x must hold at least one sample of one time step, got shape ",
              x.sizes());
  TORCH_CHECK(H > 0 && w_hh.size(0) == 2 && w_hh.size(1) == 3 * H, op,
              ": w_hh must be (2, 3H, H) (both directions' weight_hh), got ", w_hh.sizes());
  TORCH_CHECK(w_ih.size(0) == 2 && w_ih.size(1) == 3 * H && w_ih.size(2) == I, op,
              ": w_ih must be (2, 3H, I) = (2, ", 3 * H, ", ", I, "), got ", w_ih.sizes());
  return {B, T, I, H};
}

void check_bias(const at::Tensor& bias, const char* name, const at::Tensor& x, int64_t H) {
  check_tensor(bias, kForward, name, 2, x);
  TORCH_CHECK(bias.size(0) == 2 && bias.size(1) == 3 * H, kForward, ": ", name, " must be (2, ",
              3 * H, "), got ", bias.sizes());
}

// The arithmetic of one row runs on V: double for float64 (std::exp, std::tanh), and
// Lanes for the other dtypes, kLanes hidden units at a time in float32 (a polynomial exp,
// tanh(a) = 2 sigmoid(2a) - 1: absolute error ~1e-7).
template <typename scalar_t>
using vec_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, Lanes>;

FAIRESI_CPU_INLINE double gate_sigmoid(double a) { return 1.0 / (1.0 + std::exp(-a)); }

FAIRESI_CPU_INLINE Lanes gate_sigmoid(const Lanes& a) {
  return Lanes(1.0f) / (refine_exp(Lanes(0.0f) - a) + 1.0f);
}

FAIRESI_CPU_INLINE double gate_tanh(double a) { return std::tanh(a); }

FAIRESI_CPU_INLINE Lanes gate_tanh(const Lanes& a) {
  return gate_sigmoid(a * 2.0f) * 2.0f - 1.0f;
}

// Load / store `count` units of a row as a V (a double takes one unit).
template <typename V, typename T>
FAIRESI_CPU_INLINE V load_v(const T* p, int count) {
  if constexpr (std::is_same_v<V, double>) {
    (void)count;
    return static_cast<double>(*p);
  } else {
    return load_lanes(p, count);
  }
}

template <typename V, typename T>
FAIRESI_CPU_INLINE void store_v(const V& v, int count, T* p) {
  if constexpr (std::is_same_v<V, double>) {
    (void)count;
    *p = static_cast<T>(v);
  } else {
    store_lanes(v, count, p);
  }
}

// The gates and new state of one (direction, sample) row of H hidden units.
template <typename scalar_t>
FAIRESI_CPU_INLINE void forward_row(const scalar_t* gi, const scalar_t* gh,
                                    const acc_t<scalar_t>* h_prev, acc_t<scalar_t>* gate,
                                    acc_t<scalar_t>* h_next, scalar_t* h_mm, scalar_t* out,
                                    int64_t H) {
  using V = vec_t<scalar_t>;
  constexpr int width = std::is_same_v<V, double> ? 1 : kLanes;
  for (int64_t j = 0; j < H; j += width) {
    const int c = static_cast<int>(std::min<int64_t>(width, H - j));
    const V r = gate_sigmoid(load_v<V>(gi + j, c) + load_v<V>(gh + j, c));
    const V z = gate_sigmoid(load_v<V>(gi + H + j, c) + load_v<V>(gh + H + j, c));
    const V ghn = load_v<V>(gh + 2 * H + j, c);
    const V n = gate_tanh(load_v<V>(gi + 2 * H + j, c) + r * ghn);
    const V h = n + z * (load_v<V>(h_prev + j, c) - n);
    store_v(r, c, gate + j);
    store_v(z, c, gate + H + j);
    store_v(n, c, gate + 2 * H + j);
    store_v(ghn, c, gate + 3 * H + j);
    store_v(h, c, h_next + j);
    store_v(h, c, h_mm + j);
    store_v(h, c, out + j);
  }
}

// One row of the backward step (see backward_step).
template <typename scalar_t>
FAIRESI_CPU_INLINE void backward_row(const scalar_t* grad, const scalar_t* dh_mm,
                                     const acc_t<scalar_t>* h_prev,
                                     const acc_t<scalar_t>* gate, acc_t<scalar_t>* dh,
                                     scalar_t* dgi, scalar_t* dgh, int64_t H) {
  using V = vec_t<scalar_t>;
  constexpr int width = std::is_same_v<V, double> ? 1 : kLanes;
  const V one(acc_t<scalar_t>(1));
  for (int64_t j = 0; j < H; j += width) {
    const int c = static_cast<int>(std::min<int64_t>(width, H - j));
    const V r = load_v<V>(gate + j, c), z = load_v<V>(gate + H + j, c);
    const V n = load_v<V>(gate + 2 * H + j, c), ghn = load_v<V>(gate + 3 * H + j, c);
    V g = load_v<V>(dh + j, c) + load_v<V>(grad + j, c);
    if (dh_mm != nullptr) g = g + load_v<V>(dh_mm + j, c);
    const V dn = g * (one - z) * (one - n * n);
    const V dz = g * (load_v<V>(h_prev + j, c) - n) * z * (one - z);
    const V dr = dn * ghn * r * (one - r);
    store_v(dr, c, dgi + j);
    store_v(dz, c, dgi + H + j);
    store_v(dn, c, dgi + 2 * H + j);
    store_v(dr, c, dgh + j);
    store_v(dz, c, dgh + H + j);
    store_v(dn * r, c, dgh + 2 * H + j);
    store_v(g * z, c, dh + j);
  }
}

// One step s of both directions: gi (2, B*T, 3H) in time order, gh (2, B, 3H) = h_s W_hh^T +
// b_hh; writes gates[:, s], hs[:, s + 1], h_mm (h_{s+1} in x's dtype) and out's rows.
template <typename scalar_t>
FAIRESI_CPU_INLINE void forward_step(const scalar_t* gi, const scalar_t* gh,
                                     acc_t<scalar_t>* hs, acc_t<scalar_t>* gates,
                                     scalar_t* h_mm, scalar_t* out, int64_t s, int64_t B,
                                     int64_t T, int64_t H) {
  const int64_t G = 3 * H;
  for (int64_t d = 0; d < 2; ++d) {
    const int64_t t = d == 0 ? s : T - 1 - s;
    for (int64_t b = 0; b < B; ++b) {
      forward_row<scalar_t>(gi + ((d * B + b) * T + t) * G, gh + (d * B + b) * G,
                            hs + ((d * (T + 1) + s) * B + b) * H,
                            gates + ((d * T + s) * B + b) * 4 * H,
                            hs + ((d * (T + 1) + s + 1) * B + b) * H, h_mm + (d * B + b) * H,
                            out + (b * T + t) * 2 * H + d * H, H);
    }
  }
}

// One step s of both directions backwards. On entry dh (2, B, H) holds the part of
// dL/dh_{s+1} that bypasses W_hh (from step s + 1) and dh_mm the part through it
// (dgh_{s+1} W_hh; nullptr at the last step); grad is dL/dout. Writes dgi's rows of step s
// (time order), dgh[:, s] and, into dh, the bypassing part of dL/dh_s.
template <typename scalar_t>
FAIRESI_CPU_INLINE void backward_step(const scalar_t* grad, const scalar_t* dh_mm,
                                      const acc_t<scalar_t>* hs, const acc_t<scalar_t>* gates,
                                      acc_t<scalar_t>* dh, scalar_t* dgi, scalar_t* dgh,
                                      int64_t s, int64_t B, int64_t T, int64_t H) {
  const int64_t G = 3 * H;
  for (int64_t d = 0; d < 2; ++d) {
    const int64_t t = d == 0 ? s : T - 1 - s;
    for (int64_t b = 0; b < B; ++b) {
      backward_row<scalar_t>(grad + (b * T + t) * 2 * H + d * H,
                             dh_mm == nullptr ? nullptr : dh_mm + (d * B + b) * H,
                             hs + ((d * (T + 1) + s) * B + b) * H,
                             gates + ((d * T + s) * B + b) * 4 * H, dh + (d * B + b) * H,
                             dgi + ((d * B + b) * T + t) * G, dgh + ((d * T + s) * B + b) * G, H);
    }
  }
}

// The float32 and bfloat16 steps (training's dtypes) compiled for each instruction set.
#define FAIRESI_GRU_STEPS(name, type)                                                         \
  FAIRESI_CPU_CLONES void forward_step_##name(const type* gi, const type* gh, float* hs,     \
                                              float* gates, type* h_mm, type* out, int64_t s, \
                                              int64_t B, int64_t T, int64_t H) {              \
    forward_step<type>(gi, gh, hs, gates, h_mm, out, s, B, T, H);                              \
  }                                                                                           \
  FAIRESI_CPU_CLONES void backward_step_##name(const type* grad, const type* dh_mm,          \
                                               const float* hs, const float* gates,           \
                                               float* dh, type* dgi, type* dgh, int64_t s,    \
                                               int64_t B, int64_t T, int64_t H) {             \
    backward_step<type>(grad, dh_mm, hs, gates, dh, dgi, dgh, s, B, T, H);                     \
  }
FAIRESI_GRU_STEPS(f32, float)
FAIRESI_GRU_STEPS(bf16, c10::BFloat16)
#undef FAIRESI_GRU_STEPS

template <typename scalar_t>
void run_forward_step(const scalar_t* gi, const scalar_t* gh, acc_t<scalar_t>* hs,
                      acc_t<scalar_t>* gates, scalar_t* h_mm, scalar_t* out, int64_t s,
                      int64_t B, int64_t T, int64_t H) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    forward_step_f32(gi, gh, hs, gates, h_mm, out, s, B, T, H);
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    forward_step_bf16(gi, gh, hs, gates, h_mm, out, s, B, T, H);
  } else {
    forward_step<scalar_t>(gi, gh, hs, gates, h_mm, out, s, B, T, H);
  }
}

template <typename scalar_t>
void run_backward_step(const scalar_t* grad, const scalar_t* dh_mm, const acc_t<scalar_t>* hs,
                       const acc_t<scalar_t>* gates, acc_t<scalar_t>* dh, scalar_t* dgi,
                       scalar_t* dgh, int64_t s, int64_t B, int64_t T, int64_t H) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    backward_step_f32(grad, dh_mm, hs, gates, dh, dgi, dgh, s, B, T, H);
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    backward_step_bf16(grad, dh_mm, hs, gates, dh, dgi, dgh, s, B, T, H);
  } else {
    backward_step<scalar_t>(grad, dh_mm, hs, gates, dh, dgi, dgh, s, B, T, H);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bigru_forward_cpu(
    const at::Tensor& x_in, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& b_ih, const at::Tensor& b_hh) {
  // Plain variables, not a structured binding: the kernels' lambdas capture them (C++17).
  int64_t B, T, I, H;
  std::tie(B, T, I, H) = check_inputs(x_in, w_ih, w_hh, kForward);
  check_bias(b_ih, "b_ih", x_in, H);
  check_bias(b_hh, "b_hh", x_in, H);
  const int64_t G = 3 * H;
  const at::Tensor x = x_in.contiguous().view({B * T, I});
  const auto opts = x.options();
  const auto acc_opts = opts.dtype(acc_dtype(x.scalar_type()));
  // Input projections of both directions for every time step: (2, B*T, 3H).
  at::Tensor gi = at::empty({2, B * T, G}, opts);
  for (int64_t d = 0; d < 2; ++d) {
    at::Tensor rows = gi[d];
    at::addmm_out(rows, b_ih[d], x, w_ih[d].t());
  }
  const at::Tensor w_hh_t = w_hh.transpose(1, 2);  // (2, H, 3H)
  const at::Tensor b_hh_row = b_hh.unsqueeze(1);    // (2, 1, 3H)
  at::Tensor hs = at::zeros({2, T + 1, B, H}, acc_opts);
  at::Tensor gates = at::empty({2, T, B, 4 * H}, acc_opts);
  at::Tensor out = at::empty({B, T, 2 * H}, opts);
  at::Tensor h_mm = at::zeros({2, B, H}, opts);  // h_s in x's dtype, for the product
  at::Tensor gh = at::empty({2, B, G}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bigru_forward_cpu",
                                  [&] {
                                    for (int64_t s = 0; s < T; ++s) {
                                      at::baddbmm_out(gh, b_hh_row, h_mm, w_hh_t);
                                      run_forward_step<scalar_t>(
                                          gi.const_data_ptr<scalar_t>(),
                                          gh.const_data_ptr<scalar_t>(),
                                          hs.mutable_data_ptr<acc_t<scalar_t>>(),
                                          gates.mutable_data_ptr<acc_t<scalar_t>>(),
                                          h_mm.mutable_data_ptr<scalar_t>(),
                                          out.mutable_data_ptr<scalar_t>(), s, B, T, H);
                                    }
                                  });
  return {out, hs, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> bigru_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const at::Tensor& hs_in, const at::Tensor& gates_in) {
  int64_t B, T, I, H;
  std::tie(B, T, I, H) = check_inputs(x_in, w_ih, w_hh, kBackward);
  const int64_t G = 3 * H;
  check_tensor(grad_in, kBackward, "grad", 3, x_in);
  TORCH_CHECK(grad_in.size(0) == B && grad_in.size(1) == T && grad_in.size(2) == 2 * H, kBackward,
              ": grad must be (B, T, 2H) = (", B, ", ", T, ", ", 2 * H, "), got ", grad_in.sizes());
  const auto acc_type = acc_dtype(x_in.scalar_type());
  TORCH_CHECK(hs_in.scalar_type() == acc_type && gates_in.scalar_type() == acc_type, kBackward,
              ": hs and gates must be ", acc_type, " (as bigru_forward returns them)");
  TORCH_CHECK(hs_in.sizes() == at::IntArrayRef({2, T + 1, B, H}), kBackward,
              ": hs must be (2, T + 1, B, H), got ", hs_in.sizes());
  TORCH_CHECK(gates_in.sizes() == at::IntArrayRef({2, T, B, 4 * H}), kBackward,
              ": gates must be (2, T, B, 4H), got ", gates_in.sizes());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor x = x_in.contiguous().view({B * T, I});
  const at::Tensor hs = hs_in.contiguous();
  const at::Tensor gates = gates_in.contiguous();
  const auto opts = x.options();
  at::Tensor dgi = at::empty({2, B * T, G}, opts);    // dL/d(x W_ih^T + b_ih), time order
  at::Tensor dgh = at::empty({2, T, B, G}, opts);     // dL/d(h W_hh^T + b_hh), step order
  at::Tensor dh = at::zeros({2, B, H}, opts.dtype(acc_type));
  at::Tensor dh_mm = at::empty({2, B, H}, opts);     // dgh_s W_hh, through the recurrence
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "bigru_backward_cpu", [&] {
        using acc = acc_t<scalar_t>;
        acc* dh_p = dh.mutable_data_ptr<acc>();
        for (int64_t s = T - 1; s >= 0; --s) {
          if (s < T - 1) at::bmm_out(dh_mm, dgh.select(1, s + 1), w_hh);
          run_backward_step<scalar_t>(
              grad.const_data_ptr<scalar_t>(),
              s < T - 1 ? dh_mm.const_data_ptr<scalar_t>() : nullptr, hs.const_data_ptr<acc>(),
              gates.const_data_ptr<acc>(), dh_p, dgi.mutable_data_ptr<scalar_t>(),
              dgh.mutable_data_ptr<scalar_t>(), s, B, T, H);
        }
      });
  // Weight and bias gradients: one product over all T * B rows per direction.
  const at::Tensor h_prev = hs.narrow(1, 0, T).to(x.scalar_type()).reshape({2, T * B, H});
  const at::Tensor dgh_rows = dgh.view({2, T * B, G});
  at::Tensor dw_hh = at::bmm(dgh_rows.transpose(1, 2), h_prev);  // (2, 3H, H)
  at::Tensor db_hh = dgh_rows.sum(1, false, acc_type).to(x.scalar_type());
  at::Tensor dw_ih = at::empty({2, G, I}, opts);
  for (int64_t d = 0; d < 2; ++d) {
    at::Tensor rows = dw_ih[d];
    at::mm_out(rows, dgi[d].t(), x);
  }
  at::Tensor db_ih = dgi.sum(1, false, acc_type).to(x.scalar_type());
  at::Tensor dx = at::addmm(at::mm(dgi[0], w_ih[0]), dgi[1], w_ih[1]).view({B, T, I});
  return {dx, dw_ih, dw_hh, db_ih, db_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(fairesi, CPU, m) {
  m.impl("bigru_forward", &bigru_forward_cpu);
  m.impl("bigru_backward", &bigru_backward_cpu);
}

}  // namespace gru
}  // namespace fairesi
