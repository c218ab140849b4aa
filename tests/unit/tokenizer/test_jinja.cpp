// Jinja subset: semantics that the Jinja2 fixture does not pin down, and the errors for anything
// outside the subset (a template we cannot render faithfully must fail loudly, never render garbage).
#include <gtest/gtest.h>

#include "common/error.h"
#include "tokenizer/jinja.h"

namespace lamina::jinja {
namespace {

std::string render(const std::string& src, const Value& ctx = Value::object()) { return Template(src).render(ctx); }

std::string error_of(const std::string& src, const Value& ctx = Value::object()) {
  try {
    render(src, ctx);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Jinja, WhitespaceControl) {
  EXPECT_EQ(render("a\n{% if true %}\nb\n{% endif %}\nc"), "a\nb\nc");  // trim_blocks + lstrip_blocks
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("  {{ 'x' }}  "), "  x  ");  // output tags are not stripped
  EXPECT_EQ(render("x\n"), "x");                // keep_trailing_newline=False
  EXPECT_EQ(render("a\r\nb"), "a\nb");
  EXPECT_EQ(render("{# c #}\nx"), "x");
}

TEST(Jinja, ScopesAndNamespaces) {
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1,2] %}{% set x = i %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(render("{% set ns = namespace(x=1) %}{% for i in [1,2] %}{% set ns.x = i %}{% endfor %}{{ ns.x }}"), "2");
  EXPECT_EQ(render("{% if true %}{% set y = 5 %}{% endif %}{{ y }}"), "5");
  EXPECT_EQ(render("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }},{% endfor %}"), "3,7,");
  EXPECT_EQ(render("{% for i in [] %}x{% else %}empty{% endfor %}"), "empty");
}

TEST(Jinja, ValuesPrintLikePython) {
  EXPECT_EQ(render("{{ none }} {{ true }} {{ 1.0 }} {{ 0.1 }} {{ [1, 'a'] }} {{ {'k': \"it's\"} }}"),
            "None True 1.0 0.1 [1, 'a'] {'k': \"it's\"}");
  EXPECT_EQ(render("{{ 'a\\tb\\u00e9\\n' }}"), "a\tbé\n");
  EXPECT_EQ(render("{{ missing }}|{{ missing is defined }}"), "|False");
  EXPECT_EQ(render("{{ x | tojson }}", {{"x", {{"b", 1}, {"a", nullptr}}}}), "{\"b\": 1, \"a\": null}");
}

TEST(Jinja, ErrorsNameTheProblem) {
  EXPECT_NE(error_of("{% macro f() %}{% endmacro %}").find("'{% macro %}' is not supported"), std::string::npos);
  EXPECT_NE(error_of("{{ x | wordwrap }}").find("filter 'wordwrap' is not supported"), std::string::npos);
  EXPECT_NE(error_of("{% if x is prime %}{% endif %}").find("test 'prime' is not supported"), std::string::npos);
  EXPECT_NE(error_of("{% if true %}").find("missing {% endif %}"), std::string::npos);
  EXPECT_NE(error_of("{% endfor %}").find("unexpected"), std::string::npos);
  EXPECT_NE(error_of("{{ raise_exception('Only user and assistant roles!') }}").find("Only user and assistant roles!"),
            std::string::npos);
  EXPECT_NE(error_of("{{ nothing.field }}").find("'nothing' is undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a' + 1 }}").find("unsupported operand"), std::string::npos);
  EXPECT_NE(error_of("line1\n{{ foo( }}").find("line 2"), std::string::npos);
  EXPECT_NE(error_of("{{ 'unterminated }}").find("not closed"), std::string::npos);
}

TEST(Jinja, StrftimeNowAndRange) {
  EXPECT_EQ(render("{{ strftime_now('%Y')|length }}"), "4");
  EXPECT_EQ(render("{{ range(2, 8, 3)|list }}"), "[2, 5]");
}

}  // namespace
}  // namespace lamina::jinja
