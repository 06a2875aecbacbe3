// core/error: TESSERA_CHECK throws tessera::Error with the formatted message, and only on failure.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "tessera/core/error.h"

namespace tessera {
namespace {

TEST(ErrorCheck, PassingConditionDoesNotThrow) {
  EXPECT_NO_THROW(TESSERA_CHECK(1 + 1 == 2, "never shown {}", 1));
}

TEST(ErrorCheck, FailingConditionThrowsTheFormattedMessage) {
  const int threads = -3;
  try {
    TESSERA_CHECK(threads >= 0, "--threads must be >= 0, got {}", threads);
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "--threads must be >= 0, got -3");
  }
}

TEST(ErrorCheck, MessageWithoutArgumentsAndWithSeveral) {
  EXPECT_THROW(TESSERA_CHECK(false, "plain message"), Error);
  try {
    TESSERA_CHECK(false, "{} x {} = {:.1f} in '{}'", 2, 3, 6.0, "grid");
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "2 x 3 = 6.0 in 'grid'");
  }
}

TEST(ErrorCheck, ConditionIsEvaluatedExactlyOnce) {
  int calls = 0;
  auto counted = [&] {
    ++calls;
    return true;
  };
  TESSERA_CHECK(counted(), "unused");
  EXPECT_EQ(calls, 1);
  int failing_calls = 0;
  EXPECT_THROW(TESSERA_CHECK(++failing_calls < 0, "n = {}", failing_calls), Error);
  EXPECT_EQ(failing_calls, 1);
}

TEST(ErrorCheck, ErrorIsARuntimeError) {
  try {
    TESSERA_CHECK(false, "boom");
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "boom");
    return;
  }
  FAIL() << "tessera::Error must derive from std::runtime_error";
}

TEST(ErrorCheck, WorksAsASingleStatementInIfElse) {
  bool reached_else = false;
  if (false)
    TESSERA_CHECK(false, "not taken");
  else
    reached_else = true;
  EXPECT_TRUE(reached_else);
}

}  // namespace
}  // namespace tessera
