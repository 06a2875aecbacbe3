// Tessera LLM files: one .safetensors holding the Llama weights (Tessera names, float32), the
// architecture in metadata "tessera.arch" ({"name": "llama", ...config}) and the tokenizer in
// "tessera.tokenizer", so `--model m.safetensors` rebuilds model and tokenizer without flags.
#pragma once

#include <cstdint>
#include <string>

#include "tessera/llm/llama.h"
#include "tessera/llm/model_tokenizer.h"

namespace tessera::llm {

struct LlmBundle {
  Llama model{nullptr};
  ModelTokenizer tokenizer;
};

/// Atomic write (an existing file is replaced only when the new one is complete).
/// The tokenizer may be a foreign one (a distilled Hugging Face, llama2.c or GGUF model).
void save_llm(const std::string& path, const Llama& model, const ModelTokenizer& tokenizer);
/// Checks the architecture, that every tensor is present with the configured shape, and that
/// no unknown tensor is present; throws tessera::Error naming the problem.
LlmBundle load_llm(const std::string& path);

/// Copies `value` (any float dtype, converted) into `target` after checking the shape; a NaN or
/// Inf in the converted weight is a tessera::Error naming `name`.
void assign_weight(torch::Tensor& target, const torch::Tensor& value, const std::string& name);

/// Builds `config` for a loader whose tensors take `source_bytes` in the file: throws
/// tessera::Error naming `what` when the architecture exceeds the parameter budget
/// (core/limits.h max_parameters()) or would allocate more than the source bytes justify.
Llama build_llama(const LlamaConfig& config, uint64_t source_bytes, const std::string& what);

}  // namespace tessera::llm
