// Jansen-Rit neural-mass network simulator (TVB `JansenRit` + `SigmoidalJansenRit`).
//
// Plain functions over arrays: the caller owns every buffer, nothing is global, and a
// run's trajectory depends only on (seed, global run index, inputs), never on the
// thread count or on how the runs were split into calls.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace fairesi::nmm {

// Per-region parameters, in the order of kParamNames. Units as in TVB: mV, ms, 1/ms.
enum Param : int {
  kA,           // excitatory synaptic gain [mV]
  kB,           // inhibitory synaptic gain [mV]
  ka,           // excitatory rate constant [1/ms]
  kb,           // inhibitory rate constant [1/ms]
  kv0,          // sigmoid midpoint [mV]
  knu_max,      // maximal firing rate [1/ms]
  kr,           // sigmoid steepness [1/mV]
  kJ,           // average number of synapses
  ka_1,         // connectivity constants alpha_1..alpha_4
  ka_2,
  ka_3,
  ka_4,
  kmu,          // mean input firing rate [1/ms]
  knoise_sigma, // additive noise amplitude on y4: dy4 += noise_sigma * dW (TVB sqrt(2 nsig))
  kNumParams
};

extern const std::array<const char*, kNumParams> kParamNames;

// Index of a parameter name; throws std::invalid_argument naming the known ones.
int param_index(const std::string& name);

// Long-range connectivity in CSR form: row i lists the regions j that drive region i.
struct Connectivity {
  int64_t n_regions = 0;
  const int32_t* indptr = nullptr;       // (n_regions + 1,)
  const int32_t* indices = nullptr;      // (nnz,) source region of each edge
  const double* weights = nullptr;       // (nnz,)
  const int32_t* delay_steps = nullptr;  // (nnz,) conduction delay in steps, or nullptr
};

// TVB `SigmoidalJansenRit`: c_i = a * sum_j w_ij (cmin + (cmax - cmin) /
// (1 + exp(r (midpoint - (y1_j - y2_j)(t - d_ij))))), fed into the y4 equation.
struct Coupling {
  double cmin = 0.0;
  double cmax = 0.005;
  double midpoint = 6.0;
  double r = 0.56;
  double a = 1.0;
};

// Strided read-only view of one parameter: value(run, region) =
// data[run * run_stride + region * region_stride] (strides in elements, may be 0).
struct ParamView {
  const double* data = nullptr;
  int64_t run_stride = 0;
  int64_t region_stride = 0;
  double at(int64_t run, int64_t region) const {
    return data[run * run_stride + region * region_stride];
  }
};

struct RunConfig {
  double dt_ms = 0.5;
  int64_t n_transient_steps = 0;  // integrated but not returned
  int64_t n_out = 0;              // output samples per region
  int64_t decimation = 4;         // integration steps per output sample
  uint64_t seed = 0;
  int64_t run_offset = 0;         // global index of the first run (RNG stream id)
  int n_threads = 0;              // 0: OpenMP default
};

// Check every input; throws std::invalid_argument naming the offending value.
void validate(const Connectivity& conn, const Coupling& coupling,
              const std::array<ParamView, kNumParams>& params, int64_t n_runs,
              const RunConfig& cfg);

// Integrate n_runs independent networks with stochastic Heun and write y1 - y2 (mV),
// sampled every `decimation` steps after the transient, to out (n_runs, n_regions, n_out).
// Calls validate() first. Safe to call without the Python GIL.
void simulate(const Connectivity& conn, const Coupling& coupling,
              const std::array<ParamView, kNumParams>& params, int64_t n_runs,
              const RunConfig& cfg, float* out);

// Philox4x32-10 counter-based generator (Salmon et al., SC'11), exposed for tests.
std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

}  // namespace fairesi::nmm
