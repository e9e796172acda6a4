// The first-load transfer of any page, measured as bench.mjs measures Obscura's: a cold
// context (no cache, no service worker), every response's encodedDataLength (as served,
// headers included) until the network is idle. For peers in BENCHMARKS.md, e.g. Label
// Studio's login page. Usage: node e2e/first-load.mjs URL
import { VIEWPORTS, launch } from './harness.mjs';

const url = process.argv[2];
if (!url) throw new Error('usage: node e2e/first-load.mjs URL');
const chrome = await launch();
try {
  const context = await chrome.browser.newContext({ ...VIEWPORTS.desktop, serviceWorkers: 'block' });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  const wire = new Map();
  cdp.on('Network.responseReceived', (e) => wire.set(e.requestId, { url: e.response.url }));
  cdp.on('Network.loadingFinished', (e) => { const r = wire.get(e.requestId); if (r) r.bytes = e.encodedDataLength; });
  await page.goto(url, { waitUntil: 'networkidle', timeout: 120000 });
  const bytes = [...wire.values()].reduce((n, r) => n + (r.bytes ?? 0), 0);
  console.log(JSON.stringify({ url, requests: wire.size, kilobytes: Math.round(bytes / 102.4) / 10 }));
} finally {
  await chrome.close();
}
