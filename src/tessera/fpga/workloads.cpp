// The ResNet-18 ImageNet workload in the order of the authors' latency model.
#include "tessera/fpga/workloads.h"

#include <fmt/format.h>

namespace tessera::fpga {

workload::Workload resnet18_imagenet() {
  workload::Workload w;
  w.model = "resnet18-imagenet";
  w.input_shape = {3, 224, 224};
  int64_t side = workload::append_conv(w, "conv1", 3, 64, 7, 2, 224);  // 112
  side = (side + 2 - 3) / 2 + 1;                                       // 3x3/2 max pool: 56
  int64_t in_c = 64;
  const int64_t widths[4] = {64, 128, 256, 512};
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t c = widths[stage];
    const int64_t stride = stage == 0 ? 1 : 2;
    const std::string p = fmt::format("layer{}.", stage + 1);
    const int64_t out = workload::append_conv(w, p + "0.conv1", in_c, c, 3, stride, side);
    workload::append_conv(w, p + "0.conv2", c, c, 3, 1, out);
    if (stage > 0) workload::append_conv(w, p + "0.downsample", in_c, c, 1, stride, side);
    workload::append_conv(w, p + "1.conv1", c, c, 3, 1, out);
    workload::append_conv(w, p + "1.conv2", c, c, 3, 1, out);
    side = out;
    in_c = c;
  }
  workload::Layer fc;
  fc.name = "fc";
  fc.kind = workload::OpKind::Linear;
  fc.in_channels = 512;
  fc.out_channels = 1000;
  w.layers.push_back(fc);
  return w;
}

std::string workload_dir() { return TESSERA_FPGA_WORKLOAD_DIR; }

}  // namespace tessera::fpga
