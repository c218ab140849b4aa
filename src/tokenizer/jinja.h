// A small Jinja2 subset for chat templates, with transformers' environment settings
// (trim_blocks, lstrip_blocks, loop controls, tojson as json.dumps, raise_exception, strftime_now).
// Supported: {{ }}, {% if/elif/else %}, {% for a[, b] in x [if c] %} with loop.*, {% set %} (incl.
// namespace attributes), {% break/continue %}, {# #}, whitespace control (- and +), the usual
// operators, filters and tests. Anything else fails at parse time with a message naming it.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace lamina::jinja {

// Values keep insertion order like Python dicts (tojson output must match json.dumps).
using Value = nlohmann::ordered_json;

struct Node;

class Template {
 public:
  explicit Template(const std::string& source);  // throws lamina::Error "chat template line N: ..."
  ~Template();
  std::string render(const Value& context) const;

 private:
  std::vector<std::shared_ptr<Node>> body_;
};

}  // namespace lamina::jinja
