// Model inversion and its defenses: decoder shapes for every cut and bottleneck, the SSIM hinge
// regulariser's gradient (finite differences), the smashed-data perturbations, distance
// correlation, a working training-based attack, the defended step over both transports, and
// every bad-input path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <future>
#include <thread>

#include "sfl_test_util.h"
#include "tessera/core/error.h"
#include "tessera/core/image.h"
#include "tessera/core/seed.h"
#include "tessera/models/registry.h"
#include "tessera/splitfed/inversion.h"
#include "tessera/splitfed/resistance.h"
#include "tessera/splitfed/runtime.h"
#include "test_support.h"

namespace tessera::splitfed {
namespace {

using testing_util::tiny_vgg;

class InversionTest : public testing::SeededTest {};

models::ModelConfig vgg32() {
  models::ModelConfig config = tiny_vgg();
  config.image_size = 32;
  return config;
}

TEST_F(InversionTest, DecoderRebuildsTheImageShapeAtEveryImageCutAndBottleneck) {
  const models::ModelConfig config = vgg32();
  models::Model probe = models::create(config);
  int64_t image_cuts = 0;
  for (int64_t cut = 1; cut < static_cast<int64_t>(probe->n_units()); ++cut) {
    const std::vector<int64_t> shape = probe->shape_after(cut);
    for (const auto& [channels, stride] :
         std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {2, 1}, {1, 2}}) {
      if (shape.size() != 3 && channels > 0) continue;  // a bottleneck needs an image cut
      if (stride == 2 && shape.size() == 3 && shape[1] < 2) continue;
      auto [client, server] = make_split(config, SplitOptions{cut, channels, stride});
      client->eval();
      const torch::Tensor z = client->forward(torch::rand({2, 1, 32, 32}));
      const std::vector<int64_t> smashed = client->smashed_shape();
      for (const auto& spec : decoder_suite()) {
        const std::string name = decoder_name(spec);
        if (smashed.size() != 3) {
          EXPECT_THROW(Decoder(spec, smashed, std::vector<int64_t>{1, 32, 32}), Error)
              << "cut " << cut;
          continue;
        }
        Decoder decoder(spec, smashed, std::vector<int64_t>{1, 32, 32});
        decoder->eval();
        const torch::Tensor x = decoder->forward(z);
        ASSERT_EQ(x.sizes(), (std::vector<int64_t>{2, 1, 32, 32}))
            << name << " cut " << cut << " bottleneck " << channels << "S" << stride;
        EXPECT_GT(x.min().item<float>(), 0.0f);
        EXPECT_LT(x.max().item<float>(), 1.0f);
      }
      if (smashed.size() == 3 && channels == 0) ++image_cuts;
    }
  }
  EXPECT_EQ(image_cuts, 13);  // VGG-11: every cut before the flatten
}

TEST_F(InversionTest, DecoderCapacitiesGrowInTheSuiteOrder) {
  int64_t previous = 0;
  for (const auto& spec : decoder_suite()) {
    Decoder decoder(spec, std::vector<int64_t>{8, 8, 8}, std::vector<int64_t>{1, 32, 32});
    int64_t n = 0;
    for (const auto& p : decoder->parameters()) n += p.numel();
    EXPECT_GT(n, previous) << decoder_name(spec);
    previous = n;
  }
}

TEST_F(InversionTest, HingeGradientMatchesFiniteDifferencesAndVanishesBelowTau) {
  const torch::Tensor x = torch::rand({1, 1, 9, 9}, torch::kFloat64);
  for (const double noise : {0.05, 0.6}) {
    torch::Tensor r = (x + noise * torch::randn({1, 1, 9, 9}, torch::kFloat64)).clamp(0, 1);
    r.requires_grad_(true);
    const double lambda = 0.7, tau = 0.5;
    const torch::Tensor h = ssim_hinge(r, x, lambda, tau);
    h.backward();
    const double s = image::ssim(r.detach(), x).item<double>();
    if (s <= tau) {
      EXPECT_EQ(h.item<double>(), 0.0);
      EXPECT_EQ(r.grad().abs().max().item<double>(), 0.0) << "noise " << noise;
      continue;
    }
    EXPECT_NEAR(h.item<double>(), lambda * (s - tau), 1e-12);
    const double eps = 1e-6;
    for (const int64_t i : {0, 10, 40, 80}) {
      torch::Tensor plus = r.detach().clone(), minus = r.detach().clone();
      plus.view(-1)[i] += eps;
      minus.view(-1)[i] -= eps;
      const double fd = (ssim_hinge(plus, x, lambda, tau).item<double>() -
                         ssim_hinge(minus, x, lambda, tau).item<double>()) /
                        (2 * eps);
      EXPECT_NEAR(r.grad().view(-1)[i].item<double>(), fd, 1e-7) << "pixel " << i;
    }
  }
}

TEST_F(InversionTest, SmashedPerturbationsHaveTheirStatedEffect) {
  const torch::Tensor z = torch::rand({16, 8, 8, 8}) + 0.5;  // all positive
  DefenseOptions d;
  d.kind = DefenseKind::dropout;
  d.strength = 0.25;
  const double zeroed = (smashed_transform(d)(z) == 0).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(zeroed, 0.25, 0.02);
  d.kind = DefenseKind::topk;
  d.strength = 0.6;
  const torch::Tensor pruned = smashed_transform(d)(z);
  const int64_t k = static_cast<int64_t>(std::floor(0.6 * z.numel()));
  EXPECT_EQ((pruned == 0).sum().item<int64_t>(), k);
  // The kept values are exactly the largest ones.
  EXPECT_GE(pruned.max().item<float>(), z.max().item<float>());
  EXPECT_GE(pruned.masked_select(pruned != 0).min().item<float>(),
            std::get<0>(z.flatten().sort())[k - 1].item<float>());
  d.kind = DefenseKind::laplace;
  d.strength = 10.0;  // scale 0.1, standard deviation sqrt(2) * 0.1
  EXPECT_NEAR((smashed_transform(d)(z) - z).std().item<double>(), std::sqrt(2.0) * 0.1, 0.01);
  d.kind = DefenseKind::gaussian;
  EXPECT_NEAR((smashed_transform(d)(z) - z).std().item<double>(),
              std::sqrt(2.0 * std::log(1.25 / 1e-4)) / 10.0, 0.02);
  d.kind = DefenseKind::nopeek;
  EXPECT_FALSE(static_cast<bool>(smashed_transform(d)));
}

TEST_F(InversionTest, DistanceCorrelationIsOneForAffineMapsAndLowerForIndependentData) {
  const torch::Tensor x = torch::randn({32, 20}, torch::kFloat64);
  EXPECT_NEAR(distance_correlation(x, x).item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(distance_correlation(x, 3 * x + 1).item<double>(), 1.0, 1e-6);
  const double independent =
      distance_correlation(x, torch::randn({32, 20}, torch::kFloat64)).item<double>();
  const double related =
      distance_correlation(x, x + 0.3 * torch::randn({32, 20}, torch::kFloat64)).item<double>();
  EXPECT_LT(independent, related);
  EXPECT_GT(related, 0.9);
}

TEST_F(InversionTest, TrainingBasedAttackReconstructsAnUndefendedShallowCut) {
  // Uniform-noise images: nothing to learn but the inverse of f_c (the mean image scores 1/12).
  const torch::Tensor images = torch::rand({320, 1, 8, 8});
  auto [client, server] = make_split(tiny_vgg(), SplitOptions{1});
  InversionOptions o;
  o.decoder = parse_decoder("conv_normN0C16");
  o.epochs = 40;
  o.batch_size = 16;
  o.lr = 1e-2;
  o.seed = 3;
  const torch::Tensor targets = images.slice(0, 0, 32);
  const InversionResult r = attack_training(client, images.slice(0, 32), targets, o);
  const torch::Tensor mean = images.slice(0, 32).mean(0, true).expand_as(targets);
  const double baseline = image::mse(mean, targets).item<double>();
  EXPECT_LT(r.metrics.mse, 0.5 * baseline);
  EXPECT_NEAR(r.metrics.psnr, 10 * std::log10(1 / r.metrics.mse), 1e-9);
  EXPECT_EQ(r.reconstructions.sizes(), targets.sizes());
  // Optimisation-based MI halves the error of its starting point (the grey image).
  OptimizationInversionOptions opt;
  opt.steps = 300;
  opt.lr = 0.05;
  const torch::Tensor few = targets.slice(0, 0, 8);
  const InversionResult m = attack_optimization(client, few, opt);
  EXPECT_LT(m.metrics.mse, 0.5 * (few - 0.5).pow(2).mean().item<double>());
}

TEST_F(InversionTest, PatienceStopsADecoderOnceItsValidationErrorStopsFalling) {
  const torch::Tensor images = torch::rand({160, 1, 8, 8});
  auto [client, server] = make_split(tiny_vgg(), SplitOptions{1});
  InversionOptions o;
  o.decoder = parse_decoder("conv_normN0C16");
  o.epochs = 60;
  o.batch_size = 16;
  o.lr = 1e-2;
  o.seed = 3;
  const torch::Tensor targets = images.slice(0, 0, 32), aux = images.slice(0, 32);
  const InversionResult full = attack_training(client, aux, targets, o);
  ASSERT_EQ(full.val_curve.size(), 60u);  // one validation MSE per epoch
  o.patience = 1;
  const InversionResult early = attack_training(client, aux, targets, o);
  ASSERT_LT(early.val_curve.size(), 60u);
  // It stopped one epoch after its best, and its curve is the full run's up to there.
  const auto best = std::min_element(early.val_curve.begin(), early.val_curve.end());
  EXPECT_EQ(static_cast<size_t>(best - early.val_curve.begin()) + 2, early.val_curve.size());
  for (size_t i = 0; i < early.val_curve.size(); ++i)
    EXPECT_NEAR(early.val_curve[i], full.val_curve[i], 1e-6 * full.val_curve[i]) << "epoch " << i;
  o.patience = -1;
  EXPECT_THROW(o.validate(), Error);
}

TEST_F(InversionTest, DecoderPretrainingRaisesHeldOutSsimAndRunsBeforeTheFirstStep) {
  const torch::Tensor images = torch::rand({160, 1, 8, 8});
  auto [client, server] = make_split(tiny_vgg(), SplitOptions{1});
  const torch::Tensor held_out = images.slice(0, 128);
  const auto held_out_ssim = [&](Decoder& d) {
    d->eval();
    torch::NoGradGuard no_grad;
    return image::ssim(d->forward(smashed_of(client, held_out)), held_out).item<double>();
  };
  seed_everything(5);
  Decoder decoder(parse_decoder("conv_normN0C16"), client->smashed_shape(),
                  std::vector<int64_t>{1, 8, 8});
  const double before = held_out_ssim(decoder);
  const double train_ssim = pretrain_decoder(decoder, client, images.slice(0, 0, 128), 5, 1e-2, 5);
  const double after = held_out_ssim(decoder);
  EXPECT_GT(after, before + 0.05) << "before " << before << ", train SSIM " << train_ssim;
  // In a run: the strategy pre-trains once, before its first step, and reports it apart.
  const data::Dataset train = data::make_synthetic(48, 1, 8, 3, 1);
  SflOptions o = testing_util::tiny_options(train.size(), 1, Ordering::v2);
  o.epochs = 1;
  DefenseOptions d;
  d.kind = DefenseKind::ressfl;
  d.decoder = parse_decoder("conv_normN0C16");
  d.decoder_pretrain_epochs = 2;
  auto strategy = std::make_shared<DefenseStrategy>(d, 0, train.images);
  run_in_process(o, train, nullptr, {}, {{0, strategy}});
  EXPECT_GT(strategy->pretrain_seconds(), 0.0);
  EXPECT_EQ(strategy->steps(), 6);
  d.decoder_pretrain_epochs = -1;
  EXPECT_THROW(d.validate(), Error);
}

TEST_F(InversionTest, AttackerAwareTrainingRunsTheSameOverBothTransports) {
  // One client, so the in-process and gRPC runs are deterministic and must agree exactly.
  const data::Dataset train = data::make_synthetic(48, 1, 8, 3, 1);
  SflOptions o = testing_util::tiny_options(train.size(), 1, Ordering::v2);
  o.epochs = 1;
  DefenseOptions d;
  d.kind = DefenseKind::attacker_aware;
  d.decoder = parse_decoder("conv_normN0C16");
  d.tau = 0.0;
  d.seed = 4;
  auto local = std::make_shared<DefenseStrategy>(d);
  const RunResult a = run_in_process(o, train, nullptr, {}, {{0, local}});
  EXPECT_EQ(local->steps(), 6);
  EXPECT_GT(local->compute_seconds(), 0.0);
  EXPECT_GE(local->last_ssim(), -1.0);

  net::ServerOptions server_options;
  server_options.address = "127.0.0.1:0";
  server_options.tokens = {{"client0", "t"}};
  std::promise<int> port;
  std::future<int> port_future = port.get_future();
  RunResult b;
  std::thread server(
      [&] { b = serve_grpc(o, {}, server_options, 200, [&](int p) { port.set_value(p); }); });
  net::ClientOptions client_options;
  client_options.address = "127.0.0.1:" + std::to_string(port_future.get());
  client_options.client_id = "client0";
  client_options.token = "t";
  auto remote = std::make_shared<DefenseStrategy>(d);
  run_grpc_client(client_options, train, remote);
  server.join();
  ASSERT_EQ(a.client_state.size(), b.client_state.size());
  for (size_t i = 0; i < a.client_state.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a.client_state[i].second, b.client_state[i].second, 1e-5, 1e-6))
        << a.client_state[i].first;
  }
  // The hinge changed the client model relative to an honest run.
  const RunResult honest = run_in_process(o, train, nullptr);
  double diff = 0.0;
  for (size_t i = 0; i < a.client_state.size(); ++i) {
    diff += (a.client_state[i].second.to(torch::kFloat64) -
             honest.client_state[i].second.to(torch::kFloat64))
                .abs()
                .sum()
                .item<double>();
  }
  EXPECT_GT(diff, 0.0);
}

TEST_F(InversionTest, TransferKeepsTheExpertButReinitialisesTheClassifier) {
  SflOptions source = testing_util::tiny_options(10, 1, Ordering::v2);
  SflOptions target = source;
  target.seed = 99;
  auto [client, server] = make_split(source.model, source.split);
  const State expert_server = get_state(*server);
  const auto [c, s] = transfer_states(target, source, get_state(*client), expert_server);
  ASSERT_EQ(s.size(), expert_server.size());
  int64_t same = 0, fresh = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i].second.is_floating_point() && !torch::equal(s[i].second, expert_server[i].second)) {
      ++fresh;
      EXPECT_NE(s[i].first.find("fc"), std::string::npos) << s[i].first;
    } else {
      ++same;
    }
  }
  EXPECT_GT(fresh, 0);
  EXPECT_GT(same, fresh);
  target.split.cut = 5;
  EXPECT_THROW(transfer_states(target, source, get_state(*client), expert_server), Error);
}

TEST_F(InversionTest, BadInputIsAClearError) {
  DefenseOptions d;
  d.kind = DefenseKind::attacker_aware;
  d.lambda = -0.1;
  EXPECT_THROW(d.validate(), Error);
  d.lambda = std::nan("");
  EXPECT_THROW(d.validate(), Error);
  d.lambda = 0.3;
  d.tau = 1.0;
  EXPECT_THROW(d.validate(), Error);
  d.tau = -0.2;
  EXPECT_THROW(d.validate(), Error);
  d.tau = 0.5;
  EXPECT_NO_THROW(d.validate());
  d.decoder.channels = 0;
  EXPECT_THROW(d.validate(), Error);
  d.decoder = parse_decoder("res_normN4C64");
  EXPECT_EQ(decoder_name(d.decoder), "res_normN4C64");
  EXPECT_THROW(parse_decoder("unet"), Error);
  EXPECT_THROW(parse_defense("homomorphic"), Error);
  try {
    parse_defense("homomorphic");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("homomorphic"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("attacker_aware"), std::string::npos);
  }
  for (const DefenseKind kind : all_defenses()) {
    EXPECT_EQ(parse_defense(defense_name(kind)), kind);
  }
  d.kind = DefenseKind::dropout;
  d.strength = 1.5;
  EXPECT_THROW(d.validate(), Error);
  EXPECT_THROW(parse_decoder("res_normN4"), Error);
  EXPECT_THROW(parse_decoder("mlp"), Error);
  EXPECT_THROW(Decoder(parse_decoder("conv_normN0C16"), std::vector<int64_t>{8, 8, 8},
                       std::vector<int64_t>{1, 28, 28}),
               Error);  // 28 / 8 not 2^u
  InversionOptions o;
  o.decoder.depth = 17;
  EXPECT_THROW(o.validate(), Error);
  // A cut that does not exist in the model.
  EXPECT_THROW(make_split(vgg32(), SplitOptions{99}), Error);
  EXPECT_THROW(make_split(vgg32(), SplitOptions{0}), Error);
}

}  // namespace
}  // namespace tessera::splitfed
