// Writers of small foreign checkpoints for the llm tests: Hugging Face directories, llama2.c
// files and tokenizer.bin, GGUF files and byte-level tokenizer.json, from a Llama in memory.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "tessera/llm/llama.h"

namespace tessera::llm::writers {

/// A small random model: vocab 280 (room for sp_vocab()), D 64, 2 layers, GQA 4/2.
LlamaConfig small_config();
/// `c` with its parameters perturbed by N(0, 0.05).
Llama random_model(const LlamaConfig& c);

/// Hugging Face tensor name of a Tessera weight ("layers.0.wq" -> "model.layers.0.self_attn...").
std::string hf_name(const std::string& name);
nlohmann::json hf_config(const LlamaConfig& c, const std::string& model_type);
/// config.json and model.safetensors (F32) of `model` (NeoX rows, HF layout) in `dir`.
void write_hf_dir(const std::string& dir, const Llama& model, const std::string& model_type);

/// HF (NeoX rows) -> GGUF/Meta (adjacent-pair rows), as llama.cpp's converter permutes.
torch::Tensor permute_rows(const torch::Tensor& w, int64_t head_dim);
/// A llama2.c checkpoint of `model` (GPT-J rows), legacy or v1 header.
std::string llama2c_bytes(Llama& model, bool v1, int64_t seq_len);
std::string tokenizer_bin(const std::vector<std::string>& pieces, const std::vector<float>& scores);
/// A llama2.c-style vocabulary: specials, 256 byte-fallback tokens, then scored pieces; `space`
/// is " " (tokenizer.bin) or U+2581 (GGUF).
void sp_vocab(std::vector<std::string>& pieces, std::vector<float>& scores,
              const std::string& space);
/// The GGUF tensor name of a Tessera Llama weight (blk.N.attn_q.weight, ...). The writers keep
/// their own name tables (hf_name too), written from the formats' documentation, so that a wrong
/// entry in the loaders' tables (llm::gguf_tensor_name, hf_tensor_name) fails the tests.
std::string gguf_name(const std::string& tessera_name);
/// A GGUF (arch llama, Q and K permuted) of `model` (NeoX rows) with an sp_vocab() tokenizer.
std::string gguf_llama_bytes(Llama& model, bool q8);

/// GPT-2's byte-to-unicode alphabet: the piece of byte b.
std::string gpt2_symbol(int b);
/// A byte-level BPE tokenizer.json: the 256 byte pieces, then `merges` ("a b", each adding the
/// piece "ab"), then "<|endoftext|>"; `pre_tokenizer` is written as given (null: none).
nlohmann::json byte_level_tokenizer_json(const std::vector<std::string>& merges,
                                         const nlohmann::json& pre_tokenizer);

}  // namespace tessera::llm::writers
