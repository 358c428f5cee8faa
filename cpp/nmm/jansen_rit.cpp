// Jansen-Rit network integration: stochastic Heun, noise on y4, sigmoidal coupling
// through a CSR connectome with optional integer-step conduction delays.
//
// Layout: each run owns a structure of arrays (six state vectors, the derived
// per-region coefficients, and a ring buffer of the coupling sigmoid of every region).
// Regions are processed in fixed blocks of kBlock, whether the threads split runs or
// blocks, so every region always goes through the same instruction sequence and the
// result is bit-identical for any thread count or batch split.
#include "jansen_rit.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace fairesi::nmm {

const std::array<const char*, kNumParams> kParamNames = {
    "A", "B", "a", "b", "v0", "nu_max", "r", "J", "a_1", "a_2", "a_3", "a_4", "mu", "noise_sigma"};

int param_index(const std::string& name) {
  for (int p = 0; p < kNumParams; ++p) {
    if (name == kParamNames[p]) return p;
  }
  std::ostringstream msg;
  msg << "unknown Jansen-Rit parameter '" << name << "'; expected one of:";
  for (const char* known : kParamNames) msg << ' ' << known;
  throw std::invalid_argument(msg.str());
}

namespace {

// Hot helpers are inlined into every target clone of step_block (below); called out of
// line they would run the baseline-ISA code only.
#define FAIRESI_HOT_INLINE inline __attribute__((always_inline))

constexpr int64_t kBlock = 64;  // regions per work unit; a multiple of 4 (one Philox draw)

// ------------------------------------------------------------------------- Philox4x32-10
constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

FAIRESI_HOT_INLINE void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                     uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
  const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
  const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
  const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
  c0 = hi1 ^ c1 ^ k0;
  c1 = lo1;
  c2 = hi0 ^ c3 ^ k1;
  c3 = lo0;
}

FAIRESI_HOT_INLINE void philox10(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                 uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    philox_round(c0, c1, c2, c3, k0, k1);
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

// Uniform in the open interval (0, 1): never 0, so log() below is finite.
FAIRESI_HOT_INLINE double to_unit(uint32_t x) { return (static_cast<double>(x) + 0.5) * 0x1p-32; }

// ------------------------------------------------------------------------- exp
// exp(x) for the sigmoids: Cody-Waite reduction and a degree-12 Taylor polynomial,
// written with plain arithmetic so that the compiler vectorises it (libm's exp is a
// scalar call). Relative error ~2e-16 on [-708, 708]; inputs are clamped to that range,
// where the sigmoids are saturated anyway.
FAIRESI_HOT_INLINE double exp_sigmoid(double x) {
  constexpr double kShifter = 0x1.8p52;  // adding it rounds to an integer in the low bits
  constexpr double kLog2e = 0x1.71547652b82fep0;
  constexpr double kLn2Hi = 0x1.62e42fee00000p-1, kLn2Lo = 0x1.a39ef35793c76p-33;
  x = x < -708.0 ? -708.0 : (x > 708.0 ? 708.0 : x);
  const double t = x * kLog2e + kShifter;
  const double n = t - kShifter;
  const double r = (x - n * kLn2Hi) - n * kLn2Lo;
  double p = 1.0 / 479001600.0;  // 1/12!
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t t_bits, shifter_bits;
  std::memcpy(&t_bits, &t, sizeof t);
  std::memcpy(&shifter_bits, &kShifter, sizeof kShifter);
  const int64_t scale_bits = (t_bits - shifter_bits + 1023) << 52;  // 2^n
  double scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}

// ------------------------------------------------------------------------- per-run data
// Coefficients of the six equations, derived once per run from the parameters.
enum Coef : int {
  cAa, cTwoA, cAA, cBbA4J, cTwoB, cBB, cA1J, cA2J, cA3J, cR, cV0, cTwoNu, cMu, cNoise,
  kNumCoefs
};

struct RunWorkspace {
  int64_t n_regions;
  int64_t n_slots;
  std::vector<double> coef;  // (kNumCoefs, n_regions)
  std::vector<double> y;     // (6, n_regions)
  std::vector<double> hist;  // (n_slots, n_regions): coupling sigmoid of each region
  bool noisy = false;

  RunWorkspace(int64_t R, int64_t slots)
      : n_regions(R), n_slots(slots), coef(kNumCoefs * R), y(6 * R, 0.0), hist(slots * R) {}
  double* c(int k) { return coef.data() + k * n_regions; }
  double* state(int k) { return y.data() + k * n_regions; }
};

inline double coupling_sigmoid(const Coupling& cp, double v) {
  return cp.cmin + (cp.cmax - cp.cmin) / (1.0 + exp_sigmoid(cp.r * (cp.midpoint - v)));
}

void init_run(RunWorkspace& ws, const std::array<ParamView, kNumParams>& params, int64_t run,
              const Coupling& cp, double dt) {
  const int64_t R = ws.n_regions;
  for (int64_t i = 0; i < R; ++i) {
    auto p = [&](int k) { return params[k].at(run, i); };
    const double a = p(ka), b = p(kb), J = p(kJ);
    ws.c(cAa)[i] = p(kA) * a;
    ws.c(cTwoA)[i] = 2.0 * a;
    ws.c(cAA)[i] = a * a;
    ws.c(cBbA4J)[i] = p(kB) * b * p(ka_4) * J;
    ws.c(cTwoB)[i] = 2.0 * b;
    ws.c(cBB)[i] = b * b;
    ws.c(cA1J)[i] = p(ka_1) * J;
    ws.c(cA2J)[i] = p(ka_2) * J;
    ws.c(cA3J)[i] = p(ka_3) * J;
    ws.c(cR)[i] = p(kr);
    ws.c(cV0)[i] = p(kv0);
    ws.c(cTwoNu)[i] = 2.0 * p(knu_max);
    ws.c(cMu)[i] = p(kmu);
    ws.c(cNoise)[i] = p(knoise_sigma) * std::sqrt(dt);
    ws.noisy = ws.noisy || p(knoise_sigma) != 0.0;
  }
  // The network starts at rest (all states 0) with a constant past.
  const double s0 = coupling_sigmoid(cp, 0.0);
  std::fill(ws.hist.begin(), ws.hist.end(), s0);
}

// log(x) for x in (0, 1] (Box-Muller radius): x = m 2^e with m in [sqrt(1/2), sqrt(2)),
// log(m) = 2 atanh((m - 1) / (m + 1)) by its series to s^17. Plain arithmetic, so it
// vectorises; relative error ~1e-16.
FAIRESI_HOT_INLINE double log_unit(double x) {
  constexpr double kLn2 = 0.6931471805599453094;
  constexpr double kSqrt2 = 1.4142135623730950488;
  int64_t bits;
  std::memcpy(&bits, &x, sizeof x);
  const int64_t exp_field = (bits >> 52) & 0x7ff;
  const int64_t mant_bits = (bits & 0x000fffffffffffffLL) | 0x3ff0000000000000LL;
  double m;
  std::memcpy(&m, &mant_bits, sizeof m);
  // exp_field as a double without an int64 -> double conversion (not SIMD before AVX-512).
  const int64_t e_bits = exp_field | 0x4330000000000000LL;
  double e;
  std::memcpy(&e, &e_bits, sizeof e);
  e -= 4503599627370496.0 + 1023.0;
  const bool high = m > kSqrt2;
  m = high ? 0.5 * m : m;
  e = high ? e + 1.0 : e;
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  double p = 1.0 / 17.0;
  p = p * s2 + 1.0 / 15.0;
  p = p * s2 + 1.0 / 13.0;
  p = p * s2 + 1.0 / 11.0;
  p = p * s2 + 1.0 / 9.0;
  p = p * s2 + 1.0 / 7.0;
  p = p * s2 + 1.0 / 5.0;
  p = p * s2 + 1.0 / 3.0;
  p = p * s2 + 1.0;
  return e * kLn2 + 2.0 * s * p;
}

// sin and cos of 2 pi t for t in (0, 1): quadrant from round(4 t), then Taylor series on
// [-pi/4, pi/4] (to x^15 / x^16, error < 1e-16) and a branch-free quadrant rotation.
FAIRESI_HOT_INLINE void sincos_2pi(double t, double& sin_out, double& cos_out) {
  constexpr double kShifter = 0x1.8p52;
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  const double shifted = 4.0 * t + kShifter;
  const double k = shifted - kShifter;
  int64_t k_bits;
  std::memcpy(&k_bits, &shifted, sizeof shifted);
  const int64_t quadrant = k_bits & 3;
  const double x = kTwoPi * (t - 0.25 * k), x2 = x * x;
  double sp = -1.0 / 1307674368000.0;  // -1/15!
  sp = sp * x2 + 1.0 / 6227020800.0;
  sp = sp * x2 - 1.0 / 39916800.0;
  sp = sp * x2 + 1.0 / 362880.0;
  sp = sp * x2 - 1.0 / 5040.0;
  sp = sp * x2 + 1.0 / 120.0;
  sp = sp * x2 - 1.0 / 6.0;
  const double sn = x + x * x2 * sp;
  double cp = 1.0 / 20922789888000.0;  // 1/16!
  cp = cp * x2 - 1.0 / 87178291200.0;
  cp = cp * x2 + 1.0 / 479001600.0;
  cp = cp * x2 - 1.0 / 3628800.0;
  cp = cp * x2 + 1.0 / 40320.0;
  cp = cp * x2 - 1.0 / 720.0;
  cp = cp * x2 + 1.0 / 24.0;
  cp = cp * x2 - 0.5;
  const double cs = 1.0 + x2 * cp;
  const bool swap = (quadrant & 1) != 0;
  const double s_val = swap ? cs : sn, c_val = swap ? sn : cs;
  sin_out = (quadrant & 2) ? -s_val : s_val;
  cos_out = ((quadrant + 1) & 2) ? -c_val : c_val;
}

// Fill z[0 .. hi-lo) with standard normals for regions lo..hi of step `step` (lo is a
// multiple of 4). One Philox draw (counter = region quad, step, run) gives 4 uniforms:
// two Box-Muller pairs (u0, u1) -> regions 4q, 4q+1 and (u2, u3) -> 4q+2, 4q+3.
FAIRESI_HOT_INLINE void gaussian_block(double* z, int64_t lo, int64_t hi, int64_t step,
                                       uint32_t run_ctr, uint32_t k0, uint32_t k1) {
  uint32_t u[kBlock];
  const int64_t n_quads = (hi - lo + 3) / 4;
  const uint32_t q0 = static_cast<uint32_t>(lo / 4);
  const uint32_t step_lo = static_cast<uint32_t>(step);
  const uint32_t step_hi = static_cast<uint32_t>(static_cast<uint64_t>(step) >> 32);
#pragma omp simd
  for (int64_t q = 0; q < n_quads; ++q) {
    uint32_t c0 = q0 + static_cast<uint32_t>(q), c1 = step_lo, c2 = step_hi, c3 = run_ctr;
    philox10(c0, c1, c2, c3, k0, k1);
    u[4 * q] = c0;
    u[4 * q + 1] = c1;
    u[4 * q + 2] = c2;
    u[4 * q + 3] = c3;
  }
#pragma omp simd
  for (int64_t pair = 0; pair < 2 * n_quads; ++pair) {
    const double radius = std::sqrt(-2.0 * log_unit(to_unit(u[2 * pair])));
    double s, c;
    sincos_2pi(to_unit(u[2 * pair + 1]), s, c);
    z[2 * pair] = radius * c;
    z[2 * pair + 1] = radius * s;
  }
}

struct StepContext {
  const Connectivity* conn;
  const Coupling* cp;
  const RunConfig* cfg;
  const int64_t* edge_offset;  // (nnz,) j - delay * n_regions, or nullptr without delays
  int64_t run;                 // index within this call (output row)
  uint32_t run_ctr, k0, k1;
  float* out;
};

// Advance regions [lo, hi) of one run from step n to n + 1. Compiled for the baseline ISA
// and for x86-64-v3/v4 (AVX2/AVX-512 + FMA), picked at load time: the sigmoid loop is
// SIMD over regions. Every thread of a process uses the same clone.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#endif
void step_block(const StepContext& ctx, RunWorkspace& ws, int64_t lo, int64_t hi, int64_t n) {
  const Connectivity& conn = *ctx.conn;
  const Coupling& cp = *ctx.cp;
  const int64_t R = ws.n_regions, S = ws.n_slots;
  const double dt = ctx.cfg->dt_ms;
  const int64_t now_slot = n % S;
  const double* hist_now = ws.hist.data() + now_slot * R;
  double* hist_next = ws.hist.data() + ((n + 1) % S) * R;
  const int64_t len = hi - lo;

  // Long-range input, from the state at step n - delay (TVB holds it over both stages).
  double c_in[kBlock];
  for (int64_t i = lo; i < hi; ++i) {
    double acc = 0.0;
    if (ctx.edge_offset == nullptr) {
      for (int32_t e = conn.indptr[i]; e < conn.indptr[i + 1]; ++e)
        acc += conn.weights[e] * hist_now[conn.indices[e]];
    } else {
      // edge_offset = j - delay * R, so now_slot * R + offset is the delayed entry of
      // region j, wrapped once around the ring (delays < S).
      const int64_t base = now_slot * R;
      for (int32_t e = conn.indptr[i]; e < conn.indptr[i + 1]; ++e) {
        int64_t pos = base + ctx.edge_offset[e];
        pos += pos < 0 ? S * R : 0;
        acc += conn.weights[e] * ws.hist[pos];
      }
    }
    c_in[i - lo] = cp.a * acc;
  }

  double dw[kBlock];  // a multiple of 4 >= len, filled whole by gaussian_block
  if (ws.noisy) {
    gaussian_block(dw, lo, hi, n, ctx.run_ctr, ctx.k0, ctx.k1);
  } else {
    std::fill(dw, dw + len, 0.0);
  }

  double* y0 = ws.state(0) + lo;
  double* y1 = ws.state(1) + lo;
  double* y2 = ws.state(2) + lo;
  double* y3 = ws.state(3) + lo;
  double* y4 = ws.state(4) + lo;
  double* y5 = ws.state(5) + lo;
  const double *Aa = ws.c(cAa) + lo, *two_a = ws.c(cTwoA) + lo, *aa = ws.c(cAA) + lo,
               *Bb = ws.c(cBbA4J) + lo, *two_b = ws.c(cTwoB) + lo, *bb = ws.c(cBB) + lo,
               *a1J = ws.c(cA1J) + lo, *a2J = ws.c(cA2J) + lo, *a3J = ws.c(cA3J) + lo,
               *rr = ws.c(cR) + lo, *v0 = ws.c(cV0) + lo, *two_nu = ws.c(cTwoNu) + lo,
               *mu = ws.c(cMu) + lo, *noise = ws.c(cNoise) + lo;
  double* hn = hist_next + lo;
  const double half_dt = 0.5 * dt;
  const double c_span = cp.cmax - cp.cmin;

#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    const double x0 = y0[i], x1 = y1[i], x2 = y2[i], x3 = y3[i], x4 = y4[i], x5 = y5[i];
    const double drive = mu[i] + c_in[i];
    const double z = noise[i] * dw[i];
    // Stage 1: derivatives at the current state.
    double s_py = two_nu[i] / (1.0 + exp_sigmoid(rr[i] * (v0[i] - (x1 - x2))));
    double s_ex = two_nu[i] / (1.0 + exp_sigmoid(rr[i] * (v0[i] - a1J[i] * x0)));
    double s_in = two_nu[i] / (1.0 + exp_sigmoid(rr[i] * (v0[i] - a3J[i] * x0)));
    const double d0 = x3, d1 = x4, d2 = x5;
    const double d3 = Aa[i] * s_py - two_a[i] * x3 - aa[i] * x0;
    const double d4 = Aa[i] * (drive + a2J[i] * s_ex) - two_a[i] * x4 - aa[i] * x1;
    const double d5 = Bb[i] * s_in - two_b[i] * x5 - bb[i] * x2;
    // Predictor (Euler-Maruyama), the noise increment enters y4 only.
    const double p0 = x0 + dt * d0, p1 = x1 + dt * d1, p2 = x2 + dt * d2;
    const double p3 = x3 + dt * d3, p4 = x4 + dt * d4 + z, p5 = x5 + dt * d5;
    // Stage 2: derivatives at the predicted state, same coupling and noise.
    s_py = two_nu[i] / (1.0 + exp_sigmoid(rr[i] * (v0[i] - (p1 - p2))));
    s_ex = two_nu[i] / (1.0 + exp_sigmoid(rr[i] * (v0[i] - a1J[i] * p0)));
    s_in = two_nu[i] / (1.0 + exp_sigmoid(rr[i] * (v0[i] - a3J[i] * p0)));
    const double e3 = Aa[i] * s_py - two_a[i] * p3 - aa[i] * p0;
    const double e4 = Aa[i] * (drive + a2J[i] * s_ex) - two_a[i] * p4 - aa[i] * p1;
    const double e5 = Bb[i] * s_in - two_b[i] * p5 - bb[i] * p2;
    const double n1 = x1 + half_dt * (d1 + p4), n2 = x2 + half_dt * (d2 + p5);
    y0[i] = x0 + half_dt * (d0 + p3);
    y1[i] = n1;
    y2[i] = n2;
    y3[i] = x3 + half_dt * (d3 + e3);
    y4[i] = x4 + half_dt * (d4 + e4) + z;
    y5[i] = x5 + half_dt * (d5 + e5);
    hn[i] = cp.cmin + c_span / (1.0 + exp_sigmoid(cp.r * (cp.midpoint - (n1 - n2))));
  }

  const int64_t after = n + 1 - ctx.cfg->n_transient_steps;
  if (after > 0 && after % ctx.cfg->decimation == 0) {
    const int64_t k = after / ctx.cfg->decimation - 1;
    const int64_t n_out = ctx.cfg->n_out;
    float* row = ctx.out + (ctx.run * R + lo) * n_out + k;
    for (int64_t i = 0; i < len; ++i) row[i * n_out] = static_cast<float>(y1[i] - y2[i]);
  }
}

// Centralised barrier that spins briefly, then yields the core to other threads. The
// last thread to arrive publishes a new generation (release); waiters acquire it, so
// every hist entry written before the barrier is visible after it.
class YieldingBarrier {
 public:
  void reset(int n_threads) { n_threads_ = n_threads; }
  void wait() {
    const int64_t generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_threads_) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    for (int spin = 0; generation_.load(std::memory_order_acquire) == generation; ++spin) {
      if (spin >= kSpins) std::this_thread::yield();
    }
  }

 private:
  static constexpr int kSpins = 4000;
  int n_threads_ = 1;
  std::atomic<int> arrived_{0};
  std::atomic<int64_t> generation_{0};
};

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument(what); }

}  // namespace

std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  philox10(c[0], c[1], c[2], c[3], k[0], k[1]);
  return c;
}

void validate(const Connectivity& conn, const Coupling& cp,
              const std::array<ParamView, kNumParams>& params, int64_t n_runs,
              const RunConfig& cfg) {
  std::ostringstream msg;
  if (!(std::isfinite(cfg.dt_ms) && cfg.dt_ms > 0.0)) {
    msg << "dt_ms must be a finite positive number of milliseconds, got " << cfg.dt_ms;
    fail(msg.str());
  }
  if (conn.n_regions < 1) fail("the connectome must have at least one region");
  if (n_runs < 1) fail("n_runs must be >= 1, got " + std::to_string(n_runs));
  if (cfg.n_out < 0) fail("n_out must be >= 0, got " + std::to_string(cfg.n_out));
  if (cfg.decimation < 1) fail("decimation must be >= 1, got " + std::to_string(cfg.decimation));
  if (cfg.n_transient_steps < 0)
    fail("n_transient_steps must be >= 0, got " + std::to_string(cfg.n_transient_steps));
  if (cfg.run_offset < 0 || cfg.run_offset + n_runs > (int64_t{1} << 32))
    fail("run_offset + n_runs must lie in [0, 2^32), got run_offset " +
         std::to_string(cfg.run_offset));
  if (cfg.n_threads < 0) fail("n_threads must be >= 0, got " + std::to_string(cfg.n_threads));
  for (double v : {cp.cmin, cp.cmax, cp.midpoint, cp.r, cp.a}) {
    if (!std::isfinite(v)) fail("coupling parameters must be finite");
  }
  const int64_t R = conn.n_regions;
  if (conn.indptr[0] != 0) fail("CSR indptr must start at 0");
  for (int64_t i = 0; i < R; ++i) {
    if (conn.indptr[i + 1] < conn.indptr[i]) {
      msg << "CSR indptr must be non-decreasing, but indptr[" << i + 1 << "] < indptr[" << i
          << "]";
      fail(msg.str());
    }
  }
  const int64_t nnz = conn.indptr[R];
  for (int64_t e = 0; e < nnz; ++e) {
    if (conn.indices[e] < 0 || conn.indices[e] >= R) {
      msg << "connectome column index " << conn.indices[e] << " at edge " << e
          << " is outside [0, " << R << ")";
      fail(msg.str());
    }
    if (!std::isfinite(conn.weights[e])) {
      msg << "connectome weight at edge " << e << " is not finite (" << conn.weights[e] << ")";
      fail(msg.str());
    }
    if (conn.delay_steps != nullptr && conn.delay_steps[e] < 0) {
      msg << "conduction delay at edge " << e << " is negative (" << conn.delay_steps[e]
          << " steps)";
      fail(msg.str());
    }
  }
  for (int p = 0; p < kNumParams; ++p) {
    if (params[p].data == nullptr) fail(std::string("missing parameter '") + kParamNames[p] + "'");
    for (int64_t run = 0; run < n_runs; ++run) {
      for (int64_t i = 0; i < R; ++i) {
        const double v = params[p].at(run, i);
        if (!std::isfinite(v)) {
          msg << "parameter '" << kParamNames[p] << "' is not finite (" << v << ") for run "
              << run << ", region " << i;
          fail(msg.str());
        }
        if (p == knoise_sigma && v < 0.0) {
          msg << "noise_sigma must be >= 0, got " << v << " for run " << run << ", region " << i;
          fail(msg.str());
        }
      }
    }
  }
}

void simulate(const Connectivity& conn, const Coupling& cp,
              const std::array<ParamView, kNumParams>& params, int64_t n_runs,
              const RunConfig& cfg, float* out) {
  validate(conn, cp, params, n_runs, cfg);
  const int64_t R = conn.n_regions;
  const int64_t n_blocks = (R + kBlock - 1) / kBlock;
  const int64_t n_steps = cfg.n_transient_steps + cfg.n_out * cfg.decimation;
  const int n_threads = cfg.n_threads > 0 ? cfg.n_threads : omp_get_max_threads();
  int64_t max_delay = 0;
  std::vector<int64_t> edge_offset;
  if (conn.delay_steps != nullptr) {
    edge_offset.resize(conn.indptr[R]);
    for (int64_t e = 0; e < conn.indptr[R]; ++e) {
      max_delay = std::max<int64_t>(max_delay, conn.delay_steps[e]);
      edge_offset[e] = conn.indices[e] - int64_t{conn.delay_steps[e]} * R;
    }
  }
  // One slot more than the longest delay: step n writes slot n + 1 while other threads may
  // still read slots n - max_delay .. n.
  const int64_t n_slots = max_delay + 2;
  const uint32_t k0 = static_cast<uint32_t>(cfg.seed);
  const uint32_t k1 = static_cast<uint32_t>(cfg.seed >> 32);
  auto context = [&](int64_t run) {
    return StepContext{&conn,
                       &cp,
                       &cfg,
                       edge_offset.empty() ? nullptr : edge_offset.data(),
                       run,
                       static_cast<uint32_t>(cfg.run_offset + run),
                       k0,
                       k1,
                       out};
  };

  if (n_runs >= n_threads) {
    // Independent runs: one thread per run, no synchronisation.
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
    for (int64_t run = 0; run < n_runs; ++run) {
      RunWorkspace ws(R, n_slots);
      init_run(ws, params, run, cp, cfg.dt_ms);
      const StepContext ctx = context(run);
      for (int64_t n = 0; n < n_steps; ++n) {
        for (int64_t blk = 0; blk < n_blocks; ++blk)
          step_block(ctx, ws, blk * kBlock, std::min(R, (blk + 1) * kBlock), n);
      }
    }
  } else {
    // Few runs: the threads share each run's region blocks, one barrier per step. The
    // barrier yields the CPU while waiting: OpenMP's spinning barrier makes a run ~100x
    // slower when another process holds one of the cores.
    for (int64_t run = 0; run < n_runs; ++run) {
      RunWorkspace ws(R, n_slots);
      init_run(ws, params, run, cp, cfg.dt_ms);
      const StepContext ctx = context(run);
      YieldingBarrier barrier;
#pragma omp parallel num_threads(static_cast<int>(std::min<int64_t>(n_threads, n_blocks)))
      {
        const int64_t team = omp_get_num_threads(), me = omp_get_thread_num();
#pragma omp single
        barrier.reset(static_cast<int>(team));  // implicit barrier: everyone sees the size
        const int64_t first = n_blocks * me / team, last = n_blocks * (me + 1) / team;
        for (int64_t n = 0; n < n_steps; ++n) {
          for (int64_t blk = first; blk < last; ++blk)
            step_block(ctx, ws, blk * kBlock, std::min(R, (blk + 1) * kBlock), n);
          barrier.wait();
        }
      }
    }
  }
}

}  // namespace fairesi::nmm
