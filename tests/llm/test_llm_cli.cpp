// End-to-end tests of `tessera llm` on foreign checkpoints written here: a Hugging Face directory,
// a llama2.c file with its tokenizer.bin and a GGUF file decode, through the binary, the ids that
// the library's own greedy loop gives; bad input is one `error:` line; a distilled GGUF model is
// saved as a Tessera file with its tokenizer.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <sstream>

#include "checkpoint_writers.h"
#include "tessera/core/fs.h"
#include "tessera/llm/checkpoint.h"
#include "test_support.h"

namespace tessera::llm {
namespace {

using testing::TempDir;

class LlmCliTest : public testing::SeededTest {};

testing::CommandResult run(const std::string& args, const TempDir& dir) {
  return testing::run_command(std::string(TESSERA_BINARY) + " --quiet " + args, dir);
}

void expect_one_error_line(const testing::CommandResult& r, const std::string& must_mention) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(must_mention), std::string::npos) << "stderr: " << r.err;
}

// The ids after "<label>: " on the output line that starts with it.
std::vector<int64_t> ids_after(const std::string& out, const std::string& label) {
  const size_t at = out.find(label + ": ");
  EXPECT_NE(at, std::string::npos) << out;
  if (at == std::string::npos) return {};
  const size_t begin = at + label.size() + 2;
  std::istringstream line(out.substr(begin, out.find('\n', begin) - begin));
  std::vector<int64_t> ids;
  for (int64_t id; line >> id;) ids.push_back(id);
  return ids;
}

// The library's path: load_any, encode_prompt, then greedy argmax one token at a time.
std::vector<int64_t> library_greedy(const std::string& model, const std::string& tokenizer,
                                    const std::string& prompt, int64_t n) {
  auto bundle = load_any(model, tokenizer);
  LlamaEngine engine(bundle.model);
  std::vector<int64_t> context = bundle.tokenizer.encode_prompt(prompt), out;
  std::vector<float> logits;
  engine.forward(context, logits, 1);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t next = argmax_row(logits.data(), engine.vocab_size());
    out.push_back(next);
    if (next == bundle.tokenizer.eos_id()) break;
    engine.forward(&next, 1, logits);
  }
  return out;
}

struct Checkpoints {
  std::string hf, llama2c, tokenizer_bin, gguf;
};

Checkpoints write_checkpoints(const TempDir& dir) {
  Checkpoints c{dir.file("hf"), dir.file("stories.bin"), dir.file("tokenizer.bin"),
                dir.file("model.gguf")};
  auto config = writers::small_config();
  std::filesystem::create_directories(c.hf);
  writers::write_hf_dir(c.hf, writers::random_model(config), "llama");
  const nlohmann::json split = {
      {"type", "Split"}, {"pattern", {{"Regex", kGpt2Pattern}}}, {"behavior", "Isolated"}};
  write_file_atomic(c.hf + "/tokenizer.json",
                    writers::byte_level_tokenizer_json({"h e", "l l", "\xc4\xa0 w"}, split).dump());
  Llama gguf = writers::random_model(config);
  testing::write_bytes(c.gguf, writers::gguf_llama_bytes(gguf, true));
  config.rope_style = RopeStyle::kGptj;
  Llama l2c = writers::random_model(config);
  testing::write_bytes(c.llama2c, writers::llama2c_bytes(l2c, true, 32));
  std::vector<std::string> pieces;
  std::vector<float> scores;
  writers::sp_vocab(pieces, scores, " ");
  testing::write_bytes(c.tokenizer_bin, writers::tokenizer_bin(pieces, scores));
  return c;
}

TEST_F(LlmCliTest, GenerateOnEveryFormatGivesTheLibraryIds) {
  TempDir dir;
  const auto c = write_checkpoints(dir);
  const std::vector<std::pair<std::string, std::string>> models = {
      {c.hf, ""}, {c.llama2c, c.tokenizer_bin}, {c.gguf, ""}};
  for (const auto& [model, tokenizer] : models) {
    const std::string flags = "--model " + model +
                              (tokenizer.empty() ? "" : " --tokenizer " + tokenizer) +
                              " --prompt 'hello world' --max-new 10 --block 4 --ids";
    const auto expected = library_greedy(model, tokenizer, "hello world", 10);
    for (const std::string decoder : {"ar", "jacobi"}) {
      const auto r = run("llm generate --decoder " + decoder + " " + flags, dir);
      ASSERT_EQ(r.exit_code, 0) << model << "\n" << r.err;
      EXPECT_EQ(ids_after(r.out, "generated ids"), expected) << model << " " << decoder;
      EXPECT_EQ(ids_after(r.out, "prompt ids"),
                load_any(model, tokenizer).tokenizer.encode_prompt("hello world"));
      EXPECT_EQ(r.out.rfind("hello world", 0), 0u) << "the prompt is printed first: " << r.out;
    }
    const auto info =
        run("llm info " + model + (tokenizer.empty() ? "" : " --tokenizer " + tokenizer), dir);
    EXPECT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find(std::to_string(writers::small_config().n_params())), std::string::npos)
        << info.out;
  }
  // --prompt-file reads the prompt from a file.
  write_file_atomic(dir.file("prompt.txt"), "hello world");
  const auto r = run("llm generate --decoder ar --max-new 10 --block 4 --ids --model " + c.gguf +
                         " --prompt-file " + dir.file("prompt.txt"),
                     dir);
  EXPECT_EQ(ids_after(r.out, "generated ids"), library_greedy(c.gguf, "", "hello world", 10));
}

TEST_F(LlmCliTest, BadCheckpointsAreOneClearErrorEach) {
  TempDir dir;
  const auto c = write_checkpoints(dir);
  std::filesystem::create_directories(dir.file("no_config"));
  expect_one_error_line(run("llm generate --prompt x --model " + dir.file("no_config"), dir),
                        "config.json");
  expect_one_error_line(run("llm generate --prompt x --model " + c.llama2c, dir), "--tokenizer");
  std::string q4 = read_file(c.gguf);
  const std::string first = "token_embd.weight";
  const uint32_t q4_type = 2;
  std::memcpy(&q4[q4.find(first) + first.size() + 4 + 2 * 8], &q4_type, 4);
  testing::write_bytes(dir.file("q4.gguf"), q4);
  expect_one_error_line(run("llm info " + dir.file("q4.gguf"), dir), "unsupported");
  const std::string bytes = read_file(c.gguf);
  testing::write_bytes(dir.file("cut.gguf"), bytes.substr(0, bytes.size() / 2));
  expect_one_error_line(run("llm generate --prompt x --model " + dir.file("cut.gguf"), dir),
                        "cut.gguf");
  testing::write_bytes(dir.file("junk.bin"), std::string(100, '\x7f'));
  expect_one_error_line(
      run("llm bench --base " + dir.file("junk.bin") + " --distilled " + dir.file("junk.bin"), dir),
      "not a recognised checkpoint");
}

TEST_F(LlmCliTest, DistilledForeignModelKeepsItsTokenizer) {
  TempDir dir;
  // A context long enough for the corpus prompts in byte-fallback tokens.
  auto config = writers::small_config();
  config.max_seq_len = 512;
  Llama model = writers::random_model(config);
  const std::string gguf = dir.file("long.gguf");
  testing::write_bytes(gguf, writers::gguf_llama_bytes(model, false));
  const std::string corpus = " --domain math --n-train 20 --n-test 4";
  auto r = run("llm trajectories --model " + gguf + corpus +
                   " --n-prompts 2 --max-new 8 --block 4 -o " + dir.file("traj.json"),
               dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_NE(read_file(dir.file("traj.json")).find("states"), std::string::npos);
  r = run("llm distill --model " + gguf + " --trajectories " + dir.file("traj.json") +
              " --steps 2 --batch-size 2 -o " + dir.file("cllm.safetensors"),
          dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto distilled = load_checkpoint(dir.file("cllm.safetensors"));
  const auto source = load_any(gguf);
  EXPECT_EQ(distilled.format, CheckpointFormat::kTessera);
  EXPECT_EQ(distilled.bundle.tokenizer.to_json(), source.tokenizer.to_json());
  EXPECT_TRUE(distilled.bundle.tokenizer.add_bos());
  r = run("llm generate --decoder ar --max-new 6 --block 4 --ids --prompt hello --model " +
              dir.file("cllm.safetensors"),
          dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ids_after(r.out, "generated ids"),
            library_greedy(dir.file("cllm.safetensors"), "", "hello", 6));
  EXPECT_EQ(ids_after(r.out, "prompt ids").front(), 1) << "BOS kept from the GGUF";
}

}  // namespace
}  // namespace tessera::llm
