// Per-patch arithmetic of the fused spectral-temporal refinement (forward and backward).
//
// One patch is L = 16 samples x_0..x_15. With c_m = cos(2*pi*m/16), s_m = sin(2*pi*m/16):
//
//   rfft       R_k = sum_n x_n c_{kn},  I_k = -sum_n x_n s_{kn}            k = 0..8
//   spectral   a = softmax(R / tau), b = softmax(I / tau)                  (9 bins each)
//              y_n = (a_0 + (-1)^n a_8 + 2 sum_{k=1..7} (a_k c_{kn} - b_k s_{kn})) / 16
//   temporal   t = softmax(x / tau)                                        (16 samples)
//   output     alpha * y + (1 - alpha) * t
//
// y is torch.fft.irfft(complex(a, b), n=16): the imaginary parts of the DC and Nyquist
// bins (b_0, b_8) do not contribute to y, but I_0 = I_8 = 0 still take part in the
// normalisation of b, exactly as in the PyTorch reference. The 16-point DFTs are done
// directly with constant twiddles, folded on the even/odd symmetry of a real signal
// (x_n +- x_{16-n}), which halves the multiply-adds.
//
// Every function is a template over the lane type T (float/double on the GPU and for
// float64 on the CPU; a SIMD bundle of patches for float32 on the CPU) and the scalar type
// S of the constants, so the CPU kernel, the CUDA kernel and the CPU tests all run this
// same arithmetic. T must be constructible from S and provide +, -, * (with T and with S),
// / (with T), refine_max(T, T) and refine_exp(T) (found by argument-dependent lookup for
// SIMD bundles).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define FAIRESI_HD __host__ __device__ __forceinline__
#define FAIRESI_UNROLL _Pragma("unroll")
#else
// Forced inlining lets each ISA clone of the CPU kernels compile its own copy.
#define FAIRESI_HD inline __attribute__((always_inline))
#define FAIRESI_UNROLL _Pragma("GCC unroll 16")
#endif

namespace fairesi {
namespace refine {

constexpr int kPatchLen = 16;
constexpr int kBins = kPatchLen / 2 + 1;

// cos(2*pi*m/16) for any integer m >= 0; after loop unrolling m is a compile-time constant,
// so the table lookup folds into an immediate.
template <typename S>
FAIRESI_HD constexpr S twiddle_cos(int m) {
  constexpr double kTable[16] = {1.0,
                                 0.92387953251128675613,
                                 0.70710678118654752440,
                                 0.38268343236508977173,
                                 0.0,
                                 -0.38268343236508977173,
                                 -0.70710678118654752440,
                                 -0.92387953251128675613,
                                 -1.0,
                                 -0.92387953251128675613,
                                 -0.70710678118654752440,
                                 -0.38268343236508977173,
                                 0.0,
                                 0.38268343236508977173,
                                 0.70710678118654752440,
                                 0.92387953251128675613};
  return static_cast<S>(kTable[m & 15]);
}

// sin(2*pi*m/16) = cos(2*pi*(m - 4)/16).
template <typename S>
FAIRESI_HD constexpr S twiddle_sin(int m) {
  return twiddle_cos<S>(m + 12);
}

FAIRESI_HD float refine_max(float a, float b) { return a > b ? a : b; }
FAIRESI_HD double refine_max(double a, double b) { return a > b ? a : b; }
FAIRESI_HD float refine_exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}
FAIRESI_HD double refine_exp(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return std::exp(x);
#endif
}

// Real-input DFT of 16 samples, bins 0..8: re[k] = R_k, im[k] = I_k (im[0] = im[8] = 0).
template <typename T, typename S>
FAIRESI_HD void rfft16(const T (&x)[kPatchLen], T (&re)[kBins], T (&im)[kBins]) {
  T even[8];  // even[n] = x_n + x_{16-n}, n = 1..7
  T odd[8];   // odd[n]  = x_n - x_{16-n}
FAIRESI_UNROLL
  for (int n = 1; n < 8; ++n) {
    even[n] = x[n] + x[kPatchLen - n];
    odd[n] = x[n] - x[kPatchLen - n];
  }
FAIRESI_UNROLL
  for (int k = 0; k < kBins; ++k) {
    T r = (k % 2 == 0) ? x[0] + x[8] : x[0] - x[8];
    T i = T(S(0));
FAIRESI_UNROLL
    for (int n = 1; n < 8; ++n) {
      r = r + even[n] * twiddle_cos<S>(k * n);
      if (k != 0 && k != 8) i = i - odd[n] * twiddle_sin<S>(k * n);
    }
    re[k] = r;
    im[k] = i;
  }
}

// out_n = p_0 + (-1)^n p_8 + sum_{k=1..7} (p_k c_{kn} - q_k s_{kn}), n = 0..15: the
// Hermitian synthesis behind irfft (and, transposed, behind the gradient of rfft).
template <typename T, typename S>
FAIRESI_HD void synth16(const T (&p)[kBins], const T (&q)[kBins], T (&out)[kPatchLen]) {
FAIRESI_UNROLL
  for (int n = 0; n <= 8; ++n) {
    T even = (n % 2 == 0) ? p[0] + p[8] : p[0] - p[8];
    T odd = T(S(0));
FAIRESI_UNROLL
    for (int k = 1; k < 8; ++k) {
      even = even + p[k] * twiddle_cos<S>(k * n);
      if (n != 0 && n != 8) odd = odd + q[k] * twiddle_sin<S>(k * n);
    }
    out[n] = even - odd;
    if (n != 0 && n != 8) out[kPatchLen - n] = even + odd;
  }
}

// In-place softmax of v[0..N) with inverse temperature inv_tau (max-subtracted).
template <int N, typename T, typename S>
FAIRESI_HD void softmax_inplace(T (&v)[N], S inv_tau) {
  T m = v[0];
FAIRESI_UNROLL
  for (int i = 1; i < N; ++i) m = refine_max(m, v[i]);
  T sum = T(S(0));
FAIRESI_UNROLL
  for (int i = 0; i < N; ++i) {
    v[i] = refine_exp((v[i] - m) * inv_tau);
    sum = sum + v[i];
  }
  const T inv_sum = T(S(1)) / sum;
FAIRESI_UNROLL
  for (int i = 0; i < N; ++i) v[i] = v[i] * inv_sum;
}

// The two views of one patch: a, b (spectral softmaxes, 9 bins each) and t (temporal).
template <typename T>
struct Views {
  T a[kBins];
  T b[kBins];
  T t[kPatchLen];
};

template <typename T, typename S>
FAIRESI_HD void compute_views(const T (&x)[kPatchLen], S inv_tau, bool spectral, bool temporal,
                              Views<T>& v) {
  if (spectral) {
    rfft16<T, S>(x, v.a, v.b);
    softmax_inplace<kBins>(v.a, inv_tau);
    softmax_inplace<kBins>(v.b, inv_tau);
  }
  if (temporal) {
FAIRESI_UNROLL
    for (int n = 0; n < kPatchLen; ++n) v.t[n] = x[n];
    softmax_inplace<kPatchLen>(v.t, inv_tau);
  }
}

// Forward of one patch: out = alpha * irfft(softmax(R/tau), softmax(I/tau)) + (1-alpha) *
// softmax(x/tau). alpha = 1 (spectral only) and alpha = 0 (temporal only) skip the unused
// view; they are the ablation variants, so no other op variant is needed.
template <typename T, typename S>
FAIRESI_HD void refine_forward_patch(const T (&x)[kPatchLen], T (&out)[kPatchLen], S inv_tau,
                                     S alpha) {
  const bool spectral = alpha != S(0);
  const bool temporal = alpha != S(1);
  Views<T> v;
  compute_views<T, S>(x, inv_tau, spectral, temporal, v);
  if (spectral) {
    // irfft's 1/16 normalisation and the factor 2 of the paired bins, folded with alpha.
    T p[kBins];
    T q[kBins];
FAIRESI_UNROLL
    for (int k = 0; k < kBins; ++k) {
      const S w = (k == 0 || k == 8) ? alpha / S(16) : alpha / S(8);
      p[k] = v.a[k] * w;
      q[k] = v.b[k] * w;
    }
    synth16<T, S>(p, q, out);
  } else {
FAIRESI_UNROLL
    for (int n = 0; n < kPatchLen; ++n) out[n] = T(S(0));
  }
  if (temporal) {
FAIRESI_UNROLL
    for (int n = 0; n < kPatchLen; ++n) out[n] = out[n] + v.t[n] * (S(1) - alpha);
  }
}

// Gradient of one softmax, in place: given y = softmax(v * inv_tau) in y and dL/dy in g,
// g becomes dL/dv = inv_tau * y * (g - <g, y>).
template <int N, typename T, typename S>
FAIRESI_HD void softmax_backward_inplace(const T (&y)[N], T (&g)[N], S inv_tau) {
  T dot = g[0] * y[0];
FAIRESI_UNROLL
  for (int i = 1; i < N; ++i) dot = dot + g[i] * y[i];
FAIRESI_UNROLL
  for (int i = 0; i < N; ++i) g[i] = y[i] * (g[i] - dot) * inv_tau;
}

// Backward of one patch: grad_x = d<grad_out, forward(x)>/dx. The views are recomputed
// from x (cheaper than storing them).
template <typename T, typename S>
FAIRESI_HD void refine_backward_patch(const T (&grad_out)[kPatchLen], const T (&x)[kPatchLen],
                                      T (&grad_x)[kPatchLen], S inv_tau, S alpha) {
  const bool spectral = alpha != S(0);
  const bool temporal = alpha != S(1);
  Views<T> v;
  compute_views<T, S>(x, inv_tau, spectral, temporal, v);
  if (spectral) {
    // dL/da_k = w_k * R_k(grad_out), dL/db_k = w_k * I_k(grad_out): the transpose of the
    // synthesis is the analysis DFT, with w the same per-bin weights as in the forward.
    T ga[kBins];
    T gb[kBins];
    rfft16<T, S>(grad_out, ga, gb);
FAIRESI_UNROLL
    for (int k = 0; k < kBins; ++k) {
      const S w = (k == 0 || k == 8) ? alpha / S(16) : alpha / S(8);
      ga[k] = ga[k] * w;
      gb[k] = gb[k] * w;  // gb_0 = gb_8 = 0: I_0, I_8 do not depend on x.
    }
    softmax_backward_inplace<kBins>(v.a, ga, inv_tau);
    softmax_backward_inplace<kBins>(v.b, gb, inv_tau);
    // dL/dx_n = sum_{k=0..8} dL/dR_k c_{kn} - dL/dI_k s_{kn}, which is synth16 itself:
    // c_{0n} = 1, c_{8n} = (-1)^n and the DC/Nyquist sines vanish.
    synth16<T, S>(ga, gb, grad_x);
  } else {
FAIRESI_UNROLL
    for (int n = 0; n < kPatchLen; ++n) grad_x[n] = T(S(0));
  }
  if (temporal) {
    T gt[kPatchLen];
FAIRESI_UNROLL
    for (int n = 0; n < kPatchLen; ++n) gt[n] = grad_out[n] * (S(1) - alpha);
    softmax_backward_inplace<kPatchLen>(v.t, gt, inv_tau);
FAIRESI_UNROLL
    for (int n = 0; n < kPatchLen; ++n) grad_x[n] = grad_x[n] + gt[n];
  }
}

}  // namespace refine
}  // namespace fairesi
