// Service worker: caches the app shell so the client opens fast and
// installs as an app. It never caches the API, signaling or media, and never
// answers a join link from cache with stale tokens (query strings are
// ignored when matching the shell, and the network is tried first for pages).

const CACHE = 'roombox-shell-v2';
const SHELL = [
  '/',
  '/display',
  '/admin',
  '/style.css',
  '/manifest.webmanifest',
  '/icon.svg',
  '/icon-192.png',
  '/icon-512.png',
  '/js/app.js',
  '/js/admin.js',
  '/js/api.js',
  '/js/auth.js',
  '/js/chat.js',
  '/js/display.js',
  '/js/grid.js',
  '/js/media.js',
  '/js/quality.js',
  '/js/session.js',
  '/js/ui.js',
];
const NEVER = [/^\/api\//, /^\/ws\//, /^\/whip\//, /^\/whep\//, /^\/metrics/, /^\/healthz/, /^\/readyz/];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== 'GET' || url.origin !== location.origin || NEVER.some((re) => re.test(url.pathname))) return;
  const key = url.pathname;
  if (!SHELL.includes(key)) return;
  if (req.mode === 'navigate') {
    // Pages: network first (a new version shows at once), the cache when the box is unreachable.
    event.respondWith(
      fetch(req)
        .then((res) => {
          if (res.ok) {
            const copy = res.clone();
            caches.open(CACHE).then((c) => c.put(key, copy));
          }
          return res;
        })
        .catch(() => caches.match(key)),
    );
    return;
  }
  // Scripts, styles, icons: from the cache, refreshed in the background.
  event.respondWith(
    caches.match(key).then((hit) => {
      const net = fetch(req).then((res) => {
        if (res.ok) {
          const copy = res.clone();
          caches.open(CACHE).then((c) => c.put(key, copy));
        }
        return res;
      });
      return hit || net;
    }),
  );
});
