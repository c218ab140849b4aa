#include "server/api_error.h"

namespace lamina::server {

Json ApiError::to_json() const {
  auto or_null = [](const std::string& s) { return s.empty() ? Json(nullptr) : Json(s); };
  return {{"error", {{"message", what()}, {"type", type_}, {"param", or_null(param_)}, {"code", or_null(code_)}}}};
}

void bad_request(const std::string& message, const std::string& param, const std::string& code) {
  throw ApiError(400, message, "invalid_request_error", param, code);
}

}  // namespace lamina::server
