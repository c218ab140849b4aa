// Jinja evaluation: walks the statement tree with a stack of scopes (a for loop body gets its own,
// as in Jinja2, so "set" inside a loop does not leak out; namespace() objects carry state across).
#include <algorithm>
#include <cmath>
#include <optional>

#include "common/error.h"
#include "tokenizer/jinja_ast.h"

namespace lamina::jinja {

namespace {

const char* kNamespaceMarker = "__lamina_namespace__";

class Renderer {
 public:
  explicit Renderer(const Value& context) { scopes_.push_back(context.is_object() ? context : Value::object()); }

  enum class Flow { Normal, Break, Continue };

  Flow run(const Body& body, std::string& out) {
    for (const auto& n : body) {
      const Flow f = run_node(*n, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

 private:
  Flow run_node(const Node& n, std::string& out) {
    switch (n.kind) {
      case Node::Kind::Text: out += n.text; return Flow::Normal;
      case Node::Kind::Output: out += to_str(eval(*n.expr)); return Flow::Normal;
      case Node::Kind::If:
        for (const auto& [cond, body] : n.branches) {
          if (!cond || truthy(eval(*cond))) return run(body, out);
        }
        return Flow::Normal;
      case Node::Kind::For: return run_for(n, out);
      case Node::Kind::Set: assign(n.names, eval(*n.expr), n.line); return Flow::Normal;
      case Node::Kind::SetAttr: {
        Value* ns = find(n.names[0]);
        if (!ns || !ns->is_object() || !ns->contains(kNamespaceMarker))
          template_error(n.line, "'" + n.names[0] + "' is not a namespace(); cannot set ." + n.names[1]);
        (*ns)[n.names[1]] = eval(*n.expr);
        return Flow::Normal;
      }
      case Node::Kind::Break: return Flow::Break;
      case Node::Kind::Continue: return Flow::Continue;
    }
    return Flow::Normal;
  }

  Flow run_for(const Node& n, std::string& out) {
    const Value seq = iterable(eval(*n.expr), n.line);
    // With a filter, loop.* counts only the items that pass it (Jinja2 semantics).
    std::vector<Value> items;
    scopes_.push_back(Value::object());
    for (const Value& item : seq) {
      if (n.filter) {
        assign(n.names, item, n.line);
        if (!truthy(eval(*n.filter))) continue;
      }
      items.push_back(item);
    }
    const size_t count = items.size();
    for (size_t i = 0; i < count; ++i) {
      Value loop = {{"index0", i},         {"index", i + 1},         {"first", i == 0},
                    {"last", i + 1 == count}, {"length", count},       {"revindex", count - i},
                    {"revindex0", count - i - 1}};
      loop["previtem"] = i > 0 ? items[i - 1] : undefined();
      loop["nextitem"] = i + 1 < count ? items[i + 1] : undefined();
      scopes_.back() = Value::object();  // Jinja resets names set in the body on every iteration
      scopes_.back()["loop"] = loop;
      assign(n.names, items[i], n.line);
      if (run(n.body, out) == Flow::Break) break;
    }
    scopes_.pop_back();
    if (count == 0) run(n.else_body, out);
    return Flow::Normal;
  }

  // Python iteration: lists as they are, dicts by key, strings by character; undefined is empty.
  static Value iterable(const Value& v, int line) {
    if (is_undefined(v) || v.is_null()) return Value::array();
    if (v.is_array()) return v;
    Value out = Value::array();
    if (v.is_object()) {
      for (const auto& [k, _] : v.items()) out.push_back(k);
      return out;
    }
    if (v.is_string()) {
      for (char32_t c : to_u32(v.get<std::string>())) out.push_back(from_u32(std::u32string(1, c)));
      return out;
    }
    template_error(line, repr(v) + " is not iterable");
  }

  void assign(const std::vector<std::string>& names, const Value& v, int line) {
    if (names.size() == 1) {
      scopes_.back()[names[0]] = v;
      return;
    }
    if (!v.is_array() || v.size() != names.size())
      template_error(line, "cannot unpack " + repr(v) + " into " + std::to_string(names.size()) + " names");
    for (size_t i = 0; i < names.size(); ++i) scopes_.back()[names[i]] = v[i];
  }

  Value* find(const std::string& name) {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return &*f;
    }
    return nullptr;
  }

  Value eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::Literal: return e.value;
      case Expr::Kind::Name: {
        if (const Value* v = find(e.name)) return *v;
        return undefined();
      }
      case Expr::Kind::Attr: return get_item(eval(*e.args[0]), Value(e.name), e.line, e.args[0]);
      case Expr::Kind::Item: return get_item(eval(*e.args[0]), eval(*e.args[1]), e.line, e.args[0]);
      case Expr::Kind::Slice: return slice(e);
      case Expr::Kind::Call: return call(e);
      case Expr::Kind::Filter: {
        std::vector<Value> args;
        std::vector<std::pair<std::string, Value>> kwargs;
        eval_args(e, args, kwargs);
        return apply_filter(e.name, eval(*e.args[0]), args, kwargs, e.line);
      }
      case Expr::Kind::Test: {
        std::vector<Value> args;
        std::vector<std::pair<std::string, Value>> kwargs;
        eval_args(e, args, kwargs);
        return apply_test(e.name, eval(*e.args[0]), args, e.line) != e.negate;
      }
      case Expr::Kind::Not: return !truthy(eval(*e.args[0]));
      case Expr::Kind::Neg: {
        const Value v = eval(*e.args[0]);
        if (v.is_number_float()) return -v.get<double>();
        if (v.is_number()) return -v.get<int64_t>();
        template_error(e.line, "bad operand for unary -: " + repr(v));
      }
      case Expr::Kind::And: {  // Python returns the deciding operand, not a bool
        Value l = eval(*e.args[0]);
        return truthy(l) ? eval(*e.args[1]) : l;
      }
      case Expr::Kind::Or: {
        Value l = eval(*e.args[0]);
        return truthy(l) ? l : eval(*e.args[1]);
      }
      case Expr::Kind::Cond:
        if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : undefined();
      case Expr::Kind::List: {
        Value out = Value::array();
        for (const auto& a : e.args) out.push_back(eval(*a));
        return out;
      }
      case Expr::Kind::Dict: {
        Value out = Value::object();
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          const Value k = eval(*e.args[i]);
          if (!k.is_string()) template_error(e.line, "only string dict keys are supported");
          out[k.get<std::string>()] = eval(*e.args[i + 1]);
        }
        return out;
      }
      case Expr::Kind::Binary: return binary(e);
    }
    return undefined();
  }

  void eval_args(const Expr& e, std::vector<Value>& args, std::vector<std::pair<std::string, Value>>& kwargs) {
    for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
    for (const auto& [k, v] : e.kwargs) kwargs.push_back({k, eval(*v)});
  }

  // x.name and x[key]: dict keys, list/string indexes (negative from the end); missing → undefined.
  static Value get_item(const Value& obj, const Value& key, int line, const ExprP& subject) {
    if (is_undefined(obj)) {
      const std::string what = subject && subject->kind == Expr::Kind::Name ? "'" + subject->name + "'" : "a value";
      template_error(line, what + " is undefined, so " + repr(key) + " cannot be read from it");
    }
    if (obj.is_object()) {
      if (key.is_string()) {
        auto it = obj.find(key.get<std::string>());
        if (it != obj.end()) return *it;
      }
      return undefined();
    }
    if ((obj.is_array() || obj.is_string()) && key.is_number_integer()) {
      const std::u32string chars = obj.is_string() ? to_u32(obj.get<std::string>()) : std::u32string();
      const auto size = static_cast<int64_t>(obj.is_array() ? obj.size() : chars.size());
      int64_t i = key.get<int64_t>();
      if (i < 0) i += size;
      if (i < 0 || i >= size) return undefined();
      return obj.is_array() ? obj[static_cast<size_t>(i)] : Value(from_u32(chars.substr(static_cast<size_t>(i), 1)));
    }
    return undefined();
  }

  Value slice(const Expr& e) {
    const Value obj = eval(*e.args[0]);
    auto bound = [&](size_t i) -> std::optional<int64_t> {
      if (!e.args[i]) return std::nullopt;
      const Value v = eval(*e.args[i]);
      if (v.is_null()) return std::nullopt;
      if (!v.is_number_integer()) template_error(e.line, "slice indices must be integers");
      return v.get<int64_t>();
    };
    const auto start = bound(1), stop = bound(2), step_opt = bound(3);
    const int64_t step = step_opt.value_or(1);
    if (step == 0) template_error(e.line, "slice step cannot be zero");
    const std::u32string chars = obj.is_string() ? to_u32(obj.get<std::string>()) : std::u32string();
    if (!obj.is_array() && !obj.is_string()) template_error(e.line, "cannot slice " + repr(obj));
    const auto n = static_cast<int64_t>(obj.is_array() ? obj.size() : chars.size());
    // Python's slice.indices().
    auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
      if (!v) return dflt;
      int64_t x = *v < 0 ? *v + n : *v;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t b = clamp(start, step > 0 ? 0 : n - 1), en = clamp(stop, step > 0 ? n : -1);
    Value out = Value::array();
    std::u32string s;
    for (int64_t i = b; step > 0 ? i < en : i > en; i += step) {
      if (obj.is_array()) out.push_back(obj[static_cast<size_t>(i)]);
      else s += chars[static_cast<size_t>(i)];
    }
    return obj.is_array() ? out : Value(from_u32(s));
  }

  Value call(const Expr& e) {
    std::vector<Value> args;
    std::vector<std::pair<std::string, Value>> kwargs;
    eval_args(e, args, kwargs);
    const Expr& callee = *e.args[0];
    if (callee.kind == Expr::Kind::Attr) {  // a method: "text".strip(), d.items(), ...
      const Value subject = eval(*callee.args[0]);
      if (subject.is_object() && subject.contains(callee.name) && !subject.contains(kNamespaceMarker))
        template_error(e.line, "'" + callee.name + "' is a value, not a function");
      return call_method(subject, callee.name, args, kwargs, e.line);
    }
    if (callee.kind == Expr::Kind::Name && !find(callee.name) && is_global_function(callee.name)) {
      if (callee.name == "namespace") {
        Value ns = Value::object();
        ns[kNamespaceMarker] = true;
        for (auto& [k, v] : kwargs) ns[k] = v;
        return ns;
      }
      return call_global(callee.name, args, kwargs, e.line);
    }
    template_error(e.line, "calling '" + (callee.kind == Expr::Kind::Name ? callee.name : std::string("?")) +
                               "' is not supported");
  }

  Value binary(const Expr& e) {
    const std::string& op = e.name;
    const Value a = eval(*e.args[0]);
    const Value b = eval(*e.args[1]);
    if (op == "~") return to_str(a) + to_str(b);
    if (op == "==") return py_equal(a, b);
    if (op == "!=") return !py_equal(a, b);
    if (op == "<") return py_compare(a, b, e.line) < 0;
    if (op == ">") return py_compare(a, b, e.line) > 0;
    if (op == "<=") return py_compare(a, b, e.line) <= 0;
    if (op == ">=") return py_compare(a, b, e.line) >= 0;
    if (op == "in" || op == "not in") return contains(b, a, e.line) == (op == "in");
    if (op == "+") {
      if (a.is_string() && b.is_string()) return a.get<std::string>() + b.get<std::string>();
      if (a.is_array() && b.is_array()) {
        Value out = a;
        for (const auto& x : b) out.push_back(x);
        return out;
      }
    }
    if (op == "*" && a.is_string() && b.is_number_integer()) {
      std::string out;
      for (int64_t i = 0; i < b.get<int64_t>(); ++i) out += a.get<std::string>();
      return out;
    }
    if (!a.is_number() || !b.is_number())
      template_error(e.line, "unsupported operand types for " + op + ": " + repr(a) + " and " + repr(b));
    const bool ints = a.is_number_integer() && b.is_number_integer();
    const double x = a.get<double>(), y = b.get<double>();
    if (op == "+") return ints ? Value(a.get<int64_t>() + b.get<int64_t>()) : Value(x + y);
    if (op == "-") return ints ? Value(a.get<int64_t>() - b.get<int64_t>()) : Value(x - y);
    if (op == "*") return ints ? Value(a.get<int64_t>() * b.get<int64_t>()) : Value(x * y);
    if (op == "**") return ints && b.get<int64_t>() >= 0 ? Value(static_cast<int64_t>(std::pow(x, y))) : Value(std::pow(x, y));
    if (y == 0) template_error(e.line, "division by zero");
    if (op == "/") return x / y;
    const double fl = std::floor(x / y);
    if (op == "//") return ints ? Value(static_cast<int64_t>(fl)) : Value(fl);
    if (op == "%") return ints ? Value(a.get<int64_t>() - static_cast<int64_t>(fl) * b.get<int64_t>()) : Value(x - fl * y);
    template_error(e.line, "unknown operator " + op);
  }

  static bool contains(const Value& container, const Value& item, int line) {
    if (container.is_string()) {
      if (!item.is_string()) template_error(line, "'in <string>' requires a string on the left");
      return container.get<std::string>().find(item.get<std::string>()) != std::string::npos;
    }
    if (container.is_array()) {
      for (const auto& x : container)
        if (py_equal(x, item)) return true;
      return false;
    }
    if (container.is_object()) return item.is_string() && container.contains(item.get<std::string>());
    if (is_undefined(container) || container.is_null()) return false;
    template_error(line, "argument of type " + repr(container) + " is not iterable");
  }

  std::vector<Value> scopes_;
};

}  // namespace

Template::Template(const std::string& source) : body_(parse_template(split_template(source))) {}
Template::~Template() = default;

std::string Template::render(const Value& context) const {
  Renderer r(context);
  std::string out;
  r.run(body_, out);
  return out;
}

}  // namespace lamina::jinja
