#include "common/json.h"

#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/paths.h"

namespace lamina {

Json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '", path, "': file is missing or unreadable");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return Json::parse(ss.str());
  } catch (const nlohmann::json::parse_error& e) {
    fail("'", path, "' is not valid JSON: ", e.what());
  }
}

void write_json_file(const std::string& path, const Json& j) { write_file_atomic(path, j.dump(2) + "\n"); }

void throw_missing_field(const std::string& key, const std::string& where) {
  fail(where, ": required field '", key, "' is missing");
}

void throw_bad_field(const std::string& key, const std::string& where, const std::string& value) {
  fail(where, ": field '", key, "' has an unexpected value ", value);
}

}  // namespace lamina
