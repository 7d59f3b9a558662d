// Parse a Mermaid diagram from stdin with the real Mermaid parser (in jsdom, no browser)
// and print what it understood as JSON: the diagram type, every vertex with its decoded
// label text, and every edge. Used by tests/journeys/test_graph.py.
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');

// Mermaid keeps entity codes (#quot;, #35;) as placeholders until it renders; undo that and
// the HTML entities, so the test sees the text a reader would see.
function decode(text) {
  const html = String(text ?? '')
    .replace(/\ufb02\u00b0\u00b0(\d+)\u00b6\u00df/g, '&#$1;')
    .replace(/\ufb02\u00b0(\w+)\u00b6\u00df/g, '&$1;')
    .replace(/<br\s*\/?>/g, '\n');
  const el = dom.window.document.createElement('textarea');
  el.innerHTML = html;
  return el.value;
}

let text = '';
for await (const chunk of process.stdin) text += chunk;
try {
  await mermaid.parse(text);
  const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
  const raw = diagram.db.getVertices();
  const entries = raw instanceof Map ? [...raw.entries()] : Object.entries(raw);
  const vertices = Object.fromEntries(entries.map(([id, v]) => [id, decode(v.text)]));
  const edges = diagram.db.getEdges().map((e) => ({
    start: e.start, end: e.end, text: decode(e.text), stroke: e.stroke,
  }));
  console.log(JSON.stringify({ ok: true, type: diagram.type, vertices, edges }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e?.message ?? e) }));
  process.exit(1);
}
