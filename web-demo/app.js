// Tandem's chat demo: streams from /v1/chat/completions with fetch and a small SSE parser,
// showing tokens as they arrive, the time to first token and the decode speed.
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log"), form = $("form"), input = $("input"), stats = $("stats");
let history = [];
let controller = null;

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

async function loadModels() {
  try {
    const resp = await fetch("/v1/models");
    const body = await resp.json();
    for (const m of body.data || []) {
      const opt = document.createElement("option");
      opt.value = opt.textContent = m.id;
      $("model").appendChild(opt);
    }
  } catch (e) {
    addMessage("error", "Could not list models: " + e);
  }
}

// Yields the JSON payload of each `data:` event of an SSE response body.
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function send(text) {
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const out = addMessage("assistant streaming", "");
  out.dataset.done = "false";
  $("send").disabled = true;
  $("stop").hidden = false;
  controller = new AbortController();
  const started = performance.now();
  let first = null, last = null, tokens = 0, reply = "";
  const show = () => {
    const ttft = first === null ? "–" : (first - started).toFixed(0) + " ms";
    const rate = tokens > 1 && last > first ? ((tokens - 1) / ((last - first) / 1000)).toFixed(1) + " tok/s" : "–";
    stats.textContent = `TTFT: ${ttft} · speed: ${rate} · tokens: ${tokens}`;
  };
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      signal: controller.signal,
      body: JSON.stringify({
        model: $("model").value || undefined,
        messages: history,
        stream: true,
        stream_options: { include_usage: true },
        temperature: Number($("temperature").value),
        max_tokens: Number($("max-tokens").value),
      }),
    });
    if (!resp.ok) {
      const err = await resp.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || resp.statusText);
    }
    for await (const chunk of sseEvents(resp.body)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        const now = performance.now();
        if (first === null) first = now;
        last = now;
        tokens += 1;
        reply += delta.content;
        out.textContent = reply;
        log.scrollTop = log.scrollHeight;
        show();
      }
    }
    history.push({ role: "assistant", content: reply });
  } catch (e) {
    if (e.name !== "AbortError") addMessage("error", String(e.message || e));
    if (reply) history.push({ role: "assistant", content: reply });
  } finally {
    out.classList.remove("streaming");
    out.dataset.done = "true";
    show();
    $("send").disabled = false;
    $("stop").hidden = true;
    controller = null;
  }
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text || controller) return;
  input.value = "";
  send(text);
});
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    form.requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => {
  history = [];
  log.textContent = "";
  stats.textContent = "TTFT: – · speed: – · tokens: –";
});
loadModels();
