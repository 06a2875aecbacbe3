// Tensor encoding and validation of the federated transport: round trips, and every malformed
// tensor (dtype, shape, size, NaN/Inf, hostile dims) refused with tessera::Error.
#include <gtest/gtest.h>

#include <limits>

#include "tessera/core/error.h"
#include "tessera/net/message.h"
#include "test_support.h"

namespace tessera::net {
namespace {

class NetMessage : public testing::SeededTest {};

TEST_F(NetMessage, BytesRoundTripEveryDtype) {
  const std::vector<torch::Tensor> tensors = {torch::randn({2, 3, 4}),
                                              torch::randn({5}, torch::kFloat64),
                                              torch::randint(0, 100, {7}, torch::kInt64),
                                              torch::randint(0, 100, {3, 2}, torch::kInt32),
                                              torch::randint(0, 255, {4}, torch::kUInt8),
                                              torch::empty({0, 3})};
  for (const auto& t : tensors) {
    const auto shape = t.sizes().vec();
    const torch::Tensor back =
        tensor_from_bytes(dtype_name(t.scalar_type()), shape, tensor_bytes(t), "t");
    EXPECT_EQ(back.scalar_type(), t.scalar_type());
    EXPECT_TRUE(torch::equal(back, t)) << t.sizes();
  }
}

TEST_F(NetMessage, NonContiguousTensorIsSentInLogicalOrder) {
  const torch::Tensor t = torch::arange(6, torch::kFloat32).reshape({2, 3}).t();
  const torch::Tensor back = tensor_from_bytes("F32", {3, 2}, tensor_bytes(t), "t");
  EXPECT_TRUE(torch::equal(back, t));
}

TEST_F(NetMessage, DecodeRefusesMalformedTensors) {
  const std::string four_floats(16, '\0');
  EXPECT_THROW(tensor_from_bytes("F16", {4}, four_floats, "t"), Error);   // unsupported dtype
  EXPECT_THROW(tensor_from_bytes("F32", {5}, four_floats, "t"), Error);   // too few bytes
  EXPECT_THROW(tensor_from_bytes("F32", {3}, four_floats, "t"), Error);   // too many bytes
  EXPECT_THROW(tensor_from_bytes("F32", {-4}, four_floats, "t"), Error);  // negative dim
  // Dims whose product overflows int64 must be caught before multiplying.
  EXPECT_THROW(tensor_from_bytes("F32", {int64_t{1} << 40, int64_t{1} << 40}, four_floats, "t"),
               Error);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const float values[2] = {1.0f, nan};
  EXPECT_THROW(
      tensor_from_bytes("F32", {2}, std::string(reinterpret_cast<const char*>(values), 8), "t"),
      Error);
  const float values_inf[2] = {inf, 0.0f};
  EXPECT_THROW(
      tensor_from_bytes("F32", {2}, std::string(reinterpret_cast<const char*>(values_inf), 8), "t"),
      Error);
}

TEST_F(NetMessage, CheckTensorNamesEveryMismatch) {
  const TensorSpec spec{torch::kFloat32, {-1, 8, 4, 4}, 1000};
  EXPECT_NO_THROW(check_tensor(torch::zeros({3, 8, 4, 4}), spec, "z"));
  EXPECT_THROW(check_tensor(torch::zeros({3, 8, 4, 4}, torch::kFloat64), spec, "z"), Error);
  EXPECT_THROW(check_tensor(torch::zeros({3, 8, 4}), spec, "z"), Error);
  EXPECT_THROW(check_tensor(torch::zeros({3, 8, 4, 5}), spec, "z"), Error);
  EXPECT_THROW(check_tensor(torch::zeros({8, 8, 4, 4}), spec, "z"), Error);  // 1024 > 1000
  torch::Tensor bad = torch::zeros({2, 8, 4, 4});
  bad[1][2][3][0] = std::numeric_limits<float>::quiet_NaN();
  try {
    check_tensor(bad, spec, "smashed data");
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("smashed data"), std::string::npos) << e.what();
  }
  EXPECT_THROW(check_tensor(torch::Tensor(), spec, "z"), Error);
}

TEST_F(NetMessage, MessageLookupAndSecrets) {
  Message m;
  m.method = "step";
  m.add("z", torch::ones({2}));
  EXPECT_TRUE(m.contains("z"));
  EXPECT_EQ(m.payload_bytes(), 8);
  EXPECT_THROW(m.tensor("y"), Error);
  EXPECT_TRUE(secrets_equal("abc", "abc"));
  EXPECT_FALSE(secrets_equal("abc", "abd"));
  EXPECT_FALSE(secrets_equal("abc", "abcd"));
}

}  // namespace
}  // namespace tessera::net
