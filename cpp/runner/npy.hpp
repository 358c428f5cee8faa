// Reading and writing NumPy .npy files of float32/float64 arrays (the runner's I/O).
//
// The reader accepts format versions 1.0, 2.0 and 3.0, little- or big-endian float32 or
// float64 data in C order, and checks every length against the file size, so a truncated,
// padded or malformed file is reported (InputError) instead of being read past
// its end. It has no torch dependency, so it can be fuzzed on its own under
// AddressSanitizer (tests/test_runner.py, bench/fuzz_npy.py).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "errors.hpp"

namespace fairesi {

// A dense float32 array in C order; values read from float64 files are rounded to float32
// (beyond the float32 range they become infinite). Values are not checked for NaN/Inf here:
// Runner::infer checks every input it gets.
struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
  // Data type of the file it came from: "float32" or "float64".
  std::string source_dtype;
};

// Parse the bytes of a whole .npy file. `name` only appears in error messages.
// Throws InputError (a std::invalid_argument) naming the problem and what was expected.
NpyArray parse_npy(const uint8_t* bytes, size_t size, const std::string& name);

// Read and parse a .npy file (InputError also when it cannot be opened).
NpyArray read_npy(const std::string& path);

// Serialise a float32 C-order array as .npy format 1.0 (little-endian '<f4').
std::string serialise_npy(const float* data, const std::vector<int64_t>& shape);

// Write `data` to `path` through a temporary file in the same directory that is renamed
// onto `path` only when it is complete, so `path` never holds a partial file. Throws
// OutputError (with the OS reason) when the file cannot be written.
void write_npy_atomic(const std::string& path, const float* data,
                      const std::vector<int64_t>& shape);

// The temporary file write_npy_atomic is writing right now ("" when none). A signal
// handler may unlink it: the buffer stays valid for the whole process.
const char* pending_output_temp();

}  // namespace fairesi
