// pybind11 binding of the Jansen-Rit simulator: numpy arrays in, one float32 array out,
// no copies of the inputs when they already have the right dtype, GIL released while
// integrating. std::invalid_argument becomes ValueError in Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <sstream>
#include <string>

#include "jansen_rit.hpp"

namespace py = pybind11;
using namespace fairesi::nmm;

namespace {

template <typename T>
using Array = py::array_t<T, py::array::forcecast>;
template <typename T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

void require_1d(const py::array& a, const char* name, py::ssize_t expected_len) {
  if (a.ndim() != 1 || (expected_len >= 0 && a.shape(0) != expected_len)) {
    std::ostringstream msg;
    msg << name << " must be 1-D";
    if (expected_len >= 0) msg << " of length " << expected_len;
    msg << ", got shape (";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) msg << (d ? ", " : "") << a.shape(d);
    msg << ")";
    throw std::invalid_argument(msg.str());
  }
}

py::array_t<float> simulate_py(CArray<int32_t> indptr, CArray<int32_t> indices,
                               CArray<double> weights, std::optional<CArray<int32_t>> delay_steps,
                               const py::dict& params, const py::dict& coupling, int64_t n_runs,
                               double dt_ms, int64_t n_transient_steps, int64_t n_out,
                               int64_t decimation, uint64_t seed, int64_t run_offset,
                               int n_threads) {
  if (indptr.ndim() != 1 || indptr.shape(0) < 2)
    throw std::invalid_argument("indptr must be 1-D with n_regions + 1 >= 2 entries");
  const int64_t R = indptr.shape(0) - 1;
  const int64_t nnz = indptr.at(R);
  require_1d(indices, "indices", nnz);
  require_1d(weights, "weights", nnz);
  if (delay_steps) require_1d(*delay_steps, "delay_steps", nnz);
  if (n_runs < 1) throw std::invalid_argument("n_runs must be >= 1, got " + std::to_string(n_runs));

  // Parameters: (n_runs, n_regions) float64 arrays of any strides (broadcast views welcome).
  std::array<ParamView, kNumParams> views{};
  std::vector<Array<double>> keep_alive;
  for (auto item : params) {
    const std::string name = py::str(item.first);
    const int p = param_index(name);
    auto arr = Array<double>::ensure(item.second);
    if (!arr) throw std::invalid_argument("parameter '" + name + "' is not a float array");
    if (arr.ndim() != 2 || arr.shape(0) != n_runs || arr.shape(1) != R) {
      std::ostringstream msg;
      msg << "parameter '" << name << "' must have shape (n_runs, n_regions) = (" << n_runs
          << ", " << R << "), got (";
      for (py::ssize_t d = 0; d < arr.ndim(); ++d) msg << (d ? ", " : "") << arr.shape(d);
      msg << ")";
      throw std::invalid_argument(msg.str());
    }
    views[p] = ParamView{arr.data(), static_cast<int64_t>(arr.strides(0) / sizeof(double)),
                         static_cast<int64_t>(arr.strides(1) / sizeof(double))};
    keep_alive.push_back(std::move(arr));
  }
  Coupling cp;
  for (auto item : coupling) {
    const std::string name = py::str(item.first);
    const double v = item.second.cast<double>();
    if (name == "cmin") cp.cmin = v;
    else if (name == "cmax") cp.cmax = v;
    else if (name == "midpoint") cp.midpoint = v;
    else if (name == "r") cp.r = v;
    else if (name == "a") cp.a = v;
    else
      throw std::invalid_argument("unknown coupling parameter '" + name +
                                  "'; expected one of: cmin cmax midpoint r a");
  }

  const Connectivity conn{R, indptr.data(), indices.data(), weights.data(),
                          delay_steps ? delay_steps->data() : nullptr};
  RunConfig cfg;
  cfg.dt_ms = dt_ms;
  cfg.n_transient_steps = n_transient_steps;
  cfg.n_out = n_out;
  cfg.decimation = decimation;
  cfg.seed = seed;
  cfg.run_offset = run_offset;
  cfg.n_threads = n_threads;
  validate(conn, cp, views, n_runs, cfg);  // before allocating the output

  py::array_t<float> out({n_runs, R, std::max<int64_t>(n_out, 0)});
  float* out_ptr = out.mutable_data();
  {
    py::gil_scoped_release release;
    simulate(conn, cp, views, n_runs, cfg, out_ptr);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_nmm, m) {
  m.doc() = "C++17/OpenMP Jansen-Rit network simulator (use fairesi.simulate, not this module).";
  m.attr("PARAM_NAMES") =
      py::cast(std::vector<std::string>(kParamNames.begin(), kParamNames.end()));
  m.def("simulate", &simulate_py, py::arg("indptr"), py::arg("indices"), py::arg("weights"),
        py::arg("delay_steps"), py::arg("params"), py::arg("coupling"), py::arg("n_runs"),
        py::arg("dt_ms"), py::arg("n_transient_steps"), py::arg("n_out"), py::arg("decimation"),
        py::arg("seed"), py::arg("run_offset"), py::arg("n_threads"),
        "Integrate n_runs Jansen-Rit networks; returns y1 - y2 as float32 (n_runs, n_regions, "
        "n_out). params maps every name of PARAM_NAMES to a float64 (n_runs, n_regions) array.");
  m.def("philox4x32",
        [](std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key) {
          return philox4x32(counter, key);
        },
        py::arg("counter"), py::arg("key"), "Philox4x32-10 block (for tests of the RNG stream).");
}
