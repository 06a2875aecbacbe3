// Greedy AR, CLLM shrinking-block Jacobi and fixed-window Jacobi decoding; trajectory collection.
#include "tessera/jacobi/decode.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>

#include "tessera/core/error.h"
#include "tessera/core/random.h"
#include "tessera/core/timer.h"

namespace tessera::jacobi {

DecoderKind parse_decoder(const std::string& name) {
  if (name == "ar") return DecoderKind::kAr;
  if (name == "jacobi") return DecoderKind::kJacobi;
  if (name == "jacobi-window") return DecoderKind::kJacobiWindow;
  TESSERA_CHECK(false, "unknown decoder '{}' (expected ar, jacobi or jacobi-window)", name);
  return DecoderKind::kAr;
}

std::string decoder_name(DecoderKind kind) {
  switch (kind) {
    case DecoderKind::kAr:
      return "ar";
    case DecoderKind::kJacobi:
      return "jacobi";
    case DecoderKind::kJacobiWindow:
      return "jacobi-window";
  }
  return "?";
}

InitKind parse_init(const std::string& name) {
  if (name == "random-prompt") return InitKind::kRandomPrompt;
  if (name == "ngram") return InitKind::kNgramPool;
  TESSERA_CHECK(false, "unknown initial guess '{}' (expected random-prompt or ngram)", name);
  return InitKind::kRandomPrompt;
}

std::string init_name(InitKind kind) {
  return kind == InitKind::kRandomPrompt ? "random-prompt" : "ngram";
}

void DecodeOptions::validate() const {
  TESSERA_CHECK(block_size >= 1, "block size must be >= 1, got {}", block_size);
  TESSERA_CHECK(max_new_tokens >= 0, "max_new_tokens must be >= 0, got {}", max_new_tokens);
  TESSERA_CHECK(ngram_max >= 1, "ngram_max must be >= 1, got {}", ngram_max);
}

nlohmann::json DecodeOptions::to_json() const {
  nlohmann::json j = {{"block_size", block_size}, {"max_new_tokens", max_new_tokens},
                      {"eos_id", eos_id},         {"init", init_name(init)},
                      {"ngram_max", ngram_max},   {"seed", seed}};
  // Only when set: this JSON is part of cached models' recipes, whose keys must not change.
  if (auto_block) j["auto_block"] = true;
  return j;
}

std::string DecodeOptions::block_label() const {
  return auto_block ? fmt::format("auto (at most {})", block_size) : std::to_string(block_size);
}

nlohmann::json DecodeStats::to_json() const {
  return {{"n_forwards", n_forwards},
          {"n_generated", n_generated},
          {"n_forward_tokens", n_forward_tokens},
          {"n_fast_forwarded", n_fast_forwarded},
          {"n_stationary", n_stationary},
          {"tokens_per_forward", tokens_per_forward()},
          {"tokens_per_second", tokens_per_second()},
          {"wall_seconds", wall_seconds}};
}

namespace {

// Initial guesses for not-yet-known tokens.
class Guesser {
 public:
  Guesser(const DecodeOptions& options) : options_(options), rng_(options.seed) {}

  /// Appends `count` guesses to `out`. `history` is prompt + committed tokens; `context` is
  /// history followed by the guesses already in the block (what the n-gram suffix is taken from).
  void fill(const std::vector<int64_t>& history, const std::vector<int64_t>& context, int64_t count,
            std::vector<int64_t>& out) {
    int64_t filled = 0;
    if (options_.init == InitKind::kNgramPool) {
      const int64_t S = static_cast<int64_t>(context.size());
      for (int64_t m = std::min<int64_t>(options_.ngram_max, S - 1); m >= 1 && filled == 0; --m) {
        // Latest earlier j with context[j..j+m) == context[S-m..S).
        for (int64_t j = S - m - 1; j >= 0; --j) {
          if (std::equal(context.begin() + j, context.begin() + j + m, context.end() - m)) {
            for (int64_t k = j + m; k < S && filled < count; ++k, ++filled) {
              out.push_back(context[k]);
            }
            break;
          }
        }
      }
    }
    for (; filled < count; ++filled) out.push_back(random::pick(history, rng_));
  }

 private:
  const DecodeOptions& options_;
  std::mt19937_64 rng_;
};

// Shared state of one decode: limits, committed tokens, statistics.
struct Session {
  Session(llm::LlamaEngine& e, const std::vector<int64_t>& p, const DecodeOptions& o)
      : engine(e), prompt(p), options(o), guesser(o) {
    options.validate();
    TESSERA_CHECK(!prompt.empty(), "decode: the prompt is empty");
    TESSERA_CHECK(static_cast<int64_t>(prompt.size()) < engine.capacity(),
                  "decode: prompt of {} tokens does not fit the context length {}", prompt.size(),
                  engine.capacity());
    for (int64_t t : prompt) {
      TESSERA_CHECK(t >= 0 && t < engine.vocab_size(),
                    "decode: prompt token {} out of range [0, {})", t, engine.vocab_size());
    }
    limit = std::min<int64_t>(options.max_new_tokens,
                              engine.capacity() - static_cast<int64_t>(prompt.size()));
    history = prompt;
  }

  // Prefill; returns false when nothing is to be generated.
  bool start() {
    engine.reset();
    if (limit <= 0) return false;
    run(prompt.data(), static_cast<int64_t>(prompt.size()), 1);
    return !commit(llm::argmax_row(logits.data(), engine.vocab_size()));
  }

  void run(const int64_t* tokens, int64_t n, int64_t n_logits = -1) {
    report();
    engine.forward(tokens, n, logits, n_logits);
    result.stats.n_forwards += 1;
    result.stats.n_forward_tokens += n;
  }

  int64_t greedy(int64_t row) const {
    return llm::argmax_row(logits.data() + row * engine.vocab_size(), engine.vocab_size());
  }

  // Returns true when decoding is finished (EOS or the length limit).
  bool commit(int64_t token) {
    result.tokens.push_back(token);
    history.push_back(token);
    return token == options.eos_id || static_cast<int64_t>(result.tokens.size()) >= limit;
  }

  int64_t remaining() const { return limit - static_cast<int64_t>(result.tokens.size()); }

  // Hands the tokens committed since the last report to options.on_accept.
  void report() {
    if (!options.on_accept || result.tokens.size() == reported) return;
    options.on_accept(std::vector<int64_t>(result.tokens.begin() + reported, result.tokens.end()));
    reported = result.tokens.size();
  }

  DecodeResult finish() {
    report();
    result.stats.n_generated = static_cast<int64_t>(result.tokens.size());
    result.stats.wall_seconds = timer.elapsed_s();
    return std::move(result);
  }

  llm::LlamaEngine& engine;
  const std::vector<int64_t>& prompt;
  DecodeOptions options;
  Guesser guesser;
  int64_t limit = 0;
  std::vector<int64_t> history;  // prompt + committed
  std::vector<float> logits;
  DecodeResult result;
  size_t reported = 0;  // tokens already handed to on_accept
  Timer timer;
};

// Both Jacobi forms: `shrink` selects CLLM's shrinking block, else the fixed window.
DecodeResult jacobi_impl(llm::LlamaEngine& engine, const std::vector<int64_t>& prompt,
                         const DecodeOptions& options, bool shrink) {
  Session s(engine, prompt, options);
  if (!s.start()) return s.finish();
  BlockPolicy* policy = nullptr;
  if (options.auto_block) {
    TESSERA_CHECK(options.block_policy != nullptr,
                  "automatic block size: no block policy (cost curve) for the engine");
    policy = options.block_policy.get();
  }
  // The size of a fresh block (a shrinking block keeps the size it started with).
  int64_t n = policy ? policy->next() : s.options.block_size;
  auto top_up = [&](std::vector<int64_t>& block, int64_t length) {
    // block[0] is the last committed token (already in history).
    std::vector<int64_t> context = s.history;
    context.insert(context.end(), block.begin() + 1, block.end());
    const int64_t count = length - static_cast<int64_t>(block.size());
    if (count > 0) s.guesser.fill(s.history, context, count, block);
    if (static_cast<int64_t>(block.size()) > length) block.resize(length);
  };
  std::vector<int64_t> block = {s.history.back()};
  top_up(block, std::min(n, s.remaining()));
  std::vector<int64_t> prev_block;
  int64_t prev_start = -1;
  std::vector<int64_t> g;
  while (true) {
    const int64_t m = static_cast<int64_t>(block.size());
    const int64_t start = engine.n_past();  // absolute position of block[0]
    s.run(block.data(), m);
    g.resize(m);
    for (int64_t i = 0; i < m; ++i) g[i] = s.greedy(i);
    // block[0] is correct; block[i] is confirmed when it equals the prediction from its prefix.
    int64_t f = 1;
    while (f < m && block[f] == g[f - 1]) ++f;
    s.result.stats.n_fast_forwarded += f - 1;
    if (policy) policy->observe(m, f);
    for (int64_t i = 1; i < f; ++i) {
      const int64_t p = start + i - prev_start;
      if (prev_start >= 0 && p >= 1 && p < static_cast<int64_t>(prev_block.size()) &&
          prev_block[p] == block[i]) {
        s.result.stats.n_stationary += 1;
      }
    }
    // Keep the K/V of block[0..f), computed from correct inputs; drop the rest.
    engine.truncate(start + f);
    bool done = false;
    for (int64_t i = 0; i < f && !done; ++i) done = s.commit(g[i]);
    if (done) break;
    prev_block = block;
    prev_start = start;
    std::vector<int64_t> next = {g[f - 1]};
    if (f < m) next.insert(next.end(), g.begin() + f, g.begin() + (m - 1));
    if (f == m) prev_block.clear();  // converged: a fresh block starts
    if (policy && (f == m || !shrink)) n = policy->next();
    const int64_t length = std::min(n, s.remaining());
    if (!shrink || f == m) top_up(next, length);
    if (static_cast<int64_t>(next.size()) > length) next.resize(length);
    block = std::move(next);
  }
  return s.finish();
}

}  // namespace

DecodeResult decode_greedy(llm::LlamaEngine& engine, const std::vector<int64_t>& prompt,
                           const DecodeOptions& options) {
  Session s(engine, prompt, options);
  if (!s.start()) return s.finish();
  while (true) {
    const int64_t last = s.history.back();
    s.run(&last, 1);
    if (s.commit(s.greedy(0))) break;
  }
  return s.finish();
}

DecodeResult decode_jacobi(llm::LlamaEngine& engine, const std::vector<int64_t>& prompt,
                           const DecodeOptions& options) {
  return jacobi_impl(engine, prompt, options, /*shrink=*/true);
}

DecodeResult decode_jacobi_window(llm::LlamaEngine& engine, const std::vector<int64_t>& prompt,
                                  const DecodeOptions& options) {
  return jacobi_impl(engine, prompt, options, /*shrink=*/false);
}

DecodeResult decode(llm::LlamaEngine& engine, const std::vector<int64_t>& prompt, DecoderKind kind,
                    const DecodeOptions& options) {
  switch (kind) {
    case DecoderKind::kAr:
      return decode_greedy(engine, prompt, options);
    case DecoderKind::kJacobi:
      return decode_jacobi(engine, prompt, options);
    case DecoderKind::kJacobiWindow:
      return decode_jacobi_window(engine, prompt, options);
  }
  TESSERA_CHECK(false, "unknown decoder kind");
  return {};
}

std::vector<JacobiTrajectory> collect_trajectories(llm::LlamaEngine& engine,
                                                   const std::vector<int64_t>& prompt,
                                                   const DecodeOptions& options) {
  Session s(engine, prompt, options);
  std::vector<JacobiTrajectory> out;
  engine.reset();
  if (s.limit <= 0) return out;
  s.run(prompt.data(), static_cast<int64_t>(prompt.size()), 1);
  int64_t first = s.greedy(0);  // prediction for the block's first position
  int64_t generated = 0;
  // CLLM draws the whole initial state (first token included) from the prompt tokens.
  std::mt19937_64 rng(options.seed);
  while (generated < s.limit) {
    const int64_t n = std::min(options.block_size, s.limit - generated);
    JacobiTrajectory traj;
    traj.prompt = s.history;
    std::vector<int64_t> state(n);
    for (auto& t : state) t = random::pick(s.history, rng);
    traj.states.push_back(state);
    const int64_t base = engine.n_past();
    while (true) {
      std::vector<int64_t> next(n);
      next[0] = first;
      engine.truncate(base);
      if (n > 1) {
        s.run(state.data(), n - 1);
        for (int64_t i = 1; i < n; ++i) next[i] = s.greedy(i - 1);
      }
      if (next == state) break;
      state = std::move(next);
      traj.states.push_back(state);
    }
    // The cache holds the fixed point's first n-1 tokens; add the last to predict onward.
    engine.truncate(base + n - 1);
    s.run(&state[n - 1], 1);
    first = s.greedy(0);
    out.push_back(std::move(traj));
    generated += n;
    bool eos = false;
    for (int64_t t : state) {
      s.history.push_back(t);
      eos = eos || t == options.eos_id;
    }
    if (eos || engine.n_past() >= engine.capacity()) break;
  }
  return out;
}

}  // namespace tessera::jacobi
