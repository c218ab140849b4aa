// JSON helpers over nlohmann::json: reading a file with a clear error, typed field access.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace lamina {

using Json = nlohmann::json;

// Parses a JSON file; a missing or malformed file is a lamina::Error naming the path.
Json read_json_file(const std::string& path);
// Writes pretty-printed JSON to path (through a temporary file renamed into place).
void write_json_file(const std::string& path, const Json& j);

[[noreturn]] void throw_missing_field(const std::string& key, const std::string& where);
[[noreturn]] void throw_bad_field(const std::string& key, const std::string& where, const std::string& value);

// Typed access with an error that names the field and the file it came from.
template <typename T>
T json_get(const Json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) throw_missing_field(key, where);
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw_bad_field(key, where, it->dump());
  }
}

template <typename T>
T json_get_or(const Json& j, const std::string& key, const T& fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<T>();
}


}  // namespace lamina
