// Tandem's chat demo, on the npm package @tandem-inference/web (its built bundle in ./pkg/).
// Each reply streams from `tandem.chat.completions.create`, which runs it in this browser (the
// model on WebGPU or the WebAssembly CPU engine, in a Web Worker) or on the Tandem server that
// serves this page. The page shows where each reply ran and why, what this browser can do, and
// the model's download and load progress.
import { Tandem } from "./pkg/index.js";

const $ = (id) => document.getElementById(id);
const log = $("log"), form = $("form"), input = $("input"), stats = $("stats");
const routeSelect = $("route"), modelSelect = $("model"), loadButton = $("load");
const progressBox = $("progress"), progressText = $("progress-text"), progressBar = $("progress-bar");

/** The Tandem client (a promise), created on first use; each request passes the switch's policy. */
let clientPromise = null;
/** The conversation sent with each request: { role, content } messages. */
let history = [];
/** Counts "New chat"s, so that a reply still streaming into a cleared chat is not kept. */
let chatNumber = 0;
/** Aborts the reply being streamed; null when idle. */
let controller = null;
/** The best browser decode speed measured so far (tokens/s), or null. */
let measuredDecode = null;
/** The model load in progress, for the ready line: { started, fromCache, total }. */
let loading = null;
/** Whether a "Load model in browser" click is being served. */
let loadPending = false;

const NO_STATS = "TTFT: – · speed: – · tokens: –";

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

/** Bytes as megabytes with one decimal ("98.4 MB"). */
function mb(bytes) {
  return (bytes / 1e6).toFixed(1) + " MB";
}

/** Bytes as gigabytes with one decimal ("12.3 GB"). */
function gb(bytes) {
  return (bytes / 1e9).toFixed(1) + " GB";
}

/** A power-of-two size as MiB or GiB ("256 MiB", "1 GiB"), as GPU limits are given. */
function binarySize(bytes) {
  const mib = bytes / 1048576;
  return mib >= 1024 ? +(mib / 1024).toFixed(1) + " GiB" : +mib.toFixed(1) + " MiB";
}

/** The browser engine's path in words. */
function pathName(path) {
  if (path === "webgpu") return "GPU (WebGPU)";
  if (path === "cpu") return "CPU (WebAssembly)";
  return "";
}

/** Readable meanings of the routing reasons (see control-plane/src/gateway/ROUTING.md). */
const REASONS = {
  policy_browser: "you chose “Browser”",
  policy_server: "you chose “Server”",
  no_webgpu: "no WebGPU in this browser",
  webgpu_fallback_adapter: "WebGPU here is a slow software emulation",
  device_memory_unknown: "the browser does not report its memory",
  server_estimate_invalid: "the server could not estimate its own speed",
  no_browser_variant: "this model has no version small enough for browsers",
  no_runnable_variant: "so the model cannot run in this browser",
  insufficient_memory: "not enough memory on this device",
  insufficient_storage: "not enough free storage to download the model",
  buffer_limit: "the GPU's buffers are too small for the model",
  no_wasm_simd: "no WebAssembly SIMD for the CPU engine",
  variant_too_large_for_cpu: "the model is too large for the CPU engine",
  wasm_memory_limit: "the model does not fit in WebAssembly memory",
  path_webgpu: "the browser would use the GPU",
  path_cpu: "the browser would use the CPU",
  not_cross_origin_isolated: "one CPU thread only (page not cross-origin isolated)",
  variant_loaded: "the model is already loaded in this page",
  variant_cached: "the model is already in this browser's cache",
  download_required: "the model would have to be downloaded first",
  measured_speed: "using the speed measured in this browser",
  estimated_speed: "browser speed estimated (not measured yet)",
  browser_faster: "the browser is expected to be faster",
  server_faster: "the server is expected to be faster",
  equal_speed: "both are expected to be as fast",
  policy_balanced: "balanced policy",
  policy_fastest: "fastest policy",
  policy_cheapest: "cheapest policy",
  within_tolerance: "the browser is close enough to the server's speed",
  beyond_tolerance: "the browser would be too slow compared to the server",
  streamed: "a streamed answer: judged by its first token",
  slower_than_reading: "the browser would stream slower than people read",
  within_ttft_target: "the browser's first token comes within the tier's target",
  zero_operator_cost: "running in the browser costs the operator nothing",
  browser_too_slow: "the browser would be far too slow",
  server_unreachable: "the server could not be reached, so this page decided",
  route_timeout: "the server did not answer in time, so this page decided",
};

/** One reason code in words ("missing_feature:shader-f16" → "the GPU lacks shader-f16"). */
function reasonPhrase(code) {
  const [name, arg] = code.split(/:\s*/, 2);
  switch (name) {
    case "missing_feature": return `the GPU lacks the ${arg} feature`;
    case "route_unavailable": return `the server's router is unavailable (${arg}), so this page decided`;
    case "route_error": return `the server refused to route the request (${arg})`;
    default: return REASONS[name] || code.replace(/_/g, " ");
  }
}

/** The `tandem.reason` string in words. */
function reasonText(info) {
  const reason = info.reason || "";
  if (info.failover) {
    const m = reason.match(/^browser_failed_(at_load|mid_stream):\s*(.*)$/);
    const when = m && m[1] === "at_load" ? "while loading the model" : "in the middle of the answer";
    const kind = m ? m[2].replace(/_/g, " ") : reason;
    const done = info.browser_tokens ? ` after ${info.browser_tokens} token(s)` : "";
    return `The browser engine failed ${when}${done} (${kind}${info.error ? ": " + info.error : ""}); the server finished the answer.`;
  }
  if (reason.startsWith("unsupported_in_browser:")) {
    return "The browser engine cannot handle " + reason.slice("unsupported_in_browser:".length).trim() + ", so the server answered.";
  }
  const who = info.decided_by === "server" ? " (decided by the server's router)" :
    info.decided_by === "local" ? " (decided in this page)" : "";
  const phrases = reason.split(/,\s*/).filter(Boolean).map(reasonPhrase);
  return `Why${who}: ${phrases.join("; ") || "no reason given"}.`;
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/** The route switch's policy. */
function currentPolicy() {
  return routeSelect.value;
}

/** The Tandem client, created once (one browser engine, whatever the policy); a failed creation
 * is retried later. */
function client() {
  if (!clientPromise) {
    clientPromise = Tandem.create({ onProgress: showProgress });
    clientPromise.catch(() => (clientPromise = null));
  }
  return clientPromise;
}

// ---------------------------------------------------------------------------------------------
// Progress bar
// ---------------------------------------------------------------------------------------------

/** Shows a LoadProgress report of the model's download, verification or compilation. */
function showProgress(p) {
  if (!loading) loading = { started: performance.now(), fromCache: p.fromCache, total: p.total };
  if (p.phase === "download") loading.fromCache = p.fromCache;
  if (p.total) loading.total = p.total;
  progressBox.hidden = false;
  progressBox.dataset.phase = p.phase;
  if (p.phase === "download") {
    const source = p.fromCache ? "Reading the model from this browser's cache" : "Downloading the model from the server";
    const total = p.total ? " / " + mb(p.total) : "";
    const rate = p.bytesPerSecond ? ` · ${(p.bytesPerSecond / 1e6).toFixed(1)} MB/s` : "";
    progressText.textContent = `${source}: ${mb(p.loaded)}${total}${rate}`;
    if (p.total) progressBar.value = p.loaded / p.total;
    else progressBar.removeAttribute("value");
  } else if (p.phase === "verify") {
    progressText.textContent = `Checking the model's checksum (${mb(p.total || p.loaded)})…`;
    progressBar.value = 1;
  } else {
    progressText.textContent = "Preparing the model to run in this browser…";
    progressBar.removeAttribute("value"); // indeterminate
  }
}

/** Marks the model as loaded in the browser (`engine`: a LoadedEngineInfo). */
function showReady(engine) {
  const where = [pathName(engine.path), engine.device].filter(Boolean).join(" · ");
  let how = "";
  if (loading) {
    const seconds = ((performance.now() - loading.started) / 1000).toFixed(1);
    const size = loading.total ? mb(loading.total) + " " : "";
    how = ` — ${size}${loading.fromCache ? "read from this browser's cache" : "downloaded"} and prepared in ${seconds} s`;
  }
  loading = null;
  progressBox.hidden = false;
  progressBox.dataset.phase = "ready";
  progressBar.value = 1;
  progressText.textContent = `Model ready in your browser: ${where}${how}`;
}

/** Shows why the model could not be loaded in the browser. */
function showLoadError(err) {
  loading = null;
  progressBox.hidden = false;
  progressBox.dataset.phase = "error";
  progressBar.value = 0;
  progressText.textContent = "The model could not be loaded in this browser: " + errorMessage(err);
}

/** Sets the progress bar: ready if the browser engine is loaded, else hidden. */
function syncProgress(caps) {
  const engine = caps.engines.find((e) => e.model === modelSelect.value) || caps.engines[0];
  if (engine) {
    if (loading || progressBox.dataset.phase !== "ready") showReady(engine);
  } else if (!loading && !["starting", "error"].includes(progressBox.dataset.phase)) {
    progressBox.hidden = true;
    progressBox.dataset.phase = "idle";
  }
}

/** Loads the selected model in the browser ahead of the first request ("Load model in browser"). */
async function loadInBrowser() {
  loadPending = true;
  updateLoadButton();
  progressBox.hidden = false;
  progressBox.dataset.phase = "starting";
  progressText.textContent = "Starting the in-browser engine…";
  progressBar.removeAttribute("value");
  try {
    const tandem = await client();
    const engine = await tandem.load(modelSelect.value || undefined);
    showReady(engine);
  } catch (e) {
    showLoadError(e);
  } finally {
    loadPending = false;
    updateLoadButton();
    refreshCaps();
  }
}

/** Enables "Load model in browser" unless the route is Server (which never uses the browser). */
function updateLoadButton() {
  const server = currentPolicy() === "server";
  loadButton.disabled = server || loadPending;
  loadButton.title = server ? "Switch “Run on” to Auto or Browser to run the model in this browser"
    : "Download the model and prepare it to run in this browser";
}

// ---------------------------------------------------------------------------------------------
// Capability panel
// ---------------------------------------------------------------------------------------------

/** Re-reads the current client's capabilities and shows them. */
async function refreshCaps() {
  try {
    const tandem = await client();
    const caps = await tandem.capabilities();
    const speed = caps.measured && caps.measured.decode_tok_s;
    if (speed) measuredDecode = speed;
    renderCaps(caps);
    syncProgress(caps);
  } catch (e) {
    renderRows([["Error", "Could not read this browser's capabilities: " + errorMessage(e)]]);
  }
}

/** Fills the panel from `tandem.capabilities()`. */
function renderCaps(caps) {
  const rows = [];
  const gpu = caps.webgpu;
  if (!gpu) {
    rows.push(["WebGPU", "not available in this browser"]);
  } else if (!gpu.available) {
    rows.push(["WebGPU", "no GPU adapter"]);
  } else {
    const a = gpu.adapter;
    const name = [a.vendor, a.architecture].filter(Boolean).join(" / ") || a.description || "unnamed adapter";
    rows.push(["WebGPU adapter", name + (a.is_fallback ? " — software fallback (slow)" : " — hardware")]);
    const has = (f) => (gpu.features.includes(f) ? "✓ " : "✗ ") + f;
    rows.push(["GPU features", has("shader-f16") + " · " + has("subgroups")]);
    if (gpu.limits.maxBufferSize) rows.push(["Max GPU buffer", binarySize(gpu.limits.maxBufferSize)]);
  }
  rows.push(["WebAssembly SIMD", caps.wasm_simd ? "✓ yes (CPU engine possible)" : "✗ no"]);
  if (caps.hardware_concurrency) {
    const threads = caps.cross_origin_isolated ? "" : " (engine uses 1: page not cross-origin isolated)";
    rows.push(["CPU cores", caps.hardware_concurrency + threads]);
  }
  rows.push(["Device memory", caps.device_memory_gb ? caps.device_memory_gb + " GB" : "not reported"]);
  rows.push(["Free storage", caps.storage_available_bytes !== undefined ? gb(caps.storage_available_bytes) : "not reported"]);
  const model = caps.models.find((m) => m.id === modelSelect.value) || caps.models[0];
  const variants = model ? model.variants : [];
  if (variants.length === 0) {
    rows.push(["Model in this browser", "no browser version of this model"]);
  } else {
    const cached = variants.find((v) => v.cached);
    rows.push(["Model cached here", cached ? `✓ yes (${mb(cached.bytes)}, ${cached.quantization})`
      : `✗ no (${mb(variants[0].bytes)} to download)`]);
  }
  const engine = caps.engines[0];
  rows.push(["Browser engine", engine ? `loaded: ${pathName(engine.path)}, ${engine.device}` : "not loaded"]);
  rows.push(["Browser decode speed", measuredDecode ? measuredDecode.toFixed(1) + " tok/s (measured)" : "not measured yet"]);
  rows.push(["Server", caps.server.reachable ? "✓ reachable" : "✗ unreachable" + (caps.server.error ? ": " + caps.server.error : "")]);
  renderRows(rows);
}

/** Writes [label, value] rows into the panel's list. */
function renderRows(rows) {
  const list = $("caps-list");
  list.textContent = "";
  for (const [label, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
}

// ---------------------------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------------------------

/** The message of an error, whatever was thrown. */
function errorMessage(e) {
  return String((e && e.message) || e);
}

/** Appends a message bubble (`role`: "user", "assistant" or "error") with its text. */
function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

/** Appends an empty, streaming assistant bubble: its text and its route badge. */
function addReply() {
  const div = addMessage("assistant streaming", "");
  div.dataset.done = "false";
  const text = document.createElement("div");
  text.className = "text";
  const badge = document.createElement("div");
  badge.className = "route";
  badge.textContent = "Choosing where to run…";
  div.append(text, badge);
  return { div, text, badge };
}

/** Fills a reply's badge: where it ran, why, and its timing (`timing`: text, may be empty). */
function renderBadge(badge, info, timing) {
  badge.textContent = "";
  const failover = Boolean(info.failover);
  const where = document.createElement("span");
  where.className = "where";
  if (failover) where.textContent = `Browser failed → finished on the server`;
  else if (info.route === "browser") where.textContent = "In your browser" + (info.path ? " · " + pathName(info.path) : "");
  else where.textContent = "On the server";
  badge.dataset.route = failover ? "failover" : info.route;
  badge.append(where);
  if (timing) {
    const t = document.createElement("span");
    t.className = "timing";
    t.textContent = timing;
    badge.append(t);
  }
  const reason = document.createElement("div");
  reason.className = "reason";
  reason.textContent = reasonText(info);
  reason.title = "tandem.reason: " + info.reason;
  badge.append(reason);
}

/** Sends `text` with the whole conversation and streams the reply into the page. */
async function send(text) {
  const chat = chatNumber;
  const policy = currentPolicy();
  const model = modelSelect.value || undefined;
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const reply = addReply();
  $("send").disabled = true;
  $("stop").hidden = false;
  controller = new AbortController();
  const signal = controller.signal;
  const started = performance.now();
  let first = null, last = null, tokens = 0, answer = "", info = null, stopped = false, failed = false;
  const ttft = () => (first === null ? "–" : (first - started).toFixed(0) + " ms");
  const rate = () => (tokens > 1 && last > first ? ((tokens - 1) / ((last - first) / 1000)).toFixed(1) + " tok/s" : "–");
  const show = () => { stats.textContent = `TTFT: ${ttft()} · speed: ${rate()} · tokens: ${tokens}`; };
  let tandem = null;
  try {
    tandem = await client();
    const stream = tandem.chat.completions.create(
      {
        model,
        messages: history.slice(),
        stream: true,
        stream_options: { include_usage: true },
        temperature: Number($("temperature").value),
        max_tokens: Number($("max-tokens").value),
        signal,
      },
      { policy },
    );
    for await (const chunk of stream) {
      if (chunk.tandem) {
        info = chunk.tandem;
        renderBadge(reply.badge, info, "");
        if (info.route === "browser" && loading) refreshCaps(); // the engine just finished loading
      }
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        const now = performance.now();
        if (first === null) first = now;
        last = now;
        tokens += 1;
        answer += delta.content;
        reply.text.textContent = answer;
        log.scrollTop = log.scrollHeight;
        show();
      }
    }
  } catch (e) {
    if (e && e.name === "AbortError") stopped = true;
    else { failed = true; addMessage("error", errorMessage(e)); }
    if (loading && e && e.name === "EngineFailure") showLoadError(e);
  } finally {
    if (loading && info && info.failover) showLoadError(info.error || info.reason);
    if (chat === chatNumber && answer) history.push({ role: "assistant", content: answer });
    const timing = `TTFT ${ttft()} · ${rate()} · ${tokens} tokens` + (stopped ? " · stopped" : "");
    if (info) {
      renderBadge(reply.badge, info, timing);
      reply.div.dataset.route = info.route;
      reply.div.dataset.path = info.route === "browser" && info.path ? info.path : "";
      if (info.failover) reply.div.dataset.failover = "true";
    } else {
      reply.badge.textContent = stopped ? "Stopped before it started." : failed ? "No answer." : "";
    }
    if (!answer) reply.text.textContent = stopped ? "(stopped)" : "(no answer)";
    reply.div.classList.remove("streaming");
    show();
    reply.div.dataset.done = "true";
    $("send").disabled = false;
    $("stop").hidden = true;
    controller = null;
    if (loading && tandem && policy !== "server") {
      // Stopped while the model was loading: the load goes on; show when it is ready.
      tandem.load(model).then(showReady, showLoadError).finally(refreshCaps);
    } else if (info && (info.route === "browser" || info.failover)) {
      refreshCaps();
    }
  }
}

/** Fills the model list from the server (`tandem.models.list()`). */
async function loadModels() {
  try {
    const tandem = await client();
    const list = await tandem.models.list();
    for (const m of list.data || []) {
      const opt = document.createElement("option");
      opt.value = opt.textContent = m.id;
      modelSelect.appendChild(opt);
    }
    if (!list.data || list.data.length === 0) addMessage("error", "The server lists no models.");
  } catch (e) {
    addMessage("error", "Could not list models: " + errorMessage(e));
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------------

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
  chatNumber += 1;
  if (controller) controller.abort();
  history = [];
  log.textContent = "";
  stats.textContent = NO_STATS;
});
routeSelect.addEventListener("change", () => {
  updateLoadButton();
  refreshCaps();
});
modelSelect.addEventListener("change", refreshCaps);
loadButton.addEventListener("click", loadInBrowser);

updateLoadButton();
loadModels().then(refreshCaps);
