// The app shell, cached so the app opens on a tablet whose Wi-Fi is down. The API is
// never cached here: the app itself keeps the open frame and the few it fetched ahead
// (`obscura-kept`, see api.ts), which an upgrade leaves in place.
const CACHE = 'obscura-49dc86cd4a735215';
const SHELL = ["/","/app.js","/app.css","/manifest.webmanifest","/icon.svg","/icon-192.png"];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE && k !== 'obscura-kept').map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// Network first (an upgraded box shows at once), the cache when the network fails or
// takes longer than 4 s.
function fromNetwork(request, fallback) {
  const cached = () => caches.match(fallback || request);
  const network = fetch(request).then((r) => (r.ok || r.status === 304 ? r : cached().then((c) => c || r)));
  const late = new Promise((resolve) => setTimeout(resolve, 4000)).then(cached);
  return Promise.race([network.catch(cached), late.then((c) => c || network)]);
}

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== location.origin) return;
  if (url.pathname.startsWith('/api/') || ['/metrics', '/healthz', '/readyz'].includes(url.pathname)) return;
  if (event.request.mode === 'navigate') {
    event.respondWith(fromNetwork(event.request, '/'));
  } else if (SHELL.includes(url.pathname)) {
    event.respondWith(fromNetwork(event.request));
  }
});
