// The inspector pane: the requests this node handled, newest first, from
// the inspector's API (/api/requests; new ones pushed by
// /api/requests?follow=1), each with a replay button
// (POST /api/requests/{id}/replay, which answers the original, the
// replayed response and their diff).
import { el, short, ms } from './tables.js';

const MAX_ROWS = 200;
const seen = new Set();
const body = () => document.querySelector('#requests tbody');
const note = (text) => { document.getElementById('inspector-status').textContent = text; };

function statusClass(status) {
  if (status >= 500) return 'status-5xx';
  if (status >= 400) return 'status-4xx';
  return '';
}

function duration(e) {
  if (typeof e.duration_ms === 'number') return ms(e.duration_ms);
  if (typeof e.duration === 'number') return ms(e.duration);
  return e.duration ? String(e.duration) : '–';
}

function time(e) {
  const t = e.time || e.started_at || e.timestamp;
  if (!t) return '–';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleTimeString();
}

async function replay(id, button) {
  const out = document.getElementById('replay-result');
  button.disabled = true;
  try {
    const resp = await fetch(`/api/requests/${encodeURIComponent(id)}/replay`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    const answer = await resp.json().catch(() => ({}));
    out.hidden = false;
    if (!resp.ok) {
      out.textContent = `replay of ${id} failed (${resp.status}): ${answer.error || ''}`;
      return;
    }
    const diff = typeof answer.diff === 'string' ? answer.diff : JSON.stringify(answer.diff, null, 2);
    const status = answer.replayed && answer.replayed.status;
    out.dataset.replayed = id;
    out.textContent = `replayed ${id}: status ${status}\n${diff || '(no difference)'}`;
  } catch (err) {
    out.hidden = false;
    out.textContent = `replay of ${id} failed: ${err}`;
  } finally {
    button.disabled = false;
  }
}

function add(e) {
  if (e.id === undefined || seen.has(String(e.id))) return;
  seen.add(String(e.id));
  const button = el('button', { type: 'button', 'data-replay': e.id }, 'Replay');
  button.addEventListener('click', () => replay(e.id, button));
  const trace = e.trace_id || e.trace || '';
  const row = el('tr', { 'data-request': e.id },
    el('td', {}, time(e)),
    el('td', {}, e.method || ''),
    el('td', { class: 'mono' }, e.url || e.path || ''),
    el('td', { class: statusClass(e.status) }, e.status ?? ''),
    el('td', {}, e.service || ''),
    el('td', { class: 'mono', title: e.provider || '' }, short(e.provider)),
    el('td', {}, e.route || ''),
    el('td', { class: 'num' }, duration(e)),
    el('td', { class: 'mono', title: trace }, trace ? trace.slice(0, 8) : ''),
    el('td', {}, button));
  const tbody = body();
  tbody.prepend(row);
  while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild.remove();
}

/** Loads the latest requests, then follows new ones. */
export async function startInspector() {
  let resp;
  try {
    resp = await fetch('/api/requests?limit=50');
  } catch (err) {
    note(`the inspector cannot be reached: ${err}`);
    return;
  }
  if (!resp.ok) {
    const answer = await resp.json().catch(() => ({}));
    note(answer.error || `the inspector answered ${resp.status}`);
    document.body.dataset.inspector = 'off';
    return;
  }
  const entries = await resp.json();
  // Newest first: add the oldest first, each above the last.
  for (const e of entries.slice().reverse()) add(e);
  note('Requests this node handled, newest first.');
  document.body.dataset.inspector = 'on';
  const follow = new EventSource('/api/requests?follow=1');
  follow.addEventListener('message', (m) => add(JSON.parse(m.data)));
}
