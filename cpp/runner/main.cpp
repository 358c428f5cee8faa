// fairesi-infer: run an exported fairesi model on a .npy file, without Python.
//
//   fairesi-infer MODEL INPUT.npy OUTPUT.npy [--device cpu|cuda] [--threads N] [--batch]
//                 [--ops-library PATH] [--timing] [--repeat N] [--warmup N]
//   fairesi-infer MODEL --print-metadata
//
// Every failure prints one line "fairesi-infer: error: ..." on stderr and exits non-zero
// (see kUsage for the codes); OUTPUT is written to a temporary file and renamed, so it is
// either complete or absent.
#include <unistd.h>

#include <ATen/Parallel.h>
#include <ATen/ops/from_blob.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "npy.hpp"
#include "runner.hpp"

namespace {

constexpr const char* kUsage = R"(usage: fairesi-infer MODEL INPUT.npy OUTPUT.npy [options]
       fairesi-infer MODEL --print-metadata

Source estimate of EEG/MEG epochs with a model written by `fairesi export`.

  MODEL          TorchScript archive (.pt) or AOTInductor package (.pt2)
  INPUT.npy      float32/float64 .npy in C order (either byte order), raw sensor data of
                 shape (channels, times) in the model's channel order (see
                 --print-metadata); normalised here exactly as fairesi does in Python
  OUTPUT.npy     float32 .npy of shape (regions, times): the source estimate

options:
  --batch             INPUT is a stack of epochs (batch, channels, times); OUTPUT is then
                      (batch, regions, times)
  --device DEV        cpu (default), cuda or cuda:N
  --threads N         intra-op CPU threads (default: libtorch's choice)
  --ops-library PATH  fused op library for models that call it (default:
                      ../lib/libfairesi_ops.so next to this program, as installed)
  --timing            print timings (milliseconds) as one JSON line on stdout
  --repeat N          run the inference N times on the same input (benchmarking); the
                      timing then has p50/p99 over the N runs
  --warmup N          untimed runs before the timed ones (default 3 with --repeat)
  --print-metadata    print the model's metadata JSON on stdout and exit
  --version           print the runner and libtorch versions
  -h, --help          this help

exit codes: 0 success, 1 inference failed, 2 bad command line, 3 bad or unloadable
model, 4 bad input data, 5 output not written.
)";

struct Args {
  std::string model, input, output;
  fairesi::RunnerOptions options;
  bool batch = false;
  bool timing = false;
  bool print_metadata = false;
  int repeat = 1;
  int warmup = -1;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int parse_count(const std::string& flag, const char* text, int minimum) {
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0 || value < minimum || value > 1000000) {
    throw UsageError(flag + " expects an integer >= " + std::to_string(minimum) + ", got '" +
                     text + "'");
  }
  return static_cast<int>(value);
}

// Directory of this executable, for the default op library location.
std::string executable_dir() {
  std::vector<char> buffer(4096);
  const ssize_t n = ::readlink("/proc/self/exe", buffer.data(), buffer.size() - 1);
  if (n <= 0) return ".";
  std::string path(buffer.data(), static_cast<size_t>(n));
  return path.substr(0, path.find_last_of('/'));
}

Args parse_args(int argc, char** argv) {
  Args args;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) throw UsageError(arg + " expects a value");
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--version") {
      std::cout << "fairesi-infer (libtorch " << TORCH_VERSION << ")\n";
      std::exit(0);
    } else if (arg == "--batch") {
      args.batch = true;
    } else if (arg == "--timing") {
      args.timing = true;
    } else if (arg == "--print-metadata") {
      args.print_metadata = true;
    } else if (arg == "--device") {
      args.options.device = value();
    } else if (arg == "--threads") {
      args.options.threads = parse_count(arg, value(), 1);
    } else if (arg == "--ops-library") {
      args.options.ops_library = value();
    } else if (arg == "--repeat") {
      args.repeat = parse_count(arg, value(), 1);
    } else if (arg == "--warmup") {
      args.warmup = parse_count(arg, value(), 0);
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError("unknown option '" + arg + "' (see --help)");
    } else {
      positional.push_back(arg);
    }
  }
  const size_t wanted = args.print_metadata ? 1 : 3;
  if (positional.size() != wanted) {
    throw UsageError(args.print_metadata
                         ? "--print-metadata expects only MODEL"
                         : "expected MODEL INPUT.npy OUTPUT.npy, got " +
                               std::to_string(positional.size()) + " paths (see --help)");
  }
  args.model = positional[0];
  if (!args.print_metadata) {
    args.input = positional[1];
    args.output = positional[2];
    // Writing the output must never replace an input, however the path is spelled.
    std::error_code error;
    for (const std::string& source : {args.input, args.model}) {
      if (std::filesystem::equivalent(args.output, source, error) ||
          std::filesystem::weakly_canonical(args.output, error) ==
              std::filesystem::weakly_canonical(source, error)) {
        throw UsageError("the output " + args.output + " is the input " + source +
                         "; writing it would replace that input: choose another output path");
      }
    }
  }
  if (args.options.ops_library.empty()) {
    args.options.ops_library = executable_dir() + "/../lib/libfairesi_ops.so";
  }
  if (args.warmup < 0) args.warmup = args.repeat > 1 ? 3 : 0;
  return args;
}

// Remove a half-written output file if the user interrupts the write.
void on_signal(int sig) {
  const char* temp = fairesi::pending_output_temp();
  if (temp[0] != '\0') ::unlink(temp);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// Percentile with linear interpolation between order statistics (numpy's default).
double percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double pos = q / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (pos - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

int run(const Args& args) {
  const auto start = std::chrono::steady_clock::now();
  if (args.print_metadata) {
    std::cout << fairesi::read_metadata(args.model).json << "\n";
    return 0;
  }
  // Cheap checks first: the metadata and the input are validated before the model loads.
  const fairesi::Metadata metadata = fairesi::read_metadata(args.model);
  auto t = std::chrono::steady_clock::now();
  fairesi::NpyArray array = fairesi::read_npy(args.input);
  fairesi::check_input_shape(metadata, array.shape, args.batch);
  const at::Tensor epochs = at::from_blob(array.data.data(), array.shape, at::kFloat);
  const double read_ms = ms_since(t);

  t = std::chrono::steady_clock::now();
  fairesi::Runner runner(args.model, args.options);
  const double load_ms = ms_since(t);

  for (int i = 0; i < args.warmup; ++i) runner.infer(epochs);
  std::vector<double> infer_ms;
  at::Tensor sources;
  for (int i = 0; i < args.repeat; ++i) {
    t = std::chrono::steady_clock::now();
    sources = runner.infer(epochs);
    infer_ms.push_back(ms_since(t));
  }

  t = std::chrono::steady_clock::now();
  fairesi::write_npy_atomic(args.output, sources.data_ptr<float>(), sources.sizes().vec());
  const double write_ms = ms_since(t);

  if (args.timing) {
    std::ostringstream json;
    json.precision(6);
    json << "{\"format\": \"" << fairesi::format_name(runner.format()) << "\", \"device\": \""
         << args.options.device << "\", \"threads\": " << at::get_num_threads()
         << ", \"batch\": " << (args.batch ? array.shape[0] : 1)
         << ", \"load_model_ms\": " << load_ms << ", \"read_input_ms\": " << read_ms
         << ", \"infer_ms\": " << infer_ms.front() << ", \"write_output_ms\": " << write_ms
         << ", \"total_ms\": " << ms_since(start);
    if (args.repeat > 1) {
      double sum = 0;
      for (double v : infer_ms) sum += v;
      json << ", \"repeat\": {\"runs\": " << args.repeat << ", \"warmup\": " << args.warmup
           << ", \"p50_ms\": " << percentile(infer_ms, 50) << ", \"p99_ms\": "
           << percentile(infer_ms, 99) << ", \"mean_ms\": " << sum / args.repeat << "}";
    }
    json << "}";
    std::cout << json.str() << std::endl;
  }
  return 0;
}

// The runner's messages are one line already (fairesi::Runner joins libtorch's lines); any
// other multi-line message is joined the same way, so nothing of it is lost.
std::string one_line(const std::string& text) {
  std::string out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) continue;
    if (!out.empty()) out += " | ";
    out += line.substr(first, line.find_last_not_of(" \t\r") - first + 1);
  }
  return out.empty() ? "unknown error" : out;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  int code = 1;
  std::string message;
  try {
    return run(parse_args(argc, argv));
  } catch (const UsageError& err) {
    code = 2;
    message = err.what();
  } catch (const fairesi::ModelError& err) {
    code = 3;
    message = err.what();
  } catch (const fairesi::InputError& err) {
    code = 4;
    message = err.what();
  } catch (const fairesi::OutputError& err) {
    code = 5;
    message = err.what();
  } catch (const std::exception& err) {
    code = 1;
    message = err.what();
  }
  std::cerr << "fairesi-infer: error: " << one_line(message) << std::endl;
  return code;
}
