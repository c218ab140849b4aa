// Jinja filters and tests, Python str/dict methods, and the globals transformers provides
// (raise_exception, strftime_now) plus Jinja's range() and namespace().
#include <algorithm>
#include <cctype>
#include <ctime>
#include <set>

#include "common/error.h"
#include "tokenizer/jinja_ast.h"

namespace lamina::jinja {

namespace {

using KwArgs = std::vector<std::pair<std::string, Value>>;

const Value* kwarg(const KwArgs& kw, const char* name) {
  for (const auto& [k, v] : kw)
    if (k == name) return &v;
  return nullptr;
}

// Positional argument i, else keyword `name`, else the fallback.
Value arg(const std::vector<Value>& args, size_t i, const KwArgs& kw, const char* name, Value fallback) {
  if (i < args.size()) return args[i];
  if (const Value* v = kwarg(kw, name)) return *v;
  return fallback;
}

const std::string& need_string(const Value& v, const std::string& what, int line) {
  if (!v.is_string()) template_error(line, what + " needs a string, got " + repr(v));
  return v.get_ref<const std::string&>();
}

std::string map_ascii(std::string s, int (*f)(int)) {
  for (char& c : s) c = static_cast<char>(f(static_cast<unsigned char>(c)));
  return s;
}

std::string capitalize(const std::string& s) {
  std::string out = map_ascii(s, [](int c) { return std::tolower(c); });
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

std::string title(const std::string& s) {
  std::string out = s;
  bool prev_letter = false;
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    const bool letter = std::isalpha(u);
    c = static_cast<char>(letter ? (prev_letter ? std::tolower(u) : std::toupper(u)) : u);
    prev_letter = letter;
  }
  return out;
}

int64_t py_len(const Value& v, int line) {
  if (v.is_string()) return static_cast<int64_t>(to_u32(v.get<std::string>()).size());
  if (v.is_array() || v.is_object()) return static_cast<int64_t>(v.size());
  if (is_undefined(v)) return 0;
  template_error(line, "object of type " + repr(v) + " has no length");
}

Value as_list(const Value& v, int line) {
  if (v.is_array()) return v;
  Value out = Value::array();
  if (v.is_object()) {
    for (const auto& [k, _] : v.items()) out.push_back(k);
  } else if (v.is_string()) {
    for (char32_t c : to_u32(v.get<std::string>())) out.push_back(from_u32(std::u32string(1, c)));
  } else if (!is_undefined(v) && !v.is_null()) {
    template_error(line, repr(v) + " is not iterable");
  }
  return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) return s;
  size_t pos = 0;
  for (int64_t n = 0; (count < 0 || n < count) && (pos = s.find(from, pos)) != std::string::npos; ++n) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

Value split(const std::string& s, const Value& sep, int64_t maxsplit) {
  Value out = Value::array();
  if (sep.is_null() || is_undefined(sep)) {  // runs of whitespace, no empty strings
    const std::u32string u = to_u32(s);
    size_t i = 0;
    int64_t n = 0;
    while (i < u.size()) {
      while (i < u.size() && py_isspace(u[i])) ++i;
      if (i >= u.size()) break;
      if (maxsplit >= 0 && n == maxsplit) {
        out.push_back(py_strip(from_u32(u.substr(i)), Value(), false, true));
        return out;
      }
      size_t j = i;
      while (j < u.size() && !py_isspace(u[j])) ++j;
      out.push_back(from_u32(u.substr(i, j - i)));
      ++n;
      i = j;
    }
    return out;
  }
  const std::string& d = sep.get_ref<const std::string&>();
  size_t start = 0;
  for (int64_t n = 0; maxsplit < 0 || n < maxsplit; ++n) {
    const size_t f = s.find(d, start);
    if (f == std::string::npos) break;
    out.push_back(s.substr(start, f - start));
    start = f + d.size();
  }
  out.push_back(s.substr(start));
  return out;
}

const std::set<std::string>& filter_names() {
  static const std::set<std::string> names = {
      "trim",   "length", "count",  "tojson", "items",      "join",       "string", "lower",  "upper",
      "capitalize", "title", "first", "last", "default",    "d",          "list",   "reject", "select",
      "rejectattr", "selectattr", "map", "replace", "int",  "float",      "abs",    "safe",   "reverse",
      "sort",   "unique", "indent", "sum",  "min",    "max"};
  return names;
}

const std::set<std::string>& test_names() {
  static const std::set<std::string> names = {
      "defined", "undefined", "none",     "boolean",  "false", "true", "integer", "float", "number",
      "string",  "mapping",   "iterable", "sequence", "sameas", "equalto", "eq", "ne", "lt", "le", "gt", "ge",
      "in",      "odd",       "even",     "divisibleby", "lower", "upper", "callable"};
  return names;
}

// Value of item.attr for selectattr/map(attribute=...); "a.b" walks nested dicts.
Value attribute_of(const Value& item, const std::string& path) {
  Value cur = item;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!cur.is_object() || !cur.contains(key)) return undefined();
    cur = cur[key];
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

Value select_items(const Value& seq, const std::vector<Value>& args, bool by_attr, bool keep_if, int line) {
  Value out = Value::array();
  const size_t test_at = by_attr ? 1 : 0;
  for (const Value& item : as_list(seq, line)) {
    const Value subject = by_attr ? attribute_of(item, need_string(args.at(0), "selectattr", line)) : item;
    bool pass;
    if (args.size() > test_at) {
      const std::string test = need_string(args[test_at], "select test", line);
      pass = apply_test(test, subject, std::vector<Value>(args.begin() + test_at + 1, args.end()), line);
    } else {
      pass = truthy(subject);
    }
    if (pass == keep_if) out.push_back(item);
  }
  return out;
}

}  // namespace

bool is_known_filter(const std::string& name) { return filter_names().count(name) > 0; }
bool is_known_test(const std::string& name) { return test_names().count(name) > 0; }

Value apply_filter(const std::string& name, const Value& v, const std::vector<Value>& args, const KwArgs& kw, int line) {
  if (name == "trim") return py_strip(to_str(v), arg(args, 0, kw, "chars", nullptr), true, true);
  if (name == "length" || name == "count") return py_len(v, line);
  if (name == "string" || name == "safe") return to_str(v);
  if (name == "lower") return map_ascii(to_str(v), [](int c) { return std::tolower(c); });
  if (name == "upper") return map_ascii(to_str(v), [](int c) { return std::toupper(c); });
  if (name == "capitalize") return capitalize(to_str(v));
  if (name == "title") return title(to_str(v));
  if (name == "tojson") {
    if (kwarg(kw, "separators")) template_error(line, "tojson(separators=...) is not supported");
    const Value indent = arg(args, 1, kw, "indent", nullptr);
    if (is_undefined(v)) template_error(line, "tojson of an undefined value");
    return to_json(v, indent.is_number_integer() ? static_cast<int>(indent.get<int64_t>()) : -1,
                   truthy(arg(args, 3, kw, "sort_keys", false)));
  }
  if (name == "items") {
    Value out = Value::array();
    if (is_undefined(v) || v.is_null()) return out;
    if (!v.is_object()) template_error(line, "items filter needs a mapping, got " + repr(v));
    for (const auto& [k, x] : v.items()) out.push_back(Value::array({k, x}));
    return out;
  }
  if (name == "join") {
    const std::string sep = to_str(arg(args, 0, kw, "d", ""));
    const Value attr = arg(args, 1, kw, "attribute", nullptr);
    std::string out;
    bool first = true;
    for (const Value& item : as_list(v, line)) {
      out += (first ? "" : sep) + to_str(attr.is_string() ? attribute_of(item, attr.get<std::string>()) : item);
      first = false;
    }
    return out;
  }
  if (name == "first" || name == "last") {
    const Value list = as_list(v, line);
    if (list.empty()) return undefined();
    return name == "first" ? list.front() : list.back();
  }
  if (name == "default" || name == "d") {
    const bool boolean = truthy(arg(args, 1, kw, "boolean", false));
    return (is_undefined(v) || (boolean && !truthy(v))) ? arg(args, 0, kw, "default_value", "") : v;
  }
  if (name == "list") return as_list(v, line);
  if (name == "reverse") {
    if (v.is_string()) {
      std::u32string u = to_u32(v.get<std::string>());
      std::reverse(u.begin(), u.end());
      return from_u32(u);
    }
    Value list = as_list(v, line);
    std::reverse(list.begin(), list.end());
    return list;
  }
  if (name == "select" || name == "reject") return select_items(v, args, false, name == "select", line);
  if (name == "selectattr" || name == "rejectattr") {
    if (args.empty()) template_error(line, name + " needs an attribute name");
    return select_items(v, args, true, name == "selectattr", line);
  }
  if (name == "map") {
    Value out = Value::array();
    const Value* attr = kwarg(kw, "attribute");
    for (const Value& item : as_list(v, line)) {
      if (attr) {
        Value x = attribute_of(item, need_string(*attr, "map(attribute=)", line));
        if (is_undefined(x) && kwarg(kw, "default")) x = *kwarg(kw, "default");
        out.push_back(x);
      } else {
        const std::string f = need_string(arg(args, 0, kw, "", undefined()), "map", line);
        if (!is_known_filter(f)) template_error(line, "filter '" + f + "' is not supported");
        out.push_back(apply_filter(f, item, std::vector<Value>(args.begin() + 1, args.end()), {}, line));
      }
    }
    return out;
  }
  if (name == "replace") {
    return replace_all(to_str(v), to_str(args.at(0)), to_str(args.at(1)),
                       arg(args, 2, kw, "count", -1).get<int64_t>());
  }
  if (name == "int") {
    if (v.is_number()) return static_cast<int64_t>(v.get<double>());
    try {
      return static_cast<int64_t>(std::stoll(py_strip(to_str(v), nullptr, true, true)));
    } catch (const std::exception&) {
      return arg(args, 0, kw, "default", 0);
    }
  }
  if (name == "float") {
    if (v.is_number()) return v.get<double>();
    try {
      return std::stod(py_strip(to_str(v), nullptr, true, true));
    } catch (const std::exception&) {
      return arg(args, 0, kw, "default", 0.0);
    }
  }
  if (name == "abs") {
    if (v.is_number_integer()) return std::llabs(v.get<int64_t>());
    if (v.is_number()) return std::abs(v.get<double>());
    template_error(line, "abs of " + repr(v));
  }
  if (name == "sort" || name == "unique" || name == "min" || name == "max") {
    Value list = as_list(v, line);
    const Value attr = arg(args, name == "sort" ? 2 : 1, kw, "attribute", nullptr);
    auto key = [&](const Value& x) { return attr.is_string() ? attribute_of(x, attr.get<std::string>()) : x; };
    std::vector<Value> items(list.begin(), list.end());
    std::stable_sort(items.begin(), items.end(),
                     [&](const Value& a, const Value& b) { return py_compare(key(a), key(b), line) < 0; });
    if (name == "min") return items.empty() ? undefined() : items.front();
    if (name == "max") return items.empty() ? undefined() : items.back();
    if (name == "sort" && truthy(arg(args, 0, kw, "reverse", false))) std::reverse(items.begin(), items.end());
    Value out = Value::array();
    for (const Value& x : items) {
      if (name == "unique" && !out.empty() && py_equal(key(out.back()), key(x))) continue;
      out.push_back(x);
    }
    return out;
  }
  if (name == "sum") {
    Value total = arg(args, 1, kw, "start", 0);
    for (const Value& x : as_list(v, line)) {
      if (total.is_number_integer() && x.is_number_integer()) total = total.get<int64_t>() + x.get<int64_t>();
      else total = total.get<double>() + x.get<double>();
    }
    return total;
  }
  if (name == "indent") {  // indent(width=4, first=False, blank=False)
    const Value w = arg(args, 0, kw, "width", 4);
    const std::string pad = w.is_string() ? w.get<std::string>() : std::string(static_cast<size_t>(w.get<int64_t>()), ' ');
    const bool first = truthy(arg(args, 1, kw, "first", false)), blank = truthy(arg(args, 2, kw, "blank", false));
    const Value lines = split(to_str(v), "\n", -1);
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      const std::string& l = lines[i].get_ref<const std::string&>();
      if (i) out += "\n";
      if ((i > 0 || first) && (blank || !l.empty())) out += pad;
      out += l;
    }
    return out;
  }
  template_error(line, "filter '" + name + "' is not supported");
}

bool apply_test(const std::string& name, const Value& v, const std::vector<Value>& args, int line) {
  auto other = [&]() -> const Value& {
    if (args.empty()) template_error(line, "test '" + name + "' needs an argument");
    return args[0];
  };
  if (name == "defined") return !is_undefined(v);
  if (name == "undefined") return is_undefined(v);
  if (name == "none") return v.is_null();
  if (name == "boolean") return v.is_boolean();
  if (name == "true") return v.is_boolean() && v.get<bool>();
  if (name == "false") return v.is_boolean() && !v.get<bool>();
  if (name == "integer") return v.is_number_integer();
  if (name == "float") return v.is_number_float();
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_object();
  if (name == "iterable") return v.is_array() || v.is_object() || v.is_string();
  if (name == "sequence") return v.is_array() || v.is_object() || v.is_string();
  if (name == "callable") return false;
  if (name == "sameas") return v == other() && v.type() == other().type();
  if (name == "equalto" || name == "eq") return py_equal(v, other());
  if (name == "ne") return !py_equal(v, other());
  if (name == "lt") return py_compare(v, other(), line) < 0;
  if (name == "le") return py_compare(v, other(), line) <= 0;
  if (name == "gt") return py_compare(v, other(), line) > 0;
  if (name == "ge") return py_compare(v, other(), line) >= 0;
  if (name == "in") {
    const Value& c = other();
    if (c.is_string()) return v.is_string() && c.get<std::string>().find(v.get<std::string>()) != std::string::npos;
    if (c.is_object()) return v.is_string() && c.contains(v.get<std::string>());
    for (const Value& x : as_list(c, line))
      if (py_equal(x, v)) return true;
    return false;
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.is_number_integer()) template_error(line, "test '" + name + "' needs an integer");
    const int64_t n = v.get<int64_t>();
    if (name == "divisibleby") return other().get<int64_t>() != 0 && n % other().get<int64_t>() == 0;
    return (n % 2 != 0) == (name == "odd");
  }
  if (name == "lower" || name == "upper") {
    const std::string s = to_str(v);
    return s == map_ascii(s, name == "lower" ? [](int c) { return std::tolower(c); } : [](int c) { return std::toupper(c); });
  }
  template_error(line, "test '" + name + "' is not supported");
}

Value call_method(const Value& v, const std::string& m, const std::vector<Value>& args, const KwArgs& kw, int line) {
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (m == "strip" || m == "lstrip" || m == "rstrip")
      return py_strip(s, arg(args, 0, kw, "chars", nullptr), m != "rstrip", m != "lstrip");
    if (m == "split") return split(s, arg(args, 0, kw, "sep", nullptr), arg(args, 1, kw, "maxsplit", -1).get<int64_t>());
    if (m == "startswith" || m == "endswith") {
      const Value p = arg(args, 0, kw, "prefix", undefined());
      std::vector<Value> options = p.is_array() ? std::vector<Value>(p.begin(), p.end()) : std::vector<Value>{p};
      for (const Value& o : options) {
        const std::string& x = need_string(o, m, line);
        if (m == "startswith" ? s.rfind(x, 0) == 0 : (s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0))
          return true;
      }
      return false;
    }
    if (m == "lower" || m == "upper" || m == "title" || m == "capitalize") return apply_filter(m, v, {}, {}, line);
    if (m == "replace") return apply_filter("replace", v, args, kw, line);
    if (m == "find") {
      const size_t f = s.find(need_string(args.at(0), "find", line));
      return f == std::string::npos ? int64_t{-1} : static_cast<int64_t>(to_u32(s.substr(0, f)).size());
    }
    if (m == "join") return apply_filter("join", args.at(0), {v}, {}, line);
  }
  if (v.is_object()) {
    if (m == "items") return apply_filter("items", v, {}, {}, line);
    if (m == "keys") return as_list(v, line);
    if (m == "values") {
      Value out = Value::array();
      for (const auto& [_, x] : v.items()) out.push_back(x);
      return out;
    }
    if (m == "get") {
      const std::string& key = need_string(args.at(0), "get", line);
      return v.contains(key) ? v[key] : arg(args, 1, kw, "default", nullptr);
    }
  }
  template_error(line, "method '" + m + "' of " + repr(v) + " is not supported");
}

bool is_global_function(const std::string& name) {
  return name == "raise_exception" || name == "strftime_now" || name == "range" || name == "namespace" ||
         name == "dict";
}

Value call_global(const std::string& name, const std::vector<Value>& args, const KwArgs& kw, int line) {
  if (name == "raise_exception") fail("chat template error: ", args.empty() ? std::string("(no message)") : to_str(args[0]));
  if (name == "strftime_now") {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    const size_t n = std::strftime(buf, sizeof buf, need_string(args.at(0), "strftime_now", line).c_str(), &tm);
    return std::string(buf, n);
  }
  if (name == "range") {
    int64_t start = 0, stop = 0, step = 1;
    if (args.size() == 1) stop = args[0].get<int64_t>();
    else if (args.size() >= 2) start = args[0].get<int64_t>(), stop = args[1].get<int64_t>();
    if (args.size() == 3) step = args[2].get<int64_t>();
    if (step == 0) template_error(line, "range() step must not be zero");
    Value out = Value::array();
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(i);
    return out;
  }
  if (name == "dict") {
    Value out = Value::object();
    for (const auto& [k, v] : kw) out[k] = v;
    return out;
  }
  template_error(line, "function '" + name + "' is not supported");
}

}  // namespace lamina::jinja
