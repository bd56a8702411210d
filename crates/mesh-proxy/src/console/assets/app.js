// The dashboard: follows /api/events (server-sent events: the node's whole
// state, pushed again each time it changes) and renders it.
import { renderNode, renderPeers, renderServices } from './tables.js';
import { drawGraph } from './graph.js';
import { startInspector } from './inspector.js';

const live = document.getElementById('live');

function render(state) {
  renderNode(state);
  renderPeers(state);
  renderServices(state);
  drawGraph(document.getElementById('graph'), state.graph);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

function follow() {
  // EventSource reconnects by itself (the server asks for 1 s) when the
  // daemon restarts.
  const events = new EventSource('/api/events');
  events.addEventListener('state', (e) => {
    render(JSON.parse(e.data));
    live.textContent = 'live';
    live.className = 'live on';
  });
  events.addEventListener('error', () => {
    live.textContent = 'reconnecting…';
    live.className = 'live off';
  });
}

follow();
startInspector();
