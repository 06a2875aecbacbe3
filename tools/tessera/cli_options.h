// Option helpers for commands whose flags are library enums and lists: the library's parse_xxx
// reads the text (a bad value is a usage error with the library's message) and xxx_name shows
// the default.
#pragma once

#include <CLI/CLI.hpp>

#include <sstream>
#include <string>
#include <vector>

#include "tessera/core/error.h"

namespace tessera::cli {

/// An option whose help shows its default.
template <typename T>
CLI::Option* opt(CLI::App* cmd, const std::string& flag, T& value, const std::string& help) {
  return cmd->add_option(flag, value, help)->capture_default_str();
}

/// A choice read by the library's parse_xxx (a bad value is a usage error), shown by xxx_name.
template <typename T, typename Parse, typename Name>
CLI::Option* choice(CLI::App* cmd, const std::string& flag, T& value, Parse parse, Name name,
                    const std::string& help) {
  const auto read = [&value, parse, flag](const std::string& text) {
    try {
      value = parse(text);
    } catch (const tessera::Error& e) {
      throw CLI::ValidationError(flag, e.what());
    }
  };
  return cmd->add_option_function<std::string>(flag, read, help)->default_str(name(value));
}

/// A comma-separated list of choices.
template <typename T, typename Parse, typename Name>
CLI::Option* choices(CLI::App* cmd, const std::string& flag, std::vector<T>& values, Parse parse,
                     Name name, const std::string& help) {
  const auto parse_list = [parse](const std::string& text) {
    std::vector<T> list;
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, ',');) list.push_back(parse(item));
    TESSERA_CHECK(!list.empty(), "the list '{}' is empty", text);
    return list;
  };
  const auto names = [name](const std::vector<T>& list) {
    std::string text;
    for (const auto& v : list) text += (text.empty() ? "" : ",") + name(v);
    return text;
  };
  return choice(cmd, flag, values, parse_list, names, help);
}

}  // namespace tessera::cli
