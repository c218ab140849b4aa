#include "tokenizer/chat_template.h"

#include "tokenizer/jinja.h"

namespace lamina {

ChatTemplate::ChatTemplate(const std::string& source)
    : source_(source), template_(std::make_shared<jinja::Template>(source)) {}

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const { return template_->render(context); }

}  // namespace lamina
