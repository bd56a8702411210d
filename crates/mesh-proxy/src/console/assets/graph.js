// The service graph, drawn as SVG: this node in the middle, its peers and
// the providers it knows around it, each with the services it provides;
// lines for connections (dashed when relayed, with RTT), blue arrows for
// the requests this node sent (rate and p95).
import { short, ms } from './tables.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 960;
const H = 520;

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function positions(graph) {
  const pos = new Map([[graph.node, { x: W / 2, y: H / 2 - 30 }]]);
  const others = graph.nodes.filter((n) => n.peer !== graph.node);
  others.forEach((n, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(others.length, 1);
    pos.set(n.peer, { x: W / 2 + 330 * Math.cos(a), y: H / 2 - 30 + 170 * Math.sin(a) });
  });
  return pos;
}

function drawPaths(root, graph, pos) {
  const me = pos.get(graph.node);
  for (const p of graph.paths) {
    const to = pos.get(p.peer);
    if (!to) continue;
    root.append(svg('line', { class: `path ${p.path}`, x1: me.x, y1: me.y, x2: to.x, y2: to.y }));
    const label = `${p.path}${p.rtt_ms === null ? '' : ' ' + ms(p.rtt_ms)}`;
    root.append(svg('text', { class: 'label', x: (me.x + to.x) / 2 + 6, y: (me.y + to.y) / 2 - 6 }, label));
  }
}

function drawRequests(root, graph, pos) {
  const me = pos.get(graph.node);
  graph.requests.forEach((e, i) => {
    const to = pos.get(e.provider) || { x: me.x, y: me.y + 120 };
    const width = Math.min(1.5 + Math.log2(1 + e.rate), 7);
    let d;
    let lx;
    let ly;
    if (to === me) {
      // Served by this node: a loop.
      d = `M ${me.x - 10} ${me.y - 26} C ${me.x - 60} ${me.y - 110}, ${me.x + 60} ${me.y - 110}, ${me.x + 10} ${me.y - 26}`;
      lx = me.x - 40;
      ly = me.y - 92 - 14 * i;
    } else {
      const mx = (me.x + to.x) / 2 + (to.y - me.y) * 0.15;
      const my = (me.y + to.y) / 2 - (to.x - me.x) * 0.15;
      d = `M ${me.x} ${me.y} Q ${mx} ${my} ${to.x} ${to.y}`;
      lx = mx;
      ly = my + 14 * i;
    }
    root.append(svg('path', { class: 'request', d, 'stroke-width': width, 'marker-end': 'url(#arrow)' }));
    const text = `${e.service} ${e.rate.toFixed(1)}/s p95 ${ms(e.p95_ms)}${e.errors > 0 ? ` 5xx ${e.errors.toFixed(1)}/s` : ''}`;
    root.append(svg('text', { class: 'request-label', x: lx, y: ly, 'data-request': e.service }, text));
  });
}

function drawNodes(root, graph, pos) {
  const provided = new Map();
  for (const s of graph.services) {
    for (const p of s.providers) {
      if (!provided.has(p.peer)) provided.set(p.peer, []);
      provided.get(p.peer).push({ name: s.name, version: p.version, health: p.health });
    }
  }
  for (const n of graph.nodes) {
    const at = pos.get(n.peer);
    const g = svg('g', { 'data-peer': n.peer });
    g.append(svg('circle', { class: `node ${n.kind}`, cx: at.x, cy: at.y, r: 24 }));
    const name = n.kind === 'self' ? 'this node' : short(n.peer);
    g.append(svg('text', { x: at.x, y: at.y + 4, 'text-anchor': 'middle' }, n.kind === 'self' ? 'me' : n.kind.slice(0, 6)));
    g.append(svg('text', { class: 'label', x: at.x, y: at.y + 40, 'text-anchor': 'middle' }, name));
    (provided.get(n.peer) || []).forEach((s, i) => {
      const mark = s.health === 'healthy' ? '✓' : s.health === 'unhealthy' ? '✗' : '?';
      g.append(svg('text', {
        class: s.health === 'unhealthy' ? 'unhealthy' : '',
        x: at.x, y: at.y + 56 + 14 * i, 'text-anchor': 'middle', 'data-service': s.name,
      }, `${s.name} ${s.version} ${mark} ${s.health}`));
    });
    root.append(g);
  }
}

/** Draws `graph` (the JSON of /api/graph) into the <svg> `root`. */
export function drawGraph(root, graph) {
  root.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const defs = svg('defs');
  const marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto-start-reverse' });
  marker.append(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#1f6feb' }));
  defs.append(marker);
  root.replaceChildren(defs);
  const pos = positions(graph);
  drawPaths(root, graph, pos);
  drawRequests(root, graph, pos);
  drawNodes(root, graph, pos);
}
