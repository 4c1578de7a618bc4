// tcflow dashboard. Asks `tcflow serve` for its history once (GET /history:
// the last 15 minutes, kept by the server, so a reload starts full), then
// for the new points every second. IP bytes per second, received and sent
// apart, protocols stacked, IPv4 and IPv6 in two shades. No libraries.
"use strict";

const POLL_MS = 1000;
const WINDOW_S = 900;
const PROTOS = [["TCP", "TCP"], ["UDP", "UDP"], ["RAW", "other"]];
const FAMS = [["V4", "ipv4", "IPv4"], ["V6", "ipv6", "IPv6"]];
const COLORS = {TCP: ["#1f6fb4", "#8fbce6"], UDP: ["#e8710a", "#f9bb7d"], RAW: ["#2b9a3e", "#9fd89b"]};
const DIRS = {recv: "RECV", send: "SEND"};

const $ = (id) => document.getElementById(id);
const state = {
  key: decodeURIComponent(location.hash.slice(1)) || localStorage.getItem("tcflow.key") || "*",
  units: localStorage.getItem("tcflow.units") === "bytes" ? "bytes" : "bits",
  family: "all",
  range: [60, 300, 900].includes(Number(localStorage.getItem("tcflow.range"))) ? Number(localStorage.getItem("tcflow.range")) : 300,
  times: [], series: {}, totals: null, flows: null, interfaces: [], leftOut: 0, kept: true,
  hover: null,       // time under the pointer, or null
  updates: 0,
  drawn: {},         // what each chart drew last: read by the tests
};

// One layer per protocol and family, bottom of the stack first.
function layers(dir) {
  const out = [];
  for (const [p, word] of PROTOS) {
    FAMS.forEach(([v, fam, famWord], i) => {
      if (state.family !== "all" && state.family !== fam) return;
      out.push({name: `L3_${p}_${DIRS[dir]}_${v}`, label: `${word} ${famWord}`, color: COLORS[p][i]});
    });
  }
  return out;
}

// -- numbers -------------------------------------------------------------------
const PREFIX = ["", "k", "M", "G", "T", "P"];

function scaled(bytesPerS) { return state.units === "bits" ? bytesPerS * 8 : bytesPerS; }

function fmtRate(v, step) {  // v already in display units
  const unit = state.units === "bits" ? "bit/s" : "B/s";
  if (!v) return `0 ${unit}`;
  let i = 0, ref = Math.max(Math.abs(v), step || 0);
  while (ref >= 1000 && i < PREFIX.length - 1) { v /= 1000; ref /= 1000; if (step) step /= 1000; i++; }
  let digits = 0;
  if (step) { while (digits < 3 && Math.abs(Math.round(step * 10 ** digits) - step * 10 ** digits) > 1e-6) digits++; }
  else digits = i ? 1 : 0;  // as the CLI: 999 B/s, 1.1 kB/s (SI, one decimal)
  return `${v.toFixed(digits)} ${PREFIX[i]}${unit}`;
}

function fmtBytes(b) {
  let i = 0;
  while (b >= 1000 && i < PREFIX.length - 1) { b /= 1000; i++; }
  return i ? `${b.toFixed(1)} ${PREFIX[i]}B` : `${b} B`;
}

// A tick step of 1, 2, 2.5 or 5 times a power of ten giving at most `n` intervals.
function niceStep(max, n) {
  const raw = max / n, mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

const two = (n) => String(n).padStart(2, "0");
function hhmm(t) { const d = new Date(t * 1000); return `${two(d.getHours())}:${two(d.getMinutes())}`; }
function hhmmss(t) { const d = new Date(t * 1000); return `${hhmm(t)}:${two(d.getSeconds())}`; }

// -- drawing -------------------------------------------------------------------
function draw(dir) {
  const fig = $(dir), canvas = fig.querySelector("canvas");
  const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = "11px system-ui, sans-serif";

  const ls = layers(dir), times = state.times, n = times.length;
  const end = n ? times[n - 1] : Date.now() / 1000, start = end - state.range;
  const first = Math.max(0, times.findIndex(t => t >= start - 1));
  // stacked tops, per point; null where the interface was not counted
  const tops = ls.map(() => new Array(n));
  let max = 0;
  for (let k = 0; k < n; k++) {
    if (k < first) { ls.forEach((l, j) => { tops[j][k] = null; }); continue; }
    let acc = 0, gap = true;
    ls.forEach((l, j) => {
      const v = (state.series[l.name] || [])[k];
      if (v !== null && v !== undefined) { gap = false; acc += scaled(v); }
      tops[j][k] = acc;
    });
    if (gap) ls.forEach((l, j) => { tops[j][k] = null; });
    if (!gap && acc > max) max = acc;
  }
  const step = max > 0 ? niceStep(max, 4) : 0;
  const top = max > 0 ? Math.ceil(max / step - 1e-9) * step : 1;
  const yLabels = [];
  for (let v = 0; v <= top + 1e-9 && max > 0; v += step) yLabels.push(fmtRate(v, step));
  if (!yLabels.length) yLabels.push(fmtRate(0));
  const left = Math.max(...yLabels.map(s => g.measureText(s).width)) + 10, right = 6, upper = 6, bottom = 20;
  const pw = w - left - right, ph = h - upper - bottom;
  const X = (t) => left + pw * (t - start) / state.range;
  const Y = (v) => upper + ph - ph * v / top;

  // y grid and labels
  g.strokeStyle = "#e3e6ea"; g.fillStyle = "#5b6472"; g.lineWidth = 1; g.textBaseline = "middle"; g.textAlign = "right";
  yLabels.forEach((s, i) => {
    const y = Math.round(Y(i * step)) + 0.5;
    g.beginPath(); g.moveTo(left, y); g.lineTo(left + pw, y); g.stroke();
    g.fillText(s, left - 6, y);
  });
  // time axis: round instants, as many as fit (seconds shown below a minute apart)
  const every = [10, 15, 20, 30, 60, 120, 300, 600].find(s => pw * s / state.range >= (s < 60 ? 64 : 48)) || 900;
  const xLabels = [];
  g.textAlign = "center"; g.textBaseline = "alphabetic";
  for (let t = Math.ceil(start / every) * every; t <= end; t += every) {
    const x = Math.round(X(t)) + 0.5;
    const s = every < 60 ? hhmmss(t) : hhmm(t), half = g.measureText(s).width / 2;
    g.beginPath(); g.moveTo(x, upper + ph); g.lineTo(x, upper + ph + 4); g.stroke();
    if (x - half > 2 && x + half < w - 2) { g.fillText(s, x, h - 4); xLabels.push(s); }
  }

  // the stack, top layer drawn first (each lower one covers its part); a gap breaks every layer
  g.save(); g.beginPath(); g.rect(left, 0, pw, h); g.clip();
  for (let j = ls.length - 1; j >= 0; j--) {
    g.fillStyle = ls[j].color;
    let k = 0;
    while (k < n) {
      while (k < n && tops[j][k] === null) k++;
      const a = k;
      while (k < n && tops[j][k] !== null) k++;
      if (k - a < 1) continue;
      g.beginPath();
      g.moveTo(X(times[a]), Y(tops[j][a]));
      for (let q = a + 1; q < k; q++) g.lineTo(X(times[q]), Y(tops[j][q]));
      g.lineTo(X(times[k - 1]), Y(0)); g.lineTo(X(times[a]), Y(0)); g.closePath(); g.fill();
    }
  }
  g.restore();
  if (max === 0) {
    g.fillStyle = "#9aa1ab"; g.textAlign = "center"; g.textBaseline = "middle";
    g.fillText(n > 1 ? "no IP traffic in this window" : "waiting for the first points…", left + pw / 2, upper + ph / 2);
  }
  // the hovered instant
  const tip = fig.querySelector(".tip");
  const k = hoverIndex(first);
  if (k >= 0) {
    const x = Math.round(X(times[k])) + 0.5;
    g.strokeStyle = "#1d2430"; g.beginPath(); g.moveTo(x, upper); g.lineTo(x, upper + ph); g.stroke();
    const rows = ls.slice().reverse().map(l => {
      const v = (state.series[l.name] || [])[k];
      return `<tr><td><i style="background:${l.color}"></i>${l.label}</td><td>${v === null ? "–" : fmtRate(scaled(v))}</td></tr>`;
    }).join("");
    const total = tops.length && tops[ls.length - 1][k] !== null ? fmtRate(tops[ls.length - 1][k]) : "not counted";
    tip.innerHTML = `<b>${hhmmss(times[k])}</b> · ${total}<table>${rows}</table>`;
    tip.style.display = "block";
    const tw = tip.offsetWidth;
    tip.style.left = `${Math.max(0, Math.min(w - tw, x + 12 > w - tw ? x - tw - 12 : x + 12))}px`;
    tip.style.top = "8px";
  } else {
    tip.style.display = "none";
  }

  // legend: the current rate of each layer; the caption: their sum
  const last = n - 1;
  fig.querySelector(".legend").replaceChildren(...ls.map(l => {
    const v = last >= 0 ? (state.series[l.name] || [])[last] : null;
    const span = document.createElement("span");
    const sw = document.createElement("i");
    sw.style.background = l.color;
    span.append(sw, `${l.label} ${v === null || v === undefined ? "–" : fmtRate(scaled(v))}`);
    if (!v) span.className = "zero";
    return span;
  }));
  const now = last >= 0 && tops.length ? tops[ls.length - 1][last] : null;
  fig.querySelector(".now").textContent = now === null ? "" : fmtRate(now);
  state.drawn[dir] = {yLabels, xLabels, max, points: n, layers: ls.map(l => l.label), plot: [left, upper, pw, ph]};
}

function hoverIndex(first) {  // the point nearest the pointer, if one is within a few seconds
  if (state.hover === null || !state.times.length) return -1;
  let best = -1, bestD = Infinity;
  state.times.forEach((t, k) => { const d = Math.abs(t - state.hover); if (k >= first && d < bestD) { bestD = d; best = k; } });
  return bestD <= Math.max(3, state.range / 150) ? best : -1;
}

function totals() {
  // Two small tables, "now" and "since attach": side by side when wide, one under the other on a phone.
  const t = state.totals, last = state.times.length - 1;
  const rate = (name) => { const v = last >= 0 ? (state.series[name] || [])[last] : null; return v === null || v === undefined ? null : v; };
  const now = [], since = [];
  const sum = {rr: 0, sr: 0, rt: 0, st: 0};
  for (const [p, word] of PROTOS) {
    for (const [v, fam, famWord] of FAMS) {
      if (state.family !== "all" && state.family !== fam) continue;
      const rn = `L3_${p}_RECV_${v}`, sn = `L3_${p}_SEND_${v}`, rr = rate(rn), sr = rate(sn);
      sum.rr += rr || 0; sum.sr += sr || 0;
      now.push([`${word} ${famWord}`, rr === null ? "–" : fmtRate(scaled(rr)), sr === null ? "–" : fmtRate(scaled(sr))]);
      if (t) { sum.rt += t.bytes[rn]; sum.st += t.bytes[sn]; since.push([`${word} ${famWord}`, fmtBytes(t.bytes[rn]), fmtBytes(t.bytes[sn])]); }
    }
  }
  now.push(["All", fmtRate(scaled(sum.rr)), fmtRate(scaled(sum.sr))]);
  if (t) since.push(["All", fmtBytes(sum.rt), fmtBytes(sum.st)]);
  fill($("now"), ["Now", "Received", "Sent"], now);
  fill($("since"), ["Since attach", "Received", "Sent"], since);
}

function fill(table, head, rows) {
  table.replaceChildren();
  for (const [tag, cells] of [["th", head], ...rows.map(r => ["td", r])]) {
    const tr = document.createElement("tr");
    cells.forEach(c => { const td = document.createElement(tag); td.textContent = c; tr.appendChild(td); });
    table.appendChild(tr);
  }
}

function endpoint(e) {
  if (e.port === null) return e.address;
  return e.address.includes(":") ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

// serve --flows: the busiest flows of what is picked (none: the section stays hidden)
function flowTable() {
  const sec = $("flows"), fl = state.flows;
  sec.hidden = !Array.isArray(fl);
  if (sec.hidden) return;
  const all = state.key === "*";
  // on a phone, one cell says which flow (interface, protocol, both ends, a line each): the numbers stay in view
  const narrow = matchMedia("(max-width: 480px)").matches;
  const which = f => [...(all ? [f.interface] : []),
    f.icmp_type === null ? f.protocol : `${f.protocol} type ${f.icmp_type}`, endpoint(f.local), endpoint(f.remote)];
  const head = [...(narrow ? ["Flow"] : [...(all ? ["Interface"] : []), "Protocol", "Local", "Remote"]),
    "Received", "Sent", "Total"];
  const rows = fl.map(f => [...(narrow ? [which(f).join("\n")] : which(f)),
    fmtRate(scaled(f.rate.recv)), fmtRate(scaled(f.rate.send)), fmtBytes(f.ip_bytes.recv + f.ip_bytes.send)]);
  fill($("flowtable"), head, rows.length ? rows : [["no active flows"]]);
}

function redraw() { draw("recv"); draw("send"); totals(); flowTable(); }

// -- data ------------------------------------------------------------------------
function picker() {
  const sel = $("pick");
  const want = [["*", `All interfaces (${state.interfaces.length})`],
                ...state.interfaces.map(e => [e.key, e.container ? `${e.label} · container` : e.label])];
  if (!want.some(([k]) => k === state.key)) want.push([state.key, `${state.key} (gone)`]);
  const have = Array.from(sel.options).map(o => [o.value, o.textContent]);
  if (JSON.stringify(have) !== JSON.stringify(want)) {
    sel.replaceChildren(...want.map(([k, label]) => { const o = document.createElement("option"); o.value = k; o.textContent = label; return o; }));
  }
  sel.value = state.key;
}

let inflight = false;
async function poll() {
  if (inflight) return;
  inflight = true;
  const status = $("status"), key = state.key;
  const since = state.times.length ? state.times[state.times.length - 1] : 0;
  try {
    const r = await fetch(`/history?key=${encodeURIComponent(key)}&since=${since}`, {cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const doc = await r.json();
    if (key !== state.key) return;  // the picker moved while this was on its way
    state.times.push(...doc.times);
    for (const [name, vals] of Object.entries(doc.series)) (state.series[name] = state.series[name] || []).push(...vals);
    const cut = state.times.findIndex(t => t > state.times[state.times.length - 1] - WINDOW_S);
    if (cut > 0) { state.times.splice(0, cut); for (const s of Object.values(state.series)) s.splice(0, cut); }
    state.totals = doc.totals; state.flows = doc.flows; state.interfaces = doc.interfaces; state.leftOut = doc.left_out; state.kept = doc.kept;
    picker();
    redraw();
    state.updates++;
    const n = doc.interfaces.length;
    const when = state.times.length ? hhmmss(state.times[state.times.length - 1]) : "–";
    let text = `${n} interface${n === 1 ? "" : "s"} counted · updated ${when}`;
    if (!doc.known) text += ` · ${key} is not counted now`;
    if (!doc.kept && key !== "*") text += " · no history kept for this one (too many interfaces): shown since it was picked";
    status.className = ""; status.textContent = text;
  } catch (e) {
    status.className = "error";
    status.textContent = `cannot read /history: ${e.message}; retrying`;
  } finally {
    inflight = false;
  }
}

function choose(key) {
  state.key = key; state.times = []; state.series = {}; state.totals = null;
  localStorage.setItem("tcflow.key", key);
  history.replaceState(null, "", key === "*" ? location.pathname : `#${encodeURIComponent(key)}`);
  redraw(); poll();
}

function segmented(id, value, set) {
  const el = $(id);
  const mark = (v) => el.querySelectorAll("button").forEach(b => b.setAttribute("aria-pressed", String(b.dataset.v === v)));
  mark(value);
  el.addEventListener("click", (ev) => { const b = ev.target.closest("button"); if (b) { set(b.dataset.v); mark(b.dataset.v); redraw(); } });
}

function hoverable(dir) {
  const canvas = $(dir).querySelector("canvas");
  const move = (ev) => {
    const d = state.drawn[dir];
    if (!d || !state.times.length) return;
    const [left, , pw] = d.plot, rect = canvas.getBoundingClientRect();
    const end = state.times[state.times.length - 1];
    state.hover = end - state.range + state.range * (ev.clientX - rect.left - left) / pw;
    draw("recv"); draw("send");
  };
  canvas.addEventListener("pointermove", move);
  canvas.addEventListener("pointerdown", move);
  canvas.addEventListener("pointerleave", () => { state.hover = null; draw("recv"); draw("send"); });
}

// Read by the tests (tests/netns/test_serve.py): what was drawn, and how often.
window.tcflow = {updates: () => state.updates, drawn: () => state.drawn, key: () => state.key};

segmented("units", state.units, (v) => { state.units = v; localStorage.setItem("tcflow.units", v); });
segmented("family", state.family, (v) => { state.family = v; });
segmented("range", String(state.range), (v) => { state.range = Number(v); localStorage.setItem("tcflow.range", v); });
$("pick").addEventListener("change", (ev) => choose(ev.target.value));
hoverable("recv"); hoverable("send");
window.addEventListener("resize", redraw);
redraw();
poll();
setInterval(poll, POLL_MS);
