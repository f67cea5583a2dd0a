"""The monitor's page (``/``): one HTML document, its CSS and JavaScript inline, nothing fetched.

It draws the machines from ``/state.json``'s tables (states around a circle,
one arrow per pair of states, labelled with its events), lights the
listener's state and counts the connections in each state, and updates from
``/events`` (EventSource) without polling.  The capacity box and the close
buttons POST JSON to ``/capacity`` and ``/close``.  ``/?once`` stops
listening after the first update from ``/events``: a headless browser can
then finish loading it (a screenshot, the tests).
"""

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{TITLE}}: monitor</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; background: #fafafa; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  h2 { font-size: 1.05em; margin: 1em 0 .3em; }
  #status { color: #666; }
  .row { display: flex; flex-wrap: wrap; gap: 2em; }
  svg { background: #fff; border: 1px solid #ddd; border-radius: 6px; }
  .state rect { fill: #eee; stroke: #888; stroke-width: 1.5; }
  .state.lit rect { fill: #ffcc33; stroke: #b07800; stroke-width: 3; }
  .state.some rect { fill: #bfe0ff; stroke: #2a6fb0; stroke-width: 2; }
  .state text { font: bold 13px monospace; text-anchor: middle; }
  .state .count { font: 12px monospace; fill: #2a6fb0; }
  .edge { fill: none; stroke: #999; stroke-width: 1.2; marker-end: url(#arrow); }
  .label { font: 10px monospace; fill: #555; text-anchor: middle; }
  .loops { font: 10px monospace; fill: #777; text-anchor: middle; }
  table { border-collapse: collapse; background: #fff; }
  td, th { border: 1px solid #ddd; padding: 2px 8px; font: 13px monospace; text-align: right; }
  th { background: #f0f0f0; }
  td.l, th.l { text-align: left; }
  .bar { display: inline-block; height: 8px; background: #2a6fb0; vertical-align: middle; }
  .BUSY, .PAUSED { color: #b00; font-weight: bold; }
  #recent { font: 12px monospace; max-height: 16em; overflow: auto; background: #fff;
            border: 1px solid #ddd; padding: 4px 8px; }
  button { font: inherit; }
</style>
</head>
<body>
<h1>{{TITLE}} <span id="status">connecting...</span></h1>
<div>listener <b id="lstate">?</b>: <span id="active">?</span> client(s) of
  capacity <span id="capacity">?</span>.
  <label>Capacity <input id="newcap" type="number" min="1" size="6"></label>
  <button id="setcap">set</button> <span id="answer"></span></div>
<div class="row">
  <div><h2>The listener</h2><svg id="listener" width="460" height="360"></svg></div>
  <div><h2>The connections (<span id="ccount">0</span>)</h2>
    <svg id="connection" width="600" height="480"></svg></div>
</div>
<h2>Connections</h2>
<table id="conns"><thead><tr><th>#</th><th class="l">peer</th><th class="l">state</th>
  <th>bytes in</th><th>bytes out</th><th class="l">buffered (of the high-water mark)</th>
  <th>age (s)</th><th></th></tr></thead><tbody></tbody></table>
<div class="row">
  <div><h2>Counters</h2><table id="counters"><tbody></tbody></table></div>
  <div><h2>The last transitions</h2><div id="recent"></div></div>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";
let machines = null;

function el(tag, attrs, parent, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

// Where the line from a box's centre (x, y) towards (tx, ty) leaves the box (46 by 17 each side).
function exit(x, y, tx, ty) {
  const dx = tx - x, dy = ty - y, len = Math.hypot(dx, dy) || 1;
  const ux = dx / len, uy = dy / len;
  const t = Math.min(ux ? 50 / Math.abs(ux) : 1e9, uy ? 21 / Math.abs(uy) : 1e9);
  return [x + ux * t, y + uy * t];
}

function drawMachine(svg, machine) {
  svg.textContent = "";
  const w = +svg.getAttribute("width"), h = +svg.getAttribute("height");
  const defs = el("defs", {}, svg);
  const marker = el("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                               markerWidth: 7, markerHeight: 7, orient: "auto"}, defs);
  el("path", {d: "M0,0 L10,5 L0,10 z", fill: "#999"}, marker);
  const n = machine.states.length, cx = w / 2, cy = h / 2, r = Math.min(w, h) / 2 - 55;
  const pos = {};
  machine.states.forEach((s, i) => {
    const a = -Math.PI / 2 + 2 * Math.PI * i / n;
    pos[s] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
  });
  const pairs = {}, loops = {};
  for (const [from, event, to] of machine.transitions) {
    if (from === to) (loops[from] = loops[from] || []).push(event);
    else (pairs[from + ">" + to] = pairs[from + ">" + to] || []).push(event);
  }
  for (const [key, events] of Object.entries(pairs)) {
    const [from, to] = key.split(">");
    const [x1, y1] = pos[from], [x2, y2] = pos[to];
    const dx = x2 - x1, dy = y2 - y1, len = Math.hypot(dx, dy);
    const nx = -dy / len, ny = dx / len, bend = 26;
    const mx = (x1 + x2) / 2 + nx * bend, my = (y1 + y2) / 2 + ny * bend;
    const [sx, sy] = exit(x1, y1, mx, my), [ex, ey] = exit(x2, y2, mx, my);
    el("path", {class: "edge", d: `M${sx},${sy} Q${mx},${my} ${ex},${ey}`}, svg);
    // The curve's midpoint, pushed out a little on its outer side.
    const lx = 0.25 * sx + 0.5 * mx + 0.25 * ex, ly = 0.25 * sy + 0.5 * my + 0.25 * ey;
    el("text", {class: "label", x: lx + nx * 8, y: ly + ny * 8 + 3}, svg, events.join(", "));
  }
  for (const s of machine.states) {
    const [x, y] = pos[s];
    const g = el("g", {class: "state", id: svg.id + "-" + s}, svg);
    el("rect", {x: x - 46, y: y - 17, width: 92, height: 34, rx: 8}, g);
    el("text", {x: x, y: y + 1}, g, s);
    el("text", {class: "count", x: x, y: y + 13}, g, "");
    if (loops[s]) el("text", {class: "loops", x: x, y: y + (y < cy ? -22 : 30)}, svg,
                     "\u21bb " + loops[s].join(", "));
  }
}

function light(svgId, states, lit, counts) {
  for (const s of states) {
    const g = $(svgId + "-" + s);
    if (!g) continue;
    g.classList.toggle("lit", s === lit);
    const c = counts ? counts[s] || 0 : 0;
    g.classList.toggle("some", !!counts && c > 0 && s !== lit);
    g.querySelector(".count").textContent = counts ? "\u00d7" + c : "";
  }
}

function post(path, body) {
  return fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                      body: JSON.stringify(body)})
    .then((r) => r.json().catch(() => ({})).then((j) => [r.status, j]))
    .then(([status, j]) => { $("answer").textContent = status === 200 ? "done" : "refused (" + status + ")"; })
    .catch((e) => { $("answer").textContent = String(e); });
}

function render(state) {
  if (state.machines) {
    machines = state.machines;
    drawMachine($("listener"), machines[0]);
    drawMachine($("connection"), machines[1]);
  }
  if (!machines) return;
  const L = state.listener, C = state.connections;
  $("lstate").textContent = L.state;
  $("lstate").className = L.state;
  $("active").textContent = L.active;
  $("capacity").textContent = L.capacity === null ? "unlimited" : L.capacity;
  $("ccount").textContent = C.count;
  light("listener", machines[0].states, L.state, null);
  light("connection", machines[1].states, null, C.by_state);
  const body = $("conns").tBodies[0];
  body.textContent = "";
  for (const c of C.rows) {
    const tr = body.insertRow();
    const pct = Math.min(100, 100 * c.buffered / C.high_water);
    tr.innerHTML = `<td>${c.id}</td><td class="l"></td><td class="l ${c.state}">${c.state}</td>` +
      `<td>${c.bytes_in}</td><td>${c.bytes_out}</td>` +
      `<td class="l"><span class="bar" style="width:${pct.toFixed(0)}px"></span> ${c.buffered} B</td>` +
      `<td>${c.age}</td><td><button>close</button></td>`;
    tr.cells[1].textContent = c.peer;
    tr.querySelector("button").onclick = () => post("/close", {id: c.id});
  }
  const counters = $("counters").tBodies[0];
  counters.textContent = "";
  for (const [k, v] of Object.entries(state.counters)) {
    const tr = counters.insertRow();
    tr.innerHTML = `<td class="l">${k}</td><td>${v}</td>`;
  }
  $("recent").textContent = state.recent.slice().reverse().map((t) =>
    new Date(t.time * 1000).toISOString().slice(11, 23) + " " +
    (t.machine === "listener" ? "listener" : "#" + t.id + " " + t.peer) +
    " " + t.old + " --" + t.event + "--> " + t.new).join("\n");
  $("recent").style.whiteSpace = "pre";
  $("status").textContent = "pid " + state.pid + ", live";
}

const once = new URLSearchParams(location.search).has("once");
$("setcap").onclick = () => post("/capacity", {capacity: parseInt($("newcap").value, 10)});

fetch("/state.json").then((r) => r.json()).then((state) => {
  render(state);
  const events = new EventSource("/events");
  events.addEventListener("update", (e) => {
    render(JSON.parse(e.data));
    if (once) {     // ?once: one update from /events, then stop (a headless browser's screenshot)
      events.close();
      $("status").textContent += ", one update (?once)";
    }
  });
  events.onerror = () => { $("status").textContent = "disconnected: retrying..."; };
}).catch((e) => { $("status").textContent = "cannot show the state: " + e; });
</script>
</body>
</html>
"""
