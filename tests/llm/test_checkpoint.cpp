// Tests of the one checkpoint entry point (llm/checkpoint.h), the model tokenizer and its JSON in
// a Tessera LLM file (llm/model_tokenizer.h), the streaming detokenizer and the PCRE2
// pre-tokenizer of tokenizer.json, on files written here.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>

#include "checkpoint_writers.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/llm/checkpoint.h"
#include "test_support.h"

namespace tessera::llm {
namespace {

class CheckpointTest : public testing::SeededTest {};

using testing::error_of;
using testing::TempDir;
using testing::write_bytes;

std::vector<float> logits(Llama& model) {
  LlamaEngine engine(model);
  std::vector<float> out;
  engine.forward(std::vector<int64_t>{1, 5, 9, 270, 3}, out);
  return out;
}

// A llama2.c tokenizer.bin with the test vocabulary.
void write_tokenizer_bin(const std::string& path) {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  writers::sp_vocab(pieces, scores, " ");
  write_bytes(path, writers::tokenizer_bin(pieces, scores));
}

nlohmann::json gpt2_split() {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{"Regex", kGpt2Pattern}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
}

TEST_F(CheckpointTest, RecognisesEveryFormatByContentNotExtension) {
  auto config = writers::small_config();
  TempDir dir;
  // Tessera file named .gguf, GGUF named .bin, llama2.c named .safetensors: content decides.
  Llama tessera_model = writers::random_model(config);
  save_llm(dir.file("t.gguf"), tessera_model, Tokenizer());
  Llama hf_model = writers::random_model(config);
  std::filesystem::create_directories(dir.file("hf"));
  writers::write_hf_dir(dir.file("hf"), hf_model, "llama");
  write_file_atomic(dir.file("hf/tokenizer.json"),
                    writers::byte_level_tokenizer_json({"h e"}, gpt2_split()).dump());
  Llama gguf_model = writers::random_model(config);
  write_bytes(dir.file("g.bin"), writers::gguf_llama_bytes(gguf_model, false));
  config.rope_style = RopeStyle::kGptj;
  Llama l2c_model = writers::random_model(config);
  write_bytes(dir.file("v1.safetensors"), writers::llama2c_bytes(l2c_model, true, 32));
  write_bytes(dir.file("legacy.json"), writers::llama2c_bytes(l2c_model, false, 32));
  write_tokenizer_bin(dir.file("tok.bin"));

  struct Case {
    std::string path, tokenizer;
    CheckpointFormat format;
    Llama* source;
    std::string tokenizer_kind;
    bool add_bos;
  };
  const std::vector<Case> cases = {
      {dir.file("t.gguf"), "", CheckpointFormat::kTessera, &tessera_model, "tessera-bpe", false},
      {dir.file("hf"), "", CheckpointFormat::kHuggingFace, &hf_model, "byte-bpe", false},
      {dir.file("g.bin"), "", CheckpointFormat::kGguf, &gguf_model, "sentencepiece", true},
      {dir.file("v1.safetensors"), dir.file("tok.bin"), CheckpointFormat::kLlama2c, &l2c_model,
       "sentencepiece", true},
      {dir.file("legacy.json"), dir.file("tok.bin"), CheckpointFormat::kLlama2c, &l2c_model,
       "sentencepiece", true}};
  for (const auto& c : cases) {
    EXPECT_EQ(detect_checkpoint(c.path), c.format) << c.path;
    auto loaded = load_checkpoint(c.path, c.tokenizer);
    EXPECT_EQ(loaded.format, c.format) << c.path;
    EXPECT_EQ(loaded.bundle.tokenizer.kind_name(), c.tokenizer_kind) << c.path;
    EXPECT_EQ(loaded.bundle.tokenizer.add_bos(), c.add_bos) << c.path;
    const auto got = logits(loaded.bundle.model), want = logits(*c.source);
    ASSERT_EQ(got.size(), want.size());
    double max_diff = 0;
    for (size_t i = 0; i < got.size(); ++i)
      max_diff = std::max<double>(max_diff, std::abs(got[i] - want[i]));
    EXPECT_LT(max_diff, 1e-4) << c.path;
    const auto info = loaded.to_json();
    EXPECT_EQ(info["format"], checkpoint_format_name(c.format));
    EXPECT_EQ(info["n_params"], config.n_params());
    EXPECT_EQ(info["dtypes"]["F32"], static_cast<int64_t>((*c.source)->named_weights().size()))
        << c.path;
  }
  // A llama2.c BOS model gets BOS in front of every prompt.
  auto l2c = load_any(dir.file("v1.safetensors"), dir.file("tok.bin"));
  EXPECT_EQ(l2c.tokenizer.encode_prompt("hello").front(), 1);
  EXPECT_EQ(l2c.tokenizer.encode_prompt("hello").size(), 2u);
}

TEST_F(CheckpointTest, BadInputIsOneClearErrorEach) {
  auto config = writers::small_config();
  Llama model = writers::random_model(config);
  TempDir dir;
  std::filesystem::create_directories(dir.file("empty_dir"));
  EXPECT_NE(error_of([&] { load_any(dir.file("empty_dir")); }).find("without config.json"),
            std::string::npos);
  // A Hugging Face directory without tokenizer.json needs --tokenizer.
  std::filesystem::create_directories(dir.file("hf"));
  writers::write_hf_dir(dir.file("hf"), model, "llama");
  EXPECT_NE(error_of([&] { load_any(dir.file("hf")); }).find("tokenizer.json"), std::string::npos);
  // llama2.c without its tokenizer.
  config.rope_style = RopeStyle::kGptj;
  Llama l2c = writers::random_model(config);
  const std::string l2c_bytes = writers::llama2c_bytes(l2c, true, 32);
  write_bytes(dir.file("m.bin"), l2c_bytes);
  EXPECT_NE(error_of([&] { load_any(dir.file("m.bin")); }).find("--tokenizer"), std::string::npos);
  // GGUF with an unsupported quant type: the first tensor's type patched to Q4_0 (2).
  std::string gguf = writers::gguf_llama_bytes(model, false);
  const std::string first = "token_embd.weight";
  const uint32_t q4 = 2;
  std::memcpy(&gguf[gguf.find(first) + first.size() + 4 + 2 * 8], &q4, 4);
  write_bytes(dir.file("q4.gguf"), gguf);
  EXPECT_NE(error_of([&] { load_any(dir.file("q4.gguf")); }).find("unsupported"),
            std::string::npos);
  // Truncated files of every format, unknown content, a missing file.
  write_tokenizer_bin(dir.file("tok.bin"));
  save_llm(dir.file("t.safetensors"), model, Tokenizer());
  const std::vector<std::pair<std::string, std::string>> truncated = {
      {"t.safetensors", read_file(dir.file("t.safetensors"))},
      {"g.gguf", writers::gguf_llama_bytes(model, false)},
      {"l.bin", l2c_bytes}};
  for (const auto& [name, bytes] : truncated) {
    for (size_t keep : {size_t{3}, size_t{40}, bytes.size() / 2, bytes.size() - 1}) {
      write_bytes(dir.file(name), bytes.substr(0, keep));
      const std::string e = error_of([&] { load_any(dir.file(name), dir.file("tok.bin")); });
      EXPECT_NE(e.find(name), std::string::npos) << name << " cut to " << keep << ": " << e;
    }
  }
  write_bytes(dir.file("x.dat"), std::string(300, 'x'));
  EXPECT_NE(error_of([&] { load_any(dir.file("x.dat")); }).find("not a recognised checkpoint"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_any(dir.file("missing")); }).find("cannot open"),
            std::string::npos);
  // A tokenizer larger than the model's vocabulary.
  auto small = writers::small_config();
  small.vocab_size = 260;  // room for Tessera's 256 bytes, not for the 275 pieces
  Llama tiny = writers::random_model(small);
  save_llm(dir.file("tiny.safetensors"), tiny, Tokenizer());
  EXPECT_NE(error_of([&] {
              load_any(dir.file("tiny.safetensors"), dir.file("tok.bin"));
            }).find("vocabulary"),
            std::string::npos);
}

TEST_F(CheckpointTest, ForeignTokenizersRoundTripThroughATesseraFile) {
  TempDir dir;
  write_tokenizer_bin(dir.file("tok.bin"));
  // A raw-byte piece (not UTF-8) as llama2.c vocabularies may hold.
  auto sp = load_llama2c_tokenizer(dir.file("tok.bin"));
  write_file_atomic(
      dir.file("tokenizer.json"),
      writers::byte_level_tokenizer_json({"h e", "l l", "\xc4\xa0 w"}, gpt2_split()).dump());
  auto bpe = load_tokenizer_json(dir.file("tokenizer.json"));
  Llama model = writers::random_model(writers::small_config());
  for (const ModelTokenizer& tok : {ModelTokenizer(sp), ModelTokenizer(bpe)}) {
    save_llm(dir.file("m.safetensors"), model, tok);
    const auto back = load_llm(dir.file("m.safetensors")).tokenizer;
    EXPECT_EQ(back.kind_name(), tok.kind_name());
    EXPECT_EQ(back.bos_id(), tok.bos_id());
    EXPECT_EQ(back.eos_id(), tok.eos_id());
    EXPECT_EQ(back.add_bos(), tok.add_bos());
    EXPECT_EQ(back.vocab_size(), tok.vocab_size());
    for (const std::string s : {"hello world", "he'll  sell\n42 h\xc3\xa9llo", "x"}) {
      EXPECT_EQ(back.encode_prompt(s), tok.encode_prompt(s)) << tok.kind_name() << ": " << s;
      EXPECT_EQ(back.decode(back.encode(s)), tok.decode(tok.encode(s)));
    }
    EXPECT_EQ(back.to_json(), tok.to_json());
  }
  // Raw bytes in a piece survive as hex.
  auto raw = VocabTokenizer::sentencepiece({"<unk>", "<s>", "</s>", "\xff\xfe", " "},
                                           {0, 0, 0, 1, 1}, false, 1, 2);
  EXPECT_EQ(VocabTokenizer::from_json(raw.to_json()).decode({3}), "\xff\xfe");
  // Files written before foreign tokenizers keep loading as Tessera's BPE.
  const Tokenizer tessera = Tokenizer::train({"the cat sat on the mat"}, 262, {"<|eos|>"});
  save_llm(dir.file("old.safetensors"), model, tessera);
  const auto old = load_llm(dir.file("old.safetensors")).tokenizer;
  ASSERT_NE(old.tessera(), nullptr);
  EXPECT_EQ(old.encode("the mat"), tessera.encode("the mat"));
  EXPECT_EQ(old.eos_id(), tessera.special_id("<|eos|>"));
  EXPECT_EQ(old.bos_id(), -1);
  EXPECT_THROW(ModelTokenizer::from_json({{"type", "wordpiece"}}), tessera::Error);
  EXPECT_THROW(ModelTokenizer::from_json({{"merges", nlohmann::json::array()}}), tessera::Error);
  auto bad = bpe.to_json();
  bad["bos_id"] = 100000;
  EXPECT_THROW(ModelTokenizer::from_json(bad), tessera::Error);
}

TEST_F(CheckpointTest, TextStreamPrintsOnlyWholeCharacters) {
  TempDir dir;
  write_file_atomic(dir.file("tokenizer.json"),
                    writers::byte_level_tokenizer_json({}, nullptr).dump());
  const ModelTokenizer bytes = load_tokenizer_json(dir.file("tokenizer.json"));
  const std::string text =
      "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
      "b";  // a é € 😀 b
  TextStream stream(bytes, bytes.encode("x"));
  std::string printed;
  std::vector<std::string> pieces;
  for (unsigned char c : text) {
    const std::string piece = stream.push({static_cast<int64_t>(c)});
    if (!piece.empty()) pieces.push_back(piece);
    printed += piece;
  }
  printed += stream.finish();
  EXPECT_EQ(printed, text);
  EXPECT_EQ(pieces,
            (std::vector<std::string>{"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "b"}));
  // SentencePiece: the continuation keeps the space the dummy prefix would otherwise drop.
  write_tokenizer_bin(dir.file("tok.bin"));
  const ModelTokenizer sp = load_llama2c_tokenizer(dir.file("tok.bin"));
  TextStream words(sp, sp.encode_prompt("hello"));
  EXPECT_EQ(words.push(sp.encode("world")) + words.finish(), " world");
  EXPECT_EQ(words.text(), " world");
}

// Expected pieces derived with Python's re on each pattern, \p{L} and \p{N} written as
// [^\W\d_] and \d (equal on these strings: Latin and CJK letters, ASCII digits).
TEST_F(CheckpointTest, PreTokenizerSplitsLikeTheReferenceRegexes) {
  struct Case {
    const char* pattern;
    std::string text;
    std::vector<std::string> pieces;
  };
  const std::vector<Case> cases = {
      {kGpt2Pattern,
       "Hello world's 123 dogs!!  ok\n\n end",
       {"Hello", " world", "'s", " 123", " dogs", "!!", " ", " ok", "\n\n", " end"}},
      {kGpt2Pattern,
       "I'm can't we'll they've THEY'RE",
       {"I", "'m", " can", "'t", " we", "'ll", " they", "'ve", " THEY", "'", "RE"}},
      {kGpt2Pattern,
       "na\xc3\xafve caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac 42km",
       {"na\xc3\xafve", " caf\xc3\xa9", " \xe6\x9d\xb1\xe4\xba\xac", " 42", "km"}},
      {kGpt2Pattern, "  lead\ttab\r\nx  ", {" ", " lead", "\t", "tab", "\r", "\n", "x", "  "}},
      {kGpt2Pattern, "$x=3.14; foo_bar", {"$", "x", "=", "3", ".", "14", ";", " foo", "_", "bar"}},
      {kLlama3Pattern,
       "I'm can't THEY'RE 1234567",
       {"I", "'m", " can", "'t", " THEY", "'RE", " ", "123", "456", "7"}},
      {kLlama3Pattern, "  lead\ttab\r\nx  ", {" ", " lead", "\ttab", "\r\n", "x", "  "}},
      {kLlama3Pattern, "$x=3.14; foo_bar", {"$x", "=", "3", ".", "14", ";", " foo", "_bar"}},
      {kQwen2Pattern,
       "na\xc3\xafve caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac 42km",
       {"na\xc3\xafve", " caf\xc3\xa9", " \xe6\x9d\xb1\xe4\xba\xac", " ", "4", "2", "km"}},
  };
  for (const auto& c : cases) {
    const PreTokenizer pre({c.pattern}, "test");
    std::vector<std::string> got;
    for (const auto& [b, e] : pre.split(c.text)) got.push_back(c.text.substr(b, e - b));
    EXPECT_EQ(got, c.pieces) << c.text;
  }
  // Invalid UTF-8 is still split and covered byte for byte.
  const PreTokenizer gpt2({kGpt2Pattern}, "test");
  const std::string raw = "ab\xff\xfe cd";
  std::string joined;
  for (const auto& [b, e] : gpt2.split(raw)) joined += raw.substr(b, e - b);
  EXPECT_EQ(joined, raw);
}

TEST_F(CheckpointTest, TokenizerJsonRunsItsOwnPreTokenizer) {
  TempDir dir;
  // With GPT-2's split, " w" merges only inside " world"; without any split "o w" would merge
  // across the word boundary first.
  const std::vector<std::string> merges = {"o \xc4\xa0", "\xc4\xa0 w", "h e"};
  write_file_atomic(dir.file("split.json"),
                    writers::byte_level_tokenizer_json(merges, gpt2_split()).dump());
  write_file_atomic(dir.file("none.json"),
                    writers::byte_level_tokenizer_json(merges, nullptr).dump());
  const auto split = load_tokenizer_json(dir.file("split.json"));
  const auto none = load_tokenizer_json(dir.file("none.json"));
  // Ids: bytes are their own ids; merges 256 "o\xc4\xa0", 257 "\xc4\xa0w", 258 "he".
  EXPECT_EQ(split.encode("he who"), (std::vector<int64_t>{258, 257, 'h', 'o'}));
  EXPECT_EQ(none.encode("he who"), (std::vector<int64_t>{258, 257, 'h', 'o'}));
  EXPECT_EQ(split.encode("go where"), (std::vector<int64_t>{'g', 'o', 257, 258, 'r', 'e'}));
  EXPECT_EQ(none.encode("go where"), (std::vector<int64_t>{'g', 256, 'w', 258, 'r', 'e'}));
  // ByteLevel alone with use_regex (its default) is GPT-2's regex.
  write_file_atomic(dir.file("bytelevel.json"),
                    writers::byte_level_tokenizer_json(merges, {{"type", "ByteLevel"}}).dump());
  EXPECT_EQ(load_tokenizer_json(dir.file("bytelevel.json")).encode("go where"),
            split.encode("go where"));
  // An invalid regex, or a pre-tokenizer Tessera does not run, names the file.
  auto bad = gpt2_split();
  bad["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  write_file_atomic(dir.file("bad.json"), writers::byte_level_tokenizer_json(merges, bad).dump());
  const std::string e = error_of([&] { load_tokenizer_json(dir.file("bad.json")); });
  EXPECT_NE(e.find("bad.json"), std::string::npos) << e;
  EXPECT_NE(e.find("does not compile"), std::string::npos) << e;
  write_file_atomic(
      dir.file("ws.json"),
      writers::byte_level_tokenizer_json(merges, {{"type", "WhitespaceSplit"}}).dump());
  EXPECT_NE(error_of([&] { load_tokenizer_json(dir.file("ws.json")); }).find("WhitespaceSplit"),
            std::string::npos);
  // A post-processor template that starts with a special token makes it the prepended BOS.
  auto with_bos = writers::byte_level_tokenizer_json(merges, gpt2_split());
  with_bos["added_tokens"].push_back({{"id", 260}, {"content", "<|begin_of_text|>"}});
  with_bos["post_processor"] = {{"type", "TemplateProcessing"},
                                {"single",
                                 {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}};
  write_file_atomic(dir.file("bos.json"), with_bos.dump());
  const ModelTokenizer bos = load_tokenizer_json(dir.file("bos.json"));
  EXPECT_TRUE(bos.add_bos());
  EXPECT_EQ(bos.encode_prompt("he"), (std::vector<int64_t>{260, 258}));
}

}  // namespace
}  // namespace tessera::llm
