// The jacobi system's experiments: model training, corpus trajectories, generation, AR vs Jacobi,
// decode bandwidth and forward cost, and the tour step.
#include "tessera/jacobi/bench.h"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <limits>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/seed.h"
#include "tessera/core/svg.h"
#include "tessera/core/timer.h"
#include "tessera/llm/kernels.h"
#include "tessera/llm/tokenizer.h"

namespace tessera::jacobi {

// ---- corpora and models ------------------------------------------------------------------------

void CorpusOptions::validate() const {
  TESSERA_CHECK(n_train > 0, "corpus: n_train must be positive, got {}", n_train);
  TESSERA_CHECK(n_test > 0, "corpus: n_test must be positive, got {}", n_test);
}

nlohmann::json CorpusOptions::to_json() const {
  return {{"domain", domain_name(domain)},
          {"n_train", n_train},
          {"n_test", n_test},
          {"data_seed", data_seed}};
}

Corpus CorpusOptions::make() const {
  validate();
  return make_corpus(domain, n_train, n_test, data_seed);
}

void LmArchOptions::validate() const {
  TESSERA_CHECK(vocab >= 257, "arch: vocab must hold the 256 bytes and EOS, got {}", vocab);
  TESSERA_CHECK(seq_len > 1, "arch: seq_len must be > 1, got {}", seq_len);
  config(vocab).validate();
}

llm::LlamaConfig LmArchOptions::config(int64_t vocab_size) const {
  llm::LlamaConfig c;
  c.vocab_size = vocab_size;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.hidden_dim = hidden;
  c.max_seq_len = seq_len;
  return c;
}

void TrainModelOptions::validate() const {
  corpus.validate();
  arch.validate();
  train.validate();
  TESSERA_CHECK(tokenizer_texts > 0, "tokenizer_texts must be positive, got {}", tokenizer_texts);
  TESSERA_CHECK(quality_max_new >= 0, "quality_max_new must be >= 0, got {}", quality_max_new);
}

nlohmann::json TrainModelOptions::to_json() const {
  return {{"corpus", corpus.to_json()},
          {"arch", arch.config(arch.vocab).to_json()},
          {"steps", train.steps},
          {"batch_size", train.batch_size},
          {"lr", train.lr},
          {"max_seconds", train.max_seconds},
          {"seed", train.seed}};
}

Table TrainModelResult::table() const {
  Table table({"domain", "params", "steps", "loss first", "loss final", "seconds",
               quality_name(corpus.domain)});
  table.add_row({domain_name(corpus.domain), std::to_string(bundle.model->config().n_params()),
                 std::to_string(train.steps), fmt::format("{:.3f}", train.first_loss),
                 fmt::format("{:.3f}", train.final_loss), fmt::format("{:.1f}", train.seconds),
                 scored ? fmt::format("{:.2f}", quality) : "-"});
  return table;
}

nlohmann::json TrainModelResult::to_json() const {
  nlohmann::json out = {{"model", bundle.model->config().to_json()},
                        {"params", bundle.model->config().n_params()},
                        {"steps", train.steps},
                        {"first_loss", train.first_loss},
                        {"final_loss", train.final_loss},
                        {"seconds", train.seconds},
                        {"table", table().to_json()}};
  if (scored) out["quality"] = quality;
  return out;
}

TrainModelResult train_model(const TrainModelOptions& options) {
  options.validate();
  TrainModelResult out;
  out.corpus = options.corpus.make();
  std::vector<std::string> texts;
  for (const auto& e : out.corpus.train) texts.push_back(e.prompt + e.target);
  // A few thousand texts are enough for the merges and keep tokenizer training quick.
  if (static_cast<int64_t>(texts.size()) > options.tokenizer_texts)
    texts.resize(options.tokenizer_texts);
  const Timer tok_timer;
  out.bundle.tokenizer = llm::Tokenizer::train(texts, options.arch.vocab, {kEosToken});
  log::info("tokenizer: {} tokens trained in {:.1f} s", out.bundle.tokenizer.vocab_size(),
            tok_timer.elapsed_s());
  out.bundle.model = llm::Llama(options.arch.config(out.bundle.tokenizer.vocab_size()));
  const auto data = tokenize_examples(out.corpus.train, out.bundle.tokenizer, options.arch.seq_len);
  out.train = train_lm(out.bundle.model, data, options.train);
  if (options.quality_max_new > 0) {
    out.quality = quality(out.bundle, out.corpus, options.quality_max_new);
    out.scored = true;
  }
  return out;
}

double quality(llm::LlmBundle& bundle, const Corpus& corpus, int64_t max_new_tokens) {
  if (corpus.domain == Domain::kCode) {
    return target_perplexity(bundle.model, tokenize_examples(corpus.test, bundle.tokenizer,
                                                             bundle.model->config().max_seq_len));
  }
  return 100.0 *
         greedy_quality(bundle.model, bundle.tokenizer, corpus.test, corpus.domain, max_new_tokens);
}

std::string quality_name(Domain domain) {
  switch (domain) {
    case Domain::kMath:
      return "accuracy %";
    case Domain::kSql:
      return "exact match %";
    case Domain::kCode:
      return "test ppl";
  }
  return "?";
}

std::vector<std::vector<int64_t>> encode_prompts(const llm::LlmBundle& bundle,
                                                 const std::vector<Example>& examples, int64_t n,
                                                 std::vector<std::vector<int64_t>>* labels) {
  const int64_t max_len = bundle.model->config().max_seq_len;
  const bool labelled = labels != nullptr && bundle.tokenizer.eos_id() >= 0;
  std::vector<std::vector<int64_t>> out;
  for (const auto& e : examples) {
    if (static_cast<int64_t>(out.size()) >= n) break;
    auto ids = bundle.tokenizer.encode_prompt(e.prompt);
    if (static_cast<int64_t>(ids.size()) >= max_len) continue;
    if (labelled) {  // prompt, target, EOS, as tokenize_examples() makes them
      std::vector<int64_t> label = ids;
      const auto target = bundle.tokenizer.encode(e.target);
      label.insert(label.end(), target.begin(), target.end());
      label.push_back(bundle.tokenizer.eos_id());
      if (static_cast<int64_t>(label.size()) > max_len) label.clear();
      labels->push_back(std::move(label));
    }
    out.push_back(std::move(ids));
  }
  return out;
}

llm::LlmBundle copy_bundle(const llm::LlmBundle& bundle) {
  llm::LlmBundle copy{llm::Llama(bundle.model->config()), bundle.tokenizer};
  torch::NoGradGuard no_grad;
  const auto src = bundle.model->parameters();
  auto dst = copy.model->parameters();
  for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  return copy;
}

// ---- trajectories ------------------------------------------------------------------------------

CorpusTrajectoryOptions::CorpusTrajectoryOptions() { trajectory.decode.max_new_tokens = 160; }

void CorpusTrajectoryOptions::validate() const {
  corpus.validate();
  trajectory.decode.validate();
  TESSERA_CHECK(n_prompts > 0, "trajectories: n_prompts must be positive, got {}", n_prompts);
  TESSERA_CHECK(trajectory.repeat_run >= 2, "trajectories: repeat_run must be >= 2, got {}",
                trajectory.repeat_run);
}

nlohmann::json CorpusTrajectoryOptions::to_json() const {
  return {{"corpus", corpus.to_json()},
          {"n_prompts", n_prompts},
          {"decode", trajectory.decode.to_json()},
          {"augment", trajectory.augment},
          {"repeat_run", trajectory.repeat_run}};
}

std::string CorpusTrajectoryResult::summary() const {
  return fmt::format("{} entries ({} states, {} dropped as repetitive) in {:.1f} s", data.size(),
                     n_states, n_dropped, seconds);
}

nlohmann::json CorpusTrajectoryResult::to_json() const {
  return {{"n_entries", data.size()},
          {"n_prompts", n_prompts},
          {"n_states", n_states},
          {"n_dropped", n_dropped},
          {"seconds", seconds}};
}

CorpusTrajectoryResult collect_corpus_trajectories(llm::LlmBundle& teacher,
                                                   const CorpusTrajectoryOptions& options) {
  options.validate();
  const Corpus corpus = options.corpus.make();
  TrajectoryOptions t = options.trajectory;
  t.decode.eos_id = teacher.tokenizer.eos_id();
  std::vector<std::vector<int64_t>> labels;
  const auto prompts = encode_prompts(teacher, corpus.train, options.n_prompts, &labels);
  CorpusTrajectoryResult r;
  r.n_prompts = static_cast<int64_t>(prompts.size());
  const Timer timer;
  r.data = collect_trajectory_dataset(teacher.model, prompts, t, &r.n_dropped, labels);
  r.seconds = timer.elapsed_s();
  for (const auto& entry : r.data) r.n_states += static_cast<int64_t>(entry.states.size());
  return r;
}

// ---- generation --------------------------------------------------------------------------------

std::string GenerateResult::summary(DecoderKind decoder, const DecodeOptions& options) const {
  return fmt::format(
      "decoder {} block {}: {} tokens, {} forwards, {:.2f} tokens/forward, {} fast-forwarded, "
      "{} stationary, {:.3f} s ({:.1f} tok/s)",
      decoder_name(decoder), options.block_label(), stats.n_generated, stats.n_forwards,
      stats.tokens_per_forward(), stats.n_fast_forwarded, stats.n_stationary, stats.wall_seconds,
      stats.tokens_per_second());
}

DecodeOptions with_block_policy(llm::LlamaEngine& engine, DecodeOptions options) {
  if (options.auto_block && options.block_policy == nullptr) {
    options.block_policy = std::make_shared<BlockPolicy>(
        cached_cost_curve(engine, train::cache_dir() + "/cost-curves"), options.block_size);
  }
  return options;
}

GenerateResult generate(llm::LlmBundle& bundle, const std::string& prompt, DecoderKind decoder,
                        DecodeOptions options,
                        const std::function<void(const std::string&)>& on_text) {
  options.eos_id = bundle.tokenizer.eos_id();
  options.validate();
  llm::LlamaEngine engine(bundle.model);
  if (decoder != DecoderKind::kAr) options = with_block_policy(engine, options);
  GenerateResult out;
  out.prompt = bundle.tokenizer.encode_prompt(prompt);
  llm::TextStream stream(bundle.tokenizer, out.prompt);
  if (on_text) {
    options.on_accept = [&](const std::vector<int64_t>& accepted) {
      const std::string piece = stream.push(accepted);
      if (!piece.empty()) on_text(piece);
    };
  }
  auto r = decode(engine, out.prompt, decoder, options);
  if (!on_text) stream.push(r.tokens);
  const std::string rest = stream.finish();
  if (on_text && !rest.empty()) on_text(rest);
  out.text = stream.text();
  out.tokens = std::move(r.tokens);
  out.stats = r.stats;
  return out;
}

// ---- AR vs Jacobi ------------------------------------------------------------------------------

nlohmann::json SpeedRow::to_json() const {
  std::vector<double> tpf_per_prompt;
  for (const auto& s : per_prompt) tpf_per_prompt.push_back(s.tokens_per_forward());
  return {{"tokens_per_second", tokens_per_second},
          {"tokens_per_forward", tpf},
          {"n_tokens", n_tokens},
          {"n_forwards", n_forwards},
          {"n_fast_forwarded", n_fast_forwarded},
          {"n_stationary", n_stationary},
          {"identical_to_ar", identical},
          {"seconds", seconds},
          {"tokens_per_forward_per_prompt", tpf_per_prompt}};
}

double SpeedPair::speedup() const {
  return ar.tokens_per_second > 0 ? jacobi.tokens_per_second / ar.tokens_per_second : 0.0;
}

namespace {

void add_run(SpeedRow& row, DecodeResult&& r) {
  row.seconds += r.stats.wall_seconds;
  row.n_tokens += r.stats.n_generated;
  row.n_forwards += r.stats.n_forwards;
  row.n_fast_forwarded += r.stats.n_fast_forwarded;
  row.n_stationary += r.stats.n_stationary;
  row.per_prompt.push_back(r.stats);
  row.outputs.push_back(std::move(r.tokens));
}

void finish_row(SpeedRow& row) {
  row.tokens_per_second = row.seconds > 0 ? static_cast<double>(row.n_tokens) / row.seconds : 0;
  row.tpf = row.n_forwards > 0 ? static_cast<double>(row.n_tokens) / row.n_forwards : 0;
}

}  // namespace

SpeedPair measure_speed(llm::Llama& model, const std::vector<std::vector<int64_t>>& prompts,
                        const DecodeOptions& options, ProgressBar* progress) {
  options.validate();
  llm::LlamaEngine engine(model);
  SpeedPair p;
  DecodeOptions o = with_block_policy(engine, options);
  for (const auto& prompt : prompts) {
    o.seed += 1;
    add_run(p.ar, decode(engine, prompt, DecoderKind::kAr, o));
    if (progress != nullptr) progress->update();
    add_run(p.jacobi, decode(engine, prompt, DecoderKind::kJacobi, o));
    if (progress != nullptr) progress->update();
    if (p.jacobi.outputs.back() != p.ar.outputs.back()) p.jacobi.identical = false;
  }
  finish_row(p.ar);
  finish_row(p.jacobi);
  return p;
}

void JacobiBenchOptions::validate() const {
  TESSERA_CHECK(n_prompts > 0, "bench: n_prompts must be positive, got {}", n_prompts);
  decode.validate();
}

nlohmann::json JacobiBenchOptions::to_json() const {
  return {
      {"n_prompts", n_prompts}, {"decode", decode.to_json()}, {"max_new", decode.max_new_tokens}};
}

Table JacobiBenchResult::table() const {
  const std::string q = quality_name(domain);
  Table t({"domain", "AR tok/s", "Jacobi base tok/s", "TPF base", "AR distilled tok/s",
           "Jacobi distilled tok/s", "TPF distilled", "speedup base", "speedup distilled",
           "identical to AR", q + " base", q + " distilled"});
  t.add_row({domain_name(domain), fmt::format("{:.1f}", base.ar.tokens_per_second),
             fmt::format("{:.1f}", base.jacobi.tokens_per_second),
             fmt::format("{:.2f}", base.jacobi.tpf),
             fmt::format("{:.1f}", distilled.ar.tokens_per_second),
             fmt::format("{:.1f}", distilled.jacobi.tokens_per_second),
             fmt::format("{:.2f}", distilled.jacobi.tpf), fmt::format("{:.2f}x", base.speedup()),
             fmt::format("{:.2f}x", distilled.speedup()),
             (base.jacobi.identical && distilled.jacobi.identical) ? "yes" : "NO",
             fmt::format("{:.2f}", quality_base), fmt::format("{:.2f}", quality_distilled)});
  return t;
}

std::string JacobiBenchResult::setup() const {
  return fmt::format("threads {}, kernel {}, block {}, init {}, {} prompts, max-new {}", threads,
                     kernel, options.decode.block_size, init_name(options.decode.init),
                     options.n_prompts, options.decode.max_new_tokens);
}

nlohmann::json JacobiBenchResult::to_json() const {
  return {{"table", table().to_json()},
          {"ar_base", base.ar.to_json()},
          {"jacobi_base", base.jacobi.to_json()},
          {"ar_distilled", distilled.ar.to_json()},
          {"jacobi_distilled", distilled.jacobi.to_json()},
          {"quality_base", quality_base},
          {"quality_distilled", quality_distilled},
          {"threads", threads},
          {"kernel", kernel}};
}

namespace {

// One series of a per-prompt statistic (prompts numbered from 1).
SvgSeries per_prompt_series(std::string name, const SpeedRow& row, bool tpf) {
  SvgSeries s{std::move(name), {}, true};
  for (size_t i = 0; i < row.per_prompt.size(); ++i) {
    const auto& stats = row.per_prompt[i];
    s.points.emplace_back(static_cast<double>(i + 1),
                          tpf ? stats.tokens_per_forward() : stats.tokens_per_second());
  }
  return s;
}

}  // namespace

std::string JacobiBenchResult::svg() const {
  SvgPlot tpf(fmt::format("Jacobi tokens per forward, block {}", options.decode.block_size),
              "test prompt", "tokens per forward");
  tpf.add_series(per_prompt_series("base", base.jacobi, true));
  tpf.add_series(per_prompt_series("distilled", distilled.jacobi, true));
  SvgPlot speed("decode speed", "test prompt", "tokens per second");
  speed.add_series(per_prompt_series("AR base", base.ar, false));
  speed.add_series(per_prompt_series("Jacobi base", base.jacobi, false));
  speed.add_series(per_prompt_series("AR distilled", distilled.ar, false));
  speed.add_series(per_prompt_series("Jacobi distilled", distilled.jacobi, false));
  return svg_side_by_side({tpf.render(), speed.render()});
}

namespace {

// AR against Jacobi on both models over the prompts; the qualities are left to the caller.
// A result without measurements: the setup of a run on `base`'s tokenizer.
JacobiBenchResult bench_setup(const llm::LlmBundle& base, Domain domain,
                              const JacobiBenchOptions& options) {
  JacobiBenchResult r;
  r.domain = domain;
  r.options = options;
  r.options.decode.eos_id = base.tokenizer.eos_id();
  r.threads = at::get_num_threads();
  r.kernel = llm::matmul_kernel_name();
  return r;
}

JacobiBenchResult measure_pair(llm::LlmBundle& base, llm::LlmBundle& distilled,
                               const std::vector<std::vector<int64_t>>& prompts, Domain domain,
                               const JacobiBenchOptions& options) {
  JacobiBenchResult r = bench_setup(base, domain, options);
  ProgressBar bar(fmt::format("bench block {}", options.decode.block_size),
                  4 * static_cast<int64_t>(prompts.size()));
  r.base = measure_speed(base.model, prompts, r.options.decode, &bar);
  r.distilled = measure_speed(distilled.model, prompts, r.options.decode, &bar);
  bar.finish();
  return r;
}

}  // namespace

JacobiBenchResult run_bench(llm::LlmBundle& base, llm::LlmBundle& distilled, const Corpus& corpus,
                            const JacobiBenchOptions& options) {
  return run_block_sweep(base, distilled, corpus, options, {options.decode.block_size})
      .runs.front();
}

BlockSweepResult run_block_sweep(llm::LlmBundle& base, llm::LlmBundle& distilled,
                                 const Corpus& corpus, const JacobiBenchOptions& options,
                                 const std::vector<int64_t>& block_sizes) {
  options.validate();
  TESSERA_CHECK(!block_sizes.empty(), "bench: no block size to measure");
  const auto prompts = encode_prompts(base, corpus.test, options.n_prompts);
  TESSERA_CHECK(!prompts.empty(), "bench: no test prompt fits the model's context");
  BlockSweepResult sweep;
  for (const int64_t block : block_sizes) {
    JacobiBenchOptions o = options;
    o.decode.block_size = block;
    o.validate();
    sweep.runs.push_back(measure_pair(base, distilled, prompts, corpus.domain, o));
  }
  const double quality_base = quality(base, corpus, options.decode.max_new_tokens);
  const double quality_distilled = quality(distilled, corpus, options.decode.max_new_tokens);
  for (auto& r : sweep.runs) {
    r.quality_base = quality_base;
    r.quality_distilled = quality_distilled;
  }
  return sweep;
}

DistilledComparison run_comparison(llm::LlmBundle& base, std::vector<llm::LlmBundle>& distilled,
                                   const std::vector<std::string>& names, const Corpus& corpus,
                                   const JacobiBenchOptions& options) {
  options.validate();
  TESSERA_CHECK(!distilled.empty() && distilled.size() == names.size(),
                "bench: {} distilled models for {} names", distilled.size(), names.size());
  const auto prompts = encode_prompts(base, corpus.test, options.n_prompts);
  TESSERA_CHECK(!prompts.empty(), "bench: no test prompt fits the model's context");
  JacobiBenchResult setup = bench_setup(base, corpus.domain, options);
  const DecodeOptions& decode = setup.options.decode;
  ProgressBar bar("bench models", 2 * static_cast<int64_t>(prompts.size() * (names.size() + 1)));
  setup.base = measure_speed(base.model, prompts, decode, &bar);
  setup.quality_base = quality(base, corpus, decode.max_new_tokens);
  DistilledComparison c;
  c.names = names;
  for (auto& d : distilled) {
    JacobiBenchResult r = setup;
    r.distilled = measure_speed(d.model, prompts, decode, &bar);
    r.quality_distilled = quality(d, corpus, decode.max_new_tokens);
    c.runs.push_back(std::move(r));
  }
  bar.finish();
  return c;
}

Table DistilledComparison::table() const {
  const std::string q = quality_name(runs.front().domain);
  Table t({"model", "TPF", "speedup", "identical to AR", q, q + " change"});
  const auto row = [&](const std::string& name, const SpeedPair& s, double quality) {
    t.add_row({name, fmt::format("{:.2f}", s.jacobi.tpf), fmt::format("{:.2f}x", s.speedup()),
               s.jacobi.identical ? "yes" : "NO", fmt::format("{:.2f}", quality),
               fmt::format("{:+.2f}", quality - runs.front().quality_base)});
  };
  row("base", runs.front().base, runs.front().quality_base);
  for (size_t i = 0; i < runs.size(); ++i)
    row(names[i], runs[i].distilled, runs[i].quality_distilled);
  return t;
}

nlohmann::json DistilledComparison::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (size_t i = 0; i < runs.size(); ++i)
    j.push_back({{"name", names[i]}, {"run", runs[i].to_json()}});
  return {{"table", table().to_json()}, {"runs", j}};
}

std::string DistilledComparison::svg() const {
  SvgPlot plot(fmt::format("quality against tokens per forward, block {}",
                           runs.front().options.decode.block_size),
               "tokens per forward", quality_name(runs.front().domain));
  plot.add_series({"base", {{runs.front().base.jacobi.tpf, runs.front().quality_base}}, false});
  // The legend names a model by its file's stem ("gt-w10"), the table by the whole name.
  for (size_t i = 0; i < runs.size(); ++i)
    plot.add_series({std::filesystem::path(names[i]).stem().string(),
                     {{runs[i].distilled.jacobi.tpf, runs[i].quality_distilled}},
                     false});
  return plot.render();
}

Table BlockSweepResult::table() const {
  Table t({"block", "TPF base", "TPF distilled", "speedup base", "speedup distilled",
           "identical to AR"});
  for (const auto& r : runs) {
    t.add_row(
        {std::to_string(r.options.decode.block_size), fmt::format("{:.2f}", r.base.jacobi.tpf),
         fmt::format("{:.2f}", r.distilled.jacobi.tpf), fmt::format("{:.2f}x", r.base.speedup()),
         fmt::format("{:.2f}x", r.distilled.speedup()),
         (r.base.jacobi.identical && r.distilled.jacobi.identical) ? "yes" : "NO"});
  }
  return t;
}

nlohmann::json BlockSweepResult::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : runs) j.push_back(r.to_json());
  return {{"table", table().to_json()}, {"runs", j}};
}

std::string BlockSweepResult::svg() const {
  SvgPlot tpf("Jacobi tokens per forward against block size", "block size", "tokens per forward");
  SvgPlot speed("wall-clock speedup over AR against block size", "block size", "speedup (x)");
  SvgSeries tpf_base{"base", {}, true}, tpf_distilled{"distilled", {}, true};
  SvgSeries speed_base{"base", {}, true}, speed_distilled{"distilled", {}, true};
  for (const auto& r : runs) {
    const double n = static_cast<double>(r.options.decode.block_size);
    tpf_base.points.emplace_back(n, r.base.jacobi.tpf);
    tpf_distilled.points.emplace_back(n, r.distilled.jacobi.tpf);
    speed_base.points.emplace_back(n, r.base.speedup());
    speed_distilled.points.emplace_back(n, r.distilled.speedup());
  }
  tpf.add_series(tpf_base);
  tpf.add_series(tpf_distilled);
  speed.add_series(speed_base);
  speed.add_series(speed_distilled);
  return svg_side_by_side({tpf.render(), speed.render()});
}

// ---- memory bandwidth and the n-token forward cost ---------------------------------------------

void BandwidthOptions::validate() const {
  TESSERA_CHECK(dim >= 64, "bandwidth: dim must be >= 64 (64-wide heads), got {}", dim);
  TESSERA_CHECK(tokens > 0, "bandwidth: tokens must be positive, got {}", tokens);
  TESSERA_CHECK(rounds > 0, "bandwidth: rounds must be positive, got {}", rounds);
  TESSERA_CHECK(triad_mb > 0, "bandwidth: triad_mb must be positive, got {}", triad_mb);
  TESSERA_CHECK(!forward_tokens.empty(), "bandwidth: forward_tokens is empty");
  for (const int64_t n : forward_tokens)
    TESSERA_CHECK(n > 0, "bandwidth: forward_tokens must be positive, got {}", n);
  TESSERA_CHECK(forward_repeats > 0, "bandwidth: forward_repeats must be positive, got {}",
                forward_repeats);
  config().validate();
}

llm::LlamaConfig BandwidthOptions::config() const {
  llm::LlamaConfig c;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = dim / 64;
  c.n_kv_heads = dim / 64;
  c.hidden_dim = hidden;
  c.vocab_size = vocab;
  const int64_t largest = *std::max_element(forward_tokens.begin(), forward_tokens.end());
  // The timed decode, the warm-up token and the largest forward, with some slack.
  c.max_seq_len = tokens * rounds + 16 + largest;
  c.tie_embeddings = false;
  return c;
}

nlohmann::json BandwidthOptions::to_json() const {
  return {{"model", config().to_json()},
          {"tokens", tokens},
          {"rounds", rounds},
          {"triad_mb", triad_mb},
          {"forward_tokens", forward_tokens},
          {"forward_repeats", forward_repeats},
          {"seed", seed}};
}

double DecodeBandwidth::median_ratio() const {
  if (round_ratios.empty()) return 0.0;
  auto sorted = round_ratios;
  std::sort(sorted.begin(), sorted.end());
  return sorted[sorted.size() / 2];
}

DecodeBandwidth measure_decode_bandwidth(llm::LlamaEngine& engine,
                                         const BandwidthOptions& options) {
  const auto& c = engine.config();
  DecodeBandwidth r;
  // Bytes streamed per token: every matrix once (the embedding row read is negligible).
  r.weight_bytes = 4.0 * static_cast<double>(c.n_params() - c.vocab_size * c.dim);
  std::vector<float> logits;
  int64_t tok = 1;
  engine.forward(&tok, 1, logits);  // warm-up (page faults)
  llm::StreamTriad triad_arrays(options.triad_mb * 262144);
  for (int64_t round = 0; round < options.rounds; ++round) {
    const Timer timer;
    for (int64_t i = 0; i < options.tokens; ++i) {
      engine.forward(&tok, 1, logits);
      tok = llm::argmax_row(logits.data(), c.vocab_size);
    }
    const double decode = r.weight_bytes * static_cast<double>(options.tokens) / timer.elapsed_s();
    const double triad = triad_arrays.run();
    r.best_decode = std::max(r.best_decode, decode);
    r.best_triad = std::max(r.best_triad, triad);
    r.round_ratios.push_back(decode / triad);
  }
  return r;
}

std::vector<ForwardCost> measure_forward_cost(llm::LlamaEngine& engine,
                                              const std::vector<int64_t>& n_tokens,
                                              int64_t repeats) {
  // The 1-token reference is timed in the same rounds: from the list, or added to it.
  std::vector<int64_t> ns = n_tokens;
  auto one = std::find(ns.begin(), ns.end(), 1);
  const bool added = one == ns.end();
  if (added) ns.insert(ns.begin(), 1);
  const size_t ref = added ? 0 : static_cast<size_t>(one - ns.begin());
  const auto seconds = time_forwards(engine, ns, repeats);
  std::vector<ForwardCost> out;
  for (size_t i = added ? 1 : 0; i < ns.size(); ++i) {
    out.push_back({ns[i], seconds[i], seconds[i] / seconds[ref]});
  }
  return out;
}

Table BandwidthResult::bandwidth_table() const {
  const auto& b = bandwidth;
  Table t({"params", "weights MB", "threads", "decode tok/s", "decode GB/s", "triad GB/s",
           "decode / triad", "median round ratio"});
  t.add_row({std::to_string(config.n_params()), fmt::format("{:.0f}", b.weight_bytes / 1e6),
             std::to_string(threads), fmt::format("{:.2f}", b.best_decode / b.weight_bytes),
             fmt::format("{:.2f}", b.best_decode / 1e9), fmt::format("{:.2f}", b.best_triad / 1e9),
             fmt::format("{:.1f}%", 100.0 * b.best_decode / b.best_triad),
             fmt::format("{:.1f}%", 100.0 * b.median_ratio())});
  return t;
}

Table BandwidthResult::forward_cost_table() const {
  Table t({"tokens per forward n", "ms per forward", "cost vs 1 token (break-even TPF)"});
  for (const auto& f : forward_cost) {
    t.add_row({std::to_string(f.n_tokens), fmt::format("{:.3f}", 1e3 * f.seconds),
               fmt::format("{:.2f}", f.ratio)});
  }
  return t;
}

nlohmann::json BandwidthResult::to_json() const {
  return {{"bandwidth", bandwidth_table().to_json()},
          {"forward_cost", forward_cost_table().to_json()},
          {"round_ratios", bandwidth.round_ratios}};
}

std::string BandwidthResult::svg() const {
  SvgSeries measured{"measured", {}, true};
  SvgSeries linear{"n (compute-bound)", {}, true};
  for (const auto& f : forward_cost) {
    measured.points.emplace_back(static_cast<double>(f.n_tokens), f.ratio);
    linear.points.emplace_back(static_cast<double>(f.n_tokens), static_cast<double>(f.n_tokens));
  }
  SvgPlot plot(fmt::format("cost of an n-token forward, {} parameters", config.n_params()),
               "tokens per forward n", "cost vs 1 token (break-even TPF)");
  plot.set_log_x(true);
  plot.add_series(measured);
  plot.add_series(linear);
  return plot.render();
}

BandwidthResult run_bandwidth(const BandwidthOptions& options) {
  options.validate();
  seed_everything(options.seed);
  BandwidthResult r;
  r.config = options.config();
  r.threads = at::get_num_threads();
  llm::Llama model(r.config);
  llm::LlamaEngine engine(model);
  r.bandwidth = measure_decode_bandwidth(engine, options);
  // At the cache length the decode left, like an AR step or a Jacobi iteration mid-answer.
  r.forward_cost = measure_forward_cost(engine, options.forward_tokens, options.forward_repeats);
  return r;
}

// ---- tour --------------------------------------------------------------------------------------

ReferencePipeline::ReferencePipeline() {
  train.corpus.domain = Domain::kSql;
  train.train.steps = 1500;
  train.train.progress_label = "train sql";
  trajectories.corpus = train.corpus;
  trajectories.n_prompts = 800;
  trajectories.trajectory.decode.max_new_tokens = 64;
  distill.steps = 1500;
  distill.lr = 3e-4;
}

nlohmann::json ReferencePipeline::to_json() const {
  return {{"train", train.to_json()},
          {"trajectories", trajectories.to_json()},
          {"distill", distill.to_json()}};
}

std::string ReferencePipeline::base_file() const {
  const std::string prefix = fmt::format("jacobi-{}-base", domain_name(train.corpus.domain));
  return train::hash_key(prefix, train.to_json()) + ".safetensors";
}

std::string ReferencePipeline::distilled_file() const {
  const std::string prefix = fmt::format("jacobi-{}-cllm", domain_name(train.corpus.domain));
  return train::hash_key(prefix, to_json()) + ".safetensors";
}

std::pair<std::string, std::string> reference_pair(const ReferencePipeline& pipeline) {
  const std::string base = train::cached_file(pipeline.base_file(), [&](const std::string& path) {
    seed_everything(pipeline.train.train.seed);
    TrainModelResult trained = train_model(pipeline.train);
    llm::save_llm(path, trained.bundle.model, trained.bundle.tokenizer);
  });
  const std::string distilled =
      train::cached_file(pipeline.distilled_file(), [&](const std::string& path) {
        llm::LlmBundle teacher = llm::load_llm(base);
        const CorpusTrajectoryResult data =
            collect_corpus_trajectories(teacher, pipeline.trajectories);
        log::info("trajectories: {}", data.summary());
        seed_everything(pipeline.distill.seed);
        distill(teacher.model, data.data, pipeline.distill);
        llm::save_llm(path, teacher.model, teacher.tokenizer);
      });
  return {base, distilled};
}

std::vector<train::ReferenceFile> reference_files() {
  const ReferencePipeline pipeline;
  train::ReferenceFile pair;
  pair.name = "jacobi-sql";
  pair.description =
      "0.85M-parameter Llama trained 1500 steps on the SQL corpus, and its consistency-"
      "distilled copy (800 trajectories of 64 tokens, block 16, 1500 steps lr 3e-4)";
  pair.path = [pipeline] { return train::cached_file_path(pipeline.distilled_file()); };
  pair.build = [pipeline](const std::string&) { reference_pair(pipeline); };
  return {pair};
}

std::vector<TourRow> tour(const TourContext& context) {
  const ReferencePipeline pipeline;
  const auto [base_path, distilled_path] = reference_pair(pipeline);
  llm::LlmBundle base = llm::load_llm(base_path);
  llm::LlmBundle distilled = llm::load_llm(distilled_path);
  JacobiBenchOptions b;
  b.n_prompts = 10;
  b.decode.max_new_tokens = pipeline.trajectories.trajectory.decode.max_new_tokens;
  b.decode.block_size = pipeline.trajectories.trajectory.decode.block_size;
  b.decode.seed = context.seed;
  b.decode.auto_block = true;  // Jacobi only where a block pays on this machine, else AR
  const auto r = run_bench(base, distilled, pipeline.train.corpus.make(), b);
  std::cout << r.table().to_string();
  return {{"jacobi: CLLM on a 0.85M SQL model (cached reference pair), block auto (<= 16)",
           fmt::format("TPF {:.2f} distilled vs {:.2f} base, {:.2f}x AR wall-clock (model is "
                       "cache-resident), identical output: {}, exact match {:.0f}% -> {:.0f}%",
                       r.distilled.jacobi.tpf, r.base.jacobi.tpf, r.distilled.speedup(),
                       r.distilled.jacobi.identical ? "yes" : "NO", r.quality_base,
                       r.quality_distilled),
           "CLLM: 3.4x Spider / 3.0x GSM8K on A100 (7B); base Jacobi ~1.05x"}};
}

}  // namespace tessera::jacobi
