// Embedding fairesi::Runner in an acquisition program: a minimal example.
//
//   example_embed MODEL.pt [OPS_LIBRARY]
//
// Builds one epoch of synthetic sensor data with the model's channel count and epoch length,
// runs it through the model and prints the region with the largest source amplitude. A real
// program would fill `epoch` from its amplifier buffer, in the channel order given by
// runner.metadata().ch_names. Build: `cmake --build BUILD --target fairesi-embed-example`.
#include <torch/torch.h>

#include <iostream>

#include "runner.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: example_embed MODEL.pt [OPS_LIBRARY]\n";
    return 2;
  }
  try {
    fairesi::RunnerOptions options;
    options.threads = 2;
    if (argc > 2) options.ops_library = argv[2];
    fairesi::Runner runner(argv[1], options);
    const fairesi::Metadata& meta = runner.metadata();

    // (C, T) raw sensor data; the runner normalises it as fairesi does in Python.
    const at::Tensor epoch = torch::randn({meta.n_channels(), meta.n_times});
    const at::Tensor sources = runner.infer(epoch);  // (R, T) float32
    const int64_t region = sources.abs().amax(1).argmax().item<int64_t>();
    std::cout << "strongest region: " << meta.region_names[region] << " at ("
              << meta.region_centroids_mm[region][0] << ", "
              << meta.region_centroids_mm[region][1] << ", "
              << meta.region_centroids_mm[region][2] << ") mm\n";
  } catch (const std::exception& err) {
    std::cerr << "error: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
