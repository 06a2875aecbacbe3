// The three domain corpora of the CLLM experiments, at this machine's scale: grade-school math
// word problems from a seeded generator (GSM8K-like), text-to-SQL over generated table schemas
// (Spider-like), and real Python functions from the standard library Debian ships
// (CodeSearchNet-like). Each example is a prompt, a target and the answer used for scoring.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::jacobi {

/// Where Debian's python3.11 package puts the standard library sources.
constexpr const char* kPythonStdlibDir = "/usr/lib/python3.11";

/// The three corpora.
enum class Domain { kMath, kSql, kCode };
Domain parse_domain(const std::string& name);  ///< "math", "sql", "code"; throws on another name
std::string domain_name(Domain domain);

struct Example {
  std::string prompt;  ///< what the model is given
  std::string target;  ///< the reference continuation (EOS not included)
  std::string answer;  ///< math: the final number; sql: the query; code: the target
};

struct Corpus {
  Domain domain = Domain::kMath;
  std::vector<Example> train, test;
};

/// math: "Question: ...\nAnswer: " -> step-by-step solution ending "#### <number>".
Corpus make_math_corpus(int64_t n_train, int64_t n_test, uint64_t seed);
/// sql: "### Tables: ...\n### Question: ...\n### SQL: " -> one SELECT statement.
Corpus make_sql_corpus(int64_t n_train, int64_t n_test, uint64_t seed);
/// code: "### Docstring: ...\n### Code:\n" -> the function's source. Files whose name hashes to
/// 0 mod 10 form the test split. Throws if `dir` has no usable Python files.
Corpus make_code_corpus(int64_t n_train, int64_t n_test, uint64_t seed,
                        const std::string& dir = kPythonStdlibDir, int64_t max_chars = 480);
/// Dispatch on the domain (code reads kPythonStdlibDir).
Corpus make_corpus(Domain domain, int64_t n_train, int64_t n_test, uint64_t seed);

/// The number after the last "####" in a math solution ("" if none).
std::string extract_math_answer(const std::string& text);

}  // namespace tessera::jacobi
