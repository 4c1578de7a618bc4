// tcflow dashboard: polls /traffic every second and charts the rate of each
// of the 14 seed classes per interface over the last minutes. No libraries.
"use strict";

const WINDOW = 300;  // samples kept (seconds at one poll per second)
// The classes come from the server (GET /classes, tcflow/classes.py): the
// 14 seed classes are charted, labelled as the table labels them.
let CLASSES = [];
let TITLES = {};
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#ad494a", "#637939", "#8c6d31"];
const state = {};      // key -> {last, series: {class: [rate...]}, el, canvas}
let updates = 0;       // charts redrawn since load (read by the tests)
window.tcflowUpdates = () => updates;
window.tcflowSeries = () => Object.fromEntries(Object.entries(state).map(([k, st]) => [k, st.series]));

function human(v) {
  const units = ["B/s", "KB/s", "MB/s", "GB/s", "TB/s"];
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return (i ? v.toFixed(1) : v.toFixed(0)) + " " + units[i];
}

function card(key, info) {
  const el = document.createElement("div");
  el.className = "iface";
  el.dataset.key = key;
  const h = document.createElement("h2");
  h.textContent = key;
  const hooks = document.createElement("div");
  hooks.className = "hooks";
  const canvas = document.createElement("canvas");
  const legend = document.createElement("div");
  legend.className = "legend";
  CLASSES.forEach((c, i) => {
    const s = document.createElement("span");
    const sw = document.createElement("i");
    sw.style.background = COLORS[i];
    s.appendChild(sw);
    s.appendChild(document.createTextNode(TITLES[c]));
    legend.appendChild(s);
  });
  el.append(h, hooks, canvas, legend);
  document.getElementById("interfaces").appendChild(el);
  const series = {};
  CLASSES.forEach(c => { series[c] = []; });
  return {last: null, series, el, canvas, hooks};
}

function draw(st) {
  const c = st.canvas, dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  c.width = w * dpr; c.height = h * dpr;
  const g = c.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  let max = 1;
  CLASSES.forEach(k => st.series[k].forEach(v => { if (v > max) max = v; }));
  const left = 70, bottom = 18, plotW = w - left - 8, plotH = h - bottom - 8;
  g.strokeStyle = "#ddd"; g.fillStyle = "#666"; g.font = "11px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = 8 + plotH - (plotH * i) / 4;
    g.beginPath(); g.moveTo(left, y); g.lineTo(left + plotW, y); g.stroke();
    g.fillText(human((max * i) / 4), 4, y + 4);
  }
  g.fillText(`last ${WINDOW / 60} min`, left, h - 4);
  CLASSES.forEach((k, i) => {
    const s = st.series[k];
    if (s.length < 2) return;
    g.strokeStyle = COLORS[i]; g.lineWidth = 1.5; g.beginPath();
    s.forEach((v, j) => {
      const x = left + plotW * (j + WINDOW - s.length) / (WINDOW - 1);
      const y = 8 + plotH - (plotH * v) / max;
      if (j === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  });
  st.el.dataset.points = String(st.series[CLASSES[0]].length);
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const r = await fetch("/traffic", {cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const doc = await r.json();
    const keys = Object.keys(doc.interfaces);
    for (const key of keys) {
      const info = doc.interfaces[key];
      const st = state[key] || (state[key] = card(key, info));
      const hk = info.hook;
      st.hooks.textContent = `recv: ${hk.ingress}${hk.xdp_mode ? " (" + hk.xdp_mode + ")" : ""}, ` +
        `send: ${hk.egress}${hk.pinned ? ", pinned" : ""}; ifindex ${info.ifindex}`;
      if (st.last) {
        const dt = doc.time - st.last.time;
        if (dt > 0) {
          for (const c of CLASSES) {
            const d = info.classes[c] - st.last.classes[c];
            const s = st.series[c];
            s.push(Math.max(0, d) / dt);
            if (s.length > WINDOW) s.shift();
          }
        }
      }
      st.last = {time: doc.time, classes: info.classes};
      draw(st);
    }
    for (const key of Object.keys(state)) {
      if (!keys.includes(key)) { state[key].el.remove(); delete state[key]; }
    }
    updates++;
    status.className = "";
    status.textContent = `${keys.length} interface${keys.length === 1 ? "" : "s"}; ` +
      `updated ${new Date(doc.time * 1000).toLocaleTimeString()}`;
  } catch (e) {
    status.className = "error";
    status.textContent = `cannot read /traffic: ${e.message}`;
  }
}

async function start() {
  const status = document.getElementById("status");
  try {
    const r = await fetch("/classes", {cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const seed = (await r.json()).filter(c => c.seed);
    CLASSES = seed.map(c => c.name);
    TITLES = Object.fromEntries(seed.map(c => [c.name, `${c.title}, ${c.family === "ipv4" ? "IPv4" : "IPv6"}`]));
  } catch (e) {
    status.className = "error";
    status.textContent = `cannot read /classes: ${e.message}`;
    return;
  }
  poll();
  setInterval(poll, 1000);
}

start();
