# CMake package of the fairesi C++ SDK, installed with the Python package:
#   site-packages/fairesi/include/fairesi/runner.hpp (+ errors.hpp, npy.hpp, json.hpp)
#   site-packages/fairesi/lib/libfairesi_runner.a, libfairesi_ops.so
#   site-packages/fairesi/share/cmake/fairesi/fairesiConfig.cmake (this file)
#
# Use (docs/embedding.md):
#   cmake -DCMAKE_PREFIX_PATH="$(python -c 'import fairesi.runner as r; print(r.cmake_prefix_path())')" ...
#   find_package(fairesi CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE fairesi::runner)
#
# Defines the imported target fairesi::runner (links torch) and the variables
# fairesi_OPS_LIBRARY (the fused-op library, for RunnerOptions::ops_library) and
# fairesi_INFER (the fairesi-infer executable).
include(CMakeFindDependencyMacro)
get_filename_component(_fairesi_root "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

# The torch the package was built against sits next to it in site-packages; a torch
# found through CMAKE_PREFIX_PATH / Torch_DIR is used otherwise.
find_dependency(Torch HINTS "${_fairesi_root}/../torch/share/cmake/Torch")

if(NOT TARGET fairesi::runner)
  add_library(fairesi::runner STATIC IMPORTED)
  set_target_properties(fairesi::runner PROPERTIES
    IMPORTED_LOCATION "${_fairesi_root}/lib/libfairesi_runner.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_fairesi_root}/include/fairesi"
    INTERFACE_LINK_LIBRARIES "${TORCH_LIBRARIES};${CMAKE_DL_LIBS}"
    INTERFACE_COMPILE_FEATURES cxx_std_17)
endif()
set(fairesi_OPS_LIBRARY "${_fairesi_root}/lib/libfairesi_ops.so")
set(fairesi_INFER "${_fairesi_root}/bin/fairesi-infer")
set(fairesi_FOUND TRUE)
unset(_fairesi_root)
