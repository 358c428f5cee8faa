// fairesi::Runner: run an exported fairesi model from C++ without Python.
//
// A model exported by `fairesi export` is either a TorchScript archive (.pt) or an
// AOTInductor package (.pt2); both carry `fairesi_metadata.json` (channel names and order,
// sampling rate, samples per epoch, regions, normalisation, versions, whether the model
// calls the fused op library). A Runner loads either format, checks input against that
// metadata, applies the DeepSIF input normalisation exactly as fairesi.data does in Python,
// and returns the source estimate (regions x times).
//
// Embedding (see example_embed.cpp):
//
//   fairesi::RunnerOptions options;
//   options.ops_library = "/path/to/site-packages/fairesi/lib/libfairesi_ops.so";
//   fairesi::Runner runner("model.pt", options);
//   at::Tensor sources = runner.infer(epoch);   // (C, T) float32 -> (R, T) float32
//
// Building it into another program: the installed package is a CMake package
// (docs/embedding.md): find_package(fairesi) with CMAKE_PREFIX_PATH set to
// `python -c "import fairesi.runner as r; print(r.cmake_prefix_path())"`, then link
// fairesi::runner (this header, the static library and libtorch from the torch wheel).
//
// Errors are thrown as fairesi::ModelError, fairesi::InputError (errors.hpp) or, for a
// failure inside the network, std::runtime_error; the Runner never aborts the process.
// A Runner is not safe to call from several threads at once (create one per thread).
#pragma once

#include <ATen/Tensor.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "errors.hpp"

namespace fairesi {

// Name of the metadata file inside an exported model (an extra file of the TorchScript
// archive; a metadata key of the AOTInductor package).
inline constexpr const char* kMetadataName = "fairesi_metadata.json";

// The metadata `fairesi export` stores with a model.
struct Metadata {
  std::string modality;                    // "eeg", "meg" or "eeg+meg"
  std::vector<std::string> ch_names;       // input channel order, C entries
  std::vector<std::string> ch_types;       // MNE channel types ("eeg", "mag", "grad")
  double sfreq = 0.0;                      // sampling rate of the input, Hz
  int64_t n_times = 0;                     // samples per epoch, T
  int64_t n_regions = 0;                   // source regions, R
  std::vector<std::string> region_names;   // R entries
  std::vector<std::array<double, 3>> region_centroids_mm;  // R x (x, y, z), mm
  std::string normalisation;               // "deepsif" or "deepsif-per-modality"
  std::vector<int64_t> channel_groups;     // channels per modality block, in input order
                                           // (EEG then MEG for "eeg+meg"); one block: {C}
  std::string output_layout;               // "regions x times"
  bool needs_ops_library = false;          // calls torch.ops.fairesi.* (TorchScript only)
  std::string fairesi_version;
  std::string torch_version;
  std::string json;                        // the metadata file as stored

  int64_t n_channels() const { return static_cast<int64_t>(ch_names.size()); }

  // Parse and validate the metadata JSON; `source` names the model in error messages.
  // Throws ModelError when a field is missing or has the wrong type.
  static Metadata from_json(const std::string& text, const std::string& source);
};

enum class ModelFormat { TorchScript, AOTInductor };

const char* format_name(ModelFormat format);

struct RunnerOptions {
  // "cpu", "cuda" or "cuda:N". An AOTInductor package runs only on the device it was
  // compiled for.
  std::string device = "cpu";
  // Intra-op threads for libtorch (process-wide: at::set_num_threads); 0 keeps the default.
  int threads = 0;
  // libfairesi_ops.so, loaded (once per process) when the model calls the fused op. Empty:
  // such a model is refused unless the op is already registered in this process.
  std::string ops_library;
};

// Which format a model file is, from its contents. Throws ModelError when it is neither.
ModelFormat detect_format(const std::string& model_path);

// Read only the metadata of a model file (does not load the network or any library).
Metadata read_metadata(const std::string& model_path);

// Throw InputError unless `shape` is (C, T) or, with `batch`, (B, C, T), with the channel
// count C and samples T of `metadata`.
void check_input_shape(const Metadata& metadata, const std::vector<int64_t>& shape, bool batch);

class Runner {
 public:
  explicit Runner(const std::string& model_path, const RunnerOptions& options = {});
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  const Metadata& metadata() const;
  ModelFormat format() const;

  // Source estimate of raw (not normalised) sensor data.
  //   epochs: (C, T) or (B, C, T), float32 or float64 (computed in float32), finite.
  //   returns: (R, T) or (B, R, T) float32 on the CPU, R = metadata().n_regions.
  at::Tensor infer(const at::Tensor& epochs);

  // DeepSIF input normalisation of (B, C, T) float32, the same operations as
  // fairesi.data.normalise_input: remove each channel's time mean, then each time point's
  // channel mean, then divide each epoch by its maximum absolute value.
  static at::Tensor normalise(const at::Tensor& epochs);
  // The same per channel block (fused EEG+MEG models: each modality on its own).
  static at::Tensor normalise(const at::Tensor& epochs, const std::vector<int64_t>& groups);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fairesi
