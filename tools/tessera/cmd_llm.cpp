// `tessera llm info` (what a checkpoint holds: format, architecture, parameters, dtypes,
// tokenizer) and `tessera llm bandwidth` (the machine's decode bandwidth and n-token forward
// cost); the rest of the `llm` group is in cmd_jacobi.cpp.
#include <iostream>
#include <memory>
#include <string>

#include <fmt/ranges.h>

#include "cli.h"
#include "tessera/core/fs.h"
#include "tessera/core/report.h"
#include "tessera/jacobi/bench.h"
#include "tessera/llm/checkpoint.h"

namespace {

namespace cli = tessera::cli;
namespace jacobi = tessera::jacobi;
namespace llm = tessera::llm;

struct InfoCommand {
  std::string model, tokenizer, json;
};

void run_info(const InfoCommand& cmd) {
  cli::check_writable({cmd.json});
  tessera::Report report("llm info", {{"model", cmd.model}, {"tokenizer", cmd.tokenizer}}, 0);
  const auto checkpoint = llm::load_checkpoint(cmd.model, cmd.tokenizer);
  std::cout << checkpoint.table().to_string();
  report.results() = checkpoint.to_json();
  report.write(cmd.json);
}

void register_info(CLI::App& llm) {
  auto cmd = std::make_shared<InfoCommand>();
  auto* sub = llm.add_subcommand(
      "info", "format, architecture, parameters, dtypes and tokenizer of any LLM checkpoint");
  sub->add_option("model", cmd->model,
                  "a Tessera LLM file, Hugging Face directory, llama2.c .bin or GGUF file")
      ->required();
  sub->add_option("--tokenizer", cmd->tokenizer,
                  "tokenizer.bin (llama2.c, required there) or tokenizer.json replacing the "
                  "model's own");
  cli::add_json_option(sub, cmd->json);
  sub->callback([cmd] { run_info(*cmd); });
}

void add_bandwidth_flags(CLI::App* cmd, jacobi::BandwidthOptions& b) {
  cmd->add_option("--dim", b.dim, "model width")->capture_default_str();
  cmd->add_option("--layers", b.layers, "layers")->capture_default_str();
  cmd->add_option("--hidden", b.hidden, "SwiGLU width")->capture_default_str();
  cmd->add_option("--vocab", b.vocab, "vocabulary")->capture_default_str();
  cmd->add_option("--tokens", b.tokens, "decoded tokens timed per round")->capture_default_str();
  cmd->add_option("--rounds", b.rounds, "alternating decode and triad rounds (best kept)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--triad-mb", b.triad_mb, "size of each triad array in MB")
      ->capture_default_str();
  cmd->add_option("--forward-tokens", b.forward_tokens, "n of the forward-cost table")
      ->default_str(fmt::format("{}", fmt::join(b.forward_tokens, ",")))
      ->delimiter(',');
  cmd->add_option("--forward-repeats", b.forward_repeats, "forwards per n (fastest kept)")
      ->capture_default_str();
  cli::add_seed_option(cmd, b.seed);
}

struct BandwidthCommand {
  jacobi::BandwidthOptions options;
  std::string json, svg;
};

void run_bandwidth(const BandwidthCommand& cmd) {
  cli::check_writable({cmd.json, cmd.svg});
  tessera::Report report("llm bandwidth", cmd.options.to_json(), cmd.options.seed);
  const auto r = jacobi::run_bandwidth(cmd.options);
  std::cout << r.bandwidth_table().to_string() << r.forward_cost_table().to_string();
  if (!cmd.svg.empty()) tessera::write_file_atomic(cmd.svg, r.svg());
  report.results() = r.to_json();
  report.write(cmd.json);
}

void register_bandwidth(CLI::App& llm) {
  auto cmd = std::make_shared<BandwidthCommand>();
  auto* sub = llm.add_subcommand(
      "bandwidth", "AR decode weight streaming vs a STREAM-like triad (memory-bandwidth goal)");
  add_bandwidth_flags(sub, cmd->options);
  cli::add_json_option(sub, cmd->json);
  sub->add_option("--svg", cmd->svg, "write the n-token forward cost against n as SVG");
  sub->callback([cmd] { run_bandwidth(*cmd); });
}

}  // namespace

void register_llm(CLI::App& app, tessera::cli::Tour& /*tour*/) {
  auto* llm = cli::subcommand_group(
      app, "llm", "LLMs: any checkpoint, Jacobi decoding and consistency distillation (CLLM)");
  register_info(*llm);
  register_bandwidth(*llm);
}
