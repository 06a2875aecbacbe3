// DDPG (HAQ's agent) over the N3H-Core search episodes.
#include "tessera/fpga/ddpg.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <deque>

#include "tessera/core/error.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"

namespace tessera::fpga {

namespace {

torch::nn::Sequential mlp(int64_t in, int64_t hidden, bool sigmoid) {
  torch::nn::Sequential net(torch::nn::Linear(in, hidden), torch::nn::ReLU(),
                            torch::nn::Linear(hidden, hidden), torch::nn::ReLU(),
                            torch::nn::Linear(hidden, 1));
  if (sigmoid) net->push_back(torch::nn::Sigmoid());
  return net;
}

void soft_update(torch::nn::Module& target, torch::nn::Module& source, double tau) {
  torch::NoGradGuard no_grad;
  auto t = target.parameters(), s = source.parameters();
  for (size_t i = 0; i < t.size(); ++i) t[i].mul_(1 - tau).add_(s[i], tau);
}

void hard_update(torch::nn::Module& target, torch::nn::Module& source) {
  soft_update(target, source, 1.0);
}

// A normal draw by Box-Muller on core/random's uniforms (the same on every standard library).
double normal(std::mt19937_64& rng) {
  const double u1 = 1.0 - random::uniform01(rng), u2 = random::uniform01(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

// HAQ's exploration: truncated normal around mu with sigma, truncated to [0, 1].
double truncated_normal(double mu, double sigma, std::mt19937_64& rng) {
  for (int tries = 0; tries < 1000; ++tries) {
    const double x = mu + sigma * normal(rng);
    if (x >= 0.0 && x <= 1.0) return x;
  }
  return std::clamp(mu, 0.0, 1.0);
}

struct Transition {
  std::vector<float> state, next_state;
  float action = 0.0f, reward = 0.0f, done = 0.0f;
};

class Agent {
 public:
  Agent(int64_t state_size, const DdpgOptions& o, uint64_t seed)
      : options_(o),
        actor_(mlp(state_size, o.hidden, true)),
        actor_target_(mlp(state_size, o.hidden, true)),
        critic_(mlp(state_size + 1, o.hidden, false)),
        critic_target_(mlp(state_size + 1, o.hidden, false)),
        actor_opt_(actor_->parameters(), torch::optim::AdamOptions(o.lr_actor)),
        critic_opt_(critic_->parameters(), torch::optim::AdamOptions(o.lr_critic)),
        rng_(make_rng(seed, 3)) {
    hard_update(*actor_target_, *actor_);
    hard_update(*critic_target_, *critic_);
  }

  double act(const std::vector<float>& state, double sigma) {
    torch::NoGradGuard no_grad;
    const double mu = actor_->forward(torch::tensor(state).unsqueeze(0)).item<double>();
    return truncated_normal(mu, sigma, rng_);
  }

  void remember(Transition t, size_t capacity) {
    memory_.push_back(std::move(t));
    while (memory_.size() > capacity) memory_.pop_front();
  }

  void update() {
    if (memory_.size() < static_cast<size_t>(options_.batch_size)) return;
    const int64_t b = options_.batch_size;
    const int64_t d = static_cast<int64_t>(memory_.front().state.size());
    torch::Tensor s = torch::empty({b, d}), s1 = torch::empty({b, d});
    torch::Tensor a = torch::empty({b, 1}), r = torch::empty({b, 1}), done = torch::empty({b, 1});
    for (int64_t i = 0; i < b; ++i) {
      const Transition& t = memory_[random::uniform_below(rng_, memory_.size())];
      s[i] = torch::tensor(t.state);
      s1[i] = torch::tensor(t.next_state);
      a[i][0] = t.action;
      r[i][0] = t.reward;
      done[i][0] = t.done;
    }
    // HAQ centres the rewards by a moving average of the batch means.
    const double mean = r.mean().item<double>();
    baseline_ = has_baseline_ ? baseline_ + options_.moving_alpha * (mean - baseline_) : mean;
    has_baseline_ = true;
    r = r - baseline_;
    torch::Tensor target;
    {
      torch::NoGradGuard no_grad;
      const torch::Tensor next_q =
          critic_target_->forward(torch::cat({s1, actor_target_->forward(s1)}, 1));
      target = r + options_.discount * (1 - done) * next_q;
    }
    critic_opt_.zero_grad();
    torch::mse_loss(critic_->forward(torch::cat({s, a}, 1)), target).backward();
    critic_opt_.step();
    actor_opt_.zero_grad();
    (-critic_->forward(torch::cat({s, actor_->forward(s)}, 1)).mean()).backward();
    actor_opt_.step();
    soft_update(*actor_target_, *actor_, options_.tau);
    soft_update(*critic_target_, *critic_, options_.tau);
  }

 private:
  DdpgOptions options_;
  torch::nn::Sequential actor_, actor_target_, critic_, critic_target_;
  torch::optim::Adam actor_opt_, critic_opt_;
  std::mt19937_64 rng_;
  std::deque<Transition> memory_;
  double baseline_ = 0.0;
  bool has_baseline_ = false;
};

}  // namespace

void DdpgOptions::validate() const {
  TESSERA_CHECK(hidden >= 1, "ddpg: hidden {} must be >= 1", hidden);
  TESSERA_CHECK(lr_actor > 0 && lr_critic > 0, "ddpg: learning rates must be > 0");
  TESSERA_CHECK(warmup_episodes >= 0, "ddpg: warmup_episodes {} < 0", warmup_episodes);
  TESSERA_CHECK(discount >= 0 && discount <= 1, "ddpg: discount {} not in [0, 1]", discount);
  TESSERA_CHECK(batch_size >= 1, "ddpg: batch_size {} must be >= 1", batch_size);
  TESSERA_CHECK(replay_episodes >= 1, "ddpg: replay_episodes {} must be >= 1", replay_episodes);
  TESSERA_CHECK(tau > 0 && tau <= 1, "ddpg: tau {} not in (0, 1]", tau);
  TESSERA_CHECK(initial_noise >= 0 && noise_decay > 0 && noise_decay <= 1,
                "ddpg: noise {} / decay {} out of range", initial_noise, noise_decay);
  TESSERA_CHECK(updates_per_transition >= 0, "ddpg: updates_per_transition < 0");
}

nlohmann::json DdpgOptions::to_json() const {
  return {{"hidden", hidden},
          {"lr_actor", lr_actor},
          {"lr_critic", lr_critic},
          {"warmup_episodes", warmup_episodes},
          {"discount", discount},
          {"batch_size", batch_size},
          {"replay_episodes", replay_episodes},
          {"tau", tau},
          {"initial_noise", initial_noise},
          {"noise_decay", noise_decay},
          {"moving_alpha", moving_alpha},
          {"updates_per_transition", updates_per_transition}};
}

SearchResult ddpg_search(const SearchProblem& problem, const SearchOptions& options,
                         const DdpgOptions& ddpg) {
  options.validate();
  ddpg.validate();
  Timer timer;
  torch::manual_seed(options.seed);
  Agent agent(problem.state_size(), ddpg, options.seed);
  std::mt19937_64 rng = make_rng(options.seed, 2);
  SearchResult result;
  result.searcher = "ddpg";
  const int64_t n = problem.n_steps();
  const size_t capacity = static_cast<size_t>(ddpg.replay_episodes * n);
  double sigma = ddpg.initial_noise;
  for (int64_t e = 0; e < options.evaluations; ++e) {
    std::vector<double> actions;
    std::vector<std::vector<float>> states;
    for (int64_t step = 0; step < n; ++step) {
      states.push_back(problem.state(step, actions));
      actions.push_back(e < ddpg.warmup_episodes ? random::uniform01(rng)
                                                 : agent.act(states.back(), sigma));
    }
    SearchOutcome o = problem.evaluate(actions);
    // Every transition is stored with the episode's final reward (HAQ, N3H-Core).
    for (int64_t step = 0; step < n; ++step) {
      Transition t;
      t.state = states[static_cast<size_t>(step)];
      t.next_state = states[static_cast<size_t>(std::min(step + 1, n - 1))];
      t.action = static_cast<float>(actions[static_cast<size_t>(step)]);
      t.reward = static_cast<float>(o.reward);
      t.done = step == n - 1 ? 1.0f : 0.0f;
      agent.remember(std::move(t), capacity);
      if (e >= ddpg.warmup_episodes)
        for (int64_t u = 0; u < ddpg.updates_per_transition; ++u) agent.update();
    }
    if (e >= ddpg.warmup_episodes) sigma *= ddpg.noise_decay;
    if (e == 0 || o.reward > result.best.reward) result.best = std::move(o);
    result.best_reward_curve.push_back(result.best.reward);
  }
  result.seconds = timer.elapsed_s();
  return result;
}

}  // namespace tessera::fpga
