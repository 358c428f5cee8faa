#include "runner.hpp"

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <caffe2/serialize/inline_container.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <cmath>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <typeinfo>

#include "json.hpp"

namespace fairesi {
namespace {

// The fused op exported models call when they were scripted with the op library loaded.
constexpr const char* kFusedOp = "fairesi::spectral_temporal_refine";

// An exception's whole message on one line: c10::Error texts lose their C++ stack trace
// (what_without_backtrace), and the lines of a multi-line message (a TorchScript compile
// error starts with an empty line, then the error, then the source it points at) are
// trimmed and joined with " | ", so a caller printing one line still sees all of it.
std::string whole_message(const std::exception& err) {
  const auto* c10_err = dynamic_cast<const c10::Error*>(&err);
  const std::string text = c10_err ? c10_err->what_without_backtrace() : err.what();
  std::string out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    const size_t first = line.find_first_not_of(" \t\r");
    if (first != std::string::npos) {
      const size_t last = line.find_last_not_of(" \t\r");
      if (!out.empty()) out += " | ";
      out += line.substr(first, last - first + 1);
    }
    pos = end + 1;
  }
  // A crafted archive can carry megabytes of source in its message; keep the line usable.
  constexpr size_t kMaxLength = 4000;
  if (out.size() > kMaxLength) out = out.substr(0, kMaxLength) + " ...";
  return out.empty() ? std::string("unknown error (") + typeid(err).name() + ")" : out;
}

void require_readable_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw ModelError("model '" + path + "': no such file");
  }
  if (!S_ISREG(st.st_mode)) throw ModelError("model '" + path + "': not a regular file");
  if (st.st_size == 0) throw ModelError("model '" + path + "': empty file");
}

std::string read_record(caffe2::serialize::PyTorchStreamReader& reader, const std::string& name) {
  auto [data, size] = reader.getRecord(name);
  return std::string(static_cast<const char*>(data.get()), size);
}

int64_t positive_int(const json::Value& object, const char* key) {
  const double value = object.at(key).as_number();
  if (!(value >= 1 && value <= 1e12 && std::floor(value) == value)) {
    throw std::invalid_argument(std::string("'") + key + "' must be a positive integer");
  }
  return static_cast<int64_t>(value);
}

std::vector<std::string> strings(const json::Value& object, const char* key) {
  std::vector<std::string> out;
  for (const auto& item : object.at(key).as_array()) out.push_back(item.as_string());
  return out;
}

}  // namespace

const char* format_name(ModelFormat format) {
  return format == ModelFormat::TorchScript ? "torchscript" : "aoti";
}

Metadata Metadata::from_json(const std::string& text, const std::string& source) {
  Metadata m;
  try {
    const json::Value root = json::Value::parse(text);
    m.modality = root.at("modality").as_string();
    m.ch_names = strings(root, "ch_names");
    m.ch_types = strings(root, "ch_types");
    m.sfreq = root.at("sfreq").as_number();
    m.n_times = positive_int(root, "n_times");
    m.n_regions = positive_int(root, "n_regions");
    m.region_names = strings(root, "region_names");
    for (const auto& row : root.at("region_centroids_mm").as_array()) {
      const auto& xyz = row.as_array();
      if (xyz.size() != 3) throw std::invalid_argument("a region centroid is not (x, y, z)");
      m.region_centroids_mm.push_back({xyz[0].as_number(), xyz[1].as_number(),
                                       xyz[2].as_number()});
    }
    m.normalisation = root.at("normalisation").as_string();
    if (root.contains("channel_groups")) {
      for (const auto& item : root.at("channel_groups").as_array()) {
        const double value = item.as_number();
        if (!(value >= 1 && value <= 1e9 && std::floor(value) == value)) {
          throw std::invalid_argument("'channel_groups' must hold positive integers");
        }
        m.channel_groups.push_back(static_cast<int64_t>(value));
      }
    }
    m.output_layout = root.at("output_layout").as_string();
    m.needs_ops_library = root.at("needs_ops_library").as_bool();
    m.fairesi_version = root.at("fairesi_version").as_string();
    m.torch_version = root.at("torch_version").as_string();
  } catch (const std::invalid_argument& err) {
    throw ModelError("model '" + source + "': invalid " + kMetadataName + ": " + err.what());
  }
  const auto regions = static_cast<size_t>(m.n_regions);
  if (m.ch_names.empty() || m.ch_types.size() != m.ch_names.size() ||
      m.region_names.size() != regions || m.region_centroids_mm.size() != regions ||
      !(m.sfreq > 0)) {
    throw ModelError("model '" + source + "': inconsistent " + kMetadataName +
                     " (channel names/types or region names/centroids do not match the counts, "
                     "or sfreq <= 0)");
  }
  // Only what this runner implements may run: an unknown normalisation or layout would
  // silently give wrong sources.
  if (m.normalisation != "deepsif" && m.normalisation != "deepsif-per-modality") {
    throw ModelError("model '" + source + "': normalisation '" + m.normalisation +
                     "' is not supported by this runner (expected 'deepsif' or "
                     "'deepsif-per-modality')");
  }
  if (m.channel_groups.empty()) m.channel_groups.push_back(m.n_channels());
  int64_t grouped = 0;
  for (const int64_t n : m.channel_groups) grouped += n;
  if (grouped != m.n_channels() ||
      (m.normalisation == "deepsif") != (m.channel_groups.size() == 1)) {
    throw ModelError("model '" + source + "': inconsistent " + kMetadataName +
                     " ('channel_groups' must add up to the channels, and more than one group "
                     "goes with normalisation 'deepsif-per-modality')");
  }
  if (m.output_layout != "regions x times") {
    throw ModelError("model '" + source + "': output layout '" + m.output_layout +
                     "' is not supported by this runner (expected 'regions x times')");
  }
  m.json = text;
  return m;
}

ModelFormat detect_format(const std::string& model_path) {
  require_readable_file(model_path);
  try {
    caffe2::serialize::PyTorchStreamReader reader(model_path);
    if (reader.hasRecord("archive_format") && read_record(reader, "archive_format") == "pt2") {
      return ModelFormat::AOTInductor;
    }
    if (reader.hasRecord("data.pkl") && reader.hasRecord("constants.pkl")) {
      return ModelFormat::TorchScript;
    }
  } catch (const std::exception& err) {
    throw ModelError("model '" + model_path +
                     "': not a readable TorchScript (.pt) or AOTInductor (.pt2) archive (" +
                     whole_message(err) + ")");
  }
  throw ModelError("model '" + model_path +
                   "': a PyTorch archive, but neither a TorchScript module nor an AOTInductor "
                   "package (export it with `fairesi export`)");
}

Metadata read_metadata(const std::string& model_path) {
  const ModelFormat format = detect_format(model_path);
  const std::string missing = "model '" + model_path + "' has no " + kMetadataName +
                              " (not written by `fairesi export`?)";
  std::string text;
  try {
    if (format == ModelFormat::TorchScript) {
      caffe2::serialize::PyTorchStreamReader reader(model_path);
      const std::string record = std::string("extra/") + kMetadataName;
      if (!reader.hasRecord(record)) throw ModelError(missing);
      text = read_record(reader, record);
    } else {
      const auto entries =
          torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(model_path, "model");
      const auto it = entries.find(kMetadataName);
      if (it == entries.end()) throw ModelError(missing);
      text = it->second;
    }
  } catch (const ModelError&) {
    throw;
  } catch (const std::exception& err) {
    throw ModelError("model '" + model_path + "': cannot read its metadata (" + whole_message(err) +
                     ")");
  }
  return Metadata::from_json(text, model_path);
}

struct Runner::Impl {
  std::string path;
  ModelFormat format = ModelFormat::TorchScript;
  Metadata metadata;
  c10::Device device{c10::kCPU};
  std::optional<torch::jit::Module> module;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package;
};

namespace {

bool fused_op_registered() {
  return c10::Dispatcher::singleton().findSchema({kFusedOp, ""}).has_value();
}

// dlopen the op library once per process; its TORCH_LIBRARY block registers the op.
void load_ops_library(const std::string& library, const std::string& model_path) {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (fused_op_registered()) return;
  const std::string why = "model '" + model_path + "' calls " + kFusedOp +
                          " and needs the fairesi op library";
  if (library.empty()) {
    throw ModelError(why +
                     ", but no library path was given (RunnerOptions::ops_library, --ops-library)");
  }
  struct stat st {};
  if (::stat(library.c_str(), &st) != 0) {
    throw ModelError(why + ", but '" + library +
                     "' does not exist (build fairesi with its op library, pass --ops-library, "
                     "or export with `fairesi export --no-fused-op`)");
  }
  if (::dlopen(library.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    const char* reason = ::dlerror();
    throw ModelError(why + ", but '" + library + "' cannot be loaded: " +
                     (reason ? reason : "unknown dlopen error"));
  }
  if (!fused_op_registered()) {
    throw ModelError("'" + library + "' was loaded but does not register " + kFusedOp);
  }
}

c10::Device parse_device(const std::string& text) {
  try {
    c10::Device device(text);
    if (device.is_cpu()) return device;
    if (device.is_cuda()) {
      if (!torch::cuda::is_available()) {
        throw ModelError("device '" + text +
                         "' requested, but this libtorch has no CUDA or no GPU is visible");
      }
      return device;
    }
  } catch (const c10::Error&) {
  }
  throw ModelError("device '" + text + "' is not supported (expected cpu, cuda or cuda:N)");
}

}  // namespace

Runner::Runner(const std::string& model_path, const RunnerOptions& options)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = model_path;
  impl_->format = detect_format(model_path);
  impl_->metadata = read_metadata(model_path);
  impl_->device = parse_device(options.device);
  if (options.threads < 0) {
    throw std::invalid_argument("threads must be >= 0, got " + std::to_string(options.threads));
  }
  if (options.threads > 0) at::set_num_threads(options.threads);
  if (impl_->metadata.needs_ops_library) load_ops_library(options.ops_library, model_path);

  try {
    if (impl_->format == ModelFormat::TorchScript) {
      impl_->module = torch::jit::load(model_path, impl_->device);
      impl_->module->eval();
    } else {
      const auto entries =
          torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(model_path, "model");
      const auto it = entries.find("AOTI_DEVICE_KEY");
      const std::string compiled_for = it == entries.end() ? "cpu" : it->second;
      if (compiled_for != c10::DeviceTypeName(impl_->device.type(), /*lower_case=*/true)) {
        throw ModelError("model '" + model_path + "' was compiled for " + compiled_for +
                         " and cannot run on " + options.device +
                         " (re-export it with `fairesi export --format aoti --device " +
                         c10::DeviceTypeName(impl_->device.type(), true) + "`)");
      }
      impl_->package = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          model_path, "model", /*run_single_threaded=*/false, /*num_runners=*/1,
          impl_->device.is_cuda() ? impl_->device.index() : -1);
    }
  } catch (const ModelError&) {
    throw;
  } catch (const std::exception& err) {
    // c10::Error and also torch::jit::ErrorReport (a std::exception, not a c10::Error),
    // which a crafted archive's TorchScript source raises: a bad model either way.
    std::string reason = whole_message(err);
    if (reason.find("Unknown builtin op: fairesi::") != std::string::npos) {
      reason += " (the model calls the fused op but its metadata says it does not need the op "
                "library; re-export it)";
    }
    throw ModelError("model '" + model_path + "': cannot load the " +
                     format_name(impl_->format) + " model (" + reason + ")");
  }
}

Runner::~Runner() = default;

const Metadata& Runner::metadata() const { return impl_->metadata; }

ModelFormat Runner::format() const { return impl_->format; }

void check_input_shape(const Metadata& m, const std::vector<int64_t>& shape, bool batch) {
  std::ostringstream have;
  for (size_t i = 0; i < shape.size(); ++i) have << (i ? ", " : "(") << shape[i];
  have << ")";
  const std::string expected = batch ? "(batch, " + std::to_string(m.n_channels()) + ", " +
                                           std::to_string(m.n_times) + ")"
                                     : "(" + std::to_string(m.n_channels()) + ", " +
                                           std::to_string(m.n_times) + ")";
  if (shape.size() != (batch ? 3u : 2u)) {
    throw InputError("input of shape " + have.str() + " has " + std::to_string(shape.size()) +
                     " dimensions; expected " + expected + " (channels x times" +
                     (batch ? ", stacked into a batch)" : "; use --batch for a stack of epochs)"));
  }
  const int64_t channels = shape[shape.size() - 2];
  const int64_t times = shape.back();
  if (channels != m.n_channels()) {
    throw InputError("input of shape " + have.str() + " has " + std::to_string(channels) +
                     " channels; the " + m.modality + " model expects " +
                     std::to_string(m.n_channels()) + " (" + expected + ", channel order as in "
                     "the model's metadata, e.g. first '" + m.ch_names.front() + "')");
  }
  if (times != m.n_times) {
    throw InputError("input of shape " + have.str() + " has " + std::to_string(times) +
                     " time samples; the model expects " + std::to_string(m.n_times) + " (" +
                     expected + " at " + std::to_string(m.sfreq) + " Hz)");
  }
  if (batch && shape[0] < 1) throw InputError("input batch is empty");
}

at::Tensor Runner::normalise(const at::Tensor& epochs) {
  const at::Tensor time_mean = epochs.mean({2}, /*keepdim=*/true);  // (B, C, 1)
  const at::Tensor channel_mean =
      epochs.mean({1}, /*keepdim=*/true) - time_mean.mean({1}, /*keepdim=*/true);  // (B, 1, T)
  at::Tensor centred = at::sub(epochs, time_mean).sub_(channel_mean);
  const at::Tensor peak =
      at::linalg_vector_norm(centred, INFINITY, at::IntArrayRef{1, 2}, /*keepdim=*/true)
          .clamp_min(std::numeric_limits<float>::min());
  return centred.div_(peak);
}

at::Tensor Runner::normalise(const at::Tensor& epochs, const std::vector<int64_t>& groups) {
  if (groups.size() <= 1) return normalise(epochs);
  std::vector<at::Tensor> blocks;
  for (const at::Tensor& block : epochs.split_with_sizes(groups, /*dim=*/1)) {
    blocks.push_back(normalise(block.contiguous()));
  }
  return at::cat(blocks, /*dim=*/1);
}

at::Tensor Runner::infer(const at::Tensor& epochs) {
  const bool batch = epochs.dim() == 3;
  check_input_shape(impl_->metadata, epochs.sizes().vec(), batch);
  if (epochs.scalar_type() != at::kFloat && epochs.scalar_type() != at::kDouble) {
    throw InputError(std::string("input has dtype ") + c10::toString(epochs.scalar_type()) +
                     "; expected float32 or float64");
  }
  c10::InferenceMode guard;
  at::Tensor x = epochs.to(impl_->device, at::kFloat).contiguous();
  if (!batch) x = x.unsqueeze(0);
  const at::Tensor finite = at::isfinite(x);
  if (!finite.all().item<bool>()) {
    const at::Tensor where = at::nonzero(finite.logical_not())[0].cpu();
    throw InputError("input sample (epoch " + std::to_string(where[0].item<int64_t>()) +
                     ", channel " + std::to_string(where[1].item<int64_t>()) + ", time " +
                     std::to_string(where[2].item<int64_t>()) +
                     ") is NaN or infinite (or a float64 beyond the float32 range); "
                     "expected finite samples");
  }
  x = normalise(x, impl_->metadata.channel_groups);

  at::Tensor out;
  try {
    if (impl_->module) {
      const c10::IValue result = impl_->module->forward({x});
      if (!result.isTensor()) throw std::runtime_error("the model did not return a tensor");
      out = result.toTensor();
    } else {
      std::vector<at::Tensor> outputs = impl_->package->run({x});
      if (outputs.size() != 1) throw std::runtime_error("the model did not return one tensor");
      out = outputs[0];
    }
  } catch (const c10::Error& err) {
    throw std::runtime_error("inference failed: " + whole_message(err));
  }
  const Metadata& m = impl_->metadata;
  if (out.dim() != 3 || out.size(0) != x.size(0) || out.size(1) != m.n_regions ||
      out.size(2) != x.size(2)) {
    std::ostringstream have;
    have << out.sizes();
    throw std::runtime_error("the model returned shape " + have.str() + "; expected (" +
                             std::to_string(x.size(0)) + ", " + std::to_string(m.n_regions) +
                             ", " + std::to_string(x.size(2)) + ") (batch, regions, times)");
  }
  out = out.to(at::kCPU, at::kFloat).contiguous();
  return batch ? out : out.squeeze(0);
}

}  // namespace fairesi
