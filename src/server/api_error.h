// Errors in OpenAI's shape: HTTP status + {"error": {"message", "type", "param", "code"}}.
#pragma once
#include <stdexcept>
#include <string>

#include "common/json.h"

namespace lamina::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string type, std::string param = "", std::string code = "")
      : std::runtime_error(message), status_(status), type_(std::move(type)), param_(std::move(param)),
        code_(std::move(code)) {}

  int status() const { return status_; }
  Json to_json() const;  // {"error": {...}}; empty param/code become null

 private:
  int status_;
  std::string type_, param_, code_;
};

// 400 invalid_request_error naming the field to fix.
[[noreturn]] void bad_request(const std::string& message, const std::string& param = "",
                              const std::string& code = "");

}  // namespace lamina::server
