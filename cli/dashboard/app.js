// The dashboard page: draws the state the `ekv dashboard` process sends (server-sent events). No framework.
'use strict';
const $ = (id) => document.getElementById(id);
const svgNs = 'http://www.w3.org/2000/svg';
const colours = { serving: '#2e8b57', receiving: '#d08a00', down: '#c0392b', unattested: '#7d3c98' };
const short = (h, n = 12) => (h ? h.slice(0, n) : '-');
const fmtMs = (ms) => (ms == null ? '-' : ms < 1 ? ms.toFixed(2) : ms < 10 ? ms.toFixed(1) : Math.round(ms).toString());
/** Epoch and lease: "e7 · 5/5 leased · 2.9 s" (an owner without a lease for some range stands out). */
const fmtData = (d) => (!d ? '-' : `e${d.epoch ?? '?'} · ${d.leased ?? '?'}/${d.owned ?? '?'} leased${d.leaseSeconds == null ? '' : ` · ${d.leaseSeconds.toFixed(1)} s`}${d.underReplicated ? ` · ${d.underReplicated} under-replicated` : ''}`);
const fmtAge = (ms) => (ms == null ? '-' : ms < 60000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60000)} min`);

function el(tag, attrs, text) {
  const e = tag.startsWith('svg:') ? document.createElementNS(svgNs, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawRing(nodes) {
  const svg = $('ring');
  svg.replaceChildren();
  const R = 130;
  svg.append(el('svg:circle', { cx: 0, cy: 0, r: R, fill: 'none', stroke: '#bbb', 'stroke-width': 2 }));
  const pos = (a) => [R * Math.sin(2 * Math.PI * a), -R * Math.cos(2 * Math.PI * a)];
  const placed = nodes.filter((n) => n.angle !== null);
  // Each node's range: an arc from its predecessor's position to its own.
  for (const n of placed) {
    if (!n.predecessor || n.state === 'down') continue;
    const a0 = parseInt(n.predecessor.id.slice(0, 8), 16) / 2 ** 32;
    const [x0, y0] = pos(a0);
    const [x1, y1] = pos(n.angle);
    const share = n.rangeShare ?? 0;
    svg.append(el('svg:path', {
      d: `M ${x0} ${y0} A ${R} ${R} 0 ${share > 0.5 ? 1 : 0} 1 ${x1} ${y1}`,
      fill: 'none', stroke: colours[n.state], 'stroke-width': 6, 'stroke-opacity': 0.35,
    }));
  }
  for (const n of placed) {
    const [x, y] = pos(n.angle);
    const g = el('svg:g', { 'data-node': n.addr, 'data-state': n.state });
    g.append(el('svg:circle', { cx: x, cy: y, r: 9, fill: colours[n.state], stroke: '#fff', 'stroke-width': 2 }));
    const [lx, ly] = pos(n.angle).map((c) => c * 1.22);
    g.append(el('svg:text', { x: lx, y: ly + 4, 'text-anchor': lx < -5 ? 'end' : lx > 5 ? 'start' : 'middle', 'font-size': 10 }, `${n.addr.replace(/^127\.0\.0\.1/, '')} ${short(n.id, 6)}`));
    g.append(el('svg:title', {}, `${n.addr} ${n.state}${n.reason ? `: ${n.reason}` : ''}`));
    svg.append(g);
  }
  const unplaced = nodes.filter((n) => n.angle === null).length;
  svg.append(el('svg:text', { x: 0, y: 4, 'text-anchor': 'middle', 'font-size': 12, fill: '#555' },
    `${nodes.filter((n) => n.state === 'serving').length}/${nodes.length} serving${unplaced ? `, ${unplaced} never seen` : ''}`));
}

function drawTable(nodes) {
  const rows = nodes.map((n) => {
    const tr = el('tr', { 'data-node': n.addr, 'data-state': n.state });
    const up = n.state === 'serving' || n.state === 'receiving';
    const stateCell = el('td');
    stateCell.append(el('span', { class: `state ${n.state}` }, n.state));
    if (n.reason) stateCell.append(el('div', { class: 'reason' }, n.reason));
    const pids = n.hostSays && n.hostSays.pids ? Object.entries(n.hostSays.pids).map(([k, v]) => `${k} ${v ?? '?'}`).join(', ') : '-';
    const cells = [
      el('td', { class: 'mono' }, n.addr), stateCell,
      el('td', { class: 'mono' }, short(n.id)),
      el('td', { class: 'mono' }, n.predecessor && up ? `${short(n.predecessor.id, 6)}… → ${short(n.id, 6)}… (${((n.rangeShare ?? 0) * 100).toFixed(1)}%)` : '-'),
      el('td', { class: 'mono' }, up ? n.successors.map((s) => s.addr.replace(/^127\.0\.0\.1/, '')).join(' ') || '-' : '-'),
      el('td', {}, up && n.keys != null ? String(n.keys) : '-'),
      el('td', {}, up && n.bytes != null ? String(n.bytes) : '-'),
      el('td', { class: 'mono', title: 'epoch of its owned ranges (highest); ranges owned, of which leased; lowest read lease left' }, up ? fmtData(n.data) : '-'),
      el('td', {}, n.opsPerSec == null ? '-' : n.opsPerSec.toFixed(1)),
      el('td', {}, n.latencyMs ? `${fmtMs(n.latencyMs.p50)} / ${fmtMs(n.latencyMs.p95)} / ${fmtMs(n.latencyMs.p99)} ms` : '-'),
      el('td', { class: 'mono', title: n.pcr0 || '' }, short(n.pcr0, 16)),
      el('td', {}, up ? fmtAge(n.documentAgeMs) : '-'),
      el('td', { class: 'mono' }, n.moduleId || '-'),
      el('td', { class: 'untrusted' }, pids),
    ];
    tr.append(...cells);
    return tr;
  });
  $('nodes').tBodies[0].replaceChildren(...rows);
}

function drawEvents(events) {
  $('events').replaceChildren(...events.map((e) => el('li', { class: `ev-${e.kind}` }, `${new Date(e.at).toLocaleTimeString()}  ${e.node}  ${e.detail}`)));
}

let lastAt = 0;
function draw(state) {
  lastAt = Date.now();
  $('stale').style.display = 'none';
  $('trust').textContent = state.trust;
  $('count').textContent = `${state.nodes.length} nodes`;
  $('count').dataset.nodes = String(state.nodes.length);
  drawRing(state.nodes);
  drawTable(state.nodes);
  drawEvents(state.events);
}

const source = new EventSource('/events');
source.addEventListener('state', (ev) => draw(JSON.parse(ev.data)));
setInterval(() => {
  if (lastAt && Date.now() - lastAt > 20000) $('stale').style.display = 'block';
}, 2000);
