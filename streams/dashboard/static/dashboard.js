// shardshape dashboard: polls the worker's JSON and draws tables and SVG charts. No libraries,
// no network beyond this worker.
"use strict";

const STATE_URL = "/dashboard/api/state";
const POLL_MS = 2000;
const COLORS = ["#2f5fd0", "#d9480f", "#2b8a3e", "#9c36b5", "#e8590c", "#0c8599", "#c2255c",
  "#5c940d", "#862e9c", "#495057"];

const byId = (id) => document.getElementById(id);
const colour = (shard) => COLORS[shard % COLORS.length];

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1000) return `${value.toFixed(value < 10 ? 1 : 0)} ms`;
  if (value < 120000) return `${(value / 1000).toFixed(1)} s`;
  return `${(value / 60000).toFixed(1)} min`;
}

function num(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  return value.toLocaleString(undefined, { maximumFractionDigits: digits });
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

function blocks(held) {
  const parts = Object.entries(held || {}).filter(([, n]) => n > 0);
  return parts.length ? parts.map(([kind, n]) => `${n} × ${esc(kind)}`).join(", ") : "–";
}

// A line chart as SVG markup. series: [{name, colour, points: [[t, value], ...], limit}].
function chart(testid, series, { log = false, format = num } = {}) {
  const W = 480, H = 190, L = 52, R = 10, T = 10, B = 22;
  const points = series.flatMap((s) => s.points.filter(([, v]) => v !== null && v > (log ? 0 : -1)));
  const count = points.length;
  const head = `<svg class="chart" viewBox="0 0 ${W} ${H}" data-testid="${testid}" ` +
    `data-points="${count}" role="img">`;
  if (!count) {
    return `${head}<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no closed window yet` +
      `</text></svg>`;
  }
  const ts = points.map(([t]) => t);
  let t0 = Math.min(...ts), t1 = Math.max(...ts);
  if (t1 - t0 < 1) t0 = t1 - 10;
  const values = points.map(([, v]) => v)
    .concat(series.map((s) => s.limit).filter((v) => v !== null && v !== undefined));
  const f = log ? Math.log10 : (v) => v;
  let v0 = log ? f(Math.min(...values) * 0.8) : 0;
  let v1 = log ? f(Math.max(...values) * 1.25) : Math.max(...values) * 1.1;
  if (v1 - v0 < 1e-9) v1 = v0 + 1;
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (v) => T + (H - T - B) * (1 - (f(v) - v0) / (v1 - v0));
  let svg = head;
  for (let i = 0; i <= 4; i += 1) {
    const level = v0 + (v1 - v0) * i / 4;
    const value = log ? 10 ** level : level;
    const py = T + (H - T - B) * (1 - i / 4);
    svg += `<line class="grid" x1="${L}" x2="${W - R}" y1="${py}" y2="${py}"/>` +
      `<text x="${L - 4}" y="${py + 3}" text-anchor="end">${esc(format(value))}</text>`;
  }
  svg += `<text x="${L}" y="${H - 6}">${clock(t0)}</text>` +
    `<text x="${W - R}" y="${H - 6}" text-anchor="end">${clock(t1)}</text>`;
  for (const s of series) {
    if (s.limit !== null && s.limit !== undefined) {
      svg += `<line class="slo" stroke="${s.colour}" x1="${L}" x2="${W - R}" ` +
        `y1="${y(s.limit)}" y2="${y(s.limit)}"><title>${esc(s.name)} SLO</title></line>`;
    }
    const drawn = s.points.filter(([, v]) => v !== null && v > (log ? 0 : -1));
    if (drawn.length === 1) {
      const [[t, v]] = drawn;
      svg += `<circle cx="${x(t)}" cy="${y(v)}" r="3" fill="${s.colour}"/>`;
    } else if (drawn.length > 1) {
      const line = drawn.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      svg += `<polyline stroke="${s.colour}" points="${line}"><title>${esc(s.name)}</title>` +
        `</polyline>`;
    }
  }
  return `${svg}</svg>`;
}

function shardRow(service, shard) {
  const latest = shard.latest || {};
  const p99 = latest.p99_ms ?? null;
  const slo = shard.slo_p99_ms;
  const verdict = p99 === null || slo === null ? "" : (p99 <= slo ? "ok" : "bad");
  const mark = verdict === "ok" ? " ✓" : verdict === "bad" ? " ✗" : "";
  const summary = shard.quarantine
    ? `quarantine<span class="tag">${shard.keys_quarantined} key(s)</span>`
    : esc(shard.summary || "(not in the snapshot)");
  return `<tr data-testid="shard-row" data-service="${esc(service)}" data-shard="${shard.shard}">` +
    `<td><span class="swatch" style="background:${colour(shard.shard)}"></span>${shard.shard}</td>` +
    `<td>${summary}</td>` +
    `<td class="num">${num(latest.rps)}</td>` +
    `<td class="num">${ms(latest.p50_ms ?? null)}</td>` +
    `<td class="num ${verdict}">${ms(p99)}${mark}</td>` +
    `<td class="num">${ms(slo)}</td>` +
    `<td class="num">${latest.error_rate ? (100 * latest.error_rate).toFixed(1) + "%" : "–"}</td>` +
    `<td>${blocks(shard.blocks)}</td>` +
    `<td class="num">${num(shard.forecast_rps)}</td></tr>`;
}

function experimentsTable(experiments) {
  if (!experiments.length) return `<p class="empty">No experiment in this plan.</p>`;
  const rows = experiments.map((e) => `<tr data-testid="experiment"><td>${esc(e.id)}</td>` +
    `<td>${e.shard}</td><td>${esc(e.status)}</td>` +
    `<td>${e.arms.map((a) => `${esc(a.name)} ${(100 * a.weight).toFixed(0)}%`).join(", ")}</td>` +
    `<td class="num">${num(Object.values(e.requests).reduce((a, b) => a + b, 0), 0)}</td>` +
    `<td>${esc(e.decision || e.reason)}</td></tr>`).join("");
  return `<table><tr><th>experiment</th><th>shard</th><th>status</th><th>arms</th>` +
    `<th class="num">requests</th><th>why</th></tr>${rows}</table>`;
}

function serviceSection(doc, service) {
  const name = service.service;
  const plan = service.plan;
  const meta = [
    service.snapshot_version ? `snapshot v${service.snapshot_version}` : "no snapshot yet",
    plan ? `plan v${plan.version} on pool ${esc(plan.pool)}` : "no plan yet",
    plan ? `${plan.replicas.length} replica(s)` : "",
  ].filter(Boolean).join(" · ");
  const rows = service.shards.map((shard) => shardRow(name, shard)).join("");
  const latency = [], rate = [];
  for (const shard of service.shards) {
    const points = doc.series[`${name}|${shard.shard}`] || [];
    const label = `shard ${shard.shard}`;
    latency.push({ name: label, colour: colour(shard.shard), limit: shard.slo_p99_ms,
      points: points.map((p) => [p.t, p.p99_ms]) });
    rate.push({ name: label, colour: colour(shard.shard), points: points.map((p) => [p.t, p.rps]) });
  }
  const keys = service.quarantined_keys.length
    ? `<h3>Quarantined keys</h3><ul data-testid="quarantined">` +
      service.quarantined_keys.map((k) => `<li>${esc(k)}</li>`).join("") + `</ul>`
    : "";
  return `<section class="panel" data-testid="service" data-service="${esc(name)}">` +
    `<div class="service-head"><h2>${esc(name)}</h2><span class="meta">${meta}</span></div>` +
    `<table data-testid="shards"><tr><th>shard</th><th>profile</th><th class="num">req/s</th>` +
    `<th class="num">p50</th><th class="num">p99</th><th class="num">SLO p99</th>` +
    `<th class="num">errors</th><th>blocks</th><th class="num">forecast req/s</th></tr>` +
    `${rows}</table>` +
    `<div class="charts"><div class="chart-box"><div class="title">p99 latency per shard ` +
    `(dashed: SLO; 10 s windows, log scale)</div>${chart(`chart-latency-${name}`, latency,
      { log: true, format: ms })}</div>` +
    `<div class="chart-box"><div class="title">throughput per shard, req/s</div>` +
    `${chart(`chart-throughput-${name}`, rate)}</div></div>` +
    `<h3>Plan${plan ? ` v${plan.version}` : ""}</h3>` +
    (plan ? `<pre class="rationale" data-testid="plan" data-version="${plan.version}">` +
      `${esc(plan.rationale)}</pre>` : `<p class="empty">No plan yet.</p>`) +
    `<h3>Experiments</h3>${experimentsTable(service.experiments)}${keys}</section>`;
}

function renderPipeline(doc) {
  const p = doc.pipeline;
  const chips = [
    `events <b>${num(p.events || 0, 0)}</b>`,
    `<b>${num(p.events_per_s || 0, 0)}</b>/s`,
    `DLQ <b>${num(p.dead_letters || 0, 0)}</b>`,
    `lag <b>${num(p.lag || 0, 0)}</b>`,
    ...doc.services.map((s) => `${esc(s.service)}: snapshot <b>v${s.snapshot_version ?? "–"}</b>` +
      ` · plan <b>v${s.plan ? s.plan.version : "–"}</b>`),
  ];
  byId("pipeline").innerHTML = chips.map((c) => `<span class="chip">${c}</span>`).join("");
}

function renderPools(doc) {
  const pools = Object.entries(doc.pools);
  if (!pools.length) return;
  const services = [...new Set(pools.flatMap(([, kinds]) =>
    Object.values(kinds).flatMap((u) => Object.keys(u.allocated))))].sort();
  let html = "";
  for (const [pool, kinds] of pools) {
    html += `<h3>pool ${esc(pool)}</h3>`;
    for (const [kind, usage] of Object.entries(kinds)) {
      const used = Object.values(usage.allocated).reduce((a, b) => a + b, 0);
      const total = usage.capacity ?? Math.max(used, 1);
      const segments = services.map((svc, i) => {
        const n = usage.allocated[svc] || 0;
        return n ? `<span title="${esc(svc)}: ${n}" style="width:${100 * n / total}%;` +
          `background:${COLORS[i % COLORS.length]}"></span>` : "";
      }).join("");
      html += `<div class="pool-row" data-testid="pool-usage"><span>${esc(kind)}</span>` +
        `<div class="bar">${segments}</div>` +
        `<span>${used} / ${usage.capacity ?? "?"} blocks</span></div>`;
    }
  }
  if (services.length) {
    html += `<div>${services.map((svc, i) => `<span class="swatch" ` +
      `style="background:${COLORS[i % COLORS.length]}"></span>${esc(svc)}`).join(" &nbsp; ")}</div>`;
  }
  byId("pools").innerHTML = html;
}

function renderEvents(doc) {
  byId("events").innerHTML = doc.events.slice().reverse().map((e) =>
    `<li><time>${clock(e.ts)}</time><span class="kind ${esc(e.kind)}">${esc(e.kind)}</span>` +
    `${esc(e.text)}</li>`).join("");
}

function render(doc) {
  renderPipeline(doc);
  if (doc.services.length) {
    byId("services").innerHTML = doc.services.map((s) => serviceSection(doc, s)).join("");
  }
  renderPools(doc);
  renderEvents(doc);
}

async function poll() {
  const status = byId("status");
  try {
    const response = await fetch(STATE_URL, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    status.textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
    status.classList.remove("stale");
  } catch (error) {
    status.textContent = `worker not answering (${error.message}); retrying`;
    status.classList.add("stale");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
