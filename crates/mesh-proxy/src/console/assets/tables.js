// The peers and services tables. Every value from the mesh goes in as
// text (never as HTML): names, versions and agents come from other nodes.

/** An element `tag` with attributes `attrs` and children (strings become text). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) {
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** The last 8 characters of a peer id. */
export function short(peer) {
  return peer ? '…' + peer.slice(-8) : '–';
}

/** Milliseconds as text. */
export function ms(v) {
  return v === null || v === undefined ? '–' : `${v.toFixed(1)} ms`;
}

function rate(v) {
  return v === null || v === undefined ? '–' : v.toFixed(1);
}

export function renderNode(state) {
  const n = state.node;
  document.getElementById('node').textContent =
    `node ${short(n.peer)} · namespace ${n.namespace || '–'} · ${n.role} · reachability ${n.reachability} · devmeshd ${n.version}`;
  document.getElementById('node').title = n.peer;
}

export function renderPeers(state) {
  const body = document.querySelector('#peers tbody');
  const rows = state.peers.map((p) =>
    el('tr', { 'data-peer': p.peer },
      el('td', { class: 'mono', title: p.peer }, short(p.peer)),
      el('td', {}, p.kind),
      el('td', {}, p.path),
      el('td', { class: 'num' }, ms(p.rtt_ms)),
      el('td', { class: 'muted' }, p.agent || '–')));
  if (rows.length === 0) {
    rows.push(el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'no peers connected')));
  }
  body.replaceChildren(...rows);
}

export function renderServices(state) {
  const body = document.querySelector('#services tbody');
  const rows = [];
  for (const s of state.graph.services) {
    const r = state.rates[s.name];
    s.providers.forEach((p, i) => {
      const first = i === 0;
      rows.push(el('tr', { 'data-service': s.name, 'data-provider': p.peer },
        el('td', {}, first ? `${s.name}${s.protocol === 'tcp' ? ' (tcp)' : ''}` : ''),
        el('td', {}, p.version),
        el('td', { class: 'mono', title: p.peer }, p.local ? 'this node' : short(p.peer)),
        el('td', { class: `health-${p.health}` }, p.health),
        el('td', { class: 'num' }, first && r ? rate(r.rate) : ''),
        el('td', { class: 'num' }, first && r ? ms(r.p50_ms) : ''),
        el('td', { class: 'num' }, first && r ? ms(r.p95_ms) : ''),
        el('td', { class: 'num' }, first && r ? rate(r.errors) : '')));
    });
  }
  if (rows.length === 0) {
    rows.push(el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'no services in the mesh yet: devmesh run <name> --port <port>')));
  }
  body.replaceChildren(...rows);
  document.getElementById('rates-note').textContent = state.metrics
    ? `Rates and latency: requests this node's front door sent, over the last ${state.graph.window_seconds} s.`
    : 'This node counts no requests (devmeshd --metrics off): no rates.';
}
