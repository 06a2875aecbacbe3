// Writes the fuzz targets' seed corpus, small valid inputs made by Tessera's own writers:
//   fuzz_make_corpus OUT_DIR REPO_ROOT    (OUT_DIR/<target>/<seed>; scripts/fuzz.sh runs it)
// The seeds are tiny versions of each format (a few KB per target), so mutations stay fast.
#include <fmt/format.h>
#include <zlib.h>

#include <filesystem>
#include <iostream>

#include "tessera/core/fs.h"
#include "tessera/core/safetensors.h"
#include "tessera/core/workload.h"
#include "tessera/jacobi/lm.h"
#include "tessera/llm/io.h"
#include "tessera/llm/loaders.h"
#include "tessera/models/graph.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "tessera/net/federated.pb.h"

namespace {

using namespace tessera;
namespace fsys = std::filesystem;

std::string out_dir;

void put(const std::string& target, const std::string& name, const std::string& bytes) {
  fsys::create_directories(out_dir + "/" + target);
  write_file_atomic(out_dir + "/" + target + "/" + name, bytes);
}

template <class T>
void append(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

void append_floats(std::string& out, const torch::Tensor& t) {
  const auto x = t.detach().contiguous();
  out.append(reinterpret_cast<const char*>(x.data_ptr<float>()), x.numel() * 4);
}

std::string gzip(const std::string& bytes) {
  z_stream z{};
  if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::string out(deflateBound(&z, bytes.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

models::ModelConfig tiny(const std::string& name, nlohmann::json extra = nlohmann::json::object()) {
  models::ModelConfig c;
  c.name = name;
  c.image_size = 8;
  c.num_classes = 2;
  c.width_mult = 0.0625;
  c.extra = std::move(extra);
  return c;
}

// conv -> bn -> relu -> global average pool -> flatten -> linear, on a 1x8x8 input.
models::ModelConfig tiny_graph() {
  using models::GraphOp;
  models::GraphSpec spec;
  auto node = [&](std::string name, GraphOp op, int64_t in, int64_t out) {
    models::GraphNode n;
    n.name = std::move(name);
    n.op = op;
    n.inputs = {static_cast<int64_t>(spec.nodes.size()) - 1};
    n.in_channels = in;
    n.out_channels = out;
    if (op == GraphOp::Conv) n.kernel = 3, n.padding = 1;
    spec.nodes.push_back(n);
  };
  node("conv", GraphOp::Conv, 1, 2);
  node("bn", GraphOp::BatchNorm, 2, 2);
  node("relu", GraphOp::ReLU, 0, 0);
  node("gap", GraphOp::GlobalAvgPool, 0, 0);
  node("flat", GraphOp::Flatten, 0, 0);
  node("fc", GraphOp::Linear, 2, 2);
  auto c = tiny("graph", {{"graph", spec.to_json()}});
  c.width_mult = 1.0;
  return c;
}

void vision_models() {
  auto vit = tiny("vit", {{"patch_size", 4}, {"dim", 8}, {"depth", 1}, {"heads", 2}});
  vit.width_mult = 1.0;
  const std::vector<models::ModelConfig> configs = {tiny("resnet20"),    tiny("vgg11_bn"),
                                                    tiny("mobilenetv2"), tiny("resnet18"),
                                                    tiny("resnet50"),    vit,
                                                    tiny_graph()};
  for (const auto& c : configs) put("model_config", c.name + ".json", c.to_json().dump());
  // Whole files of the two smallest models (a ResNet's many BN buffers make a 15 KB header).
  fsys::create_directories(out_dir + "/model_load");
  for (const auto& c : {vit, tiny_graph()}) {
    auto model = models::create(c);
    models::save(out_dir + "/model_load/" + c.name + ".safetensors", model);
    if (c.name == "graph") put("workload", "graph.json", model->workload().to_json().dump());
  }
}

void safetensors_seeds() {
  safetensors::File f;
  f.tensors.emplace_back("f32", torch::arange(6, torch::kFloat32).reshape({2, 3}));
  f.tensors.emplace_back("i64", torch::arange(3, torch::kInt64));
  f.tensors.emplace_back("u8", torch::ones({2, 2}, torch::kUInt8));
  f.tensors.emplace_back("bf16", torch::ones({2}, torch::kBFloat16));
  f.tensors.emplace_back("empty", torch::zeros({0, 4}));
  f.metadata["note"] = "seed";
  put("safetensors", "mixed.safetensors", safetensors::serialize(f));
}

llm::LlamaConfig tiny_llama() {
  llm::LlamaConfig c;
  c.vocab_size = 264;
  c.dim = 4;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.hidden_dim = 8;
  c.max_seq_len = 16;
  return c;
}

void llm_seeds() {
  const auto c = tiny_llama();
  auto arch = c.to_json();
  arch["name"] = "llama";
  put("llm_arch", "tiny.json", arch.dump());
  const auto tok = llm::Tokenizer::train({"the cat sat on the mat, the end 12"}, 262, {"<|eos|>"});
  put("llm_tokenizer", "trained.json", tok.to_json().dump());
  put("llm_tokenizer", "bytes.json", llm::Tokenizer().to_json().dump());
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b"};
  for (int b = 0; b < 256; ++b) pieces.push_back(fmt::format("<0x{:02X}>", b));
  auto sp = llm::VocabTokenizer::sentencepiece(pieces, std::vector<float>(pieces.size(), 0.0f),
                                               true, 1, 2);
  sp.set_add_bos(true);
  put("llm_tokenizer", "sentencepiece.json", sp.to_json().dump());
  const llm::Llama model(c);
  llm::save_llm(out_dir + "/llm_file/tiny.safetensors", model, tok);

  put("hf_config", "llama.json",
      nlohmann::json{{"hidden_size", c.dim},
                     {"intermediate_size", c.hidden_dim},
                     {"num_hidden_layers", c.n_layers},
                     {"num_attention_heads", c.n_heads},
                     {"num_key_value_heads", c.n_kv_heads},
                     {"vocab_size", c.vocab_size},
                     {"rms_norm_eps", 1e-5},
                     {"tie_word_embeddings", true},
                     {"max_position_embeddings", 16},
                     {"model_type", "qwen3"}}
          .dump());
}

// llama2.c v1 ("ak42", 256-byte header, tied) and legacy (7 int32, untied) checkpoints.
void llama2c_seeds() {
  auto c = tiny_llama();
  c.vocab_size = 8;
  c.rope_style = llm::RopeStyle::kGptj;
  for (const bool v1 : {true, false}) {
    c.tie_embeddings = v1;
    const llm::Llama m(c);
    std::string out;
    if (v1) {
      append<uint32_t>(out, 0x616b3432u);
      append<int32_t>(out, 1);
    }
    for (const int64_t v : {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                            v1 ? c.vocab_size : -c.vocab_size, c.max_seq_len}) {
      append<int32_t>(out, static_cast<int32_t>(v));
    }
    const auto& L = m->layers();
    auto each = [&](auto field) {
      for (const auto& l : L) append_floats(out, field(l));
    };
    using W = llm::LlamaLayerWeights;
    if (v1) {
      out.push_back(1);
      out.resize(256, '\0');
      each([](const W& l) { return l.attn_norm; });
      each([](const W& l) { return l.ffn_norm; });
      append_floats(out, m->final_norm());
      append_floats(out, m->tok_embeddings());
    } else {
      append_floats(out, m->tok_embeddings());
      each([](const W& l) { return l.attn_norm; });
    }
    each([](const W& l) { return l.wq; });
    each([](const W& l) { return l.wk; });
    each([](const W& l) { return l.wv; });
    each([](const W& l) { return l.wo; });
    if (!v1) each([](const W& l) { return l.ffn_norm; });
    each([](const W& l) { return l.w_gate; });
    each([](const W& l) { return l.w_down; });
    each([](const W& l) { return l.w_up; });
    if (!v1) {
      append_floats(out, m->final_norm());
      append_floats(out, torch::zeros({c.max_seq_len, c.resolved_head_dim()}));
      append_floats(out, m->output_weight());
    }
    put("llama2c", v1 ? "v1.bin" : "legacy.bin", out);
  }

  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "<0x0A>", " ",   "h",     "e",
                                     "l",     "o",   "he",   "ll",     "llo", " hello"};
  std::string bin;
  append<int32_t>(bin, 6);
  for (size_t i = 0; i < pieces.size(); ++i) {
    append<float>(bin, static_cast<float>(i) * 0.5f);
    append<int32_t>(bin, static_cast<int32_t>(pieces[i].size()));
    bin += pieces[i];
  }
  put("llama2c_tokenizer", "tokenizer.bin", bin);
}

// GPT-2's byte alphabet: printable bytes stand for themselves, the others from U+0100 on.
std::vector<std::string> byte_alphabet() {
  std::vector<std::string> out;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    out.push_back(s);
  }
  return out;
}

void gguf_and_tokenizer_json_seeds() {
  auto c = tiny_llama();
  c.vocab_size = 8;
  const llm::Llama m(c);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [n, t] : m->named_weights())
    tensors.emplace_back(llm::gguf_tensor_name(n), t.detach());
  const std::vector<std::pair<std::string, uint32_t>> u32 = {
      {"llama.embedding_length", 4},        {"llama.block_count", 1},
      {"llama.feed_forward_length", 8},     {"llama.attention.head_count", 2},
      {"llama.attention.head_count_kv", 1}, {"llama.context_length", 16},
      {"tokenizer.ggml.bos_token_id", 1},   {"tokenizer.ggml.eos_token_id", 2}};
  const std::vector<std::pair<std::string, float>> f32 = {
      {"llama.attention.layer_norm_rms_epsilon", 1e-5f}, {"llama.rope.freq_base", 10000.0f}};
  const std::vector<std::string> sp = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "h", "e", "he", "o"};
  put("gguf", "llama.gguf",
      llm::write_gguf({{"general.architecture", "llama"}, {"tokenizer.ggml.model", "llama"}}, u32,
                      f32, {{"tokenizer.ggml.tokens", sp}}, tensors, false));
  const auto bpe = byte_alphabet();
  put("gguf", "gpt2_tokenizer.gguf",
      llm::write_gguf({{"general.architecture", "qwen2"}, {"tokenizer.ggml.model", "gpt2"}}, {}, {},
                      {{"tokenizer.ggml.tokens", bpe}, {"tokenizer.ggml.merges", {"h e"}}}, {},
                      false));

  nlohmann::json vocab = nlohmann::json::object();
  for (size_t b = 0; b < bpe.size(); ++b) vocab[bpe[b]] = b;
  vocab["\xc4\xa0t"] = 256;
  vocab["he"] = 257;
  const nlohmann::json j = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"\xc4\xa0 t", "h e"}}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}}},
      {"added_tokens", {{{"id", 258}, {"content", "<|endoftext|>"}}}}};
  put("tokenizer_json", "bpe.json", j.dump());
  // Llama 3's form: a regex Split, then ByteLevel without its own regex, and a BOS template.
  nlohmann::json split = j;
  split["pre_tokenizer"] = {{"type", "Sequence"},
                            {"pretokenizers",
                             {{{"type", "Split"},
                               {"pattern", {{"Regex", llm::kLlama3Pattern}}},
                               {"behavior", "Isolated"},
                               {"invert", false}},
                              {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  split["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}}}}};
  put("tokenizer_json", "split.json", split.dump());
  // Foreign tokenizers as a Tessera LLM file stores them (tessera.tokenizer).
  const auto byte_bpe = llm::VocabTokenizer::byte_bpe(
      bpe, {"h e"}, -1, 0, llm::PreTokenizer({llm::kGpt2Pattern}, "seed"));
  put("llm_tokenizer", "byte_bpe.json", byte_bpe.to_json().dump());
}

void idx_seeds() {
  std::string images("\0\0\x08\x03\0\0\0\x01\0\0\0\x1c\0\0\0\x1c", 16);
  for (int i = 0; i < 28 * 28; ++i) images.push_back(static_cast<char>(i % 251));
  put("idx", "image.idx", images);
  put("idx", "image.idx.gz", gzip(images));
}

void text_seeds(const std::string& repo) {
  put("reram_spec", "isaac_like.json",
      read_file(repo + "/src/tessera/reram/specs/isaac_like.json"));
  workload::Workload w;
  w.model = "two-convs";
  w.input_shape = {3, 8, 8};
  append_conv(w, "conv1", 3, 4, 3, 1, 8);
  append_conv(w, "conv2", 4, 4, 3, 2, 8, 2);
  put("workload", "two_convs.json", w.to_json().dump());

  std::vector<jacobi::JacobiTrajectory> t(2);
  t[0].prompt = {1, 5, 9};
  t[0].states = {{3, 3, 3}, {4, 3, 7}, {4, 6, 7}};
  t[1].prompt = {1, 5, 9, 4, 6, 7};
  t[1].states = {{2, 2}, {8, 2}};
  put("trajectories", "two.json", jacobi::trajectories_to_json(t).dump());

  net::proto::Request r;
  r.set_client_id("client1");
  r.set_token("secret");
  r.set_method("step");
  r.set_meta_json(R"({"epoch":1,"batch":0})");
  auto add = [&](const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
                 const std::string& data) {
    auto* t = r.add_tensors();
    t->set_name(name);
    t->set_dtype(dtype);
    for (const int64_t d : shape) t->add_shape(d);
    t->set_data(data);
  };
  add("activations", "F32", {2, 3}, std::string(24, '\0'));
  add("labels", "I64", {2}, std::string(16, '\x01'));
  add("mask", "U8", {4}, std::string("\x01\x00\x01\x01", 4));
  put("net_message", "step.pb", r.SerializeAsString());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: fuzz_make_corpus OUT_DIR REPO_ROOT\n";
    return 2;
  }
  out_dir = argv[1];
  torch::manual_seed(0);  // the same seed files on every run
  try {
    fsys::create_directories(out_dir + "/llm_file");
    safetensors_seeds();
    vision_models();
    llm_seeds();
    llama2c_seeds();
    gguf_and_tokenizer_json_seeds();
    idx_seeds();
    text_seeds(argv[2]);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
