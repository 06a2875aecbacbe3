# Helpers that give every Tessera target the same flags and the shared LibTorch precompiled header.

set(TESSERA_WARNINGS -Wall -Wextra -Wno-unused-parameter)

# One precompiled header for LibTorch, built once and reused by every target (REUSE_FROM needs
# identical flags, which tessera_setup_target guarantees).
add_library(tessera_pch OBJECT "${CMAKE_CURRENT_LIST_DIR}/pch.cpp")
target_link_libraries(tessera_pch PUBLIC torch OpenMP::OpenMP_CXX nlohmann_json::nlohmann_json fmt::fmt
                                         spdlog::spdlog)
target_compile_options(tessera_pch PRIVATE ${TESSERA_WARNINGS})
target_precompile_headers(tessera_pch PRIVATE <torch/torch.h> <nlohmann/json.hpp>
                          <fmt/format.h> <string> <vector> <map> <memory>)

function(tessera_setup_target name)
  target_compile_options(${name} PRIVATE ${TESSERA_WARNINGS})
  target_precompile_headers(${name} REUSE_FROM tessera_pch)
endfunction()

# tessera_add_library(<layer> SOURCES a.cpp ... DEPS tessera_core ...)
# Makes target tessera_<layer> with include root src/ (so code writes #include "tessera/core/error.h").
function(tessera_add_library layer)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  set(name tessera_${layer})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC "${PROJECT_SOURCE_DIR}/src")
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} torch OpenMP::OpenMP_CXX nlohmann_json::nlohmann_json
                                       fmt::fmt spdlog::spdlog)
  tessera_setup_target(${name})
endfunction()

# tessera_add_test(<name> SOURCES ... DEPS ... [LABEL unit|slow] [TIMEOUT s])
# One GoogleTest binary, registered as one CTest test carrying the label (one process per binary:
# loading LibTorch once per TEST would cost more than most tests take).
function(tessera_add_test name)
  cmake_parse_arguments(ARG "" "LABEL;TIMEOUT" "SOURCES;DEPS" ${ARGN})
  if(NOT ARG_LABEL)
    set(ARG_LABEL unit)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} tessera_test_support GTest::gtest GTest::gtest_main)
  tessera_setup_target(${name})
  add_test(NAME ${name} COMMAND ${name} --gtest_color=no)
  set_tests_properties(${name} PROPERTIES LABELS ${ARG_LABEL} TIMEOUT ${ARG_TIMEOUT})
endfunction()
