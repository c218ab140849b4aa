// Jinja lexing: the template source into text and tag segments (with the whitespace rules of
// transformers' environment: trim_blocks, lstrip_blocks, "-" and "+" modifiers, no trailing newline),
// and tag code into tokens.
#include <cctype>

#include "common/error.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/utf8.h"

namespace lamina::jinja {

void template_error(int line, const std::string& msg) { fail("chat template line ", line, ": ", msg); }

namespace {

int count_lines(const std::string& s, size_t from, size_t to) {
  int n = 0;
  for (size_t i = from; i < to && i < s.size(); ++i) n += s[i] == '\n';
  return n;
}

bool ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Finds the closing delimiter of a tag, skipping quoted strings and bracketed expressions, as
// Jinja's lexer does (so '{{ "}}" }}' and '{{ {"a": {"b": 1}} }}' work).
size_t find_tag_end(const std::string& s, size_t from, const char* close, int line) {
  char quote = 0;
  int depth = 0;
  for (size_t i = from; i + 1 < s.size(); ++i) {
    const char c = s[i];
    if (quote) {
      if (c == '\\') ++i;
      else if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (depth == 0 && c == close[0] && s[i + 1] == close[1]) {
      return i;
    } else if (c == '(' || c == '[' || c == '{') {
      ++depth;
    } else if ((c == ')' || c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  template_error(line, std::string("tag is not closed with '") + close + "'");
}

// \r\n and \r become \n.
std::string normalize_newlines(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r') {
      out += '\n';
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

std::vector<Segment> split_template(const std::string& source_in) {
  // Like Jinja's lexer: all newlines become \n first, then one trailing newline is dropped
  // (keep_trailing_newline=False).
  std::string source = normalize_newlines(source_in);
  if (!source.empty() && source.back() == '\n') source.pop_back();

  std::vector<Segment> out;
  size_t pos = 0;
  int line = 1;
  bool line_starting = true;  // the previous tag ended a line (lstrip_blocks looks at this)
  while (pos <= source.size()) {
    size_t open = source.find('{', pos);
    while (open != std::string::npos && open + 1 < source.size() && source[open + 1] != '{' &&
           source[open + 1] != '%' && source[open + 1] != '#')
      open = source.find('{', open + 1);
    if (open == std::string::npos || open + 1 >= source.size()) {
      if (pos < source.size()) out.push_back({Segment::Kind::Text, source.substr(pos), line});
      break;
    }
    const char kind = source[open + 1];
    std::string text = source.substr(pos, open - pos);
    const int tag_line = line + count_lines(source, pos, open);
    size_t code_start = open + 2;
    const char mod = code_start < source.size() ? source[code_start] : 0;
    if (mod == '-') {
      while (!text.empty() && ascii_space(text.back())) text.pop_back();
      ++code_start;
    } else if (mod == '+') {
      ++code_start;  // disables lstrip_blocks for this tag
    } else if (kind != '{') {
      // lstrip_blocks: spaces and tabs between the start of the line and a block/comment tag go.
      const size_t line_start = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
      if (line_start > 0 || line_starting) {
        bool blank = true;
        for (size_t i = line_start; i < text.size(); ++i) blank = blank && ascii_space(text[i]);
        if (blank) text.resize(line_start);
      }
    }
    if (!text.empty()) out.push_back({Segment::Kind::Text, text, line});

    const char* close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t close_pos = kind == '#' ? source.find("#}", code_start) : find_tag_end(source, code_start, close, tag_line);
    if (close_pos == std::string::npos) template_error(tag_line, "comment is not closed with '#}'");
    size_t code_end = close_pos;
    bool strip_after = false, keep_newline = false;
    if (code_end > code_start && source[code_end - 1] == '-') {
      strip_after = true;
      --code_end;
    } else if (code_end > code_start && source[code_end - 1] == '+' && kind != '{') {
      keep_newline = true;
      --code_end;
    }
    const std::string code = code_end > code_start ? source.substr(code_start, code_end - code_start) : "";
    if (kind == '{') out.push_back({Segment::Kind::Output, code, tag_line});
    if (kind == '%') out.push_back({Segment::Kind::Statement, code, tag_line});

    size_t next = close_pos + 2;
    if (strip_after) {
      while (next < source.size() && ascii_space(source[next])) ++next;
    } else if (kind != '{' && !keep_newline && next < source.size() && source[next] == '\n') {
      ++next;  // trim_blocks: the first newline after a block or comment tag goes
    }
    line = tag_line + count_lines(source, open, next);
    line_starting = next > 0 && source[next - 1] == '\n';
    pos = next;
  }
  return out;
}

namespace {

// Python string-literal escapes (Jinja decodes literals with "unicode-escape").
std::string decode_string(const std::string& code, size_t& i, int line) {
  const char quote = code[i++];
  std::string out;
  while (i < code.size() && code[i] != quote) {
    char c = code[i++];
    if (c != '\\') {
      out += c;
      continue;
    }
    if (i >= code.size()) break;
    const char e = code[i++];
    auto hex = [&](int digits) {
      if (i + digits > code.size()) template_error(line, "bad escape in string literal");
      const char32_t cp = static_cast<char32_t>(std::stoul(code.substr(i, digits), nullptr, 16));
      i += digits;
      utf8::append_code_point(out, cp);
    };
    switch (e) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '0': out += '\0'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case '\n': break;  // line continuation
      case 'x': hex(2); break;
      case 'u': hex(4); break;
      case 'U': hex(8); break;
      default: out += '\\'; out += e;  // Python keeps unknown escapes as written
    }
  }
  if (i >= code.size()) template_error(line, "string literal is not closed");
  ++i;  // closing quote
  return out;
}

}  // namespace

std::vector<Token> lex_code(const std::string& code, int line) {
  static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ".", ",", ":",
                               "|", "~", "+", "-", "*", "/", "%", "<", ">", "="};
  std::vector<Token> out;
  size_t i = 0;
  while (i < code.size()) {
    const char c = code[i];
    if (ascii_space(c)) {
      ++i;
    } else if (c == '\'' || c == '"') {
      out.push_back({Token::Type::String, decode_string(code, i, line)});
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < code.size() && (std::isdigit(static_cast<unsigned char>(code[j])) || code[j] == '_')) ++j;
      bool is_float = false;
      if (j + 1 < code.size() && code[j] == '.' && std::isdigit(static_cast<unsigned char>(code[j + 1]))) {
        is_float = true;
        ++j;
        while (j < code.size() && std::isdigit(static_cast<unsigned char>(code[j]))) ++j;
      }
      std::string num;
      for (size_t k = i; k < j; ++k) if (code[k] != '_') num += code[k];
      Token t{is_float ? Token::Type::Float : Token::Type::Int, num};
      if (is_float) t.float_value = std::stod(num);
      else t.int_value = std::stoll(num);
      out.push_back(t);
      i = j;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < code.size() && (std::isalnum(static_cast<unsigned char>(code[j])) || code[j] == '_')) ++j;
      out.push_back({Token::Type::Name, code.substr(i, j - i)});
      i = j;
    } else {
      bool matched = false;
      for (const char* op : kOps) {
        const size_t n = std::char_traits<char>::length(op);
        if (code.compare(i, n, op) == 0) {
          out.push_back({Token::Type::Op, op});
          i += n;
          matched = true;
          break;
        }
      }
      if (!matched) template_error(line, std::string("unexpected character '") + c + "'");
    }
  }
  out.push_back({Token::Type::End, ""});
  return out;
}

}  // namespace lamina::jinja
