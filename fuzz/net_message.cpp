// Fuzzes the net message decoder: the input is a serialized proto::Request (the wire format);
// it is decoded as net/transport.cpp's parse_meta and decode_tensors do (internal helpers of
// the gRPC service): bounded JSON metadata that must be an object, unique tensor names, and
// net::tensor_from_bytes for each tensor (dtype, dims, element count, byte length, finite values).
#include "fuzz.h"
#include "tessera/core/json.h"
#include "tessera/net/federated.pb.h"
#include "tessera/net/message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tessera::net::proto::Request request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;  // protobuf refuses it
  tessera::fuzz::refuse_cleanly([&] {
    tessera::net::Message message;
    message.method = request.method();
    if (!request.meta_json().empty()) {
      message.meta = tessera::parse_json(request.meta_json(), "metadata");
      TESSERA_CHECK(message.meta.is_object(), "metadata is not a JSON object");
    }
    for (const auto& t : request.tensors()) {
      TESSERA_CHECK(!message.contains(t.name()), "tensor '{}' appears twice", t.name());
      const std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
      message.tensors.emplace_back(
          t.name(), tessera::net::tensor_from_bytes(t.dtype(), shape, t.data(), "fuzz"));
    }
    message.payload_bytes();
  });
  return 0;
}
