// qkdsim dashboard: live pools, links, events and outages from /api/stream; outages started
// and ended through /api/outages. No libraries: the charts are drawn on canvases.
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
const headers = token ? { "Authorization": "Bearer " + token } : {};
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"];
const EXTRA = { degrade: "fraction", qber_rise: "qber", latency: "delay" };
let targets = null;
let last = null;

function drawLines(canvas, series, yLabel) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 60, B = 24;
  ctx.clearRect(0, 0, W, H);
  const all = series.flatMap((s) => s.points);
  if (!all.length) { ctx.fillText("no samples yet", L, H / 2); return; }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
  const y1 = Math.max(...all.map((p) => p[1]), 1);
  const x = (t) => L + (W - L - 10) * (t - t0) / (t1 - t0);
  const y = (v) => H - B - (H - B - 10) * v / y1;
  ctx.strokeStyle = "#999"; ctx.fillStyle = "#444"; ctx.font = "11px sans-serif";
  ctx.beginPath(); ctx.moveTo(L, 10); ctx.lineTo(L, H - B); ctx.lineTo(W - 10, H - B); ctx.stroke();
  ctx.fillText(String(Math.round(y1)), 4, 14); ctx.fillText("0", 4, H - B);
  ctx.fillText(yLabel, 4, H / 2);
  ctx.fillText(fmt(t0), L, H - 6); ctx.fillText(fmt(t1), W - 70, H - 6);
  for (const s of series) {
    ctx.strokeStyle = s.colour; ctx.lineWidth = s.width || 1.5; ctx.beginPath();
    s.points.forEach((p, i) => (i ? ctx.lineTo(x(p[0]), y(p[1])) : ctx.moveTo(x(p[0]), y(p[1]))));
    ctx.stroke();
  }
}

function fmt(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return (h ? h + "h" : "") + (m ? m + "m" : "") + sec + "s";
}

function render(snap) {
  last = snap;
  document.getElementById("clock").textContent = "simulated time " + fmt(snap.now_s) + " \u00b7 " + snap.seq + " rows";
  let series = [];
  const legend = document.getElementById("pool-legend");
  if (snap.aggregate) {
    const a = snap.aggregate;
    series = [["lowest", "min", "#d62728"], ["median", "median", "#222"], ["highest", "max", "#2ca02c"]]
      .map(([label, key, colour]) => ({ label, colour, points: a.map((r) => [r.t_s, r[key]]) }));
    document.getElementById("pool-note").textContent = snap.pool_count + " pools: lowest, median and highest";
  } else {
    series = Object.entries(snap.pools).map(([pool, points], i) => ({ label: pool, colour: COLOURS[i % COLOURS.length], points }));
    document.getElementById("pool-note").textContent = snap.pool_count + " pools";
  }
  legend.innerHTML = series.map((s) => `<span><i style="background:${s.colour}"></i>${s.label}</span>`).join("");
  drawLines(document.getElementById("pools"), series, "keys");
  document.getElementById("pools").dataset.points = String(series.reduce((n, s) => n + s.points.length, 0));
  const links = Object.entries(snap.links);
  drawLines(document.getElementById("links"),
            links.map(([link, v], i) => ({ label: link, colour: COLOURS[i % COLOURS.length], points: v.history })), "bits");
  document.querySelector("#link-table tbody").innerHTML = links.map(([link, v]) =>
    `<tr><td>${link}</td><td>${v.state || ""}</td><td>${v.history.length ? Math.round(v.history[v.history.length - 1][1]) : ""}</td></tr>`).join("");
  const list = document.getElementById("events");
  for (const e of snap.events) {
    const li = document.createElement("li");
    li.className = e.kind;
    li.textContent = `${fmt(e.t_s)} ${e.kind} ${e.node} ${JSON.stringify(e.data)}`;
    list.prepend(li);
  }
  while (list.children.length > 200) list.removeChild(list.lastChild);
  document.getElementById("counts").textContent = Object.entries(snap.counts).map(([k, n]) => `${k} ${n}`).join(" \u00b7 ");
  drawTimeline(snap);
}

function drawTimeline(snap) {
  const canvas = document.getElementById("timeline"), ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  const end = Math.max(snap.now_s, 1);
  snap.outages.forEach((o, i) => {
    const row = i % 4, x0 = 10 + (W - 20) * o.start_s / end, x1 = 10 + (W - 20) * (o.end_s ?? end) / end;
    ctx.fillStyle = o.end_s === null ? "#d62728" : "#f0a050";
    ctx.fillRect(x0, 5 + row * 20, Math.max(x1 - x0, 2), 16);
    ctx.fillStyle = "#222"; ctx.font = "11px sans-serif";
    ctx.fillText(`${o.outage} ${o.target}`, x0 + 3, 17 + row * 20);
  });
  document.getElementById("timeline-list").innerHTML = snap.outages.map((o) =>
    `<li data-target="${o.target}" data-outage="${o.outage}" data-open="${o.end_s === null}">${o.outage} ${o.target}: from ${fmt(o.start_s)} ${o.end_s === null ? "(going on)" : "to " + fmt(o.end_s)}</li>`).join("");
}

async function refreshActive() {
  const reply = await fetch(withToken("api/outages"), { headers });
  const body = await reply.json();
  document.getElementById("active").innerHTML = body.active.map((o) =>
    `<li>${o.id}: ${o.kind} ${o.target || ""} <button data-id="${o.id}" class="end">End now</button></li>`).join("");
  for (const button of document.querySelectorAll("button.end")) {
    button.onclick = async () => {
      await fetch(withToken("api/outages/" + encodeURIComponent(button.dataset.id)), { method: "DELETE", headers });
      refreshActive();
    };
  }
}

function fillTargets() {
  const kind = document.getElementById("kind").value;
  const kinds = targets.kinds[kind] || [];
  const options = kinds.flatMap((k) => (k === null ? [] : targets[k] || []));
  document.getElementById("target").innerHTML = options.map((t) => `<option>${t}</option>`).join("");
  document.getElementById("target").disabled = !options.length;
  const extra = EXTRA[kind];
  document.getElementById("extra-label").style.display = extra ? "" : "none";
  document.getElementById("extra-label").firstChild.textContent = (extra || "value") + " ";
}

async function start() {
  targets = await (await fetch(withToken("api/targets"), { headers })).json();
  document.getElementById("scenario").textContent = targets.scenario;
  document.title = "qkdsim " + targets.scenario;
  const kind = document.getElementById("kind");
  kind.innerHTML = Object.keys(targets.kinds).filter((k) => k !== "partition").map((k) => `<option>${k}</option>`).join("");
  kind.onchange = fillTargets;
  fillTargets();
  document.getElementById("inject").onsubmit = async (event) => {
    event.preventDefault();
    const spec = { kind: kind.value };
    const target = document.getElementById("target").value;
    if (target) spec.target = target;
    const duration = document.getElementById("for").value.trim();
    if (duration) spec.for = duration;
    const extra = EXTRA[kind.value];
    if (extra) {
      const raw = document.getElementById("extra").value.trim();
      spec[extra] = extra === "delay" ? raw : Number(raw);
    }
    const reply = await fetch(withToken("api/outages"), { method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(spec) });
    const body = await reply.json();
    document.getElementById("inject-error").textContent = reply.ok ? "" : `${body.field}: ${body.message}`;
    refreshActive();
  };
  const stream = new EventSource(withToken("api/stream?since=0"));
  stream.onmessage = (message) => render(JSON.parse(message.data));
  refreshActive();
  setInterval(refreshActive, 3000);
}

start();
