// Drives a live `lamina serve` with the official openai npm client (tests/server/test_openai_client.cpp
// installs it into the build tree). Usage: node openai_client.mjs http://127.0.0.1:PORT/v1
// Prints OK and exits 0, or prints what differed and exits 1.
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
function check(cond, what) {
  if (!cond) {
    console.error('FAIL:', what);
    process.exit(1);
  }
}

const models = await client.models.list();
check(models.data.length === 1, 'one model listed');
const model = models.data[0].id;

// Completions, whole and streamed: the same greedy text.
const whole = await client.completions.create({ model, prompt: 'In the beginning', max_tokens: 12, temperature: 0 });
check(whole.object === 'text_completion' && whole.choices.length === 1, 'completion shape');
check(whole.usage.completion_tokens >= 1 && whole.usage.completion_tokens <= 12, 'completion usage');
let text = '';
const stream = await client.completions.create({ model, prompt: 'In the beginning', max_tokens: 12, temperature: 0, stream: true });
for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
check(text === whole.choices[0].text, `streamed completion ${JSON.stringify(text)} vs ${JSON.stringify(whole.choices[0].text)}`);

// Chat, whole and streamed with usage.
const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello, who are you?' }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0 });
check(chat.choices[0].message.role === 'assistant', 'chat role');
let content = '';
let usage = null;
const chatStream = await client.chat.completions.create({
  model, messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true },
});
for await (const chunk of chatStream) {
  content += chunk.choices[0]?.delta?.content ?? '';
  if (chunk.usage) usage = chunk.usage;
}
check(content === chat.choices[0].message.content, 'streamed chat equals whole chat');
check(usage && usage.completion_tokens === chat.usage.completion_tokens, 'streamed usage');

// Logprobs through the client's types.
const lp = await client.chat.completions.create({ model, messages, max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2 });
check(lp.choices[0].logprobs.content.length === lp.usage.completion_tokens, 'chat logprobs per token');

// Errors become the client's error classes.
try {
  await client.completions.create({ model, prompt: 'x', max_tokens: 100000 });
  check(false, 'max_tokens over the context was accepted');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.status === 400, `400 expected, got ${e}`);
  check(e.param === 'max_tokens' && e.type === 'invalid_request_error', `error fields: ${JSON.stringify(e.error)}`);
}
try {
  await client.completions.create({ model: 'no-such-model', prompt: 'x' });
  check(false, 'an unknown model was accepted');
} catch (e) {
  check(e instanceof OpenAI.NotFoundError, `404 expected, got ${e}`);
}

// Abort mid-stream: the client's AbortController closes the connection.
const abort = new AbortController();
const long = await client.completions.create(
  { model, prompt: 'In the beginning', max_tokens: 200, temperature: 0, stream: true, ignore_eos: true },
  { signal: abort.signal });
let chunks = 0;
try {
  for await (const _ of long) if (++chunks === 3) abort.abort();
} catch (e) {
  check(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError', `abort: ${e}`);
}
check(chunks >= 3 && chunks < 100, `aborted after ${chunks} chunks`);  // chunks already buffered may still arrive
console.log('OK');
