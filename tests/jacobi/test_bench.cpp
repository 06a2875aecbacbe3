// Tests of the jacobi experiments (bench.h) on tiny options: a few prompts of a generated corpus,
// tiny random or briefly trained Llamas; each checks the counts and invariants it returns.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <numeric>

#include "tessera/core/error.h"
#include "tessera/jacobi/bench.h"
#include "test_support.h"

namespace tessera::jacobi {
namespace {

class JacobiBenchTest : public testing::SeededTest {};

llm::Tokenizer corpus_tokenizer(const Corpus& corpus) {
  std::vector<std::string> texts;
  for (const auto& e : corpus.train) texts.push_back(e.prompt + e.target);
  return llm::Tokenizer::train(texts, 300, {kEosToken});
}

// A random Llama with a BPE tokenizer trained on the corpus (weights perturbed so that greedy
// output varies from token to token).
llm::LlmBundle random_bundle(const Corpus& corpus, int64_t max_seq_len = 256) {
  llm::LlmBundle b;
  b.tokenizer = corpus_tokenizer(corpus);
  llm::LlamaConfig c;
  c.vocab_size = b.tokenizer.vocab_size();
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.hidden_dim = 64;
  c.max_seq_len = max_seq_len;
  b.model = llm::Llama(c);
  torch::NoGradGuard no_grad;
  for (auto& p : b.model->parameters()) p.add_(torch::randn_like(p) * 0.5);
  return b;
}

llm::LlamaConfig bandwidth_model() {
  llm::LlamaConfig c;
  c.dim = 64;
  c.n_layers = 1;
  c.n_heads = 1;
  c.n_kv_heads = 1;
  c.hidden_dim = 64;
  c.vocab_size = 64;
  c.max_seq_len = 64;
  return c;
}

TEST_F(JacobiBenchTest, CorpusOptionsMakeTheCorpusAndRejectBadCounts) {
  CorpusOptions o;
  o.domain = Domain::kSql;
  o.n_train = 30;
  o.n_test = 5;
  o.data_seed = 3;
  const Corpus c = o.make();
  EXPECT_EQ(c.domain, Domain::kSql);
  EXPECT_EQ(c.train.size(), 30u);
  EXPECT_EQ(c.test.size(), 5u);
  EXPECT_EQ(c.train[4].target, make_sql_corpus(30, 5, 3).train[4].target);
  EXPECT_EQ(o.to_json()["domain"], "sql");
  o.n_test = 0;
  EXPECT_THROW(o.make(), tessera::Error);
}

TEST_F(JacobiBenchTest, TrainModelTrainsTokenizerAndModelAndScoresIt) {
  TrainModelOptions o;
  o.corpus.n_train = 200;
  o.corpus.n_test = 4;
  o.arch.vocab = 320;
  o.arch.dim = 32;
  o.arch.layers = 1;
  o.arch.hidden = 64;
  o.arch.seq_len = 384;
  o.train.steps = 6;
  o.train.batch_size = 4;
  o.train.warmup_steps = 2;
  o.quality_max_new = 8;
  const auto r = train_model(o);
  EXPECT_EQ(r.train.steps, 6);
  EXPECT_EQ(r.corpus.train.size(), 200u);
  EXPECT_LE(r.bundle.tokenizer.vocab_size(), 320);
  EXPECT_EQ(r.bundle.model->config().vocab_size, r.bundle.tokenizer.vocab_size());
  EXPECT_EQ(r.bundle.model->config().max_seq_len, 384);
  EXPECT_GE(r.bundle.tokenizer.eos_id(), 0);
  ASSERT_TRUE(r.scored);
  EXPECT_GE(r.quality, 0.0);
  EXPECT_LE(r.quality, 100.0);
  EXPECT_EQ(r.table().n_rows(), 1u);
  EXPECT_EQ(r.to_json()["steps"], 6);
  o.arch.heads = 3;  // 32 is not divisible by 3
  EXPECT_THROW(train_model(o), tessera::Error);
}

TEST_F(JacobiBenchTest, QualityIsAPercentageForMathAndSqlAndPerplexityForCode) {
  auto corpus = make_math_corpus(40, 3, 0);
  auto b = random_bundle(corpus, 1024);  // room for every test example's prompt and target
  const double q = quality(b, corpus, 4);
  EXPECT_GE(q, 0.0);
  EXPECT_LE(q, 100.0);
  EXPECT_EQ(quality_name(Domain::kMath), "accuracy %");
  EXPECT_EQ(quality_name(Domain::kSql), "exact match %");
  EXPECT_EQ(quality_name(Domain::kCode), "test ppl");
  // As code, the same test split is scored by perplexity: a random model is far above 1.
  corpus.domain = Domain::kCode;
  EXPECT_GT(quality(b, corpus, 4), 1.0);
}

TEST_F(JacobiBenchTest, EncodePromptsKeepsOnlyPromptsThatFitAtMostN) {
  const auto corpus = make_math_corpus(40, 3, 0);
  std::vector<int64_t> lengths;
  const auto tokenizer = corpus_tokenizer(corpus);
  for (const auto& e : corpus.train)
    lengths.push_back(static_cast<int64_t>(tokenizer.encode(e.prompt).size()));
  // A context of the median prompt length: about half the prompts fit (strictly shorter).
  auto sorted = lengths;
  std::sort(sorted.begin(), sorted.end());
  const int64_t context = sorted[20];
  const auto n_fit =
      std::count_if(lengths.begin(), lengths.end(), [&](int64_t n) { return n < context; });
  ASSERT_GT(n_fit, 2);
  ASSERT_LT(n_fit, 40);
  auto b = random_bundle(corpus, context);
  const auto all = encode_prompts(b, corpus.train, 1000);
  EXPECT_EQ(static_cast<int64_t>(all.size()), n_fit);
  for (const auto& p : all) EXPECT_LT(static_cast<int64_t>(p.size()), context);
  const auto two = encode_prompts(b, corpus.train, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0], all[0]);
  EXPECT_EQ(two[1], all[1]);
}

TEST_F(JacobiBenchTest, CopyBundleGivesEqualButIndependentWeights) {
  const auto corpus = make_math_corpus(20, 1, 0);
  auto b = random_bundle(corpus);
  auto copy = copy_bundle(b);
  const auto tokens = torch::tensor({{1, 2, 3, 4}}, torch::kInt64);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(b.model->forward(tokens), copy.model->forward(tokens)));
  EXPECT_EQ(copy.tokenizer.vocab_size(), b.tokenizer.vocab_size());
  copy.model->parameters()[0].add_(1.0);
  EXPECT_FALSE(torch::equal(b.model->forward(tokens), copy.model->forward(tokens)));
}

TEST_F(JacobiBenchTest, CorpusTrajectoriesCountTheirStatesAndStartFromThePrompts) {
  CorpusTrajectoryOptions o;
  o.corpus.n_train = 20;
  o.corpus.n_test = 1;
  o.n_prompts = 3;
  o.trajectory.decode.block_size = 4;
  o.trajectory.decode.max_new_tokens = 8;
  o.trajectory.augment = false;
  o.trajectory.repeat_run = 1000;  // keep everything
  const auto corpus = o.corpus.make();
  auto teacher = random_bundle(corpus);
  const auto r = collect_corpus_trajectories(teacher, o);
  EXPECT_EQ(r.n_prompts, 3);
  EXPECT_EQ(r.n_dropped, 0);
  // Each prompt decodes up to 8 tokens in blocks of 4: one or two entries (EOS can end it).
  EXPECT_GE(r.data.size(), 3u);
  EXPECT_LE(r.data.size(), 6u);
  int64_t states = 0;
  for (const auto& t : r.data) states += static_cast<int64_t>(t.states.size());
  EXPECT_EQ(r.n_states, states);
  EXPECT_EQ(r.data[0].prompt, teacher.tokenizer.encode(corpus.train[0].prompt));
  // Every entry carries its prompt's ground truth: prompt, the reference target, EOS.
  std::vector<int64_t> label = teacher.tokenizer.encode(corpus.train[0].prompt);
  const auto target = teacher.tokenizer.encode(corpus.train[0].target);
  label.insert(label.end(), target.begin(), target.end());
  label.push_back(teacher.tokenizer.eos_id());
  EXPECT_EQ(r.data[0].label, label);
  for (const auto& t : r.data) EXPECT_FALSE(t.label.empty());
  EXPECT_EQ(r.to_json()["n_entries"], r.data.size());
  EXPECT_NE(r.summary().find("entries"), std::string::npos);
  o.n_prompts = 0;
  EXPECT_THROW(collect_corpus_trajectories(teacher, o), tessera::Error);
}

TEST_F(JacobiBenchTest, GenerateGivesTheSameTextWithEveryDecoder) {
  const auto corpus = make_math_corpus(20, 1, 0);
  auto b = random_bundle(corpus);
  DecodeOptions o;
  o.block_size = 4;
  o.max_new_tokens = 12;
  const auto ar = generate(b, corpus.train[0].prompt, DecoderKind::kAr, o);
  const auto jacobi = generate(b, corpus.train[0].prompt, DecoderKind::kJacobi, o);
  const auto window = generate(b, corpus.train[0].prompt, DecoderKind::kJacobiWindow, o);
  EXPECT_EQ(jacobi.text, ar.text);
  EXPECT_EQ(window.text, ar.text);
  EXPECT_GT(ar.stats.n_generated, 0);
  EXPECT_LE(ar.stats.n_generated, 12);
  EXPECT_EQ(ar.stats.n_forwards, ar.stats.n_generated);  // AR: one token per forward
  EXPECT_LE(jacobi.stats.n_forwards, ar.stats.n_forwards);
  EXPECT_EQ(jacobi.summary(DecoderKind::kJacobi, o).rfind("decoder jacobi block 4: ", 0), 0u);
  o.block_size = 0;
  EXPECT_THROW(generate(b, "x", DecoderKind::kJacobi, o), tessera::Error);
}

TEST_F(JacobiBenchTest, GenerateStreamsWhatEachForwardAccepted) {
  const auto corpus = make_math_corpus(20, 1, 0);
  auto b = random_bundle(corpus);
  DecodeOptions o;
  o.block_size = 4;
  o.max_new_tokens = 12;
  for (const auto decoder : {DecoderKind::kAr, DecoderKind::kJacobi}) {
    // The hook sees every accepted token once, in order, in one call per accepting forward.
    std::vector<int64_t> accepted;
    int64_t calls = 0;
    DecodeOptions hooked = o;
    hooked.on_accept = [&](const std::vector<int64_t>& ids) {
      EXPECT_FALSE(ids.empty());
      accepted.insert(accepted.end(), ids.begin(), ids.end());
      ++calls;
    };
    llm::LlamaEngine engine(b.model);
    const auto r = decode(engine, b.tokenizer.encode(corpus.train[0].prompt), decoder, hooked);
    EXPECT_EQ(accepted, r.tokens);
    EXPECT_LE(calls, r.stats.n_forwards);
    // generate's text pieces concatenate to its text.
    std::string streamed;
    const auto g = generate(b, corpus.train[0].prompt, decoder, o,
                            [&](const std::string& piece) { streamed += piece; });
    EXPECT_EQ(streamed, g.text);
    EXPECT_EQ(g.tokens, r.tokens);
    EXPECT_EQ(g.prompt, b.tokenizer.encode(corpus.train[0].prompt));
  }
}

TEST_F(JacobiBenchTest, MeasureSpeedGivesJacobiTheArOutputAndAddsUpTheCounts) {
  const auto corpus = make_math_corpus(20, 1, 0);
  auto b = random_bundle(corpus);
  const auto prompts = encode_prompts(b, corpus.train, 4);
  ASSERT_EQ(prompts.size(), 4u);
  DecodeOptions o;
  o.block_size = 6;
  o.max_new_tokens = 16;
  const auto p = measure_speed(b.model, prompts, o);
  for (const SpeedRow* row : {&p.ar, &p.jacobi}) {
    ASSERT_EQ(row->outputs.size(), 4u);
    ASSERT_EQ(row->per_prompt.size(), 4u);
    int64_t tokens = 0, forwards = 0;
    for (const auto& s : row->per_prompt) {
      tokens += s.n_generated;
      forwards += s.n_forwards;
    }
    EXPECT_EQ(row->n_tokens, tokens);
    EXPECT_EQ(row->n_forwards, forwards);
    EXPECT_DOUBLE_EQ(row->tpf, static_cast<double>(tokens) / static_cast<double>(forwards));
    EXPECT_GT(row->tokens_per_second, 0.0);
  }
  EXPECT_EQ(p.jacobi.outputs, p.ar.outputs);
  EXPECT_TRUE(p.jacobi.identical);
  EXPECT_DOUBLE_EQ(p.ar.tpf, 1.0);
  EXPECT_GE(p.jacobi.tpf, 1.0);
  EXPECT_GT(p.speedup(), 0.0);
  EXPECT_EQ(p.jacobi.to_json()["tokens_per_forward_per_prompt"].size(), 4u);
}

TEST_F(JacobiBenchTest, RunBenchComparesBothModelsOnTheTestPrompts) {
  const auto corpus = make_math_corpus(20, 3, 0);
  auto base = random_bundle(corpus);
  auto distilled = copy_bundle(base);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : distilled.model->parameters()) p.add_(torch::randn_like(p) * 0.3);
  }
  JacobiBenchOptions o;
  o.n_prompts = 3;
  o.decode.block_size = 4;
  o.decode.max_new_tokens = 10;
  const auto r = run_bench(base, distilled, corpus, o);
  EXPECT_EQ(r.domain, Domain::kMath);
  EXPECT_EQ(r.base.ar.outputs.size(), 3u);
  EXPECT_EQ(r.distilled.jacobi.outputs.size(), 3u);
  EXPECT_EQ(r.base.jacobi.outputs, r.base.ar.outputs);
  EXPECT_EQ(r.distilled.jacobi.outputs, r.distilled.ar.outputs);
  EXPECT_NE(r.distilled.ar.outputs, r.base.ar.outputs);  // the two models really differ
  EXPECT_EQ(r.options.decode.eos_id, base.tokenizer.eos_id());
  // The same prompts and models scored directly give the same quality.
  EXPECT_DOUBLE_EQ(r.quality_base, quality(base, corpus, 10));
  EXPECT_DOUBLE_EQ(r.quality_distilled, quality(distilled, corpus, 10));
  EXPECT_GT(r.threads, 0);
  EXPECT_FALSE(r.kernel.empty());
  const auto table = r.table();
  EXPECT_EQ(table.n_rows(), 1u);
  EXPECT_EQ(table.to_json()[0]["identical to AR"], "yes");
  EXPECT_NE(r.setup().find("block 4, init random-prompt, 3 prompts, max-new 10"), std::string::npos)
      << r.setup();
  EXPECT_TRUE(r.to_json().contains("jacobi_distilled"));
  EXPECT_EQ(r.svg().rfind("<svg", 0), 0u);
  o.n_prompts = 0;
  EXPECT_THROW(run_bench(base, distilled, corpus, o), tessera::Error);
}

TEST_F(JacobiBenchTest, BlockSweepMeasuresEveryBlockOnTheSamePrompts) {
  const auto corpus = make_math_corpus(20, 3, 0);
  auto base = random_bundle(corpus);
  auto distilled = copy_bundle(base);
  JacobiBenchOptions o;
  o.n_prompts = 2;
  o.decode.max_new_tokens = 8;
  const auto sweep = run_block_sweep(base, distilled, corpus, o, {1, 3, 6});
  ASSERT_EQ(sweep.runs.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const auto& r = sweep.runs[i];
    EXPECT_EQ(r.options.decode.block_size, std::vector<int64_t>({1, 3, 6})[i]);
    EXPECT_EQ(r.base.jacobi.outputs, r.base.ar.outputs) << "block " << r.options.decode.block_size;
    EXPECT_EQ(r.base.ar.outputs, sweep.runs[0].base.ar.outputs) << "same prompts, same AR";
    EXPECT_DOUBLE_EQ(r.quality_base, sweep.runs[0].quality_base);
  }
  // Block 1 is AR: one token per forward.
  EXPECT_DOUBLE_EQ(sweep.runs[0].base.jacobi.tpf, 1.0);
  EXPECT_EQ(sweep.table().n_rows(), 3u);
  EXPECT_EQ(sweep.to_json()["runs"].size(), 3u);
  EXPECT_NE(sweep.svg().find("against block size"), std::string::npos);
  EXPECT_THROW(run_block_sweep(base, distilled, corpus, o, {}), tessera::Error);
  EXPECT_THROW(run_block_sweep(base, distilled, corpus, o, {0}), tessera::Error);
}

TEST_F(JacobiBenchTest, ComparisonMeasuresEveryDistilledModelAgainstOneBase) {
  const auto corpus = make_math_corpus(20, 3, 0);
  auto base = random_bundle(corpus);
  std::vector<llm::LlmBundle> distilled;
  distilled.push_back(copy_bundle(base));  // equal to the base
  distilled.push_back(copy_bundle(base));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : distilled[1].model->parameters()) p.add_(torch::randn_like(p) * 0.3);
  }
  JacobiBenchOptions o;
  o.n_prompts = 3;
  o.decode.block_size = 4;
  o.decode.max_new_tokens = 10;
  const auto c = run_comparison(base, distilled, {"same", "perturbed"}, corpus, o);
  ASSERT_EQ(c.runs.size(), 2u);
  EXPECT_EQ(c.runs[0].distilled.ar.outputs, c.runs[0].base.ar.outputs);
  EXPECT_NE(c.runs[1].distilled.ar.outputs, c.runs[1].base.ar.outputs);
  EXPECT_EQ(c.runs[1].base.ar.outputs, c.runs[0].base.ar.outputs);  // the base measured once
  EXPECT_DOUBLE_EQ(c.runs[0].quality_distilled, c.runs[0].quality_base);
  EXPECT_DOUBLE_EQ(c.runs[1].quality_distilled, quality(distilled[1], corpus, 10));
  const auto rows = c.table().to_json();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["model"], "base");
  EXPECT_EQ(rows[1]["model"], "same");
  EXPECT_EQ(rows[1]["accuracy % change"], "+0.00");
  EXPECT_EQ(c.to_json()["runs"].size(), 2u);
  EXPECT_NE(c.svg().find("perturbed"), std::string::npos);
  EXPECT_THROW(run_comparison(base, distilled, {"one"}, corpus, o), tessera::Error);
}

TEST_F(JacobiBenchTest, DecodeBandwidthKeepsTheBestOfEachRound) {
  llm::Llama model(bandwidth_model());
  llm::LlamaEngine engine(model);
  BandwidthOptions o;
  o.tokens = 3;
  o.rounds = 4;
  o.triad_mb = 1;
  const auto r = measure_decode_bandwidth(engine, o);
  const auto& c = model->config();
  EXPECT_DOUBLE_EQ(r.weight_bytes, 4.0 * static_cast<double>(c.n_params() - c.vocab_size * c.dim));
  ASSERT_EQ(r.round_ratios.size(), 4u);
  EXPECT_GT(r.best_decode, 0.0);
  EXPECT_GT(r.best_triad, 0.0);
  const auto [lo, hi] = std::minmax_element(r.round_ratios.begin(), r.round_ratios.end());
  EXPECT_GE(r.median_ratio(), *lo);
  EXPECT_LE(r.median_ratio(), *hi);
  EXPECT_EQ(engine.n_past(), 1 + 3 * 4);  // the warm-up token and every decoded one
}

TEST_F(JacobiBenchTest, ForwardCostIsRelativeToOneTokenAtTheSameCacheLength) {
  llm::Llama model(bandwidth_model());
  llm::LlamaEngine engine(model);
  std::vector<float> logits;
  engine.forward(std::vector<int64_t>{1, 2, 3, 4, 5}, logits);
  const auto cost = measure_forward_cost(engine, {1, 8, 2}, 2);
  ASSERT_EQ(cost.size(), 3u);
  EXPECT_EQ(cost[0].n_tokens, 1);
  EXPECT_EQ(cost[1].n_tokens, 8);
  EXPECT_EQ(cost[2].n_tokens, 2);
  EXPECT_DOUBLE_EQ(cost[0].ratio, 1.0);
  for (const auto& f : cost) {
    EXPECT_GT(f.seconds, 0.0);
    EXPECT_DOUBLE_EQ(f.ratio, f.seconds / cost[0].seconds);
  }
  EXPECT_EQ(engine.n_past(), 5);  // the cache length is restored
  EXPECT_THROW(measure_forward_cost(engine, {1}, 0), tessera::Error);
}

TEST_F(JacobiBenchTest, RunBandwidthBuildsTheModelAndFillsBothTables) {
  BandwidthOptions o;
  o.dim = 64;
  o.layers = 1;
  o.hidden = 64;
  o.vocab = 64;
  o.tokens = 2;
  o.rounds = 2;
  o.triad_mb = 1;
  o.forward_tokens = {1, 2, 4};
  o.forward_repeats = 1;
  const auto r = run_bandwidth(o);
  EXPECT_EQ(r.config.n_heads, 1);
  EXPECT_FALSE(r.config.tie_embeddings);
  EXPECT_EQ(r.config.max_seq_len, 2 * 2 + 16 + 4);
  EXPECT_EQ(r.bandwidth.round_ratios.size(), 2u);
  ASSERT_EQ(r.forward_cost.size(), 3u);
  EXPECT_EQ(r.forward_cost[2].n_tokens, 4);
  EXPECT_EQ(r.bandwidth_table().n_rows(), 1u);
  EXPECT_EQ(r.forward_cost_table().n_rows(), 3u);
  EXPECT_EQ(r.to_json()["forward_cost"].size(), 3u);
  EXPECT_EQ(r.svg().rfind("<svg", 0), 0u);
  o.forward_tokens = {0};
  EXPECT_THROW(run_bandwidth(o), tessera::Error);
  o.forward_tokens = {1};
  o.rounds = 0;
  EXPECT_THROW(run_bandwidth(o), tessera::Error);
}

}  // namespace
}  // namespace tessera::jacobi
