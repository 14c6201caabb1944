"""The /health/memory page for people: one HTML document, no CDN, no build step.

It works under `default-src 'none'; script-src 'nonce-N'; style-src 'nonce-N';
connect-src 'self'; img-src 'self' data:`: one nonced <style>, one nonced
<script>, no style="" attributes and no inline handlers. The server renders
an empty shell; the script fills it from the JSON at the same path (at once,
then every 3 s; served at /health, it asks /health/memory, whose JSON holds
the figures), keeps 10 minutes of samples in memory and draws the chart as
inline SVG. Sizes go through SVG attributes, which CSP allows.
"""

from __future__ import annotations

import re

# A CSP nonce is a base64 value; anything else would break out of the attribute.
_NONCE = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_NONCE_PLACEHOLDER = "__FITFLIX_NONCE__"

MEMORY_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>FitFlix memory</title>
<link rel="icon" href="data:,">
<style nonce="__FITFLIX_NONCE__">
:root{color-scheme:light dark;--fg:#1f2328;--muted:#59636e;--bg:#fff;--line:#d8dee4;
--ok:#1a7f37;--warn:#9a6700;--crit:#cf222e;--accent:#0969da}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;--line:#30363d;
--ok:#3fb950;--warn:#d29922;--crit:#f85149;--accent:#4493f8}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:54rem;margin:0 auto;padding:1rem}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between}
h1{font-size:1.4rem;margin:0}
h2{font-size:1.05rem;margin:1.6rem 0 .5rem}
p{margin:.4rem 0}
.status{font-weight:700;padding:.15rem .7rem;border:2px solid currentColor;border-radius:1rem;color:var(--muted)}
.status::before{content:"";display:inline-block;width:.6em;height:.6em;margin-right:.4em;border-radius:50%;background:currentColor}
.ok{color:var(--ok)}.warning{color:var(--warn)}.critical{color:var(--crit)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(8.5rem,1fr));gap:.5rem;margin:0}
#recycles{grid-template-columns:repeat(auto-fit,minmax(6.5rem,1fr))}
.cards div{border:1px solid var(--line);border-radius:.5rem;padding:.45rem .7rem}
dt,.muted,figcaption{color:var(--muted);font-size:.85rem}
dd{margin:0;font-size:1.3rem;font-weight:600;font-variant-numeric:tabular-nums}
.pairs{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;align-items:baseline;margin:0}
.pairs dd{font-size:.95rem;font-weight:500;overflow-wrap:anywhere}
svg{display:block;width:100%}
#bar{height:18px;margin:.8rem 0 .3rem}
.track{fill:var(--line)}.zone{opacity:.35}.zone.warn{fill:var(--warn)}.zone.crit{fill:var(--crit)}.fill{fill:var(--ok)}.fill.warning{fill:var(--warn)}.fill.critical{fill:var(--crit)}
.mark{stroke-width:2}.mark.warn{stroke:var(--warn)}.mark.crit{stroke:var(--crit)}
figure{margin:0}
#chart{height:200px}
#chart text{fill:var(--muted);font-size:11px}
#chart-grid .grid{stroke:var(--line)}
#chart-grid .mark{stroke-dasharray:4 3;stroke-width:1.5}
#chart-dot{fill:var(--accent)}
#chart-line{fill:none;stroke:var(--accent);stroke-width:2;stroke-linejoin:round}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
caption{text-align:left;color:var(--muted);font-size:.85rem;padding-bottom:.3rem}
th,td{padding:.35rem .5rem;border-bottom:1px solid var(--line);text-align:right}
th:nth-child(2),td:nth-child(2){text-align:left}
#error{color:var(--crit);font-weight:600}
</style>
</head>
<body>
<main>
<header>
<h1>FitFlix memory</h1>
<p>Status: <strong id="status" class="status">LOADING</strong></p>
</header>
<p id="error" aria-live="polite"></p>
<section aria-labelledby="h-usage">
<h2 id="h-usage">Container usage</h2>
<dl class="cards">
<div><dt>Used</dt><dd><span id="used-mb">–</span> MB</dd></div>
<div><dt>Limit</dt><dd><span id="limit-mb">–</span> MB</dd></div>
<div><dt>Usage</dt><dd><span id="usage-percent">–</span> %</dd></div>
<div><dt>Limit source</dt><dd id="limit-source">–</dd></div>
<div><dt>Memory profile</dt><dd id="memory-profile">–</dd></div>
</dl>
<svg id="bar" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label="Usage bar: waiting for data">
<rect class="track" width="100" height="10"/>
<rect id="bar-zone-warn" class="zone warn" height="10" width="0"/>
<rect id="bar-zone-crit" class="zone crit" height="10" width="0"/>
<rect id="bar-fill" class="fill" y="2.5" width="0" height="5"/>
<line id="bar-warn" class="mark warn" y1="0" y2="10" vector-effect="non-scaling-stroke"/>
<line id="bar-crit" class="mark crit" y1="0" y2="10" vector-effect="non-scaling-stroke"/>
</svg>
<p class="muted" id="thresholds">Warning and critical marks appear with the first sample.</p>
<figure>
<svg id="chart" role="img" aria-label="Usage chart: waiting for the first sample">
<g id="chart-grid"></g>
<polyline id="chart-line" points=""/>
<circle id="chart-dot" r="0"/>
</svg>
<figcaption id="chart-caption">Container usage, last 10 minutes, updated every 3 s.</figcaption>
</figure>
</section>
<section aria-labelledby="h-processes">
<h2 id="h-processes">Processes</h2>
<div class="scroll"><table>
<caption>Memory per gunicorn process, in MB. PSS sums to what the service holds;
USS is what a recycle gives back.</caption>
<thead><tr><th scope="col">PID</th><th scope="col">Role</th>
<th scope="col">RSS</th><th scope="col">PSS</th><th scope="col">USS</th></tr></thead>
<tbody id="processes"></tbody>
</table></div>
</section>
<section aria-labelledby="h-recycles">
<h2 id="h-recycles">Worker recycles</h2>
<dl class="cards" id="recycles"></dl>
</section>
<section aria-labelledby="h-growth">
<h2 id="h-growth">What grew</h2>
<p class="muted">The last workers recycled for memory: the allocation sites still alive, and how much of
the growth Python objects hold (the rest is native memory or fragmentation).</p>
<ol id="growth"></ol>
</section>
<section aria-labelledby="h-cgroup">
<h2 id="h-cgroup">cgroup</h2>
<dl class="pairs">
<dt>Version, path</dt><dd id="cgroup">–</dd>
<dt>cgroup limit</dt><dd id="cgroup-limit">–</dd>
<dt>Charged (usage)</dt><dd id="cgroup-usage">–</dd>
<dt>Working set</dt><dd id="working-set">–</dd>
<dt>Counted as used</dt><dd id="used-source">–</dd>
<dt>Not the service's (neighbours)</dt><dd id="neighbours">–</dd>
<dt>OOM kills</dt><dd id="oom-kills">–</dd>
<dt>Memory events (v2)</dt><dd id="memory-events">–</dd>
<dt>Memory pressure (v2: stalled)</dt><dd id="memory-pressure">–</dd>
<dt>Service PSS</dt><dd id="service-pss">–</dd>
</dl>
<p class="muted" id="updated"></p>
</section>
</main>
<script nonce="__FITFLIX_NONCE__">
"use strict";
(() => {
const WINDOW_MS = 600000, EVERY_MS = 3000, MIB = 1048576, NS = "http://www.w3.org/2000/svg";
// Served at /health/memory or at /health (whose JSON is only the status): the figures live under .../memory.
const BASE = location.pathname.replace(/[/]+$/, "");
const SOURCE = BASE.endsWith("/memory") ? location.pathname : BASE + "/memory";
const $ = (id) => document.getElementById(id);
const samples = [];
let latest = null;
const mb = (bytes) => (bytes == null ? null : bytes / MIB);
const fmt = (value, digits = 0) => (value == null || !isFinite(value) ? "–" : value.toFixed(digits));
const put = (id, value) => { if ($(id).textContent !== value) $(id).textContent = value; };
const mbText = (bytes) => (bytes == null ? "none" : fmt(mb(bytes)) + " MB");
const usedBytes = (doc) => doc.container.usedBytes ?? (doc.memory.rss == null ? null : doc.memory.rss * MIB);
function usedPercent(doc) {
  const used = usedBytes(doc), limit = doc.container.limitBytes;
  return used != null && limit ? (100 * used) / limit : doc.memory.usage;
}
function el(name, attrs, parent, text) {
  const node = document.createElementNS(NS, name);
  for (const key in attrs) node.setAttribute(key, attrs[key]);
  if (text != null) node.textContent = text;
  return parent.appendChild(node);
}
function niceCeil(value) {
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((f) => f * step).find((v) => v >= value);
}

function show(doc) {
  const c = doc.container, m = doc.memory, t = doc.thresholds, status = doc.status;
  const level = status.toLowerCase(), pct = usedPercent(doc);
  put("status", status);
  $("status").className = "status " + level;
  document.title = status + " · FitFlix memory";
  put("used-mb", fmt(mb(usedBytes(doc))));
  put("limit-mb", fmt(m.limit));
  put("usage-percent", fmt(pct, 1));
  put("limit-source", m.limitSource ?? c.limitSource ?? "–");
  put("memory-profile", doc.profile ? doc.profile.name : "–");
  $("bar-fill").setAttribute("width", Math.min(Math.max(pct, 0), 100));
  $("bar-fill").setAttribute("class", "fill " + level);
  for (const [id, x] of [["bar-warn", t.warnPercent], ["bar-crit", t.criticalPercent]]) {
    $(id).setAttribute("x1", x);
    $(id).setAttribute("x2", x);
  }
  $("bar-zone-warn").setAttribute("x", t.warnPercent);
  $("bar-zone-warn").setAttribute("width", Math.max(t.criticalPercent - t.warnPercent, 0));
  $("bar-zone-crit").setAttribute("x", t.criticalPercent);
  $("bar-zone-crit").setAttribute("width", Math.max(100 - t.criticalPercent, 0));
  const marks = `warning at ${t.warnPercent}%`, critical = `critical at ${t.criticalPercent}%`;
  $("bar").setAttribute("aria-label", `${fmt(pct, 1)}% of the limit used; ${marks}, ${critical}`);
  put("thresholds", `Warning at ${t.warnPercent}% (${fmt(mb(t.warnBytes))} MB), `
    + `critical at ${t.criticalPercent}% (${fmt(mb(t.criticalBytes))} MB).`);
  put("cgroup", c.cgroupVersion == null ? "none found" : `v${c.cgroupVersion} ${c.cgroupPath}`);
  put("cgroup-limit", c.cgroupLimitBytes == null ? "none (unlimited)"
    : mbText(c.cgroupLimitBytes) + (c.limitFile ? ` (${c.limitFile})` : ""));
  put("cgroup-usage", mbText(c.usageBytes));
  put("working-set", mbText(c.workingSetBytes));
  put("used-source", c.usedSource ?? "–");
  put("neighbours", mbText(c.neighboursBytes));
  put("oom-kills", c.oomKills == null ? "–" : String(c.oomKills));
  put("memory-events", c.events == null ? "– (cgroup v2 only)"
    : Object.entries(c.events).map(([name, count]) => `${name} ${count}`).join(", "));
  const stall = (line) => `${fmt(line.avg10, 2)}% of the last 10 s, ${fmt(line.totalUs / 1e6, 1)} s in all`;
  put("memory-pressure", c.pressure == null ? "– (cgroup v2 only)" : ["some", "full"]
    .filter((kind) => c.pressure[kind]).map((kind) => `${kind}: ${stall(c.pressure[kind])}`).join("; "));
  put("service-pss", mbText(doc.servicePssBytes));
  put("updated", "Updated " + new Date(doc.timestamp).toLocaleTimeString());
  const rows = doc.processes.map((p) => {
    const row = document.createElement("tr");
    row.dataset.pid = p.pid;
    const sizes = [p.rssBytes, p.pssBytes, p.ussBytes].map((bytes) => fmt(mb(bytes), 1));
    for (const value of [String(p.pid), p.role, ...sizes]) {
      row.appendChild(document.createElement("td")).textContent = value;
    }
    return row;
  });
  $("processes").replaceChildren(...rows);
  const order = ["memory", "max_requests", "timeout", "guard", "backstop"];
  const rank = (reason) => order.indexOf(reason) + 1 || 99;
  const reasons = Object.entries(doc.recycles ?? {}).sort(([a], [b]) => rank(a) - rank(b));
  const recycles = reasons.map(([reason, count]) => {
    const box = document.createElement("div");
    box.appendChild(document.createElement("dt")).textContent = reason.replace("_", " ");
    const dd = box.appendChild(document.createElement("dd"));
    dd.dataset.reason = reason;
    dd.textContent = count;
    return box;
  });
  if (!recycles.length) {
    const box = document.createElement("div");
    box.appendChild(document.createElement("dt")).textContent = "recycles";
    box.appendChild(document.createElement("dd")).textContent = "not tracked";
    recycles.push(box);
  }
  $("recycles").replaceChildren(...recycles);
  const reports = (doc.growth && doc.growth.last) || [];
  const items = reports.map((r) => {
    const item = document.createElement("li");
    item.dataset.pid = r.pid;
    const parts = [`worker ${r.pid}: ${fmt(mb(r.ussBytes))} MB, +${fmt(mb(r.growthSinceBootBytes))} since boot`];
    if (r.pythonSharePercent !== null) {
      parts.push(`Python holds ${Math.round(r.pythonSharePercent)}% of the growth since tracing began`);
    }
    if (r.verdict === "native") parts.push("the rest is native memory or fragmentation");
    const site = r.sites[0];
    if (site) parts.push(`top site ${site.where} ${fmt(site.kb / 1024, 1)} MB x${site.count}`);
    const type = r.types[0];
    if (type) parts.push(`top type ${type.type} +${type.countGrowth}`);
    item.textContent = parts.join("; ");
    return item;
  });
  if (!items.length) {
    items.push(document.createElement("li"));
    items[0].textContent = doc.growth ? "no worker recycled for memory yet" : "not tracked";
  }
  $("growth").replaceChildren(...items);
}

function draw() {
  if (!latest || !samples.length) return;
  const chart = $("chart"), grid = $("chart-grid");
  const W = Math.max(chart.clientWidth, 240), H = 200, L = 56, R = 12, T = 10, B = 22;
  const limitMb = mb(latest.container.limitBytes) || latest.memory.limit || 1;
  const used = samples.map((s) => s.usedMb);
  const top = Math.min(limitMb, niceCeil(Math.max(...used, 1) * 1.25));
  const now = Date.now();
  const x = (t) => L + ((t - now + WINDOW_MS) / WINDOW_MS) * (W - L - R);
  const y = (v) => T + (1 - Math.min(v, top) / top) * (H - T - B);
  chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
  grid.replaceChildren();
  for (const v of [0, top / 2, top]) {
    el("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }, grid);
    el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, grid, fmt(v) + " MB");
  }
  const t = latest.thresholds;
  for (const [percent, cls, name] of [[t.warnPercent, "warn", "warning"], [t.criticalPercent, "crit", "critical"]]) {
    const v = (limitMb * percent) / 100;
    if (v > top) continue;
    el("line", { class: "mark " + cls, x1: L, x2: W - R, y1: y(v), y2: y(v) }, grid);
    el("text", { x: L + 4, y: y(v) - 4 }, grid, name);
  }
  const ticks = [[now - WINDOW_MS, "10 min ago", "start"], [now - WINDOW_MS / 2, "5 min ago", "middle"],
    [now, "now", "end"]];
  for (const [at, label, anchor] of ticks) {
    el("text", { x: x(at), y: H - 6, "text-anchor": anchor }, grid, label);
  }
  const points = samples.map((s) => [x(s.t).toFixed(1), y(s.usedMb).toFixed(1)]);
  $("chart-line").setAttribute("points", points.join(" "));
  const [cx, cy] = points[points.length - 1];
  for (const [key, value] of [["cx", cx], ["cy", cy], ["r", 3]]) $("chart-dot").setAttribute(key, value);
  const last = used[used.length - 1], minutes = Math.max(1, Math.round((now - samples[0].t) / 60000));
  chart.setAttribute("aria-label", `Container usage over the last ${minutes} min: now ${fmt(last)} MB`
    + ` of ${fmt(limitMb)} MB, lowest ${fmt(Math.min(...used))} MB, highest ${fmt(Math.max(...used))} MB.`);
  put("chart-caption", "Container usage, last 10 minutes, updated every 3 s; "
    + `scale 0–${fmt(top)} MB of a ${fmt(limitMb)} MB limit.`);
}

async function update() {
  try {
    const response = await fetch(SOURCE, {
      headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store",
    });
    // A 503 on CRITICAL still carries the document.
    const doc = await response.json().catch(() => null);
    if (!doc || !doc.memory || !doc.container) throw new Error("HTTP " + response.status);
    latest = doc;
    const usedNow = mb(usedBytes(doc)), now = Date.now();
    if (usedNow != null) samples.push({ t: now, usedMb: usedNow });
    while (samples.length && samples[0].t < now - WINDOW_MS) samples.shift();
    show(doc);
    draw();
    put("error", "");
  } catch (error) {
    put("error", "Update failed (" + error.message + "); retrying every 3 s.");
  }
  setTimeout(update, EVERY_MS);
}
window.addEventListener("resize", draw);
update();
})();
</script>
</body>
</html>
"""


def render_memory_page(nonce: str) -> str:
    """The whole HTML document, with `nonce` on its one <style> and one <script>."""
    if not _NONCE.fullmatch(nonce):
        raise ValueError(f"a CSP nonce must be a base64 value, got {nonce!r}")
    return MEMORY_PAGE.replace(_NONCE_PLACEHOLDER, nonce)
