#!/usr/bin/env node
// Writes a deterministic ~10 MB mixed-language text for tokenizer benchmarks: paragraphs of
// English, Korean, Japanese, Chinese, Arabic, Russian words (Zipf-distributed over large generated
// lexicons, so a word cache cannot see everything), code, numbers and emoji, plus corpus lines.
//   node scripts/tokenizer/make_bench_text.js OUT_FILE [MEGABYTES] [--corpus-only]
// --corpus-only repeats shuffled corpus lines instead (natural words, cache-friendly).
'use strict';
const fs = require('fs');
const path = require('path');

const [out, mbArg, mode] = process.argv.slice(2);
const corpusOnly = mode === '--corpus-only';
if (!out) { console.error('usage: make_bench_text.js OUT_FILE [MEGABYTES]'); process.exit(2); }
const targetBytes = Math.round(parseFloat(mbArg || '10') * 1024 * 1024);

let seed = 0x5eed;
const rnd = () => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed / 4294967296; };
const between = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
const cp = (c) => String.fromCodePoint(c);
const zipf = (n) => Math.min(n - 1, Math.floor(Math.exp(rnd() * Math.log(n + 1))) - 1);  // ~1/rank

const english = ('the of and to in is was for that on as with by he at from his it an were are which this be ' +
  'or has had first one their its new after but who not they have her she two been other when there all during ' +
  'into school time may years more most only over city some world would where later up such used many can state ' +
  'about national out known university united then made team members under during system government company')
  .split(' ');
function makeLexicon(size, makeWord) {
  const lex = [];
  for (let i = 0; i < size; i++) lex.push(makeWord(i));
  return lex;
}
const latinWord = (i) => i < english.length ? english[i] :
  Array.from({ length: between(2, 10) }, () => 'etaoinshrdlcumwfgypbvkjxqz'[zipf(26)]).join('');
const languages = [
  { weight: 40, sep: ' ', lex: makeLexicon(30000, latinWord), end: '. ' },
  { weight: 12, sep: ' ', lex: makeLexicon(20000, () => Array.from({ length: between(1, 4) }, () => cp(between(0xac00, 0xd7a3))).join('')), end: '. ' },
  { weight: 10, sep: '', lex: makeLexicon(20000, () => Array.from({ length: between(1, 4) }, () => rnd() < 0.6 ? cp(between(0x3041, 0x3093)) : cp(between(0x4e00, 0x6fff))).join('')), end: '。' },
  { weight: 10, sep: '', lex: makeLexicon(20000, () => Array.from({ length: between(1, 3) }, () => cp(between(0x4e00, 0x7fff))).join('')), end: '，' },
  { weight: 8, sep: ' ', lex: makeLexicon(15000, () => Array.from({ length: between(2, 8) }, () => cp(between(0x627, 0x64a))).join('')), end: '. ' },
  { weight: 8, sep: ' ', lex: makeLexicon(15000, () => Array.from({ length: between(2, 10) }, () => cp(between(0x430, 0x44f))).join('')), end: '. ' },
];
const corpus = fs.readFileSync(path.join(__dirname, '../../tests/fixtures/tokenizer/corpus.jsonl'), 'utf8')
  .split('\n').filter((l) => l).map((l) => JSON.parse(l));
const extras = [() => String(between(0, 10 ** between(1, 9))), () => ['😀', '👍🏽', '👨‍👩‍👧', '🎉', '❤️'][between(0, 4)],
                () => corpus[between(0, corpus.length - 1)]];
const totalWeight = languages.reduce((a, l) => a + l.weight, 0);

const parts = [];
let bytes = 0;
while (bytes < targetBytes) {
  let r = corpusOnly ? totalWeight : rnd() * (totalWeight + 12);
  let para;
  if (r >= totalWeight) {
    para = extras[2]();  // a corpus line (code, special-token text, edge cases)
  } else {
    const lang = languages.find((l) => (r -= l.weight) < 0);
    const words = [];
    for (let k = between(20, 120); k > 0; k--) {
      words.push(rnd() < 0.04 ? extras[between(0, 1)]() : lang.lex[zipf(lang.lex.length)]);
      if (rnd() < 0.08) words.push(lang.end.trim());
    }
    para = words.join(lang.sep) + lang.end;
  }
  const s = para + (rnd() < 0.7 ? '\n\n' : '\n');
  parts.push(s);
  bytes += Buffer.byteLength(s);
}
fs.writeFileSync(out, parts.join(''));
console.error(`wrote ${(bytes / 1048576).toFixed(1)} MiB to ${out}`);
