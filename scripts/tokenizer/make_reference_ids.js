#!/usr/bin/env node
// Makes the tokenizer reference fixtures with HF tokenizers itself (npm tokenizers@0.23.2: Node
// bindings to the Rust library), never with our own idea of the answer:
//   llama3_ids.jsonl     corpus.jsonl × {llama3, llama3_1} × {add_special_tokens false, true}
//   llama3_fuzz.jsonl    seeded random strings (scripts, whitespace, emoji, special-token text) + ids
//   llama3_decode.jsonl  random id sequences (incl. split UTF-8 and special tokens) + HF's decode
//   small/tokenizer.json a small BPE trained by HF on the corpus (same pre-tokenizer, [a, b] merges,
//                        extra added tokens with lstrip/rstrip/normalized) + small_ids.jsonl
// usage: NODE_PATH=DIR/node_modules node make_reference_ids.js LLAMA3_TOKENIZER_DIR FIXTURE_DIR
// (scripts/tokenizer/make_fixtures.sh does the set-up and runs this.)
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');

const [tokDir, outDir] = process.argv.slice(2);
if (!tokDir || !outDir) {
  console.error('usage: node make_reference_ids.js LLAMA3_TOKENIZER_DIR FIXTURE_DIR');
  process.exit(2);
}

// mulberry32: a tiny seeded PRNG so the fixtures are reproducible.
function prng(seed) {
  return () => {
    seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = prng(20240315);
const pick = (a) => a[Math.floor(rnd() * a.length)];
const between = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
const cp = (c) => String.fromCodePoint(c);

const readLines = (f) => fs.readFileSync(f, 'utf8').split('\n').filter((l) => l.length).map((l) => JSON.parse(l));
const writeLines = (f, rows) => fs.writeFileSync(f, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');

async function ids(tok, text, special) {
  return (await tok.encode(text, null, { addSpecialTokens: special })).getIds();
}

// ---- Random strings for the fuzz fixture: pieces from pools that stress the regex and BPE.
const specialTexts = ['<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>', '<|start_header_id|>',
                      '<|end_header_id|>', '<|reserved_special_token_3|>', '<|python_tag|>', '<|', '|>', '<|eot_id|'];
const pools = [
  () => cp(between(0x21, 0x7e)),
  () => pick(['a', 'e', 'the', 'The', 'THE', 'ing', 'tion', 'hello', 'World', 'x', 'Z', 'qu']),
  () => pick(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", "'ſ", "'K", "'"]),
  () => String(between(0, 99999999)).slice(0, between(1, 8)),
  () => pick([' ', ' ', ' ', '  ', '\t', '\n', '\r', '\r\n', '\n\n', '\u000b', '\u000c', '\u0085', '\u00a0',
              '\u1680', '\u2000', '\u2005', '\u200a', '\u2028', '\u2029', '\u202f', '\u205f', '\u3000',
              '\u180e', '\u200b', '\u200d', '\ufeff', '\u001c', '\u001f']),
  () => cp(between(0xa1, 0x24f)),                  // Latin-1 and Latin Extended
  () => cp(between(0x391, 0x3c9)),                 // Greek
  () => cp(between(0x410, 0x44f)),                 // Cyrillic
  () => cp(between(0xac00, 0xd7a3)),               // Hangul syllables
  () => cp(between(0x3041, 0x30ff)),               // Hiragana, Katakana
  () => cp(between(0x4e00, 0x9fff)),               // CJK
  () => cp(between(0x621, 0x64a)),                 // Arabic
  () => cp(between(0x5d0, 0x5ea)),                 // Hebrew
  () => cp(between(0x905, 0x939)),                 // Devanagari
  () => cp(between(0xe01, 0xe3a)),                 // Thai
  () => cp(pick([0x660, 0x6f0, 0x966, 0xff10, 0x2070, 0x2160, 0xbd, 0xb2, 0x2460]) + between(0, 9)),  // other digits
  () => cp(between(0x300, 0x36f)),                 // combining marks
  () => pick(['👨‍👩‍👧‍👦', '🧑🏽‍💻', '🏳️‍🌈', '❤️', '👍🏿', '🇰🇷', '1️⃣', '😀', '🤖', '\u200d', '\ufe0f', '🏻']),
  () => cp(between(0x1f300, 0x1faff)),             // emoji blocks
  () => cp(between(0x2000, 0x2bff)),               // punctuation, symbols, arrows, math
  () => cp(between(0xff01, 0xff5e)),               // fullwidth ASCII
  () => cp(between(0x1d400, 0x1d7ff)),             // math alphanumerics
  () => cp(between(0x20000, 0x2a6d6)),             // CJK extension B
  () => { let c; do { c = between(0x80, 0xfffd); } while (c >= 0xd800 && c <= 0xdfff); return cp(c); },
  () => pick(specialTexts),
];
function randomString() {
  let s = '';
  const n = between(1, 30);
  for (let i = 0; i < n; i++) s += pick(pools)();
  return s;
}

async function main() {
  const load = (name) => Tokenizer.fromFile(path.join(tokDir, name, 'tokenizer.json'));
  const toks = { llama3: load('llama3'), llama3_1: load('llama3_1') };
  const corpus = readLines(path.join(outDir, 'corpus.jsonl'));

  const rows = [];
  for (const text of corpus) {
    const row = { text };
    for (const [name, tok] of Object.entries(toks)) {
      row[name] = await ids(tok, text, false);
      row[name + '+special'] = await ids(tok, text, true);
    }
    rows.push(row);
  }
  writeLines(path.join(outDir, 'llama3_ids.jsonl'), rows);

  const fuzz = [];
  for (let i = 0; i < 3000; i++) {
    const text = randomString();
    fuzz.push({ text, ids: await ids(toks.llama3, text, false) });
  }
  writeLines(path.join(outDir, 'llama3_fuzz.jsonl'), fuzz);

  // Decode: byte tokens (Ġ-alphabet single bytes 0x80.. split UTF-8 characters), words, specials.
  const vocab = toks.llama3.getVocab(true);
  // Sorted: getVocab's order comes from a Rust HashMap and changes from run to run.
  const byteIds = Object.entries(vocab).filter(([t]) => [...t].length === 1).map(([, id]) => id).sort((a, b) => a - b);
  const decode = [];
  for (let i = 0; i < 400; i++) {
    const seq = [];
    const n = between(1, 12);
    for (let k = 0; k < n; k++) {
      const r = rnd();
      seq.push(r < 0.45 ? pick(byteIds) : r < 0.85 ? between(0, 127999) : between(128000, 128255));
    }
    decode.push({ ids: seq, text: await toks.llama3.decode(seq, false), text_skip: await toks.llama3.decode(seq, true) });
  }
  writeLines(path.join(outDir, 'llama3_decode.jsonl'), decode);

  await makeSmall(corpus, fuzz.map((f) => f.text));
  console.error(`wrote ${rows.length} corpus rows, ${fuzz.length} fuzz rows, ${decode.length} decode rows`);
}

// A small tokenizer of our own (trained on our corpus, so it can be committed) with the LLaMA 3
// pre-tokenizer, to show the loader is generic: merges as [a, b] pairs, a BOS + EOS template, and
// added tokens with single_word / lstrip / rstrip / normalized set.
async function makeSmall(corpus, fuzzTexts) {
  const llama = JSON.parse(fs.readFileSync(path.join(tokDir, 'llama3', 'tokenizer.json'), 'utf8'));
  const added = (id, content, o = {}) => ({ id, content, single_word: false, lstrip: false, rstrip: false,
                                            normalized: false, special: true, ...o });
  const spec = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [added(0, '<s>'), added(1, '</s>'), added(2, '<pad>', { lstrip: true, rstrip: true }),
                   added(3, '[word]', { single_word: true, special: false, normalized: true }),
                   added(4, '<|eot|>')],
    normalizer: null,
    pre_tokenizer: llama.pre_tokenizer,
    post_processor: null,
    decoder: llama.decoder,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
             fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab: {}, merges: [] },
  };
  const dir = path.join(outDir, 'small');
  fs.mkdirSync(dir, { recursive: true });
  const trainFile = path.join(dir, 'train.tmp.txt');
  fs.writeFileSync(trainFile, corpus.slice(0, 160).join('\n'));
  const tok = Tokenizer.fromString(JSON.stringify(spec));
  tok.train([trainFile]);
  fs.unlinkSync(trainFile);
  // HF gives added tokens that are not in the trained vocab the next free ids when it loads the
  // file; save again from a loaded copy so the file holds those ids, then add a BOS ... EOS template.
  const file = path.join(dir, 'tokenizer.json');
  tok.save(file, true);
  Tokenizer.fromFile(file).save(file, true);
  const j = JSON.parse(fs.readFileSync(file, 'utf8'));
  const idOf = (content) => j.added_tokens.find((t) => t.content === content).id;
  j.post_processor = {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
             { SpecialToken: { id: '</s>', type_id: 0 } }],
    pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<s>': { id: '<s>', ids: [idOf('<s>')], tokens: ['<s>'] },
                      '</s>': { id: '</s>', ids: [idOf('</s>')], tokens: ['</s>'] } },
  };
  fs.writeFileSync(file, JSON.stringify(j, null, 1) + '\n');

  const small = Tokenizer.fromFile(file);
  const texts = [...corpus, ...fuzzTexts.slice(0, 500),
                 'a <pad> b', 'a<pad>b', '  <pad>  x', '[word] x[word] [word]y x [word] y', '<s></s><|eot|>'];
  const rows = [];
  for (const text of texts) rows.push({ text, ids: await ids(small, text, false), ids_special: await ids(small, text, true) });
  writeLines(path.join(outDir, 'small_ids.jsonl'), rows);
}

main().catch((e) => { console.error(e); process.exit(1); });
