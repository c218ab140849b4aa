// Python semantics for template values: truthiness, str()/repr(), json.dumps, ==, <, and the
// Unicode-aware whitespace that str.strip() uses.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/utf8.h"

namespace lamina::jinja {

Value undefined() { return Value(Value::value_t::discarded); }
bool is_undefined(const Value& v) { return v.is_discarded(); }

bool truthy(const Value& v) {
  switch (v.type()) {
    case Value::value_t::discarded:
    case Value::value_t::null: return false;
    case Value::value_t::boolean: return v.get<bool>();
    case Value::value_t::number_integer:
    case Value::value_t::number_unsigned: return v.get<int64_t>() != 0;
    case Value::value_t::number_float: return v.get<double>() != 0.0;
    case Value::value_t::string: return !v.get_ref<const std::string&>().empty();
    case Value::value_t::array:
    case Value::value_t::object: return !v.empty();
    default: return true;
  }
}

namespace {

// Python's float repr: the shortest digits that round-trip.
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[40];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string s = buf;
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

void dump_json(const Value& v, int indent, bool sort_keys, int depth, std::string& out) {
  const bool pretty = indent >= 0;
  const std::string item_sep = pretty ? "," : ", ";
  auto newline = [&](int d) {
    if (pretty) out += "\n" + std::string(static_cast<size_t>(indent * d), ' ');
  };
  switch (v.type()) {
    case Value::value_t::null: out += "null"; return;
    case Value::value_t::boolean: out += v.get<bool>() ? "true" : "false"; return;
    case Value::value_t::number_integer:
    case Value::value_t::number_unsigned: out += std::to_string(v.get<int64_t>()); return;
    case Value::value_t::number_float: {
      const double d = v.get<double>();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : float_repr(d);
      return;
    }
    case Value::value_t::string: out += json_string(v.get_ref<const std::string&>()); return;
    case Value::value_t::array: {
      if (v.empty()) {
        out += "[]";
        return;
      }
      out += "[";
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        dump_json(v[i], indent, sort_keys, depth + 1, out);
      }
      newline(depth);
      out += "]";
      return;
    }
    case Value::value_t::object: {
      if (v.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::string> keys;
      for (const auto& [k, _] : v.items()) keys.push_back(k);
      if (sort_keys) std::sort(keys.begin(), keys.end());
      out += "{";
      for (size_t i = 0; i < keys.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        out += json_string(keys[i]) + ": ";
        dump_json(v[keys[i]], indent, sort_keys, depth + 1, out);
      }
      newline(depth);
      out += "}";
      return;
    }
    default: template_error(0, "an undefined value cannot be converted to JSON");
  }
}

std::string repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const char quote = has_single && s.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, quote);
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == quote || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + quote;
}

}  // namespace

std::string repr(const Value& v) {
  if (v.is_string()) return repr_string(v.get_ref<const std::string&>());
  if (v.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + repr(v[i]);
    return out + "]";
  }
  if (v.is_object()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [k, x] : v.items()) {
      out += (first ? "" : ", ") + repr_string(k) + ": " + repr(x);
      first = false;
    }
    return out + "}";
  }
  return to_str(v);
}

std::string to_str(const Value& v) {
  switch (v.type()) {
    case Value::value_t::discarded: return "";
    case Value::value_t::null: return "None";
    case Value::value_t::boolean: return v.get<bool>() ? "True" : "False";
    case Value::value_t::number_integer:
    case Value::value_t::number_unsigned: return std::to_string(v.get<int64_t>());
    case Value::value_t::number_float: return float_repr(v.get<double>());
    case Value::value_t::string: return v.get<std::string>();
    default: return repr(v);
  }
}

std::string to_json(const Value& v, int indent, bool sort_keys) {
  std::string out;
  dump_json(v, indent, sort_keys, 0, out);
  return out;
}

namespace {
bool numeric(const Value& v) { return v.is_number() || v.is_boolean(); }
double as_double(const Value& v) { return v.is_boolean() ? (v.get<bool>() ? 1.0 : 0.0) : v.get<double>(); }
}  // namespace

bool py_equal(const Value& a, const Value& b) {
  if (is_undefined(a) || is_undefined(b)) return is_undefined(a) && is_undefined(b);
  if (numeric(a) && numeric(b)) return as_double(a) == as_double(b);
  if (a.is_array() && b.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!py_equal(a[i], b[i])) return false;
    return true;
  }
  return a == b;
}

int py_compare(const Value& a, const Value& b, int line) {
  if (numeric(a) && numeric(b)) {
    const double x = as_double(a), y = as_double(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    // UTF-8 byte order is code point order, as Python compares strings.
    const int c = a.get_ref<const std::string&>().compare(b.get_ref<const std::string&>());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_array() && b.is_array()) {
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
      if (!py_equal(a[i], b[i])) return py_compare(a[i], b[i], line);
    }
    return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
  }
  template_error(line, "cannot compare " + repr(a) + " with " + repr(b));
}

std::u32string to_u32(const std::string& s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8::sequence_length(s, i);
    if (n == 0) {
      out += U'\uFFFD';
      ++i;
    } else {
      out += utf8::decode_at(s, i, n);
      i += n;
    }
  }
  return out;
}

std::string from_u32(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) utf8::append_code_point(out, c);
  return out;
}

// str.isspace(): bidi classes WS, B, S and category Zs.
bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string py_strip(const std::string& s, const Value& chars, bool left, bool right) {
  const std::u32string u = to_u32(s);
  const std::u32string set = chars.is_string() ? to_u32(chars.get<std::string>()) : std::u32string();
  auto strip_it = [&](char32_t c) { return chars.is_string() ? set.find(c) != std::u32string::npos : py_isspace(c); };
  size_t b = 0, e = u.size();
  if (left)
    while (b < e && strip_it(u[b])) ++b;
  if (right)
    while (e > b && strip_it(u[e - 1])) --e;
  return from_u32(u.substr(b, e - b));
}

}  // namespace lamina::jinja
