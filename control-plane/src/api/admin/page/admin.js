// The admin page: reads the admin API with the key given on the page (kept for this tab only)
// and shows tenants, keys, usage and cost per day, browser savings and upstream health.

const $ = (sel) => document.querySelector(sel);
const usd = (x) => "$" + Number(x || 0).toFixed(x >= 1 ? 2 : 6);
const num = (x) => Number(x || 0).toLocaleString("en-US");
const day = (ms) => (ms ? new Date(ms).toISOString().slice(0, 16).replace("T", " ") : "—");

/** Calls the admin API; throws with the server's message on an error. */
async function api(path) {
  const key = sessionStorage.getItem("tandem-admin-key") || "";
  const r = await fetch("/admin/v1/" + path, { headers: { Authorization: "Bearer " + key } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body?.error?.message || `${r.status} ${r.statusText}`);
  return body;
}

/** Fills a table's body with rows of cells (strings, or [text, className]). */
function fill(table, rows) {
  const tbody = $(table + " tbody");
  tbody.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement("tr");
      for (const c of cells) {
        const td = document.createElement("td");
        const [text, cls] = Array.isArray(c) ? c : [c, ""];
        td.textContent = text;
        if (cls) td.className = cls;
        tr.append(td);
      }
      return tr;
    }),
  );
}

function card(label, value) {
  const d = document.createElement("div");
  d.className = "card";
  const b = document.createElement("b");
  b.textContent = value;
  d.append(b, label);
  return d;
}

/** An SVG bar chart of cost (and savings) per day. */
function chart(days) {
  const w = 760, h = 140, pad = 24;
  const max = Math.max(1e-9, ...days.map((d) => Math.max(d.cost_usd, d.savings_usd)));
  const bw = Math.max(4, Math.min(40, (w - pad) / Math.max(1, days.length) / 2 - 2));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("width", "100%");
  days.forEach((d, i) => {
    const x = pad + i * (2 * bw + 6);
    for (const [k, cls, dx] of [["cost_usd", "cost", 0], ["savings_usd", "savings", bw]]) {
      const bh = ((h - 2 * pad) * d[k]) / max;
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", x + dx);
      r.setAttribute("y", h - pad - bh);
      r.setAttribute("width", bw);
      r.setAttribute("height", Math.max(bh, 0.5));
      r.setAttribute("class", cls);
      svg.append(r);
    }
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x);
    t.setAttribute("y", h - 6);
    t.textContent = d.group.slice(5);
    svg.append(t);
  });
  const legend = document.createElementNS(ns, "text");
  legend.setAttribute("x", pad);
  legend.setAttribute("y", 12);
  legend.textContent = `cost (blue) and browser savings (green) per day; max ${usd(max)}`;
  svg.append(legend);
  $("#chart").replaceChildren(svg);
}

async function load() {
  const status = $("#status");
  status.className = "";
  status.textContent = "Loading…";
  try {
    const now = new Date();
    const month = now.toISOString().slice(0, 7);
    const from = new Date(now.getTime() - 29 * 86400000).toISOString().slice(0, 10);
    const [tenants, upstreams, days, routes, monthRoutes] = await Promise.all([
      api("tenants"),
      api("upstreams"),
      api(`usage?group_by=day&from=${from}`),
      api("usage?group_by=route"),
      api(`usage?group_by=route&from=${month}-01`),
    ]);
    const keys = (await Promise.all(tenants.data.map((t) => api(`tenants/${encodeURIComponent(t.id)}/keys`)))).map((k) => k.data);

    const m = monthRoutes.data;
    const sum = (k) => m.reduce((a, g) => a + (g[k] || 0), 0);
    const browser = m.find((g) => g.group === "browser");
    $("#totals").replaceChildren(
      card("requests", num(sum("requests"))),
      card("tokens", num(sum("prompt_tokens") + sum("completion_tokens"))),
      card("server cost", usd(sum("cost_usd"))),
      card("saved by browsers", usd(sum("savings_usd"))),
      card("served in browsers", num(browser?.requests || 0) + " req."),
      card("tenants", num(tenants.data.length)),
    );
    chart(days.data);
    fill("#days", days.data.map((d) => [d.group, num(d.requests), num(d.errors), num(d.prompt_tokens), num(d.completion_tokens), usd(d.cost_usd), usd(d.savings_usd)]));
    fill("#routes", routes.data.map((g) => [g.group, num(g.requests), num(g.prompt_tokens + g.completion_tokens), usd(g.cost_usd), usd(g.savings_usd)]));
    fill("#tenants", tenants.data.map((t, i) => {
      const p = t.plan || {};
      const limits = [p.requests_per_minute && `${num(p.requests_per_minute)} req/min`, p.tokens_per_minute && `${num(p.tokens_per_minute)} tok/min`, p.monthly_budget_usd != null && `budget ${usd(p.monthly_budget_usd)}`].filter(Boolean).join(", ") || "none";
      return [t.id, t.name, t.tier, limits, usd(t.month_spent_usd), num(keys[i].filter((k) => !k.revoked_at).length)];
    }));
    fill("#keys", keys.flat().map((k) => [k.tenant, k.name || "—", k.prefix + "…", day(k.created_at), day(k.last_used_at), k.revoked_at ? ["revoked", "bad"] : ["active", "ok"]]));
    fill("#upstreams", upstreams.data.map((u) => [u.id, u.kind, u.models.join(", "), u.healthy ? [`healthy (${u.breaker})`, "ok"] : [`down (${u.breaker})`, "bad"], num(u.in_flight), u.measured_ttft_s != null ? `${(u.measured_ttft_s * 1000).toFixed(0)} ms` : "—", u.measured_tok_s != null ? `${u.measured_tok_s.toFixed(1)} tok/s` : "—"]));
    $("#dashboard").hidden = false;
    $("#refresh").hidden = false;
    status.textContent = `Updated ${new Date().toLocaleTimeString("en-GB")}.`;
  } catch (e) {
    $("#dashboard").hidden = true;
    status.className = "error";
    status.textContent = String(e.message || e);
  }
}

$("#signin").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("tandem-admin-key", $("#key").value);
  load();
});
$("#refresh").addEventListener("click", load);
if (sessionStorage.getItem("tandem-admin-key")) load();
