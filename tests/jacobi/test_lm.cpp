// Tests of the corpora, LM training, trajectory augmentation/cleaning/serialisation and
// consistency distillation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <regex>

#include "tessera/core/error.h"
#include "tessera/jacobi/corpus.h"
#include "tessera/jacobi/lm.h"
#include "test_support.h"

namespace tessera::jacobi {
namespace {

class JacobiLmTest : public testing::SeededTest {};

TEST_F(JacobiLmTest, MathCorpusSolutionsEndInTheAnswerAndAddUp) {
  auto c = make_math_corpus(300, 50, 3);
  ASSERT_EQ(c.train.size(), 300u);
  ASSERT_EQ(c.test.size(), 50u);
  const std::regex eq(R"((\d+) ([-+*/]) (\d+) = \$?(\d+))");
  int64_t checked = 0;
  for (const auto& e : c.train) {
    EXPECT_EQ(extract_math_answer(e.target), e.answer) << e.target;
    EXPECT_EQ(e.prompt.rfind("Question: ", 0), 0u);
    // Every binary step "a op b = r" in the solution is arithmetically right.
    for (std::sregex_iterator it(e.target.begin(), e.target.end(), eq), end; it != end; ++it) {
      const int64_t a = std::stoll((*it)[1]), b = std::stoll((*it)[3]), r = std::stoll((*it)[4]);
      const char op = (*it)[2].str()[0];
      const int64_t want = op == '+' ? a + b : op == '-' ? a - b : op == '*' ? a * b : a / b;
      EXPECT_EQ(r, want) << e.target;
      ++checked;
    }
  }
  EXPECT_GT(checked, 300);
  // Seeded: the same seed gives the same corpus, another seed a different one.
  EXPECT_EQ(make_math_corpus(10, 2, 3).train[7].target, c.train[7].target);
  EXPECT_NE(make_math_corpus(10, 2, 4).train[7].target, c.train[7].target);
}

TEST_F(JacobiLmTest, SqlCorpusQueriesUseTheirTables) {
  auto c = make_sql_corpus(200, 20, 1);
  for (const auto& e : c.train) {
    ASSERT_EQ(e.target.rfind("SELECT ", 0), 0u) << e.target;
    const size_t from = e.target.find(" FROM ");
    ASSERT_NE(from, std::string::npos);
    const std::string table = e.target.substr(from + 6, e.target.find(' ', from + 6) - from - 6);
    EXPECT_NE(e.prompt.find(table + "(id"), std::string::npos) << e.prompt << " / " << e.target;
  }
  EXPECT_EQ(c.domain, Domain::kSql);
  for (const auto d : {Domain::kMath, Domain::kSql, Domain::kCode})
    EXPECT_EQ(parse_domain(domain_name(d)), d);
  EXPECT_THROW(parse_domain("chat"), tessera::Error);
}

TEST_F(JacobiLmTest, CodeCorpusReadsPythonFunctionsWithADisjointSplit) {
  if (!std::filesystem::is_directory(kPythonStdlibDir)) GTEST_SKIP() << "no " << kPythonStdlibDir;
  auto c = make_code_corpus(100, 20, 0);
  EXPECT_EQ(c.train.size(), 100u);
  EXPECT_EQ(c.test.size(), 20u);
  for (const auto& e : c.train) EXPECT_EQ(e.target.rfind("def ", 0), 0u) << e.target;
  for (const auto& t : c.test) {
    for (const auto& e : c.train) EXPECT_NE(t.target, e.target);
  }
  EXPECT_THROW(make_code_corpus(1, 1, 0, "/nonexistent"), tessera::Error);
}

llm::Llama tiny_model(int64_t vocab) {
  llm::LlamaConfig c;
  c.vocab_size = vocab;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.hidden_dim = 64;
  c.max_seq_len = 64;
  return llm::Llama(c);
}

TEST_F(JacobiLmTest, TrainingLowersLossAndPerplexity) {
  std::vector<TokenizedExample> data;
  for (int i = 0; i < 8; ++i) data.push_back({{1, 2, 3}, {4 + i % 2, 5, 6, 7, 8, 9}});
  auto model = tiny_model(16);
  const double before = target_perplexity(model, data);
  LmTrainOptions o;
  o.steps = 60;
  o.batch_size = 8;
  o.warmup_steps = 5;
  auto r = train_lm(model, data, o);
  EXPECT_EQ(r.steps, 60);
  EXPECT_LT(r.final_loss, 0.5 * r.first_loss);
  const double after = target_perplexity(model, data);
  EXPECT_LT(after, 0.3 * before) << before << " -> " << after;
  o.steps = 0;
  EXPECT_THROW(train_lm(model, data, o), tessera::Error);
}

TEST_F(JacobiLmTest, TrajectoryDatasetAugmentsCleansAndSerialises) {
  auto model = tiny_model(16);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p));
  }
  TrajectoryOptions o;
  o.decode.block_size = 8;
  o.decode.max_new_tokens = 24;
  o.repeat_run = 1000;  // keep everything
  std::vector<std::vector<int64_t>> prompts = {{1, 2, 3}, {4, 5}, {6, 7, 8, 9}};
  auto plain_opts = o;
  plain_opts.augment = false;
  auto plain = collect_trajectory_dataset(model, prompts, plain_opts);
  auto aug = collect_trajectory_dataset(model, prompts, o);
  ASSERT_EQ(plain.size(), aug.size());
  size_t plain_states = 0, aug_states = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_EQ(plain[i].states.back(), aug[i].states.back());  // same fixed point, still last
    plain_states += plain[i].states.size();
    aug_states += aug[i].states.size();
  }
  EXPECT_GE(aug_states, plain_states);
  // Cleaning: a run limit of 2 drops every prompt whose output repeats a token twice in a row.
  o.repeat_run = 2;
  int64_t dropped = 0;
  auto cleaned = collect_trajectory_dataset(model, prompts, o, &dropped);
  EXPECT_EQ(cleaned.size() + static_cast<size_t>(dropped), aug.size());
  auto back = trajectories_from_json(trajectories_to_json(aug));
  ASSERT_EQ(back.size(), aug.size());
  EXPECT_EQ(back[0].states, aug[0].states);
  EXPECT_TRUE(back[0].label.empty());  // none collected, none written
  // Labels (one per prompt) reach every entry of their prompt and survive the file.
  const std::vector<std::vector<int64_t>> labels = {{1, 2, 3, 10, 11}, {4, 5, 12}, {6, 7, 13}};
  auto labelled = collect_trajectory_dataset(model, prompts, plain_opts, nullptr, labels);
  for (const auto& t : labelled) {  // the prompts start with 1, 4, 6: so do their labels
    ASSERT_FALSE(t.label.empty());
    EXPECT_EQ(t.label[0], t.prompt[0]);
  }
  EXPECT_EQ(labelled.front().label, labels[0]);
  EXPECT_EQ(labelled.back().label, labels[2]);
  EXPECT_EQ(trajectories_from_json(trajectories_to_json(labelled)).back().label, labels[2]);
  EXPECT_THROW(collect_trajectory_dataset(model, prompts, plain_opts, nullptr, {{1}}),
               tessera::Error);
  EXPECT_THROW(trajectories_from_json(nlohmann::json::object()), tessera::Error);
  EXPECT_THROW(trajectories_from_json(
                   nlohmann::json::parse(R"([{"prompt": [1], "states": [[1, 2], [3]]}])")),
               tessera::Error);
  EXPECT_THROW(trajectories_from_json(nlohmann::json::parse(R"([{"prompt": [1]}])")),
               tessera::Error);
  // Ids that are not integers (a fuzzer's 9.2e19, a float) are refused, never converted.
  for (const char* bad : {R"([{"prompt": [92233720368547758073], "states": [[1]]}])",
                          R"([{"prompt": [1], "states": [[2.5]]}])"}) {
    const std::string e =
        testing::error_of([&] { trajectories_from_json(nlohmann::json::parse(bad)); });
    EXPECT_NE(e.find("must be an integer"), std::string::npos) << e;
  }
}

TEST_F(JacobiLmTest, DistillationLowersTheConsistencyLoss) {
  auto model = tiny_model(16);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.5);
  }
  TrajectoryOptions o;
  o.decode.block_size = 8;
  o.decode.max_new_tokens = 16;
  o.repeat_run = 1000;
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t i = 0; i < 6; ++i) prompts.push_back({i, i + 1, (i * 3) % 16});
  auto data = collect_trajectory_dataset(model, prompts, o);
  for (const auto loss : {ConsistencyLoss::kGlobal, ConsistencyLoss::kLocal}) {
    auto student = tiny_model(16);
    {
      torch::NoGradGuard no_grad;
      auto src = model->parameters();
      auto dst = student->parameters();
      for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
    }
    DistillOptions d;
    d.steps = 80;
    d.batch_size = 8;
    d.lr = 3e-3;
    d.loss = loss;
    // The local targets move with the model; with the AR term off, the consistency term alone
    // must fall. The global form is checked with CLLM's weights (AR x10).
    if (loss == ConsistencyLoss::kLocal) d.ar_weight = 0.0;
    auto r = distill(student, data, d);
    EXPECT_LT(r.final_consistency, 0.5 * r.first_consistency) << consistency_loss_name(loss);
    if (loss == ConsistencyLoss::kGlobal) {
      EXPECT_LT(r.final_ar, r.first_ar);
    }
  }
  // Ground-truth AR labels: the AR loss is the one on the labels, and it falls; trajectories
  // without labels are refused with a message that says how to get them.
  DistillOptions gt;
  gt.steps = 60;
  gt.batch_size = 8;
  gt.lr = 3e-3;
  gt.ar_labels = ArLabels::kGroundTruth;
  EXPECT_NE(
      testing::error_of([&] { distill(model, data, gt); }).find("needs trajectories with labels"),
      std::string::npos);
  auto labelled = data;
  for (auto& t : labelled) t.label = {t.prompt[0], 3, 5, 7, 9, 11, 13};
  auto student = tiny_model(16);
  const auto r = distill(student, labelled, gt);
  EXPECT_LT(r.final_ar, 0.5 * r.first_ar);
  EXPECT_EQ(parse_ar_labels("ground-truth"), ArLabels::kGroundTruth);
  EXPECT_THROW(parse_ar_labels("gold"), tessera::Error);
  EXPECT_EQ(parse_consistency_loss("local"), ConsistencyLoss::kLocal);
  EXPECT_THROW(parse_consistency_loss("medusa"), tessera::Error);
  DistillOptions bad;
  bad.steps = 0;
  EXPECT_THROW(distill(model, data, bad), tessera::Error);
}

}  // namespace
}  // namespace tessera::jacobi
