// Jinja parsing: tokens → expression trees (Jinja2's precedence), segments → statement trees.
#include <set>

#include "tokenizer/jinja_ast.h"

namespace lamina::jinja {

namespace {

class ExprParser {
 public:
  ExprParser(std::vector<Token> tokens, int line) : toks_(std::move(tokens)), line_(line) {}

  const Token& peek(size_t ahead = 0) const { return toks_[std::min(pos_ + ahead, toks_.size() - 1)]; }
  bool at_end() const { return peek().type == Token::Type::End; }
  bool is_op(const char* op, size_t ahead = 0) const { return peek(ahead).type == Token::Type::Op && peek(ahead).text == op; }
  bool is_name(const char* name, size_t ahead = 0) const {
    return peek(ahead).type == Token::Type::Name && peek(ahead).text == name;
  }
  Token next() { return toks_[std::min(pos_++, toks_.size() - 1)]; }
  void expect_op(const char* op) {
    if (!is_op(op)) error(std::string("expected '") + op + "'");
    ++pos_;
  }
  std::string expect_name() {
    if (peek().type != Token::Type::Name) error("expected a name");
    return next().text;
  }
  void expect_end() {
    if (!at_end()) error("unexpected '" + peek().text + "'");
  }
  [[noreturn]] void error(const std::string& msg) const {
    template_error(line_, msg + (at_end() ? " at end of tag" : " near '" + peek().text + "'"));
  }

  // expression := or ["if" or ["else" expression]]
  ExprP expression() {
    ExprP e = or_expr();
    if (is_name("if")) {
      ++pos_;
      ExprP cond = or_expr();
      ExprP otherwise;
      if (is_name("else")) {
        ++pos_;
        otherwise = expression();
      }
      ExprP c = make(Expr::Kind::Cond);
      c->args = {e, cond, otherwise};
      return c;
    }
    return e;
  }

  // A comma-separated list without brackets is a tuple (for "set a = 1, 2" and "for" targets).
  ExprP tuple_or_expression() {
    ExprP first = expression();
    if (!is_op(",")) return first;
    ExprP list = make(Expr::Kind::List);
    list->args.push_back(first);
    while (is_op(",")) {
      ++pos_;
      if (at_end()) break;
      list->args.push_back(expression());
    }
    return list;
  }

  ExprP or_expr() {
    ExprP left = and_expr();
    while (is_name("or")) {
      ++pos_;
      left = binary(Expr::Kind::Or, "or", left, and_expr());
    }
    return left;
  }
  ExprP and_expr() {
    ExprP left = not_expr();
    while (is_name("and")) {
      ++pos_;
      left = binary(Expr::Kind::And, "and", left, not_expr());
    }
    return left;
  }
  ExprP not_expr() {
    if (is_name("not")) {
      ++pos_;
      ExprP e = make(Expr::Kind::Not);
      e->args = {not_expr()};
      return e;
    }
    return compare();
  }
  ExprP compare() {
    ExprP left = math1();
    while (true) {
      std::string op;
      if (peek().type == Token::Type::Op &&
          (is_op("==") || is_op("!=") || is_op("<") || is_op(">") || is_op("<=") || is_op(">="))) {
        op = next().text;
      } else if (is_name("in")) {
        ++pos_;
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        pos_ += 2;
        op = "not in";
      } else {
        return left;
      }
      left = binary(Expr::Kind::Binary, op, left, math1());
    }
  }
  ExprP math1() {
    ExprP left = concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = next().text;
      left = binary(Expr::Kind::Binary, op, left, concat());
    }
    return left;
  }
  ExprP concat() {
    ExprP left = math2();
    while (is_op("~")) {
      ++pos_;
      left = binary(Expr::Kind::Binary, "~", left, math2());
    }
    return left;
  }
  ExprP math2() {
    ExprP left = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = next().text;
      left = binary(Expr::Kind::Binary, op, left, power());
    }
    return left;
  }
  ExprP power() {
    ExprP left = unary(true);
    while (is_op("**")) {
      ++pos_;
      left = binary(Expr::Kind::Binary, "**", left, unary(true));
    }
    return left;
  }
  ExprP unary(bool with_filter) {
    ExprP e;
    if (is_op("-") || is_op("+")) {
      const bool neg = next().text == "-";
      ExprP operand = unary(false);
      if (neg) {
        e = make(Expr::Kind::Neg);
        e->args = {operand};
      } else {
        e = operand;
      }
    } else {
      e = postfix(primary());
    }
    return with_filter ? filters(e) : e;
  }

  ExprP primary() {
    const Token t = next();
    switch (t.type) {
      case Token::Type::String: {
        std::string s = t.text;
        while (peek().type == Token::Type::String) s += next().text;  // adjacent literals concatenate
        return literal(s);
      }
      case Token::Type::Int: return literal(t.int_value);
      case Token::Type::Float: return literal(t.float_value);
      case Token::Type::Name: {
        if (t.text == "true" || t.text == "True") return literal(true);
        if (t.text == "false" || t.text == "False") return literal(false);
        if (t.text == "none" || t.text == "None") return literal(nullptr);
        ExprP e = make(Expr::Kind::Name);
        e->name = t.text;
        return e;
      }
      case Token::Type::Op:
        if (t.text == "(") {
          if (is_op(")")) {
            ++pos_;
            return make(Expr::Kind::List);  // () as an empty tuple
          }
          ExprP e = tuple_or_expression();
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          ExprP list = make(Expr::Kind::List);
          while (!is_op("]")) {
            list->args.push_back(expression());
            if (!is_op(",")) break;
            ++pos_;
          }
          expect_op("]");
          return list;
        }
        if (t.text == "{") {
          ExprP dict = make(Expr::Kind::Dict);
          while (!is_op("}")) {
            dict->args.push_back(expression());
            expect_op(":");
            dict->args.push_back(expression());
            if (!is_op(",")) break;
            ++pos_;
          }
          expect_op("}");
          return dict;
        }
        break;
      case Token::Type::End: break;
    }
    --pos_;
    error("expected an expression");
  }

  ExprP postfix(ExprP e) {
    while (true) {
      if (is_op(".")) {
        ++pos_;
        ExprP a = make(Expr::Kind::Attr);
        if (peek().type == Token::Type::Int) a->name = std::to_string(next().int_value);  // x.0
        else a->name = expect_name();
        a->args = {e};
        e = a;
      } else if (is_op("[")) {
        ++pos_;
        e = subscript(e);
      } else if (is_op("(")) {
        e = call(e, Expr::Kind::Call, "");
      } else {
        return e;
      }
    }
  }

  ExprP subscript(ExprP subject) {
    std::vector<ExprP> parts(3);
    size_t idx = 0;
    bool slice = false;
    while (!is_op("]")) {
      if (is_op(":")) {
        ++pos_;
        slice = true;
        if (++idx > 2) error("too many ':' in slice");
        continue;
      }
      parts[idx] = expression();
    }
    expect_op("]");
    ExprP e = make(slice ? Expr::Kind::Slice : Expr::Kind::Item);
    e->args = slice ? std::vector<ExprP>{subject, parts[0], parts[1], parts[2]} : std::vector<ExprP>{subject, parts[0]};
    if (!slice && !parts[0]) error("empty subscript");
    return e;
  }

  // Parses "(args, key=value)" after a callee / filter / test name.
  ExprP call(ExprP subject, Expr::Kind kind, const std::string& name) {
    ExprP e = make(kind);
    e->name = name;
    e->args = {subject};
    expect_op("(");
    while (!is_op(")")) {
      if (peek().type == Token::Type::Name && is_op("=", 1)) {
        const std::string key = next().text;
        ++pos_;
        e->kwargs.push_back({key, expression()});
      } else {
        e->args.push_back(expression());
      }
      if (!is_op(",")) break;
      ++pos_;
    }
    expect_op(")");
    return e;
  }

  // Filters (|name(args)) and tests (is [not] name [arg]) bind tighter than any binary operator.
  ExprP filters(ExprP e) {
    while (true) {
      if (is_op("|")) {
        ++pos_;
        const std::string name = expect_name();
        if (!is_known_filter(name)) error("filter '" + name + "' is not supported");
        if (is_op("(")) {
          e = call(e, Expr::Kind::Filter, name);
        } else {
          ExprP f = make(Expr::Kind::Filter);
          f->name = name;
          f->args = {e};
          e = f;
        }
      } else if (is_name("is")) {
        ++pos_;
        bool negate = false;
        if (is_name("not")) {
          ++pos_;
          negate = true;
        }
        std::string name = expect_name();
        if (name == "none" || name == "None") name = "none";
        if (!is_known_test(name)) error("test '" + name + "' is not supported");
        ExprP t;
        if (is_op("(")) {
          t = call(e, Expr::Kind::Test, name);
        } else {
          t = make(Expr::Kind::Test);
          t->name = name;
          t->args = {e};
          // One bare argument, as in "is divisibleby 3" or "is equalto 'x'".
          const Token& a = peek();
          const bool starts_arg = a.type == Token::Type::String || a.type == Token::Type::Int ||
                                  a.type == Token::Type::Float || is_op("[") || is_op("{") ||
                                  (a.type == Token::Type::Name && !is_name("else") && !is_name("or") &&
                                   !is_name("and") && !is_name("if") && !is_name("in") && !is_name("not") &&
                                   !is_name("is"));
          if (starts_arg) t->args.push_back(postfix(primary()));
        }
        t->negate = negate;
        e = t;
      } else {
        return e;
      }
    }
  }

  ExprP make(Expr::Kind k) const {
    auto e = std::make_shared<Expr>();
    e->kind = k;
    e->line = line_;
    return e;
  }
  ExprP literal(Value v) const {
    ExprP e = make(Expr::Kind::Literal);
    e->value = std::move(v);
    return e;
  }
  ExprP binary(Expr::Kind k, const std::string& op, ExprP l, ExprP r) const {
    ExprP e = make(k);
    e->name = op;
    e->args = {std::move(l), std::move(r)};
    return e;
  }

 private:
  std::vector<Token> toks_;
  size_t pos_ = 0;
  int line_;
};

// Statement-level parsing over the segment list.
class BodyParser {
 public:
  explicit BodyParser(const std::vector<Segment>& segs) : segs_(segs) {}

  // Parses until one of `ends` (returned through end_tag/end_parser) or the end of the template.
  Body body(const std::set<std::string>& ends, std::string* end_tag, std::unique_ptr<ExprParser>* end_parser) {
    Body out;
    while (pos_ < segs_.size()) {
      const Segment& seg = segs_[pos_++];
      if (seg.kind == Segment::Kind::Text) {
        out.push_back(node(Node::Kind::Text, seg.line));
        out.back()->text = seg.text;
        continue;
      }
      auto p = std::make_unique<ExprParser>(lex_code(seg.text, seg.line), seg.line);
      if (seg.kind == Segment::Kind::Output) {
        auto n = node(Node::Kind::Output, seg.line);
        n->expr = p->expression();
        p->expect_end();
        out.push_back(n);
        continue;
      }
      const std::string tag = p->expect_name();
      if (ends.count(tag)) {
        *end_tag = tag;
        *end_parser = std::move(p);
        return out;
      }
      out.push_back(statement(tag, *p, seg.line));
    }
    if (!ends.empty()) template_error(segs_.empty() ? 1 : segs_.back().line, "missing {% " + *ends.rbegin() + " %}");
    return out;
  }

 private:
  std::shared_ptr<Node> statement(const std::string& tag, ExprParser& p, int line) {
    if (tag == "if") return if_statement(p, line);
    if (tag == "for") return for_statement(p, line);
    if (tag == "set") return set_statement(p, line);
    if (tag == "break" || tag == "continue") {
      p.expect_end();
      return node(tag == "break" ? Node::Kind::Break : Node::Kind::Continue, line);
    }
    if (tag == "generation") {  // transformers' assistant-mask marker: renders its body as is
      p.expect_end();
      std::string end;
      std::unique_ptr<ExprParser> ep;
      auto n = node(Node::Kind::If, line);
      n->branches.push_back({p.literal(true), body({"endgeneration"}, &end, &ep)});
      return n;
    }
    if (tag.rfind("end", 0) == 0 || tag == "elif" || tag == "else")
      template_error(line, "unexpected '{% " + tag + " %}'");
    template_error(line, "tag '{% " + tag + " %}' is not supported by lamina's chat template subset");
  }

  std::shared_ptr<Node> if_statement(ExprParser& p, int line) {
    auto n = node(Node::Kind::If, line);
    ExprP cond = p.expression();
    p.expect_end();
    while (true) {
      std::string end;
      std::unique_ptr<ExprParser> ep;
      Body b = body({"elif", "else", "endif"}, &end, &ep);
      n->branches.push_back({cond, std::move(b)});
      if (end == "endif") {
        ep->expect_end();
        return n;
      }
      if (end == "else") {
        ep->expect_end();
        Body rest = body({"endif"}, &end, &ep);
        ep->expect_end();
        n->branches.push_back({nullptr, std::move(rest)});
        return n;
      }
      cond = ep->expression();  // elif
      ep->expect_end();
    }
  }

  std::shared_ptr<Node> for_statement(ExprParser& p, int line) {
    auto n = node(Node::Kind::For, line);
    n->names.push_back(p.expect_name());
    while (p.is_op(",")) {
      p.next();
      n->names.push_back(p.expect_name());
    }
    if (!p.is_name("in")) p.error("expected 'in'");
    p.next();
    n->expr = p.or_expr();  // not expression(): a trailing "if" is the loop filter
    if (p.is_name("if")) {
      p.next();
      n->filter = p.expression();
    }
    if (p.is_name("recursive")) p.error("recursive loops are not supported");
    p.expect_end();
    std::string end;
    std::unique_ptr<ExprParser> ep;
    n->body = body({"else", "endfor"}, &end, &ep);
    ep->expect_end();
    if (end == "else") {
      n->else_body = body({"endfor"}, &end, &ep);
      ep->expect_end();
    }
    return n;
  }

  std::shared_ptr<Node> set_statement(ExprParser& p, int line) {
    const std::string target = p.expect_name();
    std::shared_ptr<Node> n;
    if (p.is_op(".")) {
      p.next();
      n = node(Node::Kind::SetAttr, line);
      n->names = {target, p.expect_name()};
    } else {
      n = node(Node::Kind::Set, line);
      n->names = {target};
      while (p.is_op(",")) {
        p.next();
        n->names.push_back(p.expect_name());
      }
    }
    if (!p.is_op("=")) p.error("block assignments ({% set x %}...{% endset %}) are not supported; expected '='");
    p.next();
    n->expr = p.tuple_or_expression();
    p.expect_end();
    return n;
  }

  static std::shared_ptr<Node> node(Node::Kind k, int line) {
    auto n = std::make_shared<Node>();
    n->kind = k;
    n->line = line;
    return n;
  }

  const std::vector<Segment>& segs_;
  size_t pos_ = 0;
};

}  // namespace

Body parse_template(const std::vector<Segment>& segments) {
  BodyParser parser(segments);
  std::string end;
  std::unique_ptr<ExprParser> ep;
  return parser.body({}, &end, &ep);
}

}  // namespace lamina::jinja
