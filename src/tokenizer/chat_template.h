// Chat templates: tokenizer_config.json's Jinja "chat_template", rendered by our Jinja subset
// (src/tokenizer/jinja*) with the variables transformers' apply_chat_template passes.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace lamina {

namespace jinja {
class Template;
}

class ChatTemplate {
 public:
  // Parses the template; a construct outside the supported subset is a lamina::Error naming it.
  explicit ChatTemplate(const std::string& source);
  // context: messages, add_generation_prompt, bos_token, eos_token, tools, ... Ordered like Python
  // dicts, so tojson prints keys in the caller's order.
  std::string render(const nlohmann::ordered_json& context) const;
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::shared_ptr<const jinja::Template> template_;
};

}  // namespace lamina
