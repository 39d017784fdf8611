// The official `openai` npm SDK against `tandem serve`: completions streamed and not, usage,
// stop strings, lengths, seeds, logprobs, models, embeddings, tool calls, structured output, and
// errors as the SDK's typed errors.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { MODEL_ID, startServer } from "./server.mjs";

const ASK = [{ role: "user", content: "Count from 1 to 20, separated by commas." }];
let server, client;

before(async () => {
  server = await startServer("--ctx-size", "512", "--body-limit", "65536");
  client = new OpenAI({ baseURL: server.base + "/v1", apiKey: "not-needed", maxRetries: 0 });
});
after(async () => { await server.stop(); });

test("chat completion", async () => {
  const r = await client.chat.completions.create({ model: MODEL_ID, messages: ASK, max_tokens: 24, temperature: 0 });
  assert.equal(r.object, "chat.completion");
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.model, MODEL_ID);
  assert.match(r.system_fingerprint, /^fp_/);
  assert.equal(r.choices[0].message.role, "assistant");
  assert.ok(r.choices[0].message.content.length > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test("streaming with usage equals the whole answer", async () => {
  const whole = await client.chat.completions.create({ model: MODEL_ID, messages: ASK, max_tokens: 24, temperature: 0 });
  const stream = await client.chat.completions.create({ model: MODEL_ID, messages: ASK, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true } });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  const text = chunks.filter((c) => c.choices.length).map((c) => c.choices[0].delta.content || "").join("");
  assert.equal(text, whole.choices[0].message.content);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, whole.usage);
  assert.equal(chunks.at(-2).choices[0].finish_reason, whole.choices[0].finish_reason);
});

test("stop strings, max_tokens and seeds", async () => {
  const plain = await client.chat.completions.create({ model: MODEL_ID, messages: ASK, max_tokens: 40, temperature: 0 });
  const text = plain.choices[0].message.content;
  assert.ok(text.includes("5"), text);
  const stopped = await client.chat.completions.create({ model: MODEL_ID, messages: ASK, max_tokens: 40, temperature: 0, stop: "5" });
  assert.equal(stopped.choices[0].message.content, text.slice(0, text.indexOf("5")));
  assert.equal(stopped.choices[0].finish_reason, "stop");
  const short = await client.chat.completions.create({ model: MODEL_ID, messages: ASK, max_tokens: 3, temperature: 0 });
  assert.equal(short.choices[0].finish_reason, "length");
  assert.equal(short.usage.completion_tokens, 3);
  const sample = async (seed) => (await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "Tell me a story." }], max_tokens: 32, temperature: 1, seed })).choices[0].message.content;
  assert.equal(await sample(5), await sample(5));
  assert.notEqual(await sample(5), await sample(6));
});

test("logprobs", async () => {
  const r = await client.chat.completions.create({ model: MODEL_ID, messages: ASK, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, 4);
  for (const t of content) {
    assert.ok(t.logprob <= 0);
    assert.equal(t.top_logprobs.length, 2);
    assert.equal(t.top_logprobs[0].token, t.token);
  }
  const scored = await client.completions.create({ model: MODEL_ID, prompt: "The capital of France is Paris", max_tokens: 0, echo: true, logprobs: 1 });
  const lp = scored.choices[0].logprobs;
  assert.equal(lp.tokens.join(""), "The capital of France is Paris");
  assert.equal(lp.token_logprobs[0], null);
  assert.ok(lp.token_logprobs.slice(1).every((x) => x <= 0));
});

test("models", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, [MODEL_ID]);
  assert.equal((await client.models.retrieve(MODEL_ID)).owned_by, "tandem");
});

test("errors are typed", async () => {
  for (const body of [
    { messages: [] },
    { messages: [{ role: "wizard", content: "x" }] },
    { messages: ASK, n: 17 },
    { messages: [{ role: "user", content: "word ".repeat(600) }] },
  ]) {
    await assert.rejects(client.chat.completions.create({ model: MODEL_ID, ...body }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      assert.equal(e.status, 400);
      assert.equal(e.type, "invalid_request_error");
      return true;
    });
  }
  await assert.rejects(client.chat.completions.create({ model: "gpt-17", messages: ASK }), (e) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found");
  await assert.rejects(client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "a".repeat(100000) }] }), (e) => e instanceof OpenAI.APIError && e.status === 413);
  const ok = await client.chat.completions.create({ model: MODEL_ID, messages: ASK, max_tokens: 2, frobnicate: { a: 1 } });
  assert.ok(ok.choices[0].message.content);
});

test("n choices of one prompt", async () => {
  const r = await client.chat.completions.create({ model: MODEL_ID, messages: ASK, n: 2, max_tokens: 4, temperature: 0 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  assert.equal(r.choices[0].message.content, r.choices[1].message.content);
  assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens >= 2);
});

test("embeddings (the SDK asks for base64 and decodes it)", async () => {
  const texts = ["The library opens at nine.", "Quarterly revenue grew by five percent."];
  const r = await client.embeddings.create({ model: MODEL_ID, input: texts });
  assert.equal(r.object, "list");
  assert.equal(r.data.length, 2);
  assert.deepEqual(r.data.map((d) => d.index), [0, 1]);
  for (const d of r.data) {
    assert.equal(d.embedding.length, 576);
    const norm = d.embedding.reduce((s, x) => s + x * x, 0);
    assert.ok(Math.abs(norm - 1) < 1e-4, `unit length, got ${norm}`);
  }
  const floats = await client.embeddings.create({ model: MODEL_ID, input: texts[0], encoding_format: "float" });
  const diff = Math.max(...floats.data[0].embedding.map((x, i) => Math.abs(x - r.data[0].embedding[i])));
  assert.ok(diff < 1e-5, `float and base64 agree, differ by ${diff}`);
  assert.ok(r.usage.prompt_tokens > floats.usage.prompt_tokens);
  await assert.rejects(client.embeddings.create({ model: MODEL_ID, input: "x", dimensions: 8 }), (e) => e instanceof OpenAI.BadRequestError && e.param === "dimensions");
});

test("tool calling round trip: call, tool result, final answer", async () => {
  const tools = [{ type: "function", function: { name: "get_weather", description: "The weather in a city.",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 32 } }, required: ["city"], additionalProperties: false } } }];
  const ask = [{ role: "user", content: "What is the weather in Rome?" }];
  const first = await client.chat.completions.create({ model: MODEL_ID, messages: ask, tools, tool_choice: "required", parallel_tool_calls: false, temperature: 0, max_tokens: 100 });
  const choice = first.choices[0];
  assert.equal(choice.finish_reason, "tool_calls");
  assert.equal(choice.message.tool_calls.length, 1);
  const call = choice.message.tool_calls[0];
  assert.equal(call.function.name, "get_weather");
  const args = JSON.parse(call.function.arguments);
  assert.equal(typeof args.city, "string");
  const history = [...ask, choice.message, { role: "tool", tool_call_id: call.id, content: JSON.stringify({ city: args.city, celsius: 21 }) }];
  const final = await client.chat.completions.create({ model: MODEL_ID, messages: history, tools, temperature: 0, max_tokens: 40 });
  assert.ok(final.choices[0].message.content.length > 0);
  // Streamed: the SDK's helper gathers the tool-call deltas.
  const stream = client.chat.completions.stream({ model: MODEL_ID, messages: ask, tools, tool_choice: "required", temperature: 0, max_tokens: 100 });
  const done = await stream.finalChatCompletion();
  assert.equal(done.choices[0].finish_reason, "tool_calls");
  assert.equal(done.choices[0].message.tool_calls[0].function.name, "get_weather");
  JSON.parse(done.choices[0].message.tool_calls[0].function.arguments);
});

test("structured output with a JSON schema", async () => {
  const schema = { type: "object", properties: { name: { type: "string", maxLength: 20 }, age: { type: "integer", minimum: 0, maximum: 120 } }, required: ["name", "age"], additionalProperties: false };
  const r = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "A person as JSON." }], temperature: 0, max_tokens: 100,
    response_format: { type: "json_schema", json_schema: { name: "person", schema, strict: true } } });
  const v = JSON.parse(r.choices[0].message.content);
  assert.deepEqual(Object.keys(v).sort(), ["age", "name"]);
  assert.ok(Number.isInteger(v.age) && v.age >= 0 && v.age <= 120);
});

test("a full queue is a RateLimitError", async () => {
  const busy = await startServer("--max-seqs", "1", "--max-waiting", "0");
  try {
    const c = new OpenAI({ baseURL: busy.base + "/v1", apiKey: "x", maxRetries: 0 });
    const controller = new AbortController();
    const stream = await c.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "Tell me a long story." }], max_tokens: 1500, stream: true, ignore_eos: true }, { signal: controller.signal });
    const it = stream[Symbol.asyncIterator]();
    await it.next();
    await assert.rejects(c.chat.completions.create({ model: MODEL_ID, messages: ASK, max_tokens: 2 }), (e) => e instanceof OpenAI.RateLimitError && e.headers.get("retry-after") === "1");
    controller.abort();
  } finally {
    await busy.stop();
  }
});
