// Small helpers shared by the pages.

/** Show the <main> with this id and hide the others. */
export function show(id) {
  for (const m of document.querySelectorAll('body > main')) m.hidden = m.id !== id;
}

let statusTimer = null;

/** A one-line message at the top ('' hides it). Errors stay; others fade after a while. */
export function showStatus(text, level = 'info') {
  const el = document.getElementById('status');
  if (!el) return;
  clearTimeout(statusTimer);
  el.textContent = text;
  el.dataset.level = level;
  el.hidden = !text;
  el.setAttribute('role', level === 'error' ? 'alert' : 'status');
  if (text && level === 'info') statusTimer = setTimeout(() => (el.hidden = true), 8000);
}

/** Install the service worker that caches the app shell (never the API or media). */
export function registerServiceWorker() {
  if (!('serviceWorker' in navigator) || !window.isSecureContext) return;
  navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch((err) => console.warn('service worker:', err.message));
}

/** Escape-free element builder: `h('td', {class: 'x'}, 'text', child)`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
