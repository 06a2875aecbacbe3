// One entry point for every checkpoint an `llm` command takes: a Tessera LLM file, a Hugging Face
// directory, a llama2.c .bin (with its tokenizer.bin) or a GGUF file, recognised by content (not
// by extension), with the tokenizer it came with and what `llm info` reports about it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>

#include "tessera/core/table.h"
#include "tessera/llm/io.h"
#include "tessera/llm/loaders.h"

namespace tessera::llm {

enum class CheckpointFormat { kTessera, kHuggingFace, kLlama2c, kGguf };
/// "tessera", "huggingface", "llama2c", "gguf".
std::string checkpoint_format_name(CheckpointFormat format);

/// A directory is Hugging Face (it must hold config.json); a file starting "GGUF" is GGUF; a
/// safetensors header (8-byte little-endian length, then '{') naming tessera.arch is a Tessera
/// file; the llama2.c v1 magic "ak42" or a plausible legacy 7-int header is llama2.c. Anything
/// else (a missing, empty or truncated file included) is a tessera::Error naming the file and
/// what was tried.
CheckpointFormat detect_checkpoint(const std::string& path);

struct LoadedCheckpoint {
  LlmBundle bundle;
  CheckpointFormat format = CheckpointFormat::kTessera;
  std::map<std::string, int64_t> dtypes;  ///< stored dtype -> tensors read in it
  std::string tokenizer_source;           ///< the file (or metadata) the tokenizer came from
  /// The rows `llm info` prints: format, architecture, parameters, dtypes, tokenizer.
  Table table() const;
  nlohmann::json to_json() const;
};

/// Loads any checkpoint. `tokenizer_path` (a llama2.c tokenizer.bin or a tokenizer.json,
/// recognised by content) replaces the checkpoint's own tokenizer; a llama2.c file needs it, a
/// Hugging Face directory without tokenizer.json too. The tokenizer must not have more tokens
/// than the model's vocabulary.
LoadedCheckpoint load_checkpoint(const std::string& path, const std::string& tokenizer_path = "",
                                 int64_t max_context = kDefaultMaxContext);
/// load_checkpoint(...).bundle
LlmBundle load_any(const std::string& path, const std::string& tokenizer_path = "");

}  // namespace tessera::llm
