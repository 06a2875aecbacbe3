// Writers of small foreign checkpoints for the llm tests (see checkpoint_writers.h).
#include "checkpoint_writers.h"

#include <fmt/format.h>

#include <map>

#include "tessera/core/fs.h"
#include "tessera/core/safetensors.h"
#include "tessera/llm/loaders.h"

namespace tessera::llm::writers {

LlamaConfig small_config() {
  LlamaConfig c;
  c.vocab_size = 280;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.hidden_dim = 96;
  c.max_seq_len = 32;
  c.tie_embeddings = false;
  return c;
}

Llama random_model(const LlamaConfig& c) {
  Llama m(c);
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.05);
  return m;
}

std::string hf_name(const std::string& name) {
  if (name == "tok_embeddings") return "model.embed_tokens.weight";
  if (name == "norm") return "model.norm.weight";
  if (name == "output") return "lm_head.weight";
  const size_t dot = name.find('.', 7);
  const std::string layer = name.substr(7, dot - 7), s = name.substr(dot + 1);
  const std::map<std::string, std::string> m = {{"attn_norm", "input_layernorm.weight"},
                                                {"wq", "self_attn.q_proj.weight"},
                                                {"wk", "self_attn.k_proj.weight"},
                                                {"wv", "self_attn.v_proj.weight"},
                                                {"wo", "self_attn.o_proj.weight"},
                                                {"bq", "self_attn.q_proj.bias"},
                                                {"bk", "self_attn.k_proj.bias"},
                                                {"bv", "self_attn.v_proj.bias"},
                                                {"q_norm", "self_attn.q_norm.weight"},
                                                {"k_norm", "self_attn.k_norm.weight"},
                                                {"ffn_norm", "post_attention_layernorm.weight"},
                                                {"w_gate", "mlp.gate_proj.weight"},
                                                {"w_up", "mlp.up_proj.weight"},
                                                {"w_down", "mlp.down_proj.weight"}};
  return "model.layers." + layer + "." + m.at(s);
}

nlohmann::json hf_config(const LlamaConfig& c, const std::string& model_type) {
  return {{"hidden_size", c.dim},
          {"intermediate_size", c.hidden_dim},
          {"num_hidden_layers", c.n_layers},
          {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.n_kv_heads},
          {"vocab_size", c.vocab_size},
          {"rms_norm_eps", c.rms_eps},
          {"rope_theta", c.rope_theta},
          {"tie_word_embeddings", c.tie_embeddings},
          {"max_position_embeddings", c.max_seq_len},
          {"model_type", model_type},
          {"rope_scaling", nullptr}};
}

void write_hf_dir(const std::string& dir, const Llama& model, const std::string& model_type) {
  write_file_atomic(dir + "/config.json", hf_config(model->config(), model_type).dump());
  safetensors::File f;
  for (const auto& [name, t] : model->named_weights())
    f.tensors.emplace_back(hf_name(name), t.detach().contiguous());
  safetensors::save(dir + "/model.safetensors", f);
}

torch::Tensor permute_rows(const torch::Tensor& w, int64_t head_dim) {
  const int64_t heads = w.size(0) / head_dim;
  return w.reshape({heads, 2, head_dim / 2, w.size(1)})
      .transpose(1, 2)
      .reshape(w.sizes())
      .contiguous();
}

std::string llama2c_bytes(Llama& m, bool v1, int64_t seq_len) {
  const auto& c = m->config();
  std::string out;
  auto put = [&](const torch::Tensor& t) {
    auto x = t.detach().contiguous();
    out.append(reinterpret_cast<const char*>(x.data_ptr<float>()), x.numel() * 4);
  };
  auto i32 = [&](int32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); };
  const auto& L = m->layers();
  auto each = [&](auto field) {
    for (const auto& l : L) put(field(l));
  };
  if (v1) {
    const uint32_t magic = 0x616b3432u;
    out.append(reinterpret_cast<const char*>(&magic), 4);
    i32(1);
  }
  i32(c.dim);
  i32(c.hidden_dim);
  i32(c.n_layers);
  i32(c.n_heads);
  i32(c.n_kv_heads);
  i32(v1 || c.tie_embeddings ? c.vocab_size : -c.vocab_size);
  i32(seq_len);
  if (v1) {
    out.push_back(c.tie_embeddings ? 1 : 0);
    out.resize(256, '\0');
    each([](const LlamaLayerWeights& l) { return l.attn_norm; });
    each([](const LlamaLayerWeights& l) { return l.ffn_norm; });
    put(m->final_norm());
    put(m->tok_embeddings());
    each([](const LlamaLayerWeights& l) { return l.wq; });
    each([](const LlamaLayerWeights& l) { return l.wk; });
    each([](const LlamaLayerWeights& l) { return l.wv; });
    each([](const LlamaLayerWeights& l) { return l.wo; });
    each([](const LlamaLayerWeights& l) { return l.w_gate; });
    each([](const LlamaLayerWeights& l) { return l.w_down; });
    each([](const LlamaLayerWeights& l) { return l.w_up; });
  } else {
    put(m->tok_embeddings());
    each([](const LlamaLayerWeights& l) { return l.attn_norm; });
    each([](const LlamaLayerWeights& l) { return l.wq; });
    each([](const LlamaLayerWeights& l) { return l.wk; });
    each([](const LlamaLayerWeights& l) { return l.wv; });
    each([](const LlamaLayerWeights& l) { return l.wo; });
    each([](const LlamaLayerWeights& l) { return l.ffn_norm; });
    each([](const LlamaLayerWeights& l) { return l.w_gate; });
    each([](const LlamaLayerWeights& l) { return l.w_down; });
    each([](const LlamaLayerWeights& l) { return l.w_up; });
    put(m->final_norm());
    put(torch::zeros({seq_len, c.resolved_head_dim()}));  // freq_cis real + imag
  }
  if (!c.tie_embeddings) put(m->output_weight());
  return out;
}

std::string tokenizer_bin(const std::vector<std::string>& pieces,
                          const std::vector<float>& scores) {
  std::string out;
  int32_t max_len = 0;
  for (const auto& p : pieces) max_len = std::max<int32_t>(max_len, static_cast<int32_t>(p.size()));
  out.append(reinterpret_cast<const char*>(&max_len), 4);
  for (size_t i = 0; i < pieces.size(); ++i) {
    out.append(reinterpret_cast<const char*>(&scores[i]), 4);
    const int32_t len = static_cast<int32_t>(pieces[i].size());
    out.append(reinterpret_cast<const char*>(&len), 4);
    out += pieces[i];
  }
  return out;
}

void sp_vocab(std::vector<std::string>& pieces, std::vector<float>& scores,
              const std::string& space) {
  pieces = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) pieces.push_back(fmt::format("<0x{:02X}>", b));
  for (const std::string p :
       {"h", "e", "l", "o", "w", "r", "d", "ll", "he", "llo", "hello", "wo", "rld"})
    pieces.push_back(p);
  pieces.push_back(space);
  pieces.push_back(space + "hello");
  pieces.push_back(space + "w");
  scores.assign(pieces.size(), 0.0f);
  for (size_t i = 259; i < pieces.size(); ++i) scores[i] = static_cast<float>(pieces[i].size());
}

std::string gguf_name(const std::string& n) {
  if (n == "tok_embeddings") return "token_embd.weight";
  if (n == "norm") return "output_norm.weight";
  if (n == "output") return "output.weight";
  const size_t dot = n.find('.', 7);
  const std::map<std::string, std::string> m = {
      {"attn_norm", "attn_norm"}, {"wq", "attn_q"},      {"wk", "attn_k"},
      {"wv", "attn_v"},           {"wo", "attn_output"}, {"ffn_norm", "ffn_norm"},
      {"w_gate", "ffn_gate"},     {"w_up", "ffn_up"},    {"w_down", "ffn_down"}};
  return "blk." + n.substr(7, dot - 7) + "." + m.at(n.substr(dot + 1)) + ".weight";
}

std::string gguf_llama_bytes(Llama& model, bool q8) {
  const auto& c = model->config();
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [n, t] : model->named_weights()) {
    const bool qk =
        n.size() > 3 && (n.substr(n.size() - 3) == ".wq" || n.substr(n.size() - 3) == ".wk");
    tensors.emplace_back(gguf_name(n),
                         qk ? permute_rows(t.detach(), c.resolved_head_dim()) : t.detach());
  }
  std::vector<std::string> tokens;
  std::vector<float> scores;
  sp_vocab(tokens, scores, "\xe2\x96\x81");
  const auto u = [](int64_t v) { return static_cast<uint32_t>(v); };
  const std::vector<std::pair<std::string, uint32_t>> u32 = {
      {"llama.embedding_length", u(c.dim)},
      {"llama.block_count", u(c.n_layers)},
      {"llama.feed_forward_length", u(c.hidden_dim)},
      {"llama.attention.head_count", u(c.n_heads)},
      {"llama.attention.head_count_kv", u(c.n_kv_heads)},
      {"llama.context_length", u(c.max_seq_len)},
      {"tokenizer.ggml.bos_token_id", 1},
      {"tokenizer.ggml.eos_token_id", 2}};
  const std::vector<std::pair<std::string, float>> f32 = {
      {"llama.attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_eps)},
      {"llama.rope.freq_base", static_cast<float>(c.rope_theta)}};
  const std::vector<std::pair<std::string, std::string>> str = {{"general.architecture", "llama"},
                                                                {"tokenizer.ggml.model", "llama"}};
  return write_gguf(str, u32, f32, {{"tokenizer.ggml.tokens", tokens}}, tensors, q8);
}

std::string gpt2_symbol(int b) {
  int next = 256;
  for (int x = 0; x < 256; ++x) {
    const bool printable = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE);
    const int cp = printable ? x : next++;
    if (x != b) continue;
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    return s;
  }
  return "";
}

nlohmann::json byte_level_tokenizer_json(const std::vector<std::string>& merges,
                                         const nlohmann::json& pre_tokenizer) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[gpt2_symbol(b)] = b;
  int id = 256;
  for (const auto& m : merges) {
    const size_t sp = m.find(' ');
    vocab[m.substr(0, sp) + m.substr(sp + 1)] = id++;
  }
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
          {"added_tokens", {{{"id", id}, {"content", "<|endoftext|>"}}}},
          {"pre_tokenizer", pre_tokenizer}};
}

}  // namespace tessera::llm::writers
