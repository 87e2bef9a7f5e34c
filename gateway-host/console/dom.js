// Small DOM helpers shared by the console's views.

/** The element with this id (it must exist). */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`missing element #${id}`);
  return node;
}

/** A new element: `attrs` become attributes (`text` sets the text), `children` are appended. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = String(value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** An SVG element with these attributes. */
export function svg(tag, attrs = {}) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

/** Milliseconds as people read them: `840 ms`, `1.24 s`. */
export function formatMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '–';
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** Tell screen readers something without moving focus. */
export function announce(text) {
  byId('status').textContent = text;
}

/** Show (or with no text, hide) the page-wide notice. */
export function notice(text) {
  const node = byId('notice');
  node.textContent = text || '';
  node.hidden = !text;
}

/** A fresh random session key such as `console-k3x9q2ab`. */
export function newSessionKey() {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return `console-${Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('')}`;
}

/** Render stored chat messages (`{role, content}`) into a list. */
export function renderMessages(list, messages) {
  list.replaceChildren(
    ...messages.map((m) =>
      el('li', { class: `message ${m.role}` }, el('span', { class: 'who', text: m.role }), el('p', { text: m.content })),
    ),
  );
  if (!messages.length) list.append(el('li', { class: 'empty', text: 'Nothing stored.' }));
}
