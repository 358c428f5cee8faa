// Fuzz driver for the .npy reader, built with AddressSanitizer by bench/fuzz_npy.py:
//
//   g++ -std=c++17 -g -O1 -fsanitize=address,undefined fuzz_npy.cpp npy.cpp -o fuzz_npy
//   fuzz_npy LIST_FILE
//
// LIST_FILE holds one .npy path per line. For each file the driver prints one line:
// "ok <dims> <fnv1a-64 of the float32 data, hex>" when the reader accepts it, or
// "error <message>" when it throws fairesi::InputError. Any other exception, a crash or an
// ASan report ends the process with a non-zero status.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "npy.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_npy LIST_FILE\n";
    return 2;
  }
  std::ifstream list(argv[1]);
  std::string path;
  while (std::getline(list, path)) {
    try {
      const fairesi::NpyArray array = fairesi::read_npy(path);
      uint64_t hash = 0xcbf29ce484222325ULL;
      const auto* bytes = reinterpret_cast<const unsigned char*>(array.data.data());
      for (size_t i = 0; i < array.data.size() * sizeof(float); ++i) {
        hash = (hash ^ bytes[i]) * 0x100000001b3ULL;
      }
      std::string dims;
      for (size_t i = 0; i < array.shape.size(); ++i) {
        dims += (i ? "x" : "") + std::to_string(array.shape[i]);
      }
      std::printf("ok %s %016llx\n", dims.c_str(), static_cast<unsigned long long>(hash));
    } catch (const fairesi::InputError& err) {
      std::string message = err.what();
      for (char& c : message) {
        if (c == '\n') c = ' ';
      }
      std::printf("error %s\n", message.c_str());
    }
  }
  return 0;
}
