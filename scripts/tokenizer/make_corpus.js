#!/usr/bin/env node
// Writes tests/fixtures/tokenizer/corpus.jsonl: the text side of the tokenizer reference fixtures.
// Hand-written lines in many scripts plus generated edge cases (digit runs, whitespace runs, special
// token text, rare code points). Deterministic: rerunning gives the same file.
//   node scripts/tokenizer/make_corpus.js > tests/fixtures/tokenizer/corpus.jsonl
'use strict';

const lines = [
  // English prose, punctuation, contractions (the regex treats 's 't 're 've 'm 'll 'd specially).
  "Hello world",
  "The quick brown fox jumps over the lazy dog.",
  "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
  "I'm sure they'll say we'd've known; you're right, isn't it? He's here, she'd left, we've gone.",
  "SHOUTING: I'M HERE, YOU'LL SEE, WE'VE WON, THEY'RE LATE, IT'S DONE, SHE'D KNOW.",
  "Mixed Case's Apostrophe'S and 'quoted' \"double\" `backtick` ‘curly’ “quotes” — dashes – and … ellipsis",
  "e-mail: someone@example.com, URL: https://example.org/path?query=1&x=y#frag",
  "Dr. Smith paid $1,234,567.89 on 2024-03-15 at 10:30am (UTC+09:00) — 15% off!",
  "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.",
  "A\tB\tC\nD\tE\tF",
  "  leading spaces and trailing spaces   ",
  "\n\nstarts with newlines",
  "ends with newlines\n\n\n",
  "line one\r\nline two\r\nline three\r\n",
  "old mac line\rnext\r\r",
  "mixed\r\n\n\r\nbreaks \n \n\t\n",
  "tabs\t\t\tand\t spaces \t mixed",
  " việc",
  "Tiếng Việt có dấu: Xin chào các bạn, hôm nay trời đẹp quá!",
  "Ünïcödé äccents: naïve café, façade, coöperate, Zürich, Straße, ÆØÅ æøå",
  // Korean.
  "안녕하세요, 세계! 오늘 날씨가 정말 좋네요.",
  "대한민국의 수도는 서울이며, 인구는 약 천만 명입니다.",
  "한국어 토크나이저 테스트: 띄어쓰기없이길게붙여쓴문장도잘처리되어야합니다",
  "ㄱㄴㄷㄹ ㅏㅑㅓㅕ 자모 분리 ㅋㅋㅋㅋ ㅎㅎ",
  // Japanese.
  "こんにちは世界。今日はいい天気ですね。",
  "東京都渋谷区でラーメンを食べました！とても美味しかったです😋",
  "カタカナとひらがなと漢字が混ざった文章、そして半角ｶﾀｶﾅも。",
  // Chinese.
  "你好，世界！今天天气很好。",
  "人工智能正在改变我们的生活方式，大型语言模型是其中的重要组成部分。",
  "繁體中文：臺灣的夜市小吃非常有名，例如珍珠奶茶和臭豆腐。",
  // Arabic, Hebrew (right to left), Persian.
  "مرحبا بالعالم! كيف حالك اليوم؟",
  "اللغة العربية جميلة جداً، وهي لغة القرآن الكريم. ١٢٣٤٥٦٧٨٩٠",
  "שלום עולם! מה שלומך?",
  "سلام دنیا، امروز هوا خوب است. ۱۲۳۴",
  // Other scripts.
  "Привет, мир! Как дела? Съешь же ещё этих мягких французских булок.",
  "Γειά σου Κόσμε! Ελληνικά με τόνους: άέήίόύώ ΐΰ",
  "नमस्ते दुनिया! हिंदी में परीक्षण। १२३४५",
  "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
  "ქართული ენა — Հայերեն լեզու — አማርኛ ቋንቋ — ᠮᠣᠩᠭᠣᠯ",
  "Türkçe: İstanbul'da ığdır şehri; ı İ i I",
  "Polski: Zażółć gęślą jaźń. Čeština: Příliš žluťoučký kůň.",
  // Emoji, ZWJ sequences, skin tones, flags, keycaps, variation selectors.
  "👨‍👩‍👧‍👦 family, 👩‍❤️‍💋‍👨 kiss, 🧑🏽‍💻 technologist, 🏳️‍🌈 rainbow flag, 🏴‍☠️ pirate",
  "👍👍🏻👍🏼👍🏽👍🏾👍🏿 thumbs",
  "🇰🇷🇯🇵🇺🇸🇫🇷🇩🇪 flags",
  "1️⃣ 2️⃣ #️⃣ *️⃣ keycaps ❤️ ❤ ☺️ ✌🏿",
  "emoji😀inside😀words and 🤖🤖🤖 runs 🎉🎊",
  "🫠🫡🫶🪿🪼 newer emoji",
  // Code with indentation.
  "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
  "#include <stdio.h>\n\nint main(void) {\n\tprintf(\"Hello, %s!\\n\", \"world\");\n\treturn 0;\n}\n",
  "for (size_t i = 0; i < n; ++i) {\n        sum += a[i] * b[i];  // dot product\n    }",
  "{\"name\": \"lamina\", \"version\": \"0.1.0\", \"ids\": [128000, 9906, 1917], \"ok\": true, \"x\": null}",
  "<html>\n  <body>\n    <div class=\"a b\">&nbsp;&lt;tag&gt;</div>\n  </body>\n</html>",
  "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
  "fn main() -> Result<(), Box<dyn Error>> {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    Ok(())\n}",
  "$ ls -la | grep '\\.txt$' && echo \"done\" >> log.txt 2>&1",
  "x=1;y=2;z=x+y*3/4-5%6**7//8 !== === <= >= -> => :: ... ??",
  "    \n        \n            deeply indented blank-ish lines\n",
  "if x:\n\tpass\n\n\n\nelse:\n\t\tpass",
  "// comment\n/* block\n   comment */\n# hash comment\n-- sql comment",
  // Numbers and digit runs (\p{N}{1,3} groups them by three).
  "1 12 123 1234 12345 123456 1234567 12345678 123456789 1234567890",
  "3.14159265358979323846264338327950288419716939937510",
  "0x1F 0b1010 1e10 -42 +7 1,000,000 1.000.000 10^6 ½ ¾ ² ³ Ⅻ ⅷ",
  "Phone: +1 (555) 123-4567, ID 00000000001",
  "٠١٢٣٤٥٦٧٨٩ ۰۱۲۳۴۵۶۷۸۹ ०१२३४५६७८९ ０１２３４５６７８９",
  "Year 1999, 2000, 2024; 24h clock 23:59:59.999",
  // Whitespace runs.
  "a b  c   d    e     f      g       h        i",
  "                                                                ",
  "\t\t\t\t\t\t\t\t",
  "word \u00a0nbsp\u00a0\u00a0runs\u3000ideographic\u3000space\u2003em\u2009thin",
  " \n \n \n",
  "trailing space before newline   \nnext",
  "\u000b vertical tab \u000c form feed \u001c file sep",
  // Literal special-token text (special tokens are matched in the raw text, even mid-word).
  "<|begin_of_text|>",
  "<|begin_of_text|>Hello<|end_of_text|>",
  "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  "text<|eot_id|>more text<|eom_id|><|python_tag|>code",
  "<|reserved_special_token_0|><|reserved_special_token_5|><|reserved_special_token_250|>",
  "<|finetune_right_pad_id|> <|eom_id|> <|python_tag|>",
  "partial <|begin_of_text| and |begin_of_text|> and <|begin_of_tex|> and <|BEGIN_OF_TEXT|>",
  "<|<|eot_id|>|> nested <|eot_id|<|eot_id|>",
  "  <|eot_id|>  spaces around  <|eot_id|>\n",
  "<|eot_id|><|eot_id|><|eot_id|>",
  "<|reserved_special_token_999|> is not a token, <|reserved_special_token_247|> is",
  // Rare and tricky code points.
  "\ufeffBOM at start and \ufeff in middle",
  "next line\u0085character and line\u2028separator para\u2029separator",
  "zero\u200bwidth\u200cnon\u200djoiner\u2060word joiner",
  "mongolian\u180evowel separator",
  "combining: e\u0301 a\u0308 o\u0302\u0323 Z\u0336\u0351\u0359a\u0337\u0344l\u0334\u0353g\u0335o\u0338",
  "math: ∀x∈ℝ, ∃y: x² + y² ≥ 0 ∧ ∑ᵢ aᵢ ≤ ∞; ∫₀¹ f(x) dx ≈ π/4",
  "symbols: © ® ™ § ¶ † ‡ • ° ± × ÷ ← → ↑ ↓ ⇒ ⇔ ♠ ♣ ♥ ♦ ★ ☆ ✓ ✗",
  "box drawing: ┌─┬─┐ │ │ │ ├─┼─┤ └─┴─┘ ░▒▓█",
  "fullwidth: ＡＢＣ ａｂｃ！？ and halfwidth ｱｲｳ",
  "private use: \ue000\uf8ff and specials \ufffd \ufffc",
  "supplementary: 𝕳𝖊𝖑𝖑𝖔 𝒳 𝟘𝟙𝟚 𐍈 𓀀 𠀀𠜎 𝄞",
  "control chars: \u0001\u0002\u0007\u001b[31mred\u001b[0m\u007f",
  "apostrophes: don't don’t DON'T Don'T ʼn 'ſ 'K 'ſt",
  "'s's's 'll'll ''' '' ' 're've",
  "",
  " ",
  "a",
  "!",
  "\n",
  "...!!!???---___***",
  "ALLCAPSWORD lowercaseword CamelCaseWord snake_case_word kebab-case-word",
  "Supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  "abababababababababababababababababababababababababababababababababababab",
  "ÅÅÅÅÅÅÅÅÅÅÅÅÅÅÅÅÅÅÅÅ ééééééééééééééé 가가가가가가가가가가 😀😀😀😀😀😀😀",
];

// Generated edge cases.
for (let n = 1; n <= 24; n++) lines.push('9'.repeat(n) + ' x' + '0123456789'.repeat(3).slice(0, n));
for (const ws of [' ', '\t', '\n', '\r\n', '\u00a0', '\u3000']) {
  for (const n of [1, 2, 3, 5, 8, 17]) lines.push('a' + ws.repeat(n) + 'b' + ws.repeat(n));
}
const specials = ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>',
                  '<|eom_id|>', '<|python_tag|>', '<|finetune_right_pad_id|>'];
for (const s of specials) {
  lines.push(`word${s}word`, ` ${s} `, `${s}\n\n${s}`, `${s.slice(0, -1)}`);
}
const words = ['hello', '안녕', 'こんにちは', '你好', 'مرحبا', 'привет', '👋', '42', 'the', "it's", ' ', '\n', '\t', '...'];
let seed = 12345;
const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
for (let i = 0; i < 120; i++) {
  const len = 1 + rand(20);
  let s = '';
  for (let k = 0; k < len; k++) s += words[rand(words.length)] + (rand(3) ? ' ' : '');
  lines.push(s);
}

for (const l of lines) process.stdout.write(JSON.stringify(l) + '\n');
