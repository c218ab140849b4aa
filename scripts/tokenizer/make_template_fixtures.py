#!/usr/bin/env python3
"""Renders chat-template fixtures with real Jinja2 in transformers' environment, so our Jinja subset
is checked against the reference rather than our memory of Jinja's whitespace rules.

Writes tests/fixtures/tokenizer/chat_templates.jsonl: {"template": file, "context": {...},
"expected": str} or {"template": file, "context": {...}, "error": message}.
    python3 scripts/tokenizer/make_template_fixtures.py
(Only a fixture tool; nothing in Lamina runs Python.)"""
import json
import pathlib

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "tokenizer"


def environment():
    """transformers' apply_chat_template environment (chat_template_utils.py)."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "도시"}},
                               "required": ["city"]}}}
CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "  You are a helpful assistant.\n"}, {"role": "user", "content": "Hi there  "},
     {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "안녕하세요 👋"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What's the weather in Seoul?"},
     {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
         "name": "get_weather", "arguments": {"city": "Seoul", "unit": "celsius"}}}]},
     {"role": "tool", "content": {"temperature": 21.5, "sky": "clear"}},
     {"role": "ipython", "content": "plain text result"}],
    [{"role": "user", "content": "Yo\n\n  spaced   \n"}, {"role": "assistant", "content": "<|eot_id|> literal"}],
]


def main():
    env = environment()
    rows = []
    for name in ["llama31_style.jinja", "features.jinja"]:
        template = env.from_string((FIX / "templates" / name).read_text())
        for messages in CONVERSATIONS:
            for extra in [{"add_generation_prompt": True}, {"add_generation_prompt": False},
                          {"add_generation_prompt": True, "tools": [WEATHER_TOOL], "date_string": "01 Jan 2025"},
                          {"add_generation_prompt": True, "tools": [WEATHER_TOOL], "tools_in_user_message": False},
                          {"add_generation_prompt": False, "builtin_tools": ["brave_search", "code_interpreter"]}]:
                context = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "messages": messages,
                           "tools": None, **extra}
                row = {"template": name, "context": context}
                try:
                    row["expected"] = template.render(**context)
                except jinja2.exceptions.TemplateError as e:
                    row["error"] = str(e)
                rows.append(row)
    with open(FIX / "chat_templates.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows")


if __name__ == "__main__":
    main()
