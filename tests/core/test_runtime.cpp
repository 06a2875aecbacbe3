// core/runtime, seed, log, progress and timer: the small process-wide helpers.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/progress.h"
#include "tessera/core/runtime.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"

namespace tessera {
namespace {

TEST(Runtime, MachineInfoDescribesTheMachine) {
  const nlohmann::json info = machine_info();
  for (const char* key : {"hostname", "cpu", "cores", "torch_threads", "torch_version", "blas"}) {
    EXPECT_TRUE(info.contains(key)) << key;
  }
  EXPECT_GE(info.at("cores").get<int>(), 1);
}

TEST(Runtime, InitRuntimeSetsThreadsAndRejectsNegatives) {
  const int before = torch::get_num_threads();
  init_runtime(1);
  EXPECT_EQ(torch::get_num_threads(), 1);
  EXPECT_THROW(init_runtime(-1), Error);
  init_runtime(before);
}

TEST(Runtime, ScopedThreadsRestoresTheThreadCount) {
  const int before = torch::get_num_threads();
  torch::set_num_threads(2);
  {
    const ScopedThreads one(1);
    EXPECT_EQ(torch::get_num_threads(), 1);
    {
      const ScopedThreads unchanged(0);
      EXPECT_EQ(torch::get_num_threads(), 1);
    }
    EXPECT_EQ(torch::get_num_threads(), 1);
  }
  EXPECT_EQ(torch::get_num_threads(), 2);
  torch::set_num_threads(before);
}

TEST(Runtime, GitCommitIsNeverEmpty) { EXPECT_FALSE(std::string(git_commit()).empty()); }

TEST(Seed, SameSeedSameStreamsDifferentStreamsDiffer) {
  auto a = make_rng(42, 0);
  auto b = make_rng(42, 0);
  auto c = make_rng(42, 1);
  auto d = make_rng(43, 0);
  const uint64_t a0 = a();
  EXPECT_EQ(a0, b());
  EXPECT_NE(a0, c());
  EXPECT_NE(a0, d());
}

TEST(Seed, SeedEverythingMakesTorchReproducible) {
  seed_everything(99);
  const torch::Tensor x = torch::rand({8});
  seed_everything(99);
  EXPECT_TRUE(torch::equal(x, torch::rand({8})));
}

TEST(Log, LevelsAndQuietMode) {
  EXPECT_THROW(log::set_level("loud"), Error);
  EXPECT_NO_THROW(log::set_level("debug"));
  EXPECT_NO_THROW(log::set_level("off"));
  log::set_quiet(true);
  EXPECT_TRUE(log::quiet());
  EXPECT_FALSE(ProgressBar::enabled());  // quiet hides progress bars
  log::set_quiet(false);
  EXPECT_FALSE(log::quiet());
  log::set_level("info");
}

TEST(Progress, UpdatesPastTheTotalAreHarmless) {
  ProgressBar bar("test", 3);
  bar.set_postfix("loss 0.5");
  bar.update(2);
  bar.update(5);
  bar.finish();
  bar.finish();  // idempotent
  ProgressBar zero("empty", 0);
  zero.update();
  SUCCEED();
}

TEST(Timer, ElapsedIsMonotonic) {
  Timer timer;
  const int64_t t1 = timer.elapsed_us();
  volatile double sink = 0;
  for (int i = 0; i < 100000; ++i) sink = sink + i;
  const int64_t t2 = timer.elapsed_us();
  EXPECT_GE(t1, 0);
  EXPECT_GE(t2, t1);
  timer.reset();
  EXPECT_LE(timer.elapsed_us(), t2 + 1000000);
  EXPECT_GE(timer.elapsed_s(), 0.0);
}

}  // namespace
}  // namespace tessera
