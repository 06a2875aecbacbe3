// Built-in workloads of the N3H-Core benchmark: ResNet-18 with ImageNet shapes (224x224, 1000
// classes), the 21 GEMMs the authors' latency model hard-codes, in their order.
#pragma once

#include <string>

#include "tessera/core/workload.h"

namespace tessera::fpga {

/// conv1 (7x7/2), the layer1 convs, then per stage .0.conv1, .0.conv2, .0.downsample, .1.conv1,
/// .1.conv2, then fc (research/hw_security.md 1.3).
workload::Workload resnet18_imagenet();

/// The folder of the shipped workload files (src/tessera/fpga/workloads).
std::string workload_dir();

}  // namespace tessera::fpga
