// Internal to the Jinja subset: lexer output, expression and statement trees, value helpers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja.h"

namespace lamina::jinja {

// ---- Template source → segments (text, {{ output }}, {% statement %}), whitespace control applied.
struct Segment {
  enum class Kind { Text, Output, Statement } kind;
  std::string text;  // literal text, or the code between the delimiters
  int line;
};
std::vector<Segment> split_template(const std::string& source);

// ---- Code inside delimiters → tokens.
struct Token {
  enum class Type { Name, String, Int, Float, Op, End } type;
  std::string text;  // name, operator, or decoded string literal
  int64_t int_value = 0;
  double float_value = 0;
};
std::vector<Token> lex_code(const std::string& code, int line);

// ---- Trees.
struct Expr;
using ExprP = std::shared_ptr<Expr>;
struct Expr {
  enum class Kind { Literal, Name, Attr, Item, Slice, Call, Filter, Test, Not, Neg, Binary, And, Or, Cond, List, Dict };
  Kind kind;
  Value value;               // Literal
  std::string name;          // Name / Attr / Filter / Test name, Binary operator
  std::vector<ExprP> args;   // operands; Attr/Item/Slice/Call/Filter/Test: args[0] is the subject
  std::vector<std::pair<std::string, ExprP>> kwargs;  // Call / Filter keyword arguments
  bool negate = false;       // Test: "is not"
  int line = 0;
};

using Body = std::vector<std::shared_ptr<Node>>;
struct Node {
  enum class Kind { Text, Output, If, For, Set, SetAttr, Break, Continue };
  Kind kind;
  int line = 0;
  std::string text;                             // Text
  ExprP expr;                                   // Output / Set / SetAttr value / For iterable
  std::vector<std::string> names;               // For targets; Set target; SetAttr {variable, attribute}
  std::vector<std::pair<ExprP, Body>> branches;  // If: (condition or null for else, body)
  Body body, else_body;                         // For
  ExprP filter;                                 // For ... if filter
};

Body parse_template(const std::vector<Segment>& segments);

// ---- Python-flavoured value semantics (jinja_value.cpp).
Value undefined();
bool is_undefined(const Value& v);
bool truthy(const Value& v);
std::string to_str(const Value& v);   // str(v): None, True, 1.5, ['a'] ...
std::string repr(const Value& v);     // repr(v)
std::string to_json(const Value& v, int indent, bool sort_keys);  // json.dumps(v, ensure_ascii=False)
bool py_equal(const Value& a, const Value& b);
int py_compare(const Value& a, const Value& b, int line);  // <0, 0, >0; strings and numbers
std::u32string to_u32(const std::string& s);
std::string from_u32(const std::u32string& s);
bool py_isspace(char32_t c);
std::string py_strip(const std::string& s, const Value& chars, bool left, bool right);
[[noreturn]] void template_error(int line, const std::string& msg);

// ---- Filters, tests, methods and globals (jinja_builtins.cpp).
bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);
Value apply_filter(const std::string& name, const Value& subject, const std::vector<Value>& args,
                   const std::vector<std::pair<std::string, Value>>& kwargs, int line);
bool apply_test(const std::string& name, const Value& subject, const std::vector<Value>& args, int line);
Value call_method(const Value& subject, const std::string& method, const std::vector<Value>& args,
                  const std::vector<std::pair<std::string, Value>>& kwargs, int line);
Value call_global(const std::string& name, const std::vector<Value>& args,
                  const std::vector<std::pair<std::string, Value>>& kwargs, int line);
bool is_global_function(const std::string& name);

}  // namespace lamina::jinja
