# Every dependency is a Debian 12 package; scripts/setup.sh installs them.
find_package(Torch REQUIRED)           # libtorch-dev (LibTorch 1.13, CPU)
find_package(CLI11 REQUIRED)           # libcli11-dev
find_package(nlohmann_json 3 REQUIRED) # nlohmann-json3-dev
find_package(spdlog REQUIRED)          # libspdlog-dev
find_package(fmt REQUIRED)             # libfmt-dev
find_package(ZLIB REQUIRED)            # zlib1g-dev
find_package(Threads REQUIRED)
# LibTorch's at::parallel_for is a header template that runs serially unless the calling code is
# itself compiled with OpenMP (ATen/ParallelOpenMP.h), so every Tessera target gets -fopenmp.
find_package(OpenMP REQUIRED)          # libgomp (gcc)
if(TESSERA_BUILD_TESTS)
  find_package(GTest REQUIRED)         # libgtest-dev
  include(GoogleTest)
endif()
if(TESSERA_BUILD_BENCH)
  find_package(benchmark REQUIRED)     # libbenchmark-dev
endif()
