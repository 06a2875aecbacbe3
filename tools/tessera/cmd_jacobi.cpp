// `tessera llm ...`: train a small Llama on a domain corpus, collect Jacobi trajectories, distill
// a consistency LLM (CLLM), generate, benchmark AR vs Jacobi, and the tour row (info and
// bandwidth: cmd_llm.cpp). The work is in tessera/jacobi/bench.h; this file binds flags and
// prints. --model takes any checkpoint (llm/checkpoint.h).
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/ranges.h>

#include "cli.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"
#include "tessera/core/report.h"
#include "tessera/core/seed.h"
#include "tessera/jacobi/bench.h"
#include "tessera/llm/checkpoint.h"

namespace {

namespace cli = tessera::cli;
namespace jacobi = tessera::jacobi;
namespace llm = tessera::llm;

// An enum bound by name: an unknown name is a usage error; the default shown is its name.
template <typename Enum, typename Parse, typename Name>
CLI::Option* add_choice(CLI::App* cmd, const std::string& flag, Enum& value,
                        const std::vector<Enum>& kinds, Parse parse, Name name,
                        const std::string& help) {
  std::vector<std::string> names;
  for (const Enum kind : kinds) names.push_back(name(kind));
  return cmd
      ->add_option_function<std::string>(
          flag, [&value, parse](const std::string& s) { value = parse(s); }, help)
      ->check(CLI::IsMember(names))
      ->default_str(name(value));
}

// --model PATH (any checkpoint, recognised by content) and --tokenizer FILE.
void add_model_flags(CLI::App* cmd, std::string& model, std::string& tokenizer,
                     const std::string& help) {
  cmd->add_option("--model", model,
                  help + ": a Tessera LLM file, Hugging Face directory, llama2.c .bin or GGUF")
      ->required();
  cmd->add_option("--tokenizer", tokenizer,
                  "tokenizer.bin (llama2.c, required there) or tokenizer.json replacing the "
                  "model's own");
}

void add_corpus_flags(CLI::App* cmd, jacobi::CorpusOptions& c) {
  add_choice(cmd, "--domain", c.domain,
             {jacobi::Domain::kMath, jacobi::Domain::kSql, jacobi::Domain::kCode},
             jacobi::parse_domain, jacobi::domain_name, "corpus: math, sql or code");
  cmd->add_option("--n-train", c.n_train, "training examples generated / read")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--n-test", c.n_test, "test examples")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--data-seed", c.data_seed, "corpus generator seed (keep equal across commands)")
      ->capture_default_str();
}

void add_arch_flags(CLI::App* cmd, jacobi::LmArchOptions& a) {
  cmd->add_option("--vocab", a.vocab, "BPE vocabulary size (incl. 256 bytes, EOS)")
      ->capture_default_str();
  cmd->add_option("--dim", a.dim, "model width D")->capture_default_str();
  cmd->add_option("--layers", a.layers, "decoder layers")->capture_default_str();
  cmd->add_option("--heads", a.heads, "attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", a.kv_heads, "key/value heads (GQA)")->capture_default_str();
  cmd->add_option("--hidden", a.hidden, "SwiGLU width")->capture_default_str();
  cmd->add_option("--seq-len", a.seq_len, "context length")->capture_default_str();
}

void add_lm_train_flags(CLI::App* cmd, jacobi::LmTrainOptions& t) {
  cmd->add_option("--steps", t.steps, "optimizer steps")->capture_default_str();
  cmd->add_option("--batch-size", t.batch_size, "sequences per step")->capture_default_str();
  cmd->add_option("--lr", t.lr, "peak AdamW learning rate")->capture_default_str();
  cmd->add_option("--max-seconds", t.max_seconds, "stop training after this wall time (0: off)")
      ->capture_default_str();
  cli::add_seed_option(cmd, t.seed);
}

// Longer than any context an LLM here has (llama2.c and GGUF files cap it far lower).
constexpr int64_t kMaxTokens = int64_t{1} << 20;

// "auto" (the engine's cost curve picks each block, at most o.block_size) or a block size.
void parse_block(const std::string& value, jacobi::DecodeOptions& o) {
  if (value == "auto") {
    o.auto_block = true;
    return;
  }
  size_t used = 0;
  int64_t n = 0;
  try {
    n = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || n < 1 || n > kMaxTokens) {
    throw CLI::ValidationError("--block", "expected auto or an integer in [1, " +
                                              std::to_string(kMaxTokens) + "], got " + value);
  }
  o.block_size = n;
  o.auto_block = false;
}

void add_decode_flags(CLI::App* cmd, jacobi::DecodeOptions& o, bool allow_auto = false) {
  if (allow_auto) {
    cmd->add_option_function<std::string>(
           "--block", [&o](const std::string& v) { parse_block(v, o); },
           "Jacobi block size n, or auto: the size with the most expected tokens per second "
           "from this machine's measured forward costs (at most 16; AR when none pays)")
        ->default_str(o.auto_block ? "auto" : std::to_string(o.block_size));
  } else {
    // Ranges on the integer itself: CLI11 saturates 99999999999999999999 to INT64_MAX, which a
    // sign check (PositiveNumber) lets through.
    cmd->add_option("--block", o.block_size, "Jacobi block size n")
        ->capture_default_str()
        ->check(CLI::Range(int64_t{1}, kMaxTokens));
  }
  cmd->add_option("--max-new", o.max_new_tokens, "maximum generated tokens")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, kMaxTokens));
  cli::add_seed_option(cmd, o.seed);
}

void add_guess_flags(CLI::App* cmd, jacobi::DecodeOptions& o) {
  add_choice(cmd, "--init", o.init, {jacobi::InitKind::kRandomPrompt, jacobi::InitKind::kNgramPool},
             jacobi::parse_init, jacobi::init_name, "initial guess: random-prompt or ngram");
  cmd->add_option("--ngram-max", o.ngram_max, "ngram: longest suffix matched")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
}

void add_trajectory_flags(CLI::App* cmd, jacobi::CorpusTrajectoryOptions& t) {
  add_corpus_flags(cmd, t.corpus);
  cmd->add_option("--n-prompts", t.n_prompts, "training prompts to run")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_decode_flags(cmd, t.trajectory.decode);
  cmd->add_flag_callback(
      "--no-aug", [&t] { t.trajectory.augment = false; }, "skip CLLM's data augmentation");
  cmd->add_option("--repeat-run", t.trajectory.repeat_run,
                  "drop a prompt whose teacher output repeats a token this many times in a row")
      ->capture_default_str();
}

void add_distill_flags(CLI::App* cmd, jacobi::DistillOptions& d) {
  cmd->add_option("--steps", d.steps, "optimizer steps")->capture_default_str();
  cmd->add_option("--batch-size", d.batch_size, "trajectory entries per step")
      ->capture_default_str();
  cmd->add_option("--lr", d.lr, "peak AdamW learning rate")->capture_default_str();
  cmd->add_option("--ar-weight", d.ar_weight, "weight w of the AR loss")->capture_default_str();
  cmd->add_option("--label-smoothing", d.label_smoothing, "AR loss label smoothing")
      ->capture_default_str();
  add_choice(cmd, "--ar-labels", d.ar_labels,
             {jacobi::ArLabels::kTeacher, jacobi::ArLabels::kGroundTruth}, jacobi::parse_ar_labels,
             jacobi::ar_labels_name,
             "AR loss on the teacher's output (teacher) or the data set's target (ground-truth)");
  add_choice(cmd, "--loss", d.loss,
             {jacobi::ConsistencyLoss::kGlobal, jacobi::ConsistencyLoss::kLocal},
             jacobi::parse_consistency_loss, jacobi::consistency_loss_name,
             "consistency loss: global or local");
  cmd->add_option("--max-seconds", d.max_seconds, "stop after this wall time (0: off)")
      ->capture_default_str();
  cli::add_seed_option(cmd, d.seed);
}

void add_bench_flags(CLI::App* cmd, jacobi::JacobiBenchOptions& b) {
  cmd->add_option("--n-prompts", b.n_prompts, "test prompts decoded per decoder")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_decode_flags(cmd, b.decode, /*allow_auto=*/true);
  add_guess_flags(cmd, b.decode);
}

// ---------------------------------------------------------------------------------------------
// Commands

struct TrainCommand {
  jacobi::TrainModelOptions options;
  std::string out = cli::default_output("llm.safetensors"), json;
};

void run_train(const TrainCommand& cmd) {
  cli::check_writable({cmd.out, cmd.json});
  tessera::seed_everything(cmd.options.train.seed);
  tessera::Report report("llm train", cmd.options.to_json(), cmd.options.train.seed);
  auto r = jacobi::train_model(cmd.options);
  llm::save_llm(cmd.out, r.bundle.model, r.bundle.tokenizer);
  std::cout << r.table().to_string() << "wrote " << cmd.out << "\n";
  report.results() = r.to_json();
  report.write(cmd.json);
}

void register_train(CLI::App& llm) {
  auto cmd = std::make_shared<TrainCommand>();
  auto* sub =
      llm.add_subcommand("train", "train a small Llama-style model from scratch on a corpus");
  add_corpus_flags(sub, cmd->options.corpus);
  sub->add_option("-o,--out", cmd->out, "model file to write")->capture_default_str();
  add_arch_flags(sub, cmd->options.arch);
  add_lm_train_flags(sub, cmd->options.train);
  cli::add_json_option(sub, cmd->json);
  sub->callback([cmd] { run_train(*cmd); });
}

struct TrajectoriesCommand {
  jacobi::CorpusTrajectoryOptions options;
  std::string model, tokenizer, out = cli::default_output("trajectories.json"), json;
};

void run_trajectories(const TrajectoriesCommand& cmd) {
  cli::check_writable({cmd.out, cmd.json});
  tessera::Report report("llm trajectories", cmd.options.to_json(),
                         cmd.options.trajectory.decode.seed);
  auto teacher = llm::load_any(cmd.model, cmd.tokenizer);
  const auto r = jacobi::collect_corpus_trajectories(teacher, cmd.options);
  tessera::write_file_atomic(cmd.out, jacobi::trajectories_to_json(r.data).dump());
  std::cout << r.summary() << " -> " << cmd.out << "\n";
  report.results() = r.to_json();
  report.write(cmd.json);
}

void register_trajectories(CLI::App& llm) {
  auto cmd = std::make_shared<TrajectoriesCommand>();
  auto* sub =
      llm.add_subcommand("trajectories", "collect Jacobi trajectories from a teacher model");
  add_model_flags(sub, cmd->model, cmd->tokenizer, "teacher model");
  sub->add_option("-o,--out", cmd->out, "trajectory file (JSON)")->capture_default_str();
  add_trajectory_flags(sub, cmd->options);
  cli::add_json_option(sub, cmd->json);
  sub->callback([cmd] { run_trajectories(*cmd); });
}

struct DistillCommand {
  jacobi::DistillOptions options;
  std::string model, tokenizer, trajectories, out = cli::default_output("cllm.safetensors"), json;
};

void run_distill(const DistillCommand& cmd) {
  cli::check_writable({cmd.out, cmd.json});
  tessera::seed_everything(cmd.options.seed);
  tessera::Report report("llm distill", cmd.options.to_json(), cmd.options.seed);
  auto b = llm::load_any(cmd.model, cmd.tokenizer);
  const auto data = jacobi::trajectories_from_json(
      tessera::parse_json(tessera::read_file(cmd.trajectories), "'" + cmd.trajectories + "'"));
  const auto r = jacobi::distill(b.model, data, cmd.options);
  llm::save_llm(cmd.out, b.model, b.tokenizer);
  std::cout << r.table().to_string() << "wrote " << cmd.out << "\n";
  report.results() = r.table().to_json();
  report.write(cmd.json);
}

void register_distill(CLI::App& llm) {
  auto cmd = std::make_shared<DistillCommand>();
  auto* sub =
      llm.add_subcommand("distill", "consistency distillation (CLLM) on Jacobi trajectories");
  add_model_flags(sub, cmd->model, cmd->tokenizer,
                  "model to fine-tune (the teacher of the trajectories; saved as a Tessera LLM "
                  "file with its tokenizer)");
  sub->add_option("--trajectories", cmd->trajectories, "file from `llm trajectories`")->required();
  sub->add_option("-o,--out", cmd->out, "distilled model file")->capture_default_str();
  add_distill_flags(sub, cmd->options);
  cli::add_json_option(sub, cmd->json);
  sub->callback([cmd] { run_distill(*cmd); });
}

struct GenerateCommand {
  jacobi::DecodeOptions options;
  jacobi::DecoderKind decoder = jacobi::DecoderKind::kJacobi;
  std::string model, tokenizer, prompt, prompt_file, json;
  bool ids = false;
};

void run_generate(const GenerateCommand& cmd) {
  cli::check_writable({cmd.json});
  tessera::Report report(
      "llm generate",
      {{"decoder", jacobi::decoder_name(cmd.decoder)}, {"decode", cmd.options.to_json()}},
      cmd.options.seed);
  auto b = llm::load_any(cmd.model, cmd.tokenizer);
  const std::string prompt =
      cmd.prompt_file.empty() ? cmd.prompt : tessera::read_file(cmd.prompt_file);
  // Text streams as the decoder accepts it; --ids prints the ids once decoding is done.
  std::cout << prompt << std::flush;
  const auto stream = [&](const std::string& piece) { std::cout << piece << std::flush; };
  const auto r = jacobi::generate(b, prompt, cmd.decoder, cmd.options, stream);
  std::cout << "\n\n";
  if (cmd.ids) {
    std::cout << fmt::format("prompt ids: {}\ngenerated ids: {}\n", fmt::join(r.prompt, " "),
                             fmt::join(r.tokens, " "));
  }
  std::cout << r.summary(cmd.decoder, cmd.options) << "\n";
  report.results() = r.stats.to_json();
  report.results()["text"] = r.text;
  report.results()["prompt_ids"] = r.prompt;
  report.results()["generated_ids"] = r.tokens;
  report.write(cmd.json);
}

void register_generate(CLI::App& llm) {
  auto cmd = std::make_shared<GenerateCommand>();
  auto* sub = llm.add_subcommand("generate", "generate text with AR or Jacobi decoding");
  add_model_flags(sub, cmd->model, cmd->tokenizer, "model");
  auto* prompt = sub->add_option("--prompt", cmd->prompt,
                                 "prompt text (empty: from BOS alone, for models that take one)");
  sub->add_option("--prompt-file", cmd->prompt_file, "read the prompt from this file")
      ->check(CLI::ExistingFile)
      ->excludes(prompt);
  sub->add_flag("--ids", cmd->ids, "also print the prompt's and the generated token ids");
  add_choice(
      sub, "--decoder", cmd->decoder,
      {jacobi::DecoderKind::kAr, jacobi::DecoderKind::kJacobi, jacobi::DecoderKind::kJacobiWindow},
      jacobi::parse_decoder, jacobi::decoder_name, "ar, jacobi or jacobi-window");
  cmd->options.auto_block = true;
  add_decode_flags(sub, cmd->options, /*allow_auto=*/true);
  add_guess_flags(sub, cmd->options);
  cli::add_json_option(sub, cmd->json);
  sub->callback([cmd] { run_generate(*cmd); });
}

struct BenchCommand {
  jacobi::CorpusOptions corpus;
  jacobi::JacobiBenchOptions options;
  std::vector<int64_t> blocks;         ///< a sweep over block sizes when non-empty
  std::vector<std::string> distilled;  ///< several: a comparison at one block size
  std::string base, tokenizer, json, svg;
};

void run_bench(const BenchCommand& cmd) {
  cli::check_writable({cmd.json, cmd.svg});
  auto config = cmd.options.to_json();
  config["corpus"] = cmd.corpus.to_json();
  tessera::Report report("llm bench", config, cmd.options.decode.seed);
  const auto done = [&](const auto& r, const jacobi::JacobiBenchResult& first) {
    std::cout << r.table().to_string() << first.setup() << "\n";
    if (!cmd.svg.empty()) tessera::write_file_atomic(cmd.svg, r.svg());
    report.results() = r.to_json();
    report.write(cmd.json);
  };
  auto base = llm::load_any(cmd.base, cmd.tokenizer);
  if (cmd.distilled.size() > 1) {
    TESSERA_CHECK(cmd.blocks.empty(), "--blocks sweeps one distilled model, not {}",
                  cmd.distilled.size());
    std::vector<llm::LlmBundle> models;
    for (const auto& path : cmd.distilled) models.push_back(llm::load_any(path, cmd.tokenizer));
    const auto c =
        jacobi::run_comparison(base, models, cmd.distilled, cmd.corpus.make(), cmd.options);
    return done(c, c.runs.front());
  }
  auto distilled = llm::load_any(cmd.distilled.front(), cmd.tokenizer);
  if (!cmd.blocks.empty()) {
    const auto sweep =
        jacobi::run_block_sweep(base, distilled, cmd.corpus.make(), cmd.options, cmd.blocks);
    return done(sweep, sweep.runs.front());
  }
  const auto r = jacobi::run_bench(base, distilled, cmd.corpus.make(), cmd.options);
  done(r, r);
}

void register_bench(CLI::App& llm) {
  auto cmd = std::make_shared<BenchCommand>();
  auto* sub = llm.add_subcommand("bench", "AR vs Jacobi on base and distilled models, one domain");
  add_corpus_flags(sub, cmd->corpus);
  sub->add_option("--base", cmd->base, "base model (any checkpoint, as --model takes)")->required();
  sub->add_option("--distilled", cmd->distilled,
                  "distilled model file; several (comma-separated): compared at one block size")
      ->required()
      ->delimiter(',');
  sub->add_option("--tokenizer", cmd->tokenizer, "tokenizer file for both (llama2.c needs one)");
  add_bench_flags(sub, cmd->options);
  cli::add_json_option(sub, cmd->json);
  sub->add_option("--blocks", cmd->blocks, "sweep these block sizes (comma-separated)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  sub->add_option("--svg", cmd->svg,
                  "write an SVG: TPF and speed per test prompt, or against --blocks; quality "
                  "against TPF for several --distilled");
  sub->callback([cmd] { run_bench(*cmd); });
}

}  // namespace

void register_jacobi(CLI::App& app, tessera::cli::Tour& tour) {
  auto* llm = cli::subcommand_group(
      app, "llm", "LLMs: any checkpoint, Jacobi decoding and consistency distillation (CLLM)");
  register_train(*llm);
  register_trajectories(*llm);
  register_distill(*llm);
  register_generate(*llm);
  register_bench(*llm);
  tour.add("jacobi", &jacobi::tour);
  tour.add_references(jacobi::reference_files());
}
