// Corpus generators and the Python standard library reader.
#include "tessera/jacobi/corpus.h"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <random>
#include <sstream>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/random.h"

namespace tessera::jacobi {

namespace {

using random::pick;
using random::uniform_int;

const std::vector<std::string> kNames = {"Tom",  "Anna", "Ben", "Lily", "Sam", "Mia",
                                         "Jack", "Emma", "Leo", "Zoe",  "Max", "Ella"};
const std::vector<std::string> kItems = {"apple",   "book", "pencil", "marble", "cookie",
                                         "sticker", "card", "egg",    "toy",    "shell"};

Example math_example(std::mt19937_64& rng) {
  const std::string name = pick(kNames, rng);
  const std::string item = pick(kItems, rng);
  Example e;
  std::string q, s;
  int64_t r = 0;
  switch (uniform_int(rng, 0, 4)) {
    case 0: {
      const int64_t a = uniform_int(rng, 5, 40), b = uniform_int(rng, 2, 30),
                    c = uniform_int(rng, 1, a + b);
      r = a + b - c;
      q = fmt::format(
          "{} has {} {}s. {} buys {} more {}s and then gives away {}. How many {}s does {} have "
          "now?",
          name, a, item, name, b, item, c, item, name);
      s = fmt::format(
          "{} starts with {} {}s. After buying {} more, {} has {} + {} = {} {}s. After giving away "
          "{}, {} has {} - {} = {} {}s.\n#### {}",
          name, a, item, b, name, a, b, a + b, item, c, name, a + b, c, r, item, r);
      break;
    }
    case 1: {
      const int64_t a = uniform_int(rng, 2, 12), b = uniform_int(rng, 2, 9),
                    c = uniform_int(rng, 1, a * b);
      r = a * b - c;
      q = fmt::format("A box holds {} {}s. {} has {} boxes and uses {} {}s. How many {}s are left?",
                      a, item, name, b, c, item, item);
      s = fmt::format(
          "{} boxes hold {} * {} = {} {}s. After using {}, there are {} - {} = {} {}s left.\n#### "
          "{}",
          b, b, a, a * b, item, c, a * b, c, r, item, r);
      break;
    }
    case 2: {
      const int64_t a = uniform_int(rng, 5, 20), b = uniform_int(rng, 2, 8),
                    c = uniform_int(rng, 2, 6);
      r = a * b * c;
      q = fmt::format(
          "{} earns ${} per hour and works {} hours a day. How much does {} earn in {} days?", name,
          a, b, name, c);
      s = fmt::format(
          "In one day {} earns {} * {} = ${}. In {} days {} earns {} * {} = ${}.\n#### {}", name, a,
          b, a * b, c, name, a * b, c, r, r);
      break;
    }
    case 3: {
      const int64_t b = uniform_int(rng, 2, 9), each = uniform_int(rng, 2, 12);
      const int64_t a = b * each;
      r = each;
      q = fmt::format(
          "{} has {} {}s and shares them equally among {} friends. How many {}s does each friend "
          "get?",
          name, a, item, b, item);
      s = fmt::format("Each friend gets {} / {} = {} {}s.\n#### {}", a, b, each, item, r);
      break;
    }
    default: {
      const int64_t a = uniform_int(rng, 10, 60), b = uniform_int(rng, 2, 20),
                    c = uniform_int(rng, 2, 9);
      const std::string other = pick(kNames, rng);
      const int64_t d = a - c;
      q = fmt::format(
          "{} has {} {}s. {} has {} more than {}, and {} has {} fewer than {}. How many {}s do "
          "they have together?",
          name, a, item, other, b, name, "Kim", c, name, item);
      s = fmt::format(
          "{} has {} + {} = {} {}s. Kim has {} - {} = {} {}s. {} and {} have {} + {} = {} {}s, and "
          "with Kim {} + {} = {} {}s.\n#### {}",
          other, a, b, a + b, item, a, c, d, item, name, other, a, a + b, a + a + b, item,
          a + a + b, d, a + a + b + d, item, a + a + b + d);
      r = a + a + b + d;
      break;
    }
  }
  e.prompt = "Question: " + q + "\nAnswer: ";
  e.target = s;
  e.answer = std::to_string(r);
  return e;
}

struct TableSpec {
  std::string name;
  std::vector<std::string> text_cols, num_cols;
  std::vector<std::string> values;  // example values for text filters
};

const std::vector<TableSpec> kTables = {
    {"singer", {"name", "country", "genre"}, {"age", "sales"}, {"France", "Japan", "pop", "rock"}},
    {"stadium", {"name", "location"}, {"capacity", "highest", "average"}, {"London", "Paris"}},
    {"student", {"name", "major", "city"}, {"age", "gpa"}, {"math", "history", "Boston"}},
    {"employee", {"name", "department", "city"}, {"salary", "age"}, {"sales", "Berlin"}},
    {"course", {"title", "department"}, {"credits", "enrollment"}, {"biology", "physics"}},
    {"car", {"model", "maker", "color"}, {"price", "horsepower", "year"}, {"red", "Toyota"}},
    {"airport", {"name", "city", "country"}, {"elevation", "passengers"}, {"Canada", "Rome"}},
    {"book", {"title", "author", "publisher"}, {"pages", "price", "year"}, {"Orwell", "Penguin"}},
};

std::string schema_text(const TableSpec& t) {
  std::string s = t.name + "(id";
  for (const auto& c : t.text_cols) s += ", " + c;
  for (const auto& c : t.num_cols) s += ", " + c;
  return s + ")";
}

Example sql_example(std::mt19937_64& rng) {
  const TableSpec& t = pick(kTables, rng);
  const TableSpec& other = pick(kTables, rng);
  std::string tables = schema_text(t);
  if (other.name != t.name) tables += "; " + schema_text(other);
  const std::string col = pick(t.text_cols, rng);
  const std::string num = pick(t.num_cols, rng);
  const std::string text_col = pick(t.text_cols, rng);
  const std::string value = pick(t.values, rng);
  const int64_t v = uniform_int(rng, 1, 99);
  std::string q, sql;
  switch (uniform_int(rng, 0, 7)) {
    case 0:
      q = fmt::format("How many {}s are there?", t.name);
      sql = fmt::format("SELECT count(*) FROM {}", t.name);
      break;
    case 1:
      q = fmt::format("List the {} of all {}s.", col, t.name);
      sql = fmt::format("SELECT {} FROM {}", col, t.name);
      break;
    case 2:
      q = fmt::format("What is the average {} of all {}s?", num, t.name);
      sql = fmt::format("SELECT avg({}) FROM {}", num, t.name);
      break;
    case 3:
      q = fmt::format("Show the {} of {}s whose {} is greater than {}.", col, t.name, num, v);
      sql = fmt::format("SELECT {} FROM {} WHERE {} > {}", col, t.name, num, v);
      break;
    case 4:
      q = fmt::format("Show the {} of {}s whose {} is '{}'.", col, t.name, text_col, value);
      sql = fmt::format("SELECT {} FROM {} WHERE {} = '{}'", col, t.name, text_col, value);
      break;
    case 5:
      q = fmt::format("Which {} has the highest {}? Give its {}.", t.name, num, col);
      sql = fmt::format("SELECT {} FROM {} ORDER BY {} DESC LIMIT 1", col, t.name, num);
      break;
    case 6:
      q = fmt::format("Count the {}s for each {}.", t.name, text_col);
      sql = fmt::format("SELECT {}, count(*) FROM {} GROUP BY {}", text_col, t.name, text_col);
      break;
    default:
      q = fmt::format("What are the maximum and minimum {} of {}s?", num, t.name);
      sql = fmt::format("SELECT max({}), min({}) FROM {}", num, num, t.name);
      break;
  }
  Example e;
  e.prompt = "### Tables: " + tables + "\n### Question: " + q + "\n### SQL: ";
  e.target = sql;
  e.answer = sql;
  return e;
}

// Functions with a docstring from one Python source file.
std::vector<Example> python_functions(const std::string& source, int64_t max_chars) {
  std::vector<Example> out;
  std::vector<std::string> lines;
  std::istringstream in(source);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    const size_t indent = l.find_first_not_of(' ');
    if (indent == std::string::npos || l.compare(indent, 4, "def ") != 0) continue;
    if (l.empty() || l.back() != ':' || i + 1 >= lines.size()) continue;  // one-line signatures
    const std::string& d = lines[i + 1];
    const size_t di = d.find_first_not_of(' ');
    if (di == std::string::npos || d.compare(di, 3, "\"\"\"") != 0) continue;
    std::string doc = d.substr(di + 3);
    const size_t close = doc.find("\"\"\"");
    if (close != std::string::npos) doc = doc.substr(0, close);
    if (doc.size() < 8) continue;
    // Body: following lines indented deeper than the def (blank lines included).
    size_t j = i + 1;
    while (j < lines.size()) {
      const std::string& b = lines[j];
      const size_t bi = b.find_first_not_of(' ');
      if (bi != std::string::npos && bi <= indent) break;
      ++j;
    }
    std::string code;
    for (size_t k = i; k < j; ++k)
      code += lines[k].substr(std::min(indent, lines[k].size())) + "\n";
    while (!code.empty() && code.back() == '\n') code.pop_back();
    if (static_cast<int64_t>(code.size()) > max_chars || code.size() < 40) continue;
    Example e;
    e.prompt = "### Docstring: " + doc + "\n### Code:\n";
    e.target = code;
    e.answer = code;
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

Domain parse_domain(const std::string& name) {
  if (name == "math") return Domain::kMath;
  if (name == "sql") return Domain::kSql;
  if (name == "code") return Domain::kCode;
  TESSERA_CHECK(false, "unknown domain '{}' (expected math, sql or code)", name);
  return Domain::kMath;
}

std::string domain_name(Domain domain) {
  switch (domain) {
    case Domain::kMath:
      return "math";
    case Domain::kSql:
      return "sql";
    case Domain::kCode:
      return "code";
  }
  return "?";
}

std::string extract_math_answer(const std::string& text) {
  const size_t p = text.rfind("####");
  if (p == std::string::npos) return "";
  size_t i = p + 4;
  while (i < text.size() && text[i] == ' ') ++i;
  size_t j = i;
  while (j < text.size() && (std::isdigit(static_cast<unsigned char>(text[j])) || text[j] == '-'))
    ++j;
  return text.substr(i, j - i);
}

Corpus make_math_corpus(int64_t n_train, int64_t n_test, uint64_t seed) {
  Corpus c;
  c.domain = Domain::kMath;
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < n_train; ++i) c.train.push_back(math_example(rng));
  std::mt19937_64 test_rng(seed ^ 0x7e57u);
  for (int64_t i = 0; i < n_test; ++i) c.test.push_back(math_example(test_rng));
  return c;
}

Corpus make_sql_corpus(int64_t n_train, int64_t n_test, uint64_t seed) {
  Corpus c;
  c.domain = Domain::kSql;
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < n_train; ++i) c.train.push_back(sql_example(rng));
  std::mt19937_64 test_rng(seed ^ 0x7e57u);
  for (int64_t i = 0; i < n_test; ++i) c.test.push_back(sql_example(test_rng));
  return c;
}

Corpus make_code_corpus(int64_t n_train, int64_t n_test, uint64_t seed, const std::string& dir,
                        int64_t max_chars) {
  namespace fsys = std::filesystem;
  TESSERA_CHECK(fsys::is_directory(dir), "code corpus: {} is not a directory", dir);
  std::vector<std::string> files;
  for (const auto& entry : fsys::directory_iterator(dir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".py") {
      files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  Corpus c;
  c.domain = Domain::kCode;
  std::vector<Example> train, test;
  for (const auto& f : files) {
    const std::string name = fsys::path(f).filename().string();
    uint64_t h = 1469598103934665603ull;  // FNV-1a: a split that does not depend on the seed
    for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
    auto funcs = python_functions(read_file(f), max_chars);
    auto& dst = h % 10 == 0 ? test : train;
    dst.insert(dst.end(), funcs.begin(), funcs.end());
  }
  TESSERA_CHECK(!train.empty() && !test.empty(),
                "code corpus: no usable Python functions found under {}", dir);
  std::mt19937_64 rng(seed);
  random::shuffle(train, rng);
  random::shuffle(test, rng);
  if (static_cast<int64_t>(train.size()) > n_train) train.resize(n_train);
  if (static_cast<int64_t>(test.size()) > n_test) test.resize(n_test);
  c.train = std::move(train);
  c.test = std::move(test);
  return c;
}

Corpus make_corpus(Domain domain, int64_t n_train, int64_t n_test, uint64_t seed) {
  switch (domain) {
    case Domain::kMath:
      return make_math_corpus(n_train, n_test, seed);
    case Domain::kSql:
      return make_sql_corpus(n_train, n_test, seed);
    case Domain::kCode:
      return make_code_corpus(n_train, n_test, seed);
  }
  TESSERA_CHECK(false, "unknown domain");
  return {};
}

}  // namespace tessera::jacobi
