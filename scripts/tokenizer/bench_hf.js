#!/usr/bin/env node
// HF tokenizers' encode throughput on the same text as bench_tokenizer (npm tokenizers@0.23.2,
// the Rust library through Node bindings). Prints the same figures and id hash.
//   NODE_PATH=DIR/node_modules node bench_hf.js TOKENIZER_DIR TEXT_FILE [REPEATS]
// encodeBatch runs on rayon threads: RAYON_NUM_THREADS=1 gives the single-thread figure.
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');

const [dir, file, repArg] = process.argv.slice(2);
const repeats = parseInt(repArg || '3', 10);
const text = fs.readFileSync(file, 'utf8');
const lines = text.match(/[^\n]*\n|[^\n]+$/g) || [];
const mb = Buffer.byteLength(text) / 1e6;

function fnv1a(ids, h = 0xcbf29ce484222325n) {
  for (const id of ids) { h ^= BigInt(id >>> 0); h = (h * 0x100000001b3n) & 0xffffffffffffffffn; }
  return h;
}
const now = () => Number(process.hrtime.bigint()) / 1e9;

(async () => {
  let t0 = now();
  const tok = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const loadS = now() - t0;
  console.log(`load: ${loadS.toFixed(3)} s\ntext: ${mb.toFixed(2)} MB, ${lines.length} lines`);
  let best = Infinity, first = 0, ids = [];
  for (let r = 0; r < repeats; r++) {
    t0 = now();
    ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
    const s = now() - t0;
    if (r === 0) first = s;
    best = Math.min(best, s);
  }
  const hash = fnv1a(ids).toString(16).padStart(16, '0');
  console.log(`whole text, first run: ${first.toFixed(3)} s  ${(mb / first).toFixed(2)} MB/s`);
  console.log(`whole text, best of ${repeats}: ${best.toFixed(3)} s  ${(mb / best).toFixed(2)} MB/s  ` +
              `${(ids.length / best / 1e6).toFixed(2)} M tokens/s  tokens=${ids.length}  hash=${hash}`);
  let bestBatch = Infinity, n = 0, h = 0xcbf29ce484222325n;
  for (let r = 0; r < repeats; r++) {
    t0 = now();
    const encs = await tok.encodeBatch(lines, { addSpecialTokens: false });
    const s = now() - t0;
    bestBatch = Math.min(bestBatch, s);
    if (r === 0) { for (const e of encs) { const x = e.getIds(); n += x.length; h = fnv1a(x, h); } }
  }
  console.log(`encodeBatch of lines (${process.env.RAYON_NUM_THREADS || 'all'} threads), best of ${repeats}: ` +
              `${bestBatch.toFixed(3)} s  ${(mb / bestBatch).toFixed(2)} MB/s  tokens=${n}  hash=${h.toString(16).padStart(16, '0')}`);
  console.log(JSON.stringify({ impl: 'hf-tokenizers-0.23.2', load_s: +loadS.toFixed(3), mb: +mb.toFixed(3),
    whole_first_mb_s: +(mb / first).toFixed(2), whole_mb_s: +(mb / best).toFixed(2),
    batch_mb_s: +(mb / bestBatch).toFixed(2), threads: process.env.RAYON_NUM_THREADS || 'all', tokens: ids.length, hash }));
})();
