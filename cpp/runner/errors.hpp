// Exception types of the runner, so callers (and fairesi-infer's exit codes) can tell a bad
// model from bad input data from an output that could not be written.
#pragma once

#include <stdexcept>
#include <string>

namespace fairesi {

// The model file is missing, corrupt, lacks fairesi metadata, or needs a missing library.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The input data is malformed or does not fit the model (shape, dtype, NaN/Inf ...).
class InputError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// The output file could not be written (nothing is left under its name).
class OutputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace fairesi
